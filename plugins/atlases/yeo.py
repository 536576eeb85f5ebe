"""The ``yeo`` atlas: the Yeo 2011 7- or 17-network cortical parcellation, one region per network.

Files come from nilearn's ``fetch_atlas_yeo_2011``, which reads
``<data_dir>/yeo_2011/Yeo_JNeurophysiol11_MNI152/`` and downloads the whole
``Yeo_JNeurophysiol11_MNI152.zip`` unless all seven files it lists are there (see YEO_FILES),
even though only one image and one colour table are used.

Networks get the Schaefer-2018 names. For 7 networks, Yeo's numbering is Schaefer's order
(1 Vis, 2 SomMot, 3 DorsAttn, 4 SalVentAttn, 5 Limbic, 6 Cont, 7 Default). For 17 networks
the standard correspondence is used (identical colours in both atlases' colour tables):
1 VisCent, 2 VisPeri, 3 SomMotA, 4 SomMotB, 5 DorsAttnA, 6 DorsAttnB, 7 SalVentAttnA,
8 SalVentAttnB, 9 LimbicA (temporal pole), 10 LimbicB (OFC), 11 ContC, 12 ContA, 13 ContB,
14 TempPar, 15 DefaultC, 16 DefaultA, 17 DefaultB; each is the subnetwork of its Yeo-7
network (TempPar belongs to Default, as in schaefer_names).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import pandas as pd

from megafc.core import Atlas, AtlasLoader, InputError

from ._files import REFERENCES, check_image_labels, fetch_with_nilearn
from .schaefer import check_choice, fetched_labels
from .schaefer_names import NETWORK_SYSTEM, yeo_network_name

YEO_FILES = [
    "Yeo_JNeurophysiol11_MNI152/" + f
    for f in (
        "Yeo2011_7Networks_MNI152_FreeSurferConformed1mm.nii.gz",
        "Yeo2011_7Networks_MNI152_FreeSurferConformed1mm_LiberalMask.nii.gz",
        "Yeo2011_17Networks_MNI152_FreeSurferConformed1mm.nii.gz",
        "Yeo2011_17Networks_MNI152_FreeSurferConformed1mm_LiberalMask.nii.gz",
        "Yeo2011_7Networks_ColorLUT.txt",
        "Yeo2011_17Networks_ColorLUT.txt",
        "FSL_MNI152_FreeSurferConformed_1mm.nii.gz",
    )
]


class YeoAtlas(AtlasLoader):
    """Yeo 2011 cortical networks (7 or 17), one region per network, Schaefer names (nilearn fetch)."""

    name = "yeo"

    @dataclass
    class Config:
        #: 7 or 17 networks.
        n_networks: int = 7
        #: Which version: "thick" (fitted to thick cortex; nilearn's default) or "thin".
        thickness: str = "thick"
        #: Folder holding ``yeo_2011/`` (None: nilearn's default data folders).
        data_dir: Optional[str] = None
        #: Let nilearn download missing files (false: fail at once when they are missing).
        download: bool = True

    def __init__(self, config=None):
        super().__init__(config)
        check_choice("atlas.n_networks", self.config.n_networks, (7, 17))
        check_choice("atlas.thickness", self.config.thickness, ("thick", "thin"))

    def load(self) -> Atlas:
        from nilearn.datasets import fetch_atlas_yeo_2011

        c = self.config
        what = f"atlas '{self.name}' (Yeo 2011, {c.n_networks} networks)"
        bunch = fetch_with_nilearn(
            what, "yeo_2011", YEO_FILES,
            lambda d: fetch_atlas_yeo_2011(
                n_networks=c.n_networks, thickness=c.thickness, data_dir=d, verbose=0
            ),
            c.data_dir, c.download,
        )
        rows = []
        for index, label in fetched_labels(bunch, what):
            m = re.fullmatch(r"(\d+)Networks_(\d+)", label)
            if not m or int(m.group(1)) != c.n_networks or int(m.group(2)) != index:
                raise InputError(
                    f"{what}: colour-table entry {index} is named '{label}', expected "
                    f"'{c.n_networks}Networks_{index}'"
                )
            network, subnetwork = yeo_network_name(c.n_networks, index)
            rows.append({
                "index": index, "label": f"Yeo{c.n_networks}_{subnetwork}", "network": network,
                "subnetwork": subnetwork, "system": NETWORK_SYSTEM[network], "hemisphere": "",
            })
        regions = pd.DataFrame(rows)
        maps = str(bunch["maps"])
        check_image_labels(maps, list(regions["index"]), what)
        return Atlas(
            name=self.name,
            regions=regions,
            maps=maps,
            description=(
                f"Yeo 2011 {c.n_networks}-network cortical parcellation ({c.thickness} version, "
                "1 mm MNI152), one bilateral region per network, named as in Schaefer 2018."
            ),
            references=[REFERENCES["yeo"]],
        )
