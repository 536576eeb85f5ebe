"""The scan-level model (pymc, joint) vs the same model fitted by bambi one pair at a time.

    python benchmarks/joint_vs_per_pair.py [--level subnetwork|network] [--bambi-pairs N]
        [--bambi-sampler nutpie|pymc]

The default (subnetwork level: 325 pairs of the synthetic study's ~520 scans) is the size the
speed target is set for: pymc <= 120 s on 2 cores with R-hat <= 1.01, no divergences and peak
memory < 4 GB, and >= 50x faster than bambi.

With --bambi-pairs N < all pairs, bambi is fitted on N pairs and its total time extrapolated
(printed as such); disagreement is measured on the pairs both fitted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from megafc.plugins.pooling.bambi_per_pair import BambiPooling
from megafc.plugins.pooling.pymc_scan_level import PyMCPooling
from study import default_study_pairs, peak_rss_mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--level", default="subnetwork", choices=["network", "subnetwork"])
    ap.add_argument("--bambi-pairs", type=int, default=0, help="0: every pair")
    ap.add_argument("--sampler", default="auto")
    ap.add_argument("--bambi-sampler", default="nutpie", help="bambi's NUTS (nutpie: compiled, fastest here)")
    args = ap.parse_args()

    pairs = default_study_pairs(args.level)
    included = pairs["scan_id"].unique()
    keys = pairs[["network_a", "network_b"]].drop_duplicates()
    n_pairs = len(keys)

    t = time.perf_counter()
    # bambi fits random drug effects without dataset scales or a session-order slope, each pair's sds on
    # their own: the same model
    config = PyMCPooling.Config(sampler=args.sampler, progressbar=False, predictive_checks=False, drug_effects="random",
                                dataset_scale=False, heterogeneity="per_pair", session_order=False)
    joint = PyMCPooling(config).fit(pairs, 0)
    t_joint = time.perf_counter() - t
    d = joint.diagnostics
    print(f"data: {len(included)} scans, {n_pairs} {args.level} pairs")
    print(f"pymc ({joint.description.split('NUTS (')[1].split(' sampler')[0]}, "
          f"{config.chains} x {config.draws} draws): {t_joint:7.1f} s   "
          f"max R-hat {d.r_hat_max.max():.3f}, min bulk ESS {d.ess_bulk_min.min():.0f}, divergences {int(d.divergences.max())}, "
          f"effects ok {joint.effects.ok.mean():.1%}, peak RSS {peak_rss_mb():.0f} MB")

    n_b = n_pairs if args.bambi_pairs <= 0 else min(args.bambi_pairs, n_pairs)
    chosen = keys.sample(n=n_b, random_state=0) if n_b < n_pairs else keys
    sub = pairs.merge(chosen, on=["network_a", "network_b"])
    t = time.perf_counter()
    per_pair = BambiPooling(BambiPooling.Config(progressbar=False, sampler=args.bambi_sampler, session_order=False)).fit(sub, 0)
    t_bambi = time.perf_counter() - t
    t_bambi_all = t_bambi * n_pairs / n_b
    label = "measured" if n_b == n_pairs else f"extrapolated from {n_b} pairs ({t_bambi:.1f} s)"
    print(f"bambi per pair:  {t_bambi_all:7.1f} s   ({label})")
    print(f"speed-up (bambi / joint): {t_bambi_all / t_joint:.1f}x")

    m = joint.effects.merge(per_pair.effects, on=["network_a", "network_b", "effect"], suffixes=("_j", "_b"))
    gap = (m.mean_j - m.mean_b).abs() / np.maximum(m.sd_j, m.sd_b)
    for etype in ("overall", "drug", "dataset"):
        g = gap[m.effect_type_j == etype]
        print(f"largest |mean difference| / posterior sd, {etype:8s}: {g.max():.3f}  (median {g.median():.3f}, {len(g)} effects)")


if __name__ == "__main__":
    main()
