"""The ``schaefer`` atlas: Schaefer 2018 cortical parcels with their Yeo-7/17 networks.

Files come from nilearn's ``fetch_atlas_schaefer_2018``, which reads them from
``<data_dir>/schaefer_2018/`` and downloads them (from the CBIG GitHub repository, release
v0.14.3) only when they are missing there. It needs two files per atlas version:

- ``Schaefer2018_<n_rois>Parcels_<yeo_networks>Networks_order.txt``: tab-separated lines
  ``<value> <label> <r> <g> <b> 0`` without header (value 1..n_rois);
- ``Schaefer2018_<n_rois>Parcels_<yeo_networks>Networks_order_FSLMNI152_<res>mm.nii.gz``.

These images are in FSL's MNI152 space, TemplateFlow's ``MNI152NLin6Asym`` (the atlas's
``space``), not in fMRIPrep's default output space ``MNI152NLin2009cAsym``.

``atlas.source=templateflow`` reads the atlas from TemplateFlow instead, in the space of your
fMRIPrep outputs: ``atlas.template=MNI152NLin2009cAsym`` (default) or ``MNI152NLin6Asym``, from
the TemplateFlow home (``atlas.templateflow_home``, else ``$TEMPLATEFLOW_HOME``, else
``~/.cache/templateflow``; fMRIPrep users usually have one already), e.g.::

    megafc dataset=fmriprep ... atlas=schaefer atlas.source=templateflow \
        atlas.template=MNI152NLin2009cAsym atlas.n_rois=400 atlas.resolution_mm=2

It uses ``tpl-<template>/tpl-<template>_res-0<resolution_mm>_atlas-Schaefer2018_desc-<n_rois>
Parcels<yeo_networks>Networks_dseg.nii.gz`` and ``tpl-<template>_atlas-Schaefer2018_desc-
<n_rois>Parcels<yeo_networks>Networks_dseg.tsv``; files not yet downloaded are fetched once
(``atlas.download=false``: never, an error names the files and the command that fetches them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pandas as pd

from megafc.core import Atlas, AtlasLoader, ConfigError, InputError

from ._files import REFERENCES, check_image_labels, fetch_with_nilearn
from ._templateflow import check_source_and_template, fetch_templateflow_atlas
from .schaefer_names import parse_schaefer_label

N_ROIS = tuple(range(100, 1001, 100))
#: Values of ``atlas.source`` of the Schaefer atlas.
SOURCES = ("nilearn", "templateflow")
#: The space of nilearn's Schaefer images (FSL MNI152 = TemplateFlow's MNI152NLin6Asym).
NILEARN_SPACE = "MNI152NLin6Asym"


def schaefer_files(n_rois: int, yeo_networks: int, resolution_mm: int) -> list[str]:
    """The files nilearn's fetcher needs inside ``<data_dir>/schaefer_2018/``."""
    return [
        f"Schaefer2018_{n_rois}Parcels_{yeo_networks}Networks_order.txt",
        f"Schaefer2018_{n_rois}Parcels_{yeo_networks}Networks_order_FSLMNI152_{resolution_mm}mm.nii.gz",
    ]


def check_choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"config key '{key}' is {value!r}; expected one of {list(allowed)}")


