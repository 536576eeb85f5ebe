"""Time and memory of each stage of the default experiment (prints figures; asserts nothing).

    python benchmarks/default_experiment.py [--scale 1.0] [--sampler auto] [--draws N] [--level network]
"""

from __future__ import annotations

import argparse
import resource
import time

from megafc.core import mark_uninformative, network_pair_table, validate_scans, with_summaries
from megafc.core.pipeline import estimate_connectomes
from megafc.plugins.atlases.synthetic import SyntheticAtlas
from megafc.plugins.datasets.synthetic import SyntheticDataset
from megafc.plugins.estimators.correlation import FisherZCorrelation
from megafc.plugins.pooling.pymc_scan_level import PyMCPooling


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--sampler", default="auto")
    ap.add_argument("--draws", type=int, default=None, help="default: the model's")
    ap.add_argument("--level", default="network", choices=["network", "subnetwork"])
    args = ap.parse_args()

    t0 = time.perf_counter()
    atlas = SyntheticAtlas().load()
    inputs = SyntheticDataset(SyntheticDataset.Config(scale=args.scale)).load(atlas, seed=0)
    scans = mark_uninformative(validate_scans(inputs.scans))
    included = list(scans.loc[~scans.excluded, "scan_id"])
    t1 = time.perf_counter()
    conn = estimate_connectomes(FisherZCorrelation(), inputs.timeseries, included, atlas)
    t2 = time.perf_counter()
    pairs = with_summaries(network_pair_table(conn, atlas, scans, level=args.level), atlas)  # as a run fits them
    t3 = time.perf_counter()
    config = PyMCPooling.Config(sampler=args.sampler, progressbar=False, predictive_checks=False)
    if args.draws:
        config.draws = args.draws
    pooling = PyMCPooling(config)
    result = pooling.fit(pairs, seed=0)
    t4 = time.perf_counter()
    d = result.diagnostics
    n_outcomes = pairs.groupby(["network_a", "network_b"]).ngroups
    n_summaries = pairs.attrs["summaries"]["summary"].nunique()
    print(f"scans included         {len(included)} of {len(scans)} ({atlas.n_regions} regions, "
          f"{n_outcomes - n_summaries} network pairs + {n_summaries} summaries)")
    print(f"simulate               {t1 - t0:7.1f} s")
    print(f"connectivity           {t2 - t1:7.1f} s  ({len(included) / (t2 - t1):.0f} scans/s)")
    print(f"aggregate              {t3 - t2:7.1f} s")
    print(f"pooling (pymc)         {t4 - t3:7.1f} s  sampler={pooling.config.sampler}, "
          f"{pooling.config.chains}x{pooling.config.draws} draws after {pooling.config.tune} tuning steps")
    print(f"  max R-hat            {d.r_hat_max.max():.3f}")
    print(f"  min bulk ESS         {d.ess_bulk_min.min():.0f}")
    print(f"  divergences          {int(d.divergences.max())}")
    print(f"  effects ok           {result.effects.ok.mean():.1%}")
    print(f"peak memory            {peak_rss_mb():7.0f} MB")


if __name__ == "__main__":
    main()
