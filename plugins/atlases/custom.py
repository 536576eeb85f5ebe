"""The ``custom`` atlas: any local label image with a label table.

The label table is a TSV with columns ``index`` (the value in the image) and ``label``, and
optionally ``network``, ``subnetwork`` and ``system``; without them, networks are parsed from
Schaefer/Tian/cerebellar-style labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from megafc.core import Atlas, AtlasLoader, InputError

from .schaefer_names import parse_labels


class CustomAtlas(AtlasLoader):
    """A local integer label image + label TSV (index, label[, network, subnetwork, system])."""

    name = "custom"

    @dataclass
    class Config:
        image: str = "???"
        labels: str = "???"

    def load(self) -> Atlas:
        import nibabel as nib

        image, labels = Path(self.config.image).expanduser(), Path(self.config.labels).expanduser()
        for p, key in ((image, "atlas.image"), (labels, "atlas.labels")):
            if not p.is_file():
                raise InputError(f"atlas file not found: {p} (config key '{key}')")
        table = pd.read_csv(labels, sep="\t")
        if not {"index", "label"} <= set(table.columns):
            raise InputError(f"{labels}: expected columns 'index' and 'label', got {list(table.columns)}")
        table = table.sort_values("index").reset_index(drop=True)
        if not {"network", "subnetwork", "system"} <= set(table.columns):
            parsed = parse_labels(table["label"].astype(str).tolist())
            table = pd.concat([table[["index"]], parsed], axis=1)
        values = set(np.unique(np.asarray(nib.load(image).dataobj)).astype(int)) - {0}
        absent = [lab for lab, i in zip(table["label"], table["index"]) if int(i) not in values]
        if absent:
            raise InputError(f"{image}: label value(s) of region(s) {absent[:5]} (from {labels.name}) do not occur in the image")
        return Atlas(name=self.name, regions=table, maps=str(image),
                     description=f"Custom atlas {image.name} ({len(table)} regions).")