class SchaeferAtlas(AtlasLoader):
    """Schaefer 2018 cortical parcellation (100-1000 parcels, Yeo 7/17 networks; nilearn or TemplateFlow)."""

    name = "schaefer"
    packages = ("templateflow",)  # atlas.source=templateflow

    @dataclass
    class Config:
        #: Number of parcels: 100, 200, ..., 1000.
        n_rois: int = 400
        #: Network solution the parcels are labelled with: 7 or 17 (17 adds subnetworks).
        yeo_networks: int = 17
        #: Voxel size of the label image in mm: 1 or 2.
        resolution_mm: int = 1
        #: Folder holding ``schaefer_2018/`` (None: nilearn's default data folders; source=nilearn).
        data_dir: Optional[str] = None
        #: Download missing files (false: fail at once when they are missing).
        download: bool = True
        #: Where the files come from: "nilearn" (FSL MNI152 images) or "templateflow".
        source: str = "nilearn"
        #: TemplateFlow template = space of the image (source=templateflow): MNI152NLin2009cAsym
        #: or MNI152NLin6Asym; pick your fMRIPrep output space.
        template: str = "MNI152NLin2009cAsym"
        #: TemplateFlow home (None: $TEMPLATEFLOW_HOME, else ~/.cache/templateflow).
        templateflow_home: Optional[str] = None

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        check_choice("atlas.n_rois", c.n_rois, N_ROIS)
        check_choice("atlas.yeo_networks", c.yeo_networks, (7, 17))
        check_choice("atlas.resolution_mm", c.resolution_mm, (1, 2))
        check_source_and_template(c.source, c.template, SOURCES)

    def load(self) -> Atlas:
        c = self.config
        what = f"atlas '{self.name}' (Schaefer 2018, {c.n_rois} parcels, {c.yeo_networks} networks)"
        if c.source == "templateflow":
            tf = fetch_templateflow_atlas(
                what, c.template, "Schaefer2018", f"{c.n_rois}Parcels{c.yeo_networks}Networks", c.resolution_mm,
                home=c.templateflow_home, download=c.download,
            )
            pairs, maps, space = tf.pairs, str(tf.image), c.template
            origin = f"TemplateFlow {c.template}"
        else:
            pairs, maps = self._from_nilearn(what)
            space, origin = NILEARN_SPACE, f"nilearn, FSL MNI152 = {NILEARN_SPACE}"
        if len(pairs) != c.n_rois:
            raise InputError(f"{what}: the label file lists {len(pairs)} parcels, expected {c.n_rois}")
        regions = pd.DataFrame([parse_schaefer_label(label) for _, label in pairs])
        regions.insert(0, "index", [i for i, _ in pairs])
        if c.source != "templateflow":  # the TemplateFlow route checked its image already
            check_image_labels(maps, list(regions["index"]), what)
        return Atlas(
            name=self.name,
            regions=regions,
            maps=maps,
            description=(
                f"Schaefer 2018 cortical parcellation with {c.n_rois} parcels labelled by the "
                f"Yeo {c.yeo_networks}-network solution ({c.resolution_mm} mm label image, {origin})."
            ),
            references=[REFERENCES["schaefer"], REFERENCES["yeo"]],
            space=space,
        )

    def _from_nilearn(self, what: str) -> tuple[list[tuple[int, str]], str]:
        """(image value, label) pairs and the image path from nilearn's fetcher."""
        from nilearn.datasets import fetch_atlas_schaefer_2018

        c = self.config
        bunch = fetch_with_nilearn(
            what, "schaefer_2018", schaefer_files(c.n_rois, c.yeo_networks, c.resolution_mm),
            lambda d: fetch_atlas_schaefer_2018(
                n_rois=c.n_rois, yeo_networks=c.yeo_networks, resolution_mm=c.resolution_mm,
                data_dir=d, verbose=0,
            ),
            c.data_dir, c.download,
        )
        return fetched_labels(bunch, what), str(bunch["maps"])


def fetched_labels(bunch: Any, what: str) -> list[tuple[int, str]]:
    """(image value, label) pairs from a nilearn atlas bunch, background left out.

    nilearn >= 0.11 gives a look-up table ``lut`` (columns index, name; row 0 Background);
    older versions give ``labels`` only, as str or bytes, with or without a Background entry,
    where label k (counting from 1 after any Background) is image value k.
    """
    lut = bunch.get("lut") if hasattr(bunch, "get") else None
    if lut is not None and {"index", "name"} <= set(lut.columns):
        pairs = [(int(i), _text(n)) for i, n in zip(lut["index"], lut["name"])]
    else:
        labels = [_text(n) for n in bunch["labels"]]
        if labels and labels[0].lower() == "background":
            labels = labels[1:]
        pairs = [(k + 1, n) for k, n in enumerate(labels)]
    pairs = [(i, n) for i, n in pairs if i != 0 and n.lower() != "background"]
    if not pairs:
        raise InputError(f"{what}: the fetched atlas has no region labels")
    return sorted(pairs)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
