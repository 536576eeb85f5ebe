"""Time and memory of each stage of the default experiment (prints figures; asserts nothing).

    python benchmarks/default_experiment.py [--scale 1.0] [--sampler auto] [--draws N] [--level network]

The stages are megafc's own (``run_stages``), with the default config's plugins, so the figures
are those of ``megafc`` minus writing the outputs.
"""

from __future__ import annotations

import argparse

from megafc.core.pipeline import pool, stage
from study import peak_rss_mb, run_until


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--sampler", default="auto")
    ap.add_argument("--draws", type=int, default=None, help="default: the model's")
    ap.add_argument("--level", default="network", choices=["network", "subnetwork"])
    args = ap.parse_args()

    overrides = [f"dataset.scale={args.scale}", f"aggregate.level={args.level}", "pooling=pymc",
                 f"pooling.sampler={args.sampler}", "pooling.progressbar=false", "pooling.predictive_checks=false"]
    if args.draws:
        overrides.append(f"pooling.draws={args.draws}")
    ctx, results = run_until(overrides, until="aggregate")
    with stage(ctx, "pool", results.timings):
        result = pool(ctx, results.atlas, results.scans, results.aggregated)
    pairs, t, c = results.aggregated.model_pairs, results.timings, ctx.plugins["pooling"].config
    d = result.diagnostics
    included = int((~results.scans["excluded"]).sum())
    n_outcomes = pairs.groupby(["network_a", "network_b"]).ngroups
    n_summaries = pairs.attrs["summaries"]["summary"].nunique()
    print(f"scans included         {included} of {len(results.scans)} ({results.atlas.n_regions} regions, "
          f"{n_outcomes - n_summaries} network pairs + {n_summaries} summaries)")
    print(f"simulate (load)        {t['load'] + t['extract']:7.1f} s")
    print(f"connectivity           {t['estimate']:7.1f} s  ({included / t['estimate']:.0f} scans/s)")
    print(f"aggregate              {t['aggregate']:7.1f} s")
    print(f"pooling (pymc)         {t['pool']:7.1f} s  sampler={c.sampler}, "
          f"{c.chains}x{c.draws} draws after {c.tune} tuning steps")
    print(f"  max R-hat            {d.r_hat_max.max():.3f}")
    print(f"  min bulk ESS         {d.ess_bulk_min.min():.0f}")
    print(f"  divergences          {int(d.divergences.max())}")
    print(f"  effects ok           {result.effects.ok.mean():.1%}")
    print(f"peak memory            {peak_rss_mb():7.0f} MB")


if __name__ == "__main__":
    main()
