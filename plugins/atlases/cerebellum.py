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
subnetwork names (each must be unique). Local files have no known space unless ``atlas.space``
names it (Buckner's ``*_MNI152_FreeSurferConformed1mm*`` images are in FSL MNI152,
``MNI152NLin6Asym``).

``atlas.source=templateflow`` reads Buckner 2011 (``atlas.networks`` 7 or 17) from a
TemplateFlow home instead (see ``_templateflow``), so it sits next to fMRIPrep's templates with a
known space. TemplateFlow itself does not distribute this atlas: put the files there once, named
by template (space), resolution and network count, e.g. for 17 networks at 1 mm::

    <TEMPLATEFLOW_HOME>/tpl-MNI152NLin6Asym/tpl-MNI152NLin6Asym_res-01_atlas-Buckner2011_desc-17Networks_dseg.nii.gz
    <TEMPLATEFLOW_HOME>/tpl-MNI152NLin6Asym/tpl-MNI152NLin6Asym_atlas-Buckner2011_desc-17Networks_dseg.tsv

(``Buckner2011_17Networks_MNI152_FreeSurferConformed1mm_TightMask.nii.gz``, and a tab-separated
table with a header line ``index<TAB>name`` and rows ``1<TAB>17Networks_1`` ...
``17<TAB>17Networks_17`` as in ``Buckner2011_17Networks_ColorLUT.txt``), then run with ``atlas=cerebellum
atlas.source=templateflow atlas.template=MNI152NLin6Asym atlas.networks=17``. Use
``tpl-MNI152NLin2009cAsym/tpl-MNI152NLin2009cAsym_...`` names for an image resampled to
fMRIPrep's default output space, and ``res-02`` for 2 mm images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional

from megafc.core import Atlas, AtlasLoader, ConfigError

from ._files import REFERENCES
from ._templateflow import FileOrTemplateFlowConfig, check_file_or_templateflow, load_file_or_templateflow
from .schaefer_names import yeo_network_name


def cerebellar_region(label: str) -> dict[str, str]:
    """A cerebellar atlas label -> region row (label, network Cerebellum, subnetwork, system)."""
    m = re.fullmatch(r"(7|17)Networks_(\d+)", label)
    name = yeo_network_name(int(m.group(1)), int(m.group(2)))[1] if m else label
    sub = f"Cerebellum-{name}"
    return {"label": sub, "network": "Cerebellum", "subnetwork": sub,
            "system": "cerebellar", "hemisphere": "", "source_label": label}


class CerebellumAtlas(AtlasLoader):
    """Cerebellar network atlas (e.g. Buckner 2011 7/17 networks) from a local image and label file, or TemplateFlow."""

    name = "cerebellum"
    packages = ("templateflow",)  # atlas.source=templateflow

    @dataclass
    class Config(FileOrTemplateFlowConfig):
        #: Path of the label image, e.g. Buckner2011_17Networks_MNI152_FreeSurferConformed1mm_
        #: TightMask.nii.gz (required with source=files).
        image: Optional[str] = None
        #: Path of the label file, e.g. Buckner2011_17Networks_ColorLUT.txt (required with source=files).
        labels: Optional[str] = None
        #: What to cite (the default is Buckner 2011; replace it for another atlas).
        references: List[str] = field(default_factory=lambda: [REFERENCES["buckner"]])
        #: Buckner 2011 network solution of the TemplateFlow files: 7 or 17.
        networks: int = 17

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        check_file_or_templateflow(c, hint=(
            "pass a cerebellar label image and its label file, e.g. Buckner 2011 from "
            "https://surfer.nmr.mgh.harvard.edu/fswiki/CerebellumParcellation_Buckner2011: "
            "atlas.image=.../Buckner2011_7Networks_MNI152_FreeSurferConformed1mm_TightMask.nii.gz "
            "atlas.labels=.../Buckner2011_7Networks_ColorLUT.txt, or read them from TemplateFlow "
            "with atlas.source=templateflow"))
        if c.networks not in (7, 17):
            raise ConfigError(f"config key 'atlas.networks' is {c.networks!r}; expected one of [7, 17]")

    def load(self) -> Atlas:
        c = self.config
        what = (f"atlas '{self.name}' (Buckner 2011, {c.networks} networks, {c.template})"
                if c.source == "templateflow" else f"atlas '{self.name}'")
        image, regions, space = load_file_or_templateflow(c, what, "Buckner2011", f"{c.networks}Networks",
                                                          cerebellar_region)
        return Atlas(
            name=self.name,
            regions=regions,
            maps=str(image),
            description=f"Cerebellar network atlas with {len(regions)} regions, from {image.name}.",
            references=list(c.references),
            space=space,
        )
