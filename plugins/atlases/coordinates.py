"""Coordinate atlases bundled with nilearn: ``seitzman``, ``dosenbach``, ``power``.

nilearn ships their coordinates (no download). Regions are spheres of ``radius`` mm around
MNI coordinates, in the atlas's own ROI numbering. Each atlas's network names are mapped to
megafc's Schaefer-style networks (NETWORK_MAP; the atlas's own name is kept as subnetwork):

=============================================  ===========  ==================
atlas network name                             network      system
=============================================  ===========  ==================
Visual; occipital                              Vis          unimodal
SomatomotorDorsal/Lateral; sensorimotor;       SomMot       unimodal
Sensory/somatomotor Hand/Mouth; Auditory
DorsalAttention                                DorsAttn     attention
CinguloOpercular (+Task Control); Salience;    SalVentAttn  attention
VentralAttention
Reward                                         Limbic       transmodal
FrontoParietal (+Task Control)                 Cont         transmodal
DefaultMode; default; MedialTemporalLobe;      Default      transmodal
ParietoMedial; Memory retrieval
cerebellum; Cerebellar                         Cerebellum   cerebellar
Subcortical (Power)                            Subcortical  subcortical
unassigned; Uncertain                          (dropped: no system)
=============================================  ===========  ==================

Seitzman's ROIs in subcortical structures and the cerebellum carry functional network labels
(e.g. a thalamic ROI in SomatomotorDorsal); with ``split_anatomy`` (default) their network is
the structure (Thalamus, BasalGanglia, Hippocampus, Amygdala, Cerebellum; systems subcortical
and cerebellar) and their subnetwork ``<structure>-<functional network>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from megafc.core import Atlas, AtlasLoader, ConfigError, InputError

from ._files import REFERENCES, require_file
from .schaefer_names import NETWORK_SYSTEM

#: System of each megafc network used by coordinate atlases.
COORD_SYSTEM: dict[str, str] = {
    **NETWORK_SYSTEM, "Cerebellum": "cerebellar", "Subcortical": "subcortical",
    "Thalamus": "subcortical", "BasalGanglia": "subcortical", "Hippocampus": "subcortical",
    "Amygdala": "subcortical",
}

#: Normalised network name (lower case, letters and digits only) -> (network, subnetwork).
#: None: unassigned ROIs, which are dropped (there is no system class for them).
NETWORK_MAP: dict[str, tuple[str, str] | None] = {
    # Seitzman 2018 (Gordon 2016-style names)
    "visual": ("Vis", "Visual"),
    "auditory": ("SomMot", "Auditory"),
    "somatomotordorsal": ("SomMot", "SomatomotorDorsal"),
    "somatomotorlateral": ("SomMot", "SomatomotorLateral"),
    "dorsalattention": ("DorsAttn", "DorsalAttention"),
    "cinguloopercular": ("SalVentAttn", "CinguloOpercular"),
    "salience": ("SalVentAttn", "Salience"),
    "ventralattention": ("SalVentAttn", "VentralAttention"),
    "reward": ("Limbic", "Reward"),
    "frontoparietal": ("Cont", "FrontoParietal"),
    "defaultmode": ("Default", "DefaultMode"),
    "medialtemporallobe": ("Default", "MedialTemporalLobe"),
    "parietomedial": ("Default", "ParietoMedial"),
    "unassigned": None,
    # Dosenbach 2010
    "default": ("Default", "Default"),
    "sensorimotor": ("SomMot", "Sensorimotor"),
    "occipital": ("Vis", "Occipital"),
    "cerebellum": ("Cerebellum", "Cerebellum"),
    # Power 2011 (names of its consensus network table)
    "sensorysomatomotorhand": ("SomMot", "SomatomotorHand"),
    "sensorysomatomotormouth": ("SomMot", "SomatomotorMouth"),
    "cingulooperculartaskcontrol": ("SalVentAttn", "CinguloOpercular"),
    "frontoparietaltaskcontrol": ("Cont", "FrontoParietal"),
    "memoryretrieval": ("Default", "MemoryRetrieval"),
    "subcortical": ("Subcortical", "Subcortical"),
    "cerebellar": ("Cerebellum", "Cerebellum"),
    "uncertain": None,
    # megafc's own names, for user-supplied network files
    **{n.lower(): (n, n) for n in NETWORK_SYSTEM},
}

#: Seitzman's anatomical region labels -> megafc network of the non-cortical ones.
SEITZMAN_ANATOMY: dict[str, str] = {
    "thalamus": "Thalamus", "basalGanglia": "BasalGanglia", "hippocampus": "Hippocampus",
    "amygdala": "Amygdala", "cerebellum": "Cerebellum",
}


def normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def map_network(name: str, what: str) -> tuple[str, str] | None:
    key = normalise(name)
    if key not in NETWORK_MAP:
        known = sorted({v[1] for v in NETWORK_MAP.values() if v} | {"unassigned", "Uncertain"})
        raise InputError(f"{what}: unknown network name '{name}'; known names: {known}")
    return NETWORK_MAP[key]


def hemisphere(x: float) -> str:
    return "LH" if x < 0 else "RH" if x > 0 else ""


def check_radius(value: float) -> None:
    if not value > 0:
        raise ConfigError(f"config key 'atlas.radius' is {value}; expected a radius in mm > 0")


def _coords_atlas(name: str, rows: list[dict], coords: list, radius: float, description: str, refs: list[str]) -> Atlas:
    return Atlas(
        name=name, regions=pd.DataFrame(rows), coords=np.asarray(coords, dtype=float).reshape(-1, 3),
        radius=float(radius), description=description, references=refs,
    )


class SeitzmanAtlas(AtlasLoader):
    """Seitzman 2018 300 ROIs (cortex, subcortex, cerebellum) as spheres; bundled with nilearn."""

    name = "seitzman"

    @dataclass
    class Config:
        #: Sphere radius in mm. The published radii (5 mm cortex, 4 mm elsewhere) make
        #: neighbouring spheres share voxels (the closest centres are 6.7 mm apart), which
        #: NiftiSpheresMasker refuses; 3 mm spheres do not overlap on 1, 2 or 3 mm grids.
        radius: float = 3.0
        #: Give subcortical and cerebellar ROIs their structure as network (systems
        #: subcortical/cerebellar) instead of their functional network.
        split_anatomy: bool = True

    def __init__(self, config=None):
        super().__init__(config)
        check_radius(self.config.radius)

    def load(self) -> Atlas:
        from nilearn.datasets import fetch_coords_seitzman_2018

        what = f"atlas '{self.name}'"
        b = fetch_coords_seitzman_2018(ordered_regions=False)
        xyz = b["rois"][["x", "y", "z"]].to_numpy(dtype=float)
        rows, coords, dropped = [], [], 0
        for roi, (net, anat, c) in enumerate(zip(b["networks"], b["regions"], xyz), start=1):
            mapped = map_network(net, what)
            structure = SEITZMAN_ANATOMY.get(str(anat)) if self.config.split_anatomy else None
            if structure is not None:
                sub = f"{structure}-{mapped[1] if mapped else 'Unassigned'}"
                network = structure
            elif mapped is None:
                dropped += 1
                continue
            else:
                network, sub = mapped
            rows.append({
                "label": f"ROI{roi:03d}_{net}_{anat}", "network": network, "subnetwork": sub,
                "system": COORD_SYSTEM[network], "hemisphere": hemisphere(c[0]), "roi": roi,
            })
            coords.append(c)
        return _coords_atlas(
            self.name, rows, coords, self.config.radius,
            f"Seitzman 2018 functional ROIs: {len(rows)} of 300 spheres of {self.config.radius:g} mm "
            f"({dropped} unassigned ROIs without a network left out).",
            [REFERENCES["seitzman"]],
        )


class DosenbachAtlas(AtlasLoader):
    """Dosenbach 2010 160 ROIs in 6 networks (incl. cerebellum) as spheres; bundled with nilearn."""

    name = "dosenbach"

    @dataclass
    class Config:
        #: Sphere radius in mm (the closest centres are 8.5 mm apart: 4 mm spheres do not
        #: overlap on 1-3 mm grids, 5 mm ones do on a 3 mm grid).
        radius: float = 4.0

    def __init__(self, config=None):
        super().__init__(config)
        check_radius(self.config.radius)

    def load(self) -> Atlas:
        from nilearn.datasets import fetch_coords_dosenbach_2010

        what = f"atlas '{self.name}'"
        b = fetch_coords_dosenbach_2010(ordered_regions=False)
        xyz = b["rois"][["x", "y", "z"]].to_numpy(dtype=float)
        rows = []
        for label, net, c in zip(b["labels"], b["networks"], xyz):
            network, sub = map_network(net, what)
            rows.append({
                "label": str(label), "network": network, "subnetwork": sub,
                "system": COORD_SYSTEM[network], "hemisphere": hemisphere(c[0]),
                "roi": int(str(label).rsplit(" ", 1)[-1]),
            })
        return _coords_atlas(
            self.name, rows, xyz, self.config.radius,
            f"Dosenbach 2010 ROIs: {len(rows)} spheres of {self.config.radius:g} mm in 6 networks.",
            [REFERENCES["dosenbach"]],
        )


class PowerAtlas(AtlasLoader):
    """Power 2011 264 ROIs as spheres; needs a user-supplied network file (nilearn has none)."""

    name = "power"

    @dataclass
    class Config:
        #: Table (TSV or CSV) with columns ``roi`` (1-264, nilearn's order) and ``network``
        #: (Power's names, e.g. 'Default mode', 'Sensory/somatomotor Hand', 'Uncertain', or
        #: megafc network names); optional ``subnetwork`` and ``system`` columns override
        #: the mapping. Required: megafc does not ship Power's network assignment.
        networks: Optional[str] = None
        #: Sphere radius in mm (Power 2011 used 10 mm diameter spheres; centres are >= 10 mm apart).
        radius: float = 5.0

    def __init__(self, config=None):
        super().__init__(config)
        check_radius(self.config.radius)
        if not self.config.networks:
            raise ConfigError(
                "config key 'atlas.networks' is not set: nilearn's Power 2011 coordinates carry no "
                "network labels and megafc does not ship them. Pass atlas.networks=<table> with "
                "columns 'roi' (1-264) and 'network' (Power's names such as 'Default mode', from "
                "the consensus assignment in Power et al. 2011's supplementary material)"
            )

    def load(self) -> Atlas:
        from nilearn.datasets import fetch_coords_power_2011

        what = f"atlas '{self.name}'"
        path = require_file(self.config.networks, "atlas.networks", what)
        table = read_network_table(path, what)
        b = fetch_coords_power_2011()
        rois = b["rois"]
        n = len(rois)
        rois_in_table = set(table["roi"])
        expected = set(int(r) for r in rois["roi"])
        if rois_in_table != expected:
            missing = sorted(expected - rois_in_table)[:10]
            extra = sorted(rois_in_table - expected)[:10]
            raise InputError(
                f"{what}: network table '{path}' must list each ROI 1-{n} once; "
                f"missing {missing}, unknown {extra}"
            )
        table = table.set_index("roi")
        rows, coords, dropped = [], [], 0
        for roi, x, y, z in rois[["roi", "x", "y", "z"]].itertuples(index=False):
            entry = table.loc[int(roi)]
            mapped = _table_network(entry, what, path)
            if mapped is None:
                dropped += 1
                continue
            network, sub, system = mapped
            rows.append({
                "label": f"ROI{int(roi):03d}_{sub}", "network": network, "subnetwork": sub,
                "system": system, "hemisphere": hemisphere(x), "roi": int(roi),
            })
            coords.append((x, y, z))
        return _coords_atlas(
            self.name, rows, coords, self.config.radius,
            f"Power 2011 ROIs: {len(rows)} of {n} spheres of {self.config.radius:g} mm with networks "
            f"from {path.name} ({dropped} without a network left out).",
            [REFERENCES["power"]],
        )


def read_network_table(path: Path, what: str) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, sep=None, engine="python", dtype=str)
    except Exception as exc:
        raise InputError(f"{what}: cannot read network table '{path}': {exc}") from exc
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in ("roi", "network") if c not in table.columns]
    if missing:
        raise InputError(f"{what}: network table '{path}' lacks column(s) {missing}; it needs roi and network")
    try:
        table["roi"] = table["roi"].astype(int)
    except ValueError as exc:
        raise InputError(f"{what}: network table '{path}': column 'roi' must hold integers") from exc
    dup = sorted(set(table["roi"][table["roi"].duplicated()]))
    if dup:
        raise InputError(f"{what}: network table '{path}' lists ROI(s) {dup[:10]} more than once")
    return table


def _table_network(entry: pd.Series, what: str, path: Path) -> tuple[str, str, str] | None:
    name = str(entry["network"]).strip()
    system = str(entry.get("system", "") or "").strip()
    system = "" if system.lower() == "nan" else system
    if system:
        sub = str(entry.get("subnetwork", "") or "").strip()
        return name, (sub if sub and sub.lower() != "nan" else name), system
    mapped = map_network(name, f"{what}: network table '{path}'")
    if mapped is None:
        return None
    network, sub = mapped
    own = str(entry.get("subnetwork", "") or "").strip()
    return network, (own if own and own.lower() != "nan" else sub), COORD_SYSTEM[network]
