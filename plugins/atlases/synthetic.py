"""The ``synthetic`` atlas: Schaefer-17-style cortex plus Tian S1 subcortex and cerebellum.

Labels follow the real atlases' naming, so analyses written against it run unchanged on the
real Schaefer/Tian atlases later. It has no image: it exists for simulated data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from megafc.core import Atlas, AtlasLoader, ConfigError

from .schaefer_names import TIAN_S1_STRUCTURES, parse_labels

#: Relative size of each Yeo-17 subnetwork (approximately Schaefer-100's region counts),
#: with an anatomical token for its labels.
SUBNETWORK_WEIGHTS: dict[str, tuple[int, str]] = {
    "VisCent": (8, "ExStr"), "VisPeri": (6, "StriCal"), "SomMotA": (10, "Aud"),
    "SomMotB": (8, "S2"), "DorsAttnA": (6, "TempOcc"), "DorsAttnB": (6, "PostC"),
    "SalVentAttnA": (8, "Ins"), "SalVentAttnB": (6, "PFCl"), "LimbicA": (4, "TempPole"),
    "LimbicB": (3, "OFC"), "ContA": (6, "IPS"), "ContB": (5, "PFClv"), "ContC": (3, "pCun"),
    "DefaultA": (7, "pCunPCC"), "DefaultB": (7, "PFCd"), "DefaultC": (4, "PHC"),
    "TempPar": (3, "TempPar"),
}


#: Plausible MNI centres (left hemisphere; x is mirrored for the right) of each subnetwork and
#: structure, for drawing brains; the synthetic data have no anatomy.
CENTRES: dict[str, tuple[float, float, float]] = {
    "VisCent": (-30, -88, 4), "VisPeri": (-10, -80, 6), "SomMotA": (-38, -22, 56), "SomMotB": (-52, -20, 18),
    "DorsAttnA": (-46, -64, 0), "DorsAttnB": (-30, -48, 56), "SalVentAttnA": (-38, 4, 4),
    "SalVentAttnB": (-36, 40, 26), "LimbicA": (-40, 10, -32), "LimbicB": (-14, 36, -20), "ContA": (-42, -50, 44),
    "ContB": (-44, 30, 8), "ContC": (-8, -66, 40), "DefaultA": (-6, -54, 28), "DefaultB": (-8, 50, 20),
    "DefaultC": (-26, -30, -16), "TempPar": (-54, -48, 12), "Hippocampus": (-27, -22, -14),
    "Amygdala": (-23, -4, -18), "Thalamus": (-10, -18, 8), "Accumbens": (-10, 12, -8), "Pallidum": (-20, -4, 0),
    "Putamen": (-25, 3, 0), "Caudate": (-13, 12, 10), "Cerebellum": (-26, -66, -34),
}


def display_positions(regions, seed: int = 0) -> np.ndarray:
    """Each region near its subnetwork's centre, mirrored by hemisphere, spread a few mm."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(regions), 3))
    for i, (label, sub, net) in enumerate(regions[["label", "subnetwork", "network"]].itertuples(index=False)):
        x, y, z = CENTRES.get(sub, CENTRES.get(net, (0.0, 0.0, 0.0)))
        right = "_RH_" in label or label.endswith("-rh")
        out[i] = (-x if right else x, y, z) + rng.normal(0, 4, 3)
    return out


class SyntheticAtlas(AtlasLoader):
    """Schaefer-17-named cortical parcels + Tian S1 subcortex + cerebellum, without images."""

    name = "synthetic"

    @dataclass
    class Config:
        #: Number of cortical parcels (split over 17 subnetworks and two hemispheres).
        n_cortical: int = 100
        #: Include the 16 Tian S1 subcortical regions (caudate, putamen, thalamus, ...).
        subcortical: bool = True
        #: Number of cerebellar regions (0 for none).
        n_cerebellar: int = 8

    def __init__(self, config=None):
        super().__init__(config)
        if self.config.n_cortical < 2 * len(SUBNETWORK_WEIGHTS):
            raise ConfigError(
                f"config key 'atlas.n_cortical' is {self.config.n_cortical}; expected at least "
                f"{2 * len(SUBNETWORK_WEIGHTS)} (one region per subnetwork and hemisphere)"
            )
        if self.config.n_cerebellar < 0:
            raise ConfigError("config key 'atlas.n_cerebellar' must be >= 0")

    def load(self) -> Atlas:
        labels = []
        weights = np.array([w for w, _ in SUBNETWORK_WEIGHTS.values()], dtype=float)
        per_hemi = np.maximum(1, np.round(weights / weights.sum() * self.config.n_cortical / 2)).astype(int)
        # fix rounding so the total is exactly n_cortical (largest networks absorb the rest)
        diff = self.config.n_cortical // 2 - per_hemi.sum()
        order = np.argsort(-weights)
        for k in range(abs(int(diff))):
            i = order[k % len(order)]
            if diff > 0 or per_hemi[i] > 1:
                per_hemi[i] += int(np.sign(diff))
        for hemi in ("LH", "RH"):
            for (sub, (_, token)), n in zip(SUBNETWORK_WEIGHTS.items(), per_hemi):
                labels += [f"17Networks_{hemi}_{sub}_{token}_{i + 1}" for i in range(n)]
        if self.config.n_cortical % 2:
            labels.append("17Networks_RH_DefaultA_pCunPCC_99")
        if self.config.subcortical:
            labels += [f"{p}-{h}" for h in ("rh", "lh") for p in TIAN_S1_STRUCTURES]
        half = self.config.n_cerebellar // 2
        labels += [f"Cerebellum_LH_{i + 1}" for i in range(half)]
        labels += [f"Cerebellum_RH_{i + 1}" for i in range(self.config.n_cerebellar - half)]
        regions = parse_labels(labels)
        return Atlas(
            name=self.name,
            regions=regions,
            positions=display_positions(regions),
            description=(
                f"Synthetic atlas: {self.config.n_cortical} cortical parcels named as "
                "Schaefer-2018 17-network, "
                + ("16 Tian S1 subcortical regions, " if self.config.subcortical else "")
                + f"{self.config.n_cerebellar} cerebellar regions (no images)."
            ),
        )
