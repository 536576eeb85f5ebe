"""The built-in synthetic study as a network-pair table, the way a run builds it (shared by the
benchmarks that fit models to it)."""

from __future__ import annotations

import pandas as pd

from megafc.core import mark_uninformative, network_pair_table, validate_scans
from megafc.core.pipeline import estimate_connectomes
from megafc.plugins.atlases.synthetic import SyntheticAtlas
from megafc.plugins.datasets.synthetic import SyntheticDataset
from megafc.plugins.estimators.correlation import FisherZCorrelation


def default_study_pairs(level: str = "network", seed: int = 0) -> pd.DataFrame:
    """Fisher-z network-pair FC of every informative scan of the default synthetic study."""
    atlas = SyntheticAtlas().load()
    inputs = SyntheticDataset().load(atlas, seed=seed)
    scans = mark_uninformative(validate_scans(inputs.scans))
    included = list(scans.loc[~scans.excluded, "scan_id"])
    return network_pair_table(estimate_connectomes(FisherZCorrelation(), inputs.timeseries, included, atlas),
                              atlas, scans, level=level)
