"""The ``custom`` atlas: any local label image with a label table.

The label table is a TSV with columns ``index`` (the value in the image) and ``label``, and
optionally ``network``, ``subnetwork`` and ``system``; without them, networks are parsed from
Schaefer/Tian/cerebellar-style labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from megafc.core import SYSTEMS, Atlas, AtlasLoader, InputError

from ._files import check_image_labels, load_label_image
from .schaefer_names import NETWORK_SYSTEM, parse_labels


class CustomAtlas(AtlasLoader):
    """A local integer label image + label TSV (index, label[, network, subnetwork, system])."""

    name = "custom"

    @dataclass
    class Config:
        image: str = "???"
        labels: str = "???"

    def load(self) -> Atlas:
        image, labels = Path(self.config.image).expanduser(), Path(self.config.labels).expanduser()
        for p, key in ((image, "atlas.image"), (labels, "atlas.labels")):
            if not p.is_file():
                raise InputError(f"atlas file not found: {p} (config key '{key}')")
        table = read_region_table(labels)
        _, data = load_label_image(image, f"atlas '{self.name}'")
        check_image_labels(image, table["index"].tolist(), f"atlas '{self.name}' (atlas.labels={labels})", data)
        return Atlas(name=self.name, regions=table, maps=str(image),
                     description=f"Custom atlas {image.name} ({len(table)} regions).")


def read_region_table(path: Path) -> pd.DataFrame:
    """The label table, checked line by line: integer, unique indices; a label on every row; the
    network columns given in full (network; subnetwork and system may be left out: subnetwork is
    then the network, system the Schaefer network's) or parsed from Schaefer/Tian/cerebellar labels."""
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=["", "n/a"])
    except Exception as exc:
        raise InputError(f"{path}: not a readable TSV ({exc}) (config key 'atlas.labels')") from exc
    if not {"index", "label"} <= set(table.columns):
        raise InputError(f"{path}: expected columns 'index' and 'label' (config key 'atlas.labels'), "
                         f"got {list(table.columns)}")

    def lines(mask: pd.Series) -> list[int]:
        return (table.index[mask.to_numpy()][:6] + 2).tolist()

    index = pd.to_numeric(table["index"], errors="coerce")
    bad = index.isna() | (index != index.round()) | (index <= 0)
    if bad.any():
        raise InputError(f"{path}: column 'index' must hold the image's positive integer values; line(s) "
                         f"{lines(bad)} hold {table.loc[bad, 'index'].tolist()[:6]}")
    table["index"] = index.astype(int)
    for column, what, mask in (("index", "repeated", table["index"].duplicated(keep=False)),
                               ("label", "empty", table["label"].isna()),
                               ("label", "repeated", table["label"].duplicated(keep=False) & table["label"].notna())):
        if mask.any():
            raise InputError(f"{path}: column '{column}' is {what} at line(s) {lines(mask)}; expected one row per "
                             "region, each with its own image value and label")
    table = table.sort_values("index").reset_index(drop=True)
    given = [c for c in ("network", "subnetwork", "system") if c in table.columns]
    if not given:
        try:
            parsed = parse_labels(table["label"].astype(str).tolist())
        except InputError as exc:
            raise InputError(f"{path}: {exc}; give the networks in columns 'network' (and optionally "
                             "'subnetwork', 'system') instead (config key 'atlas.labels')") from None
        return pd.concat([table[["index"]], parsed], axis=1)
    if "network" not in given:
        raise InputError(f"{path}: has column(s) {given} but no 'network'; give 'network' (subnetwork and "
                         "system may be left out)")
    empty = table["network"].isna()
    if empty.any():
        raise InputError(f"{path}: column 'network' is empty at line(s) {lines(empty)}")
    if "subnetwork" not in given:
        table["subnetwork"] = table["network"]
    if "system" not in given:
        unknown = sorted(set(table["network"]) - set(NETWORK_SYSTEM))
        if unknown:
            raise InputError(f"{path}: no 'system' column, and network(s) {unknown[:6]} are not Schaefer networks "
                             f"whose system megafc knows ({sorted(NETWORK_SYSTEM)}); add a 'system' column "
                             f"(one of {list(SYSTEMS)})")
        table["system"] = table["network"].map(NETWORK_SYSTEM)
    table["subnetwork"] = table["subnetwork"].fillna(table["network"])
    return table
