"""The ``tian`` atlas: the Melbourne subcortex atlas (Tian 2020), scales S1-S4, from local files.

The atlas is not in nilearn; download it from https://github.com/yetianmed/subcortex
(``Group-Parcellation/3T/Subcortex-Only/Tian_Subcortex_S<k>_3T.nii`` and its
``Tian_Subcortex_S<k>_3T_label.txt``, one label per line: line k is image value k) and pass
both paths. Every region's network (and subnetwork) is its structure, from the label's leading
token (see ``schaefer_names.parse_subcortical_label``): Hippocampus, Amygdala, Thalamus,
Accumbens, Pallidum, Putamen, Caudate; system ``subcortical``. Local files have no known space
unless ``atlas.space`` names it (Tian's 3T images are in FSL MNI152, ``MNI152NLin6Asym``; the
repository also has ``MNI152NLin2009cAsym`` versions).

``atlas.source=templateflow`` reads the atlas from a TemplateFlow home instead (see
``_templateflow``), so it sits next to fMRIPrep's templates with a known space. TemplateFlow
itself does not distribute the Tian atlas: put the files there once, named by template (space),
resolution and scale, e.g. for S2 at 1 mm in MNI152NLin6Asym::

    <TEMPLATEFLOW_HOME>/tpl-MNI152NLin6Asym/tpl-MNI152NLin6Asym_res-01_atlas-Tian_desc-S2_dseg.nii.gz
    <TEMPLATEFLOW_HOME>/tpl-MNI152NLin6Asym/tpl-MNI152NLin6Asym_atlas-Tian_desc-S2_dseg.tsv

(``Tian_Subcortex_S2_3T.nii`` gzipped, and a tab-separated table with a header line
``index<TAB>name`` and one row per line of ``Tian_Subcortex_S2_3T_label.txt``: line k is index
k), then run with
``atlas=tian atlas.source=templateflow atlas.template=MNI152NLin6Asym atlas.scale=2``. Use
``tpl-MNI152NLin2009cAsym/tpl-MNI152NLin2009cAsym_...`` names for the 2009cAsym version
(fMRIPrep's default output space) and ``res-02`` for 2 mm images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pandas as pd

from megafc.core import Atlas, AtlasLoader, ConfigError, InputError

from ._files import REFERENCES, local_label_regions
from ._templateflow import FILE_SOURCES, check_source_and_template, fetch_templateflow_atlas
from .schaefer_names import parse_subcortical_label


def require_key(value: Optional[str], key: str, hint: str) -> None:
    if value is None or str(value).strip() == "":
        raise ConfigError(f"config key '{key}' is not set; {hint}")


def check_space_key(space: Optional[str], source: str, template: str) -> None:
    """``atlas.space`` describes local files; with TemplateFlow the space is ``atlas.template``."""
    if space is not None and str(space).strip() == "":
        raise ConfigError("config key 'atlas.space' is empty; name the template space "
                          "(e.g. MNI152NLin6Asym) or leave it unset")
    if source == "templateflow" and space is not None and space != template:
        raise ConfigError(
            f"config key 'atlas.space' is {space!r} but atlas.template is {template!r}; with "
            "atlas.source=templateflow the space is the template: set atlas.template instead"
        )


def templateflow_regions(tf_pairs: list[tuple[int, str]], parse, what: str, table: str) -> pd.DataFrame:
    """Region table (with ``index``) of a TemplateFlow label table, each label parsed by ``parse``."""
    try:
        return pd.DataFrame([{"index": index, **parse(label)} for index, label in tf_pairs])
    except InputError as exc:
        raise InputError(f"{what}: label table '{table}': {exc}") from exc


class TianAtlas(AtlasLoader):
    """Melbourne subcortex atlas (Tian 2020) S1-S4 from a local label image and label file, or TemplateFlow."""

    name = "tian"

    @dataclass
    class Config:
        #: Path of the label image, e.g. Tian_Subcortex_S2_3T.nii (required with source=files).
        image: Optional[str] = None
        #: Path of the label file, e.g. Tian_Subcortex_S2_3T_label.txt (required with source=files;
        #: one label per line, or '<value> <label>' lines, or a table with index and label columns).
        labels: Optional[str] = None
        #: Where the files come from: "files" (image + labels) or "templateflow" (see the module doc).
        source: str = "files"
        #: TemplateFlow template = space of the image (source=templateflow): MNI152NLin2009cAsym
        #: or MNI152NLin6Asym.
        template: str = "MNI152NLin2009cAsym"
        #: TemplateFlow home (None: $TEMPLATEFLOW_HOME, else ~/.cache/templateflow).
        templateflow_home: Optional[str] = None
        #: Voxel size of the TemplateFlow label image in mm (res-01 / res-02): 1 or 2.
        resolution_mm: int = 1
        #: Tian scale S1-S4 (16, 32, 50, 54 regions) of the TemplateFlow files: 1-4.
        scale: int = 1
        #: Template space of local files (source=files), e.g. MNI152NLin6Asym; None: unknown.
        space: Optional[str] = None

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        check_source_and_template(c.source, c.template, FILE_SOURCES)
        check_space_key(c.space, c.source, c.template)
        if c.resolution_mm not in (1, 2):
            raise ConfigError(f"config key 'atlas.resolution_mm' is {c.resolution_mm!r}; expected one of [1, 2]")
        if c.scale not in (1, 2, 3, 4):
            raise ConfigError(f"config key 'atlas.scale' is {c.scale!r}; expected one of [1, 2, 3, 4]")
        if c.source == "files":
            hint = ("pass the Melbourne subcortex atlas files from https://github.com/yetianmed/subcortex, "
                    "e.g. atlas.image=.../Tian_Subcortex_S1_3T.nii atlas.labels=.../Tian_Subcortex_S1_3T_label.txt, "
                    "or read them from TemplateFlow with atlas.source=templateflow")
            require_key(c.image, "atlas.image", hint)
            require_key(c.labels, "atlas.labels", hint)

    def load(self) -> Atlas:
        c = self.config
        what = f"atlas '{self.name}'"
        if c.source == "templateflow":
            what = f"atlas '{self.name}' (Tian S{c.scale}, {c.template})"
            tf = fetch_templateflow_atlas(what, c.template, "Tian", f"S{c.scale}", c.resolution_mm,
                                          home=c.templateflow_home, download=False, distributed=False)
            image, space = tf.image, c.template
            regions = templateflow_regions(tf.pairs, parse_subcortical_label, what, str(tf.table))
        else:
            image, regions = local_label_regions(c.image, c.labels, parse_subcortical_label, what)
            space = c.space
        return Atlas(
            name=self.name,
            regions=regions,
            maps=str(image),
            description=(
                f"Melbourne subcortex atlas (Tian 2020) with {len(regions)} regions in "
                f"{regions['network'].nunique()} structures, from {image.name}."
            ),
            references=[REFERENCES["tian"]],
            space=space,
        )
