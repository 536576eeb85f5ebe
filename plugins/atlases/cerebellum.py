"""The ``cerebellum`` atlas: a cerebellar network atlas (e.g. Buckner 2011) from local files.

Every region belongs to network ``Cerebellum`` (system ``cerebellar``); its subnetwork is
``Cerebellum-<name>``, so cerebellar parts of different cortical networks stay apart at the
subnetwork level. Label file formats (see ``_files.read_label_file``):

- a FreeSurfer-style colour table ``<value> <label> <r> <g> <b> <a>`` such as Buckner's
  ``Buckner2011_7Networks_ColorLUT.txt`` (the ``0 NONE`` line is background);
- a table with a header naming columns ``index`` and ``label``;
- one label per line (line k is image value k).

Labels ``7Networks_k`` / ``17Networks_k`` (Buckner's, which number networks as Yeo 2011 does)
are named after the Schaefer network: ``17Networks_16`` -> ``Cerebellum-DefaultA``. Any other
label is used as it is: ``Lobule_VI`` -> ``Cerebellum-Lobule_VI``. Region labels are the
subnetwork names (each must be unique).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional

from megafc.core import Atlas, AtlasLoader

from ._files import REFERENCES, local_label_regions
from .schaefer_names import yeo_network_name
from .tian import require_key


def cerebellar_region(label: str) -> dict[str, str]:
    """A cerebellar atlas label -> region row (label, network Cerebellum, subnetwork, system)."""
    m = re.fullmatch(r"(7|17)Networks_(\d+)", label)
    name = yeo_network_name(int(m.group(1)), int(m.group(2)))[1] if m else label
    sub = f"Cerebellum-{name}"
    return {"label": sub, "network": "Cerebellum", "subnetwork": sub,
            "system": "cerebellar", "hemisphere": "", "source_label": label}


class CerebellumAtlas(AtlasLoader):
    """Cerebellar network atlas (e.g. Buckner 2011 7/17 networks) from a local image and label file."""

    name = "cerebellum"

    @dataclass
    class Config:
        #: Path of the label image, e.g. Buckner2011_17Networks_MNI152_FreeSurferConformed1mm_
        #: TightMask.nii.gz (required).
        image: Optional[str] = None
        #: Path of the label file, e.g. Buckner2011_17Networks_ColorLUT.txt (required).
        labels: Optional[str] = None
        #: What to cite (the default is Buckner 2011; replace it for another atlas).
        references: List[str] = field(default_factory=lambda: [REFERENCES["buckner"]])

    def __init__(self, config=None):
        super().__init__(config)
        hint = ("pass a cerebellar label image and its label file, e.g. Buckner 2011 from "
                "https://surfer.nmr.mgh.harvard.edu/fswiki/CerebellumParcellation_Buckner2011: "
                "atlas.image=.../Buckner2011_7Networks_MNI152_FreeSurferConformed1mm_TightMask.nii.gz "
                "atlas.labels=.../Buckner2011_7Networks_ColorLUT.txt")
        require_key(self.config.image, "atlas.image", hint)
        require_key(self.config.labels, "atlas.labels", hint)

    def load(self) -> Atlas:
        image, regions = local_label_regions(self.config.image, self.config.labels, cerebellar_region,
                                             f"atlas '{self.name}'")
        return Atlas(
            name=self.name,
            regions=regions,
            maps=str(image),
            description=f"Cerebellar network atlas with {len(regions)} regions, from {image.name}.",
            references=list(self.config.references),
        )
