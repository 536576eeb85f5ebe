"""Time and memory of the edge-level pooling model on a 400-region atlas (prints figures).

    python benchmarks/edge_level.py [--scale 1.0] [--sampler auto] [--draws 1000] [--tune 1000]
                                    [--heterogeneity shared] [--conditional-draws 400]

Simulates the default study (11 datasets, ~519 scans) on a 400-region synthetic atlas
(376 cortical + 16 subcortical + 8 cerebellar = 79,800 edges) and fits ``pooling=pymc_edges``.
"""

from __future__ import annotations

import argparse
import gc
import resource

from megafc.core.pipeline import pool, stage
from study import peak_rss_mb, run_until


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--regions", type=int, default=400)
    ap.add_argument("--sampler", default="auto")
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--tune", type=int, default=500)
    ap.add_argument("--heterogeneity", default="shared", choices=["per_pair", "shared"])
    ap.add_argument("--conditional-draws", type=int, default=400)
    args = ap.parse_args()

    ctx, results = run_until([
        f"dataset.scale={args.scale}", f"atlas.n_cortical={args.regions - 16 - 8}", "pooling=pymc_edges",
        f"pooling.draws={args.draws}", f"pooling.tune={args.tune}", f"pooling.sampler={args.sampler}",
        f"pooling.heterogeneity={args.heterogeneity}", f"pooling.conditional_draws={args.conditional_draws}",
        "pooling.progressbar=false",
    ], until="aggregate")
    atlas, t = results.atlas, results.timings
    included = results.connectomes.scan_ids
    results.extracted.timeseries = results.inputs.timeseries = None  # the run no longer needs them either
    gc.collect()
    rss_before_fit = peak_rss_mb()
    with stage(ctx, "pool", t):
        result = pool(ctx, atlas, results.scans, results.aggregated)
    edges = result.tables["edge_effects"]
    n_edges = atlas.n_regions * (atlas.n_regions - 1) // 2
    print(f"regions: {atlas.n_regions}  edges: {n_edges}  scans: {len(included)}  "
          f"edge_effects rows: {len(edges)}")
    print(f"simulation: {t['load'] + t['extract']:.1f} s")
    print(f"connectivity: {t['estimate']:.1f} s")
    print(f"edge-level fit: {t['pool']:.1f} s")
    d = result.diagnostics
    for col in ("stats_seconds", "sampling_seconds", "conditional_seconds"):
        if col in d:
            print(f"  {col}: {d[col].iloc[0]}")
    print(f"peak RSS: {peak_rss_mb():.0f} MB (before fit {rss_before_fit:.0f} MB; "
          f"child processes {peak_rss_mb(resource.RUSAGE_CHILDREN):.0f} MB)")
    print(d[["variable", "size", "r_hat_max", "ess_bulk_min", "ess_tail_min", "divergences"]].to_string(index=False))
    eff = result.effects
    print(f"network summaries: {len(eff)} rows, ok: {int(eff['ok'].sum())}")
    for w in result.warnings:
        print("warning:", w)


if __name__ == "__main__":
    main()
