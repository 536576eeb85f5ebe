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

from megafc.core import Atlas, AtlasLoader, ConfigError

from ._files import REFERENCES
from ._templateflow import FileOrTemplateFlowConfig, check_file_or_templateflow, load_file_or_templateflow
from .schaefer_names import parse_subcortical_label


class TianAtlas(AtlasLoader):
    """Melbourne subcortex atlas (Tian 2020) S1-S4 from a local label image and label file, or TemplateFlow."""

    name = "tian"
    packages = ("templateflow",)  # atlas.source=templateflow

    @dataclass
    class Config(FileOrTemplateFlowConfig):
        #: Path of the label image, e.g. Tian_Subcortex_S2_3T.nii (required with source=files).
        image: Optional[str] = None
        #: Path of the label file, e.g. Tian_Subcortex_S2_3T_label.txt (required with source=files;
        #: one label per line, or '<value> <label>' lines, or a table with index and label columns).
        labels: Optional[str] = None
        #: Tian scale S1-S4 (16, 32, 50, 54 regions) of the TemplateFlow files: 1-4.
        scale: int = 1

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        check_file_or_templateflow(c, hint=(
            "pass the Melbourne subcortex atlas files from https://github.com/yetianmed/subcortex, "
            "e.g. atlas.image=.../Tian_Subcortex_S1_3T.nii atlas.labels=.../Tian_Subcortex_S1_3T_label.txt, "
            "or read them from TemplateFlow with atlas.source=templateflow"))
        if c.scale not in (1, 2, 3, 4):
            raise ConfigError(f"config key 'atlas.scale' is {c.scale!r}; expected one of [1, 2, 3, 4]")

    def load(self) -> Atlas:
        c = self.config
        what = (f"atlas '{self.name}' (Tian S{c.scale}, {c.template})" if c.source == "templateflow"
                else f"atlas '{self.name}'")
        image, regions, space = load_file_or_templateflow(c, what, "Tian", f"S{c.scale}", parse_subcortical_label)
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
