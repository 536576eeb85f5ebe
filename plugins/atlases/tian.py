"""The ``tian`` atlas: the Melbourne subcortex atlas (Tian 2020), scales S1-S4, from local files.

The atlas is not in nilearn; download it from https://github.com/yetianmed/subcortex
(``Group-Parcellation/3T/Subcortex-Only/Tian_Subcortex_S<k>_3T.nii`` and its
``Tian_Subcortex_S<k>_3T_label.txt``, one label per line: line k is image value k) and pass
both paths. Every region's network (and subnetwork) is its structure, from the label's leading
token (see ``schaefer_names.parse_subcortical_label``): Hippocampus, Amygdala, Thalamus,
Accumbens, Pallidum, Putamen, Caudate; system ``subcortical``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from megafc.core import Atlas, AtlasLoader, ConfigError

from ._files import REFERENCES, local_label_regions
from .schaefer_names import parse_subcortical_label


def require_key(value: Optional[str], key: str, hint: str) -> None:
    if value is None or str(value).strip() == "":
        raise ConfigError(f"config key '{key}' is not set; {hint}")


class TianAtlas(AtlasLoader):
    """Melbourne subcortex atlas (Tian 2020) S1-S4 from a local label image and label file."""

    name = "tian"

    @dataclass
    class Config:
        #: Path of the label image, e.g. Tian_Subcortex_S2_3T.nii (required).
        image: Optional[str] = None
        #: Path of the label file, e.g. Tian_Subcortex_S2_3T_label.txt (required; one label
        #: per line, or '<value> <label>' lines, or a table with index and label columns).
        labels: Optional[str] = None

    def __init__(self, config=None):
        super().__init__(config)
        hint = ("pass the Melbourne subcortex atlas files from https://github.com/yetianmed/subcortex, "
                "e.g. atlas.image=.../Tian_Subcortex_S1_3T.nii atlas.labels=.../Tian_Subcortex_S1_3T_label.txt")
        require_key(self.config.image, "atlas.image", hint)
        require_key(self.config.labels, "atlas.labels", hint)

    def load(self) -> Atlas:
        image, regions = local_label_regions(self.config.image, self.config.labels, parse_subcortical_label,
                                             f"atlas '{self.name}'")
        return Atlas(
            name=self.name,
            regions=regions,
            maps=str(image),
            description=(
                f"Melbourne subcortex atlas (Tian 2020) with {len(regions)} regions in "
                f"{regions['network'].nunique()} structures, from {image.name}."
            ),
            references=[REFERENCES["tian"]],
        )
