"""The ``from_labels`` atlas: networks parsed from the data's own region labels.

For precomputed timeseries or connectomes whose headers carry Schaefer-style labels
(``17Networks_LH_DefaultA_pCunPCC_1``), Tian subcortical labels (``CAU-lh``) or cerebellar
labels (``Cerebellum_LH_1``): no atlas files are needed.
"""

from __future__ import annotations

from megafc.core import Atlas, AtlasLoader

from .schaefer_names import parse_labels


class FromLabelsAtlas(AtlasLoader):
    """Regions and networks parsed from the dataset's region labels (no atlas files)."""

    name = "from_labels"
    needs_data_labels = True

    def load_labels(self, labels: list[str]) -> Atlas:
        regions = parse_labels(labels)
        return Atlas(name=self.name, regions=regions,
                     description=f"Regions and networks parsed from {len(labels)} region labels in the data.")

    def load(self) -> Atlas:
        from megafc.core import ConfigError

        raise ConfigError("atlas 'from_labels' needs the region labels of a timeseries or connectomes dataset")
