"""The scan-level model (pymc) against the paired-difference model (pymc_paired) on the default
synthetic study (one drug and one control scan per subject, no motion term): prints figures.

    python benchmarks/paired_agreement.py [--level network] [--draws 8000] [--tune 500]

There the two are the same model up to the scan-level model's per-dataset residual sds, so
their posterior means of every overall and drug effect should agree within 0.1 posterior sd.
Monte Carlo error alone spreads the largest of ~700 gaps to ~0.14 sd at 2 x 2000 draws, so the
default runs longer chains and also prints each gap beyond 2 Monte Carlo standard errors of
the difference.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from megafc.plugins.pooling.pymc_paired import PyMCPairedPooling
from megafc.plugins.pooling.pymc_scan_level import PyMCPooling
from study import default_study_pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--level", default="network", choices=["network", "subnetwork"])
    ap.add_argument("--draws", type=int, default=8000)
    ap.add_argument("--tune", type=int, default=500)
    args = ap.parse_args()

    pairs = default_study_pairs(args.level)
    # the paired special case: subjects with one drug and one control scan (the study's few
    # single-scan subjects inform only the scan-level model)
    per_subject = pairs.drop_duplicates("scan_id").groupby(["dataset", "subject"])["condition"]
    both = per_subject.agg(lambda c: len(c) == 2 and (c == "drug").sum() == 1)
    pairs = pairs.merge(both[both].reset_index()[["dataset", "subject"]], on=["dataset", "subject"])
    included = list(pairs["scan_id"].unique())
    cfg = dict(draws=args.draws, tune=args.tune, chains=2, cores=2, progressbar=False)
    fits = {}
    for name, model in (("pymc", PyMCPooling(PyMCPooling.Config(motion=False, predictive_checks=False,
                                                                       drug_effects="random", dataset_scale=False,
                                                                       heterogeneity="per_pair", session_order=False,
                                                                       **cfg))),
                        ("pymc_paired", PyMCPairedPooling(PyMCPairedPooling.Config(session_order=False, **cfg)))):
        t = time.perf_counter()
        fits[name] = model.fit(pairs, seed=1 if name == "pymc" else 2)
        d = fits[name].diagnostics
        print(f"{name:12s} {time.perf_counter() - t:6.0f} s  max R-hat {d.r_hat_max.max():.3f}, "
              f"min bulk ESS {d.ess_bulk_min.min():.0f}, divergences {int(d.divergences.max())}")
    m = fits["pymc"].effects.merge(fits["pymc_paired"].effects, on=["network_a", "network_b", "effect"],
                                   suffixes=("_s", "_p"))
    scale = np.maximum(m.sd_s, m.sd_p)
    gap = (m.mean_s - m.mean_p).abs() / scale
    mcse = np.sqrt(m.sd_s ** 2 / m.ess_bulk_s + m.sd_p ** 2 / m.ess_bulk_p) / scale
    excess = (gap - 2 * mcse).clip(lower=0)
    print(f"{len(included)} scans, {pairs.groupby(['network_a', 'network_b']).ngroups} {args.level} pairs, "
          f"2 x {args.draws} draws")
    for etype in ("overall", "drug"):
        k = m.effect_type_s == etype
        worst = gap[k].idxmax()
        print(f"{etype:8s} {int(k.sum()):4d} effects: largest |mean gap| / posterior sd {gap[k].max():.3f} "
              f"({m.effect[worst]}, {m.network_a[worst]}-{m.network_b[worst]}; its Monte Carlo se {mcse[worst]:.3f}), "
              f"median {gap[k].median():.3f}, above 0.1: {int((gap[k] > 0.1).sum())}, "
              f"largest beyond 2 Monte Carlo se {excess[k].max():.3f}")
    ratio = (m.sd_s / m.sd_p)[m.effect_type_s.isin(["overall", "drug"])]
    print(f"posterior sd ratio pymc / pymc_paired: median {ratio.median():.3f}, range {ratio.min():.3f}-{ratio.max():.3f}")


if __name__ == "__main__":
    main()
