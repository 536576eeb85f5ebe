"""Simulated network-pair tables with known truth, shared by tests and benchmarks."""

from __future__ import annotations

from megafc.core import mark_uninformative, mark_unpaired, network_pair_table, validate_scans, with_summaries
from megafc.core.pipeline import estimate_connectomes
from megafc.plugins.atlases.synthetic import SyntheticAtlas
from megafc.plugins.datasets.synthetic import SyntheticDataset
from megafc.plugins.estimators.correlation import FisherZCorrelation

#: A smaller atlas with the same 15 networks (120 pairs) as the default: simulates much faster.
SMALL_ATLAS = dict(n_cortical=34, n_cerebellar=2)


def simulate_pairs(scale: float = 1.0, n_volumes: int = 200, sites=None, seed: int = 0,
                   atlas: dict | None = None, level: str = "network", paired: bool = True, summaries: bool = True,
                   **dataset):
    """(network-pair table, truth table) from the built-in synthetic study.

    ``paired``: keep only scans a paired-difference model can use (as the pipeline does for
    such models); otherwise every scan of a dataset with drug and control scans.
    ``summaries``: add the built-in summaries as outcomes (as the pipeline does).
    ``dataset``: further SyntheticDataset config values (design, drug_scans, site_noise, ...).
    """
    atlas_ = SyntheticAtlas(SyntheticAtlas.Config(**(atlas or {}))).load()
    cfg = SyntheticDataset.Config(scale=scale, n_volumes=n_volumes, **dataset)
    if sites is not None:
        cfg.sites = sites
    inputs = SyntheticDataset(cfg).load(atlas_, seed)
    scans = (mark_unpaired if paired else mark_uninformative)(validate_scans(inputs.scans))
    included = list(scans.loc[~scans.excluded, "scan_id"])
    conn = estimate_connectomes(FisherZCorrelation(), inputs.timeseries, included, atlas_)
    pairs = network_pair_table(conn, atlas_, scans, level=level)
    return (with_summaries(pairs, atlas_) if summaries else pairs), inputs.truth
