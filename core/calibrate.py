"""``megafc-calibrate``: do the intervals mean what they say? Coverage on simulated replicates.

Simulates K replicate datasets (seeds seed, seed+1, ...) with a dataset plugin that returns
its planted effects (``truth``; e.g. ``dataset=synthetic``), runs the full analysis on each,
and reports, per scenario and effect type, how often the 50% and 95% intervals contain the
planted value and how often a planted non-zero effect is recovered with the right sign.
Scenarios (``--scenario``) break the friendly default study in the ways real consortia do.

    megafc-calibrate --replicates 20 --scenario all pooling=pymc dataset.scale=0.5
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ConfigError, MegafcError
from .outputs import StagedRun

log = logging.getLogger("megafc")

#: Stress-test scenarios: name -> synthetic-dataset overrides added to the user's.
SCENARIOS: dict[str, list[str]] = {
    "default": [],
    "parallel": ["dataset.design=parallel"],
    "prepost_two_drug_scans": ["dataset.design=prepost", "dataset.drug_scans=2"],
    "crossover_two_drug_scans": ["dataset.design=crossover", "dataset.drug_scans=2"],
    "noisy_site": ["dataset.site_noise={lsd_2: 3.0}"],
    "mixed_designs": ["dataset.design=mixed"],
    "motion_null": ["dataset.effects.transmodal_unimodal=0", "dataset.effects.thalamus_sensory=0",
                    "dataset.effects.striatum_sommot=0", "dataset.effects.cerebellum_sommot=0",
                    "dataset.effects.within_sensory_loading=0", "dataset.effects.drug_deviation_sd=0"],
}


def score_replicate(effects: pd.DataFrame, truth: pd.DataFrame, level: str, min_effect: float) -> pd.DataFrame:
    """Coverage and sign recovery of one replicate, per effect type (overall, drug, dataset)."""
    t = truth[truth["aggregation"] == level][["network_a", "network_b", "effect", "truth"]]
    m = effects.merge(t, on=["network_a", "network_b", "effect"], how="inner")
    rows = []
    for etype, g in m.groupby("effect_type"):
        inside95 = (g["hdi_low"] <= g["truth"]) & (g["truth"] <= g["hdi_high"])
        row = {"effect_type": etype, "n": len(g), "coverage_95": inside95.mean()}
        if {"hdi50_low", "hdi50_high"} <= set(g.columns):
            row["coverage_50"] = ((g["hdi50_low"] <= g["truth"]) & (g["truth"] <= g["hdi50_high"])).mean()
        planted = g[g["truth"].abs() >= min_effect]
        right = ((planted["hdi_low"] > 0) & (planted["truth"] > 0)) | ((planted["hdi_high"] < 0) & (planted["truth"] < 0))
        row["n_planted"] = len(planted)
        row["sign_recovery"] = right.mean() if len(planted) else np.nan
        credible = g[(g["hdi_low"] > 0) | (g["hdi_high"] < 0)]
        wrong = np.sign(credible["mean"]) != np.sign(credible["truth"])
        row["sign_error_rate"] = wrong.mean() if len(credible) else 0.0
        zero = g[g["truth"].abs() < min_effect / 10]
        row["false_positive_rate"] = (((zero["hdi_low"] > 0) | (zero["hdi_high"] < 0)).mean()) if len(zero) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def calibration_figure(summary: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(summary)), 3.5))
    x = np.arange(len(summary))
    for offset, (col, nominal, colour) in enumerate((("coverage_50", 0.5, "tab:orange"), ("coverage_95", 0.95, "tab:blue"))):
        if col not in summary:
            continue
        ax.bar(x + (offset - 0.5) * 0.35, summary[col], width=0.35, color=colour, label=f"{int(nominal * 100)}% interval")
        ax.axhline(nominal, color=colour, ls="--", lw=1)
    labels = summary["effect_type"] if summary["scenario"].nunique() == 1 else summary["scenario"] + ": " + summary["effect_type"]
    ax.set_xticks(x, labels, rotation=90 if summary["scenario"].nunique() > 1 else 0, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("coverage of planted effects")
    ax.set_title("Interval calibration over simulated replicates (dashed: nominal)")
    ax.legend(frameon=False, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def calibrate(overrides: list[str], replicates: int, out_dir: Path, min_effect: float = 0.02,
              scenarios: list[str] | None = None) -> Path:
    """Run ``replicates`` simulated analyses per scenario into out_dir/<scenario>/replicate-XX and score them."""
    from hydra import compose, initialize_config_module

    from .pipeline import run_experiment
    from .registry import default_registry, register_configs

    if replicates < 1:
        raise ConfigError(f"--replicates is {replicates}; expected >= 1")
    scenarios = scenarios or ["default"]
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        raise ConfigError(f"--scenario {unknown} unknown; expected 'all' or some of {list(SCENARIOS)}")
    registry = default_registry()
    register_configs(registry)
    scores = []
    with StagedRun(out_dir) as staged:
        for scenario in scenarios:
            extra = overrides + SCENARIOS[scenario]
            with initialize_config_module(config_module="megafc.conf", version_base="1.3"):
                base = compose(config_name="config", overrides=extra)
            for r in range(replicates):
                with initialize_config_module(config_module="megafc.conf", version_base="1.3"):
                    cfg = compose(config_name="config",
                                  overrides=extra + [f"seed={int(base.seed) + r}", "figures=false", "report=false"])
                log.info("calibration: %s, replicate %d/%d (seed %d)", scenario, r + 1, replicates, cfg.seed)
                run_dir = staged.staging / scenario / f"replicate-{r:02d}"
                outcome = run_experiment(cfg, registry, run_dir)
                truth_file = outcome.run_dir / "truth.tsv"
                if not truth_file.exists():
                    raise ConfigError(
                        f"dataset '{cfg.dataset.name}' returns no planted effects (truth), so intervals cannot be "
                        "checked; calibrate with a simulating dataset such as dataset=synthetic"
                    )
                truth = pd.read_csv(truth_file, sep="\t", keep_default_na=False, na_values=["n/a"])
                s = score_replicate(outcome.result.effects, truth, cfg.aggregate.level, min_effect)
                s.insert(0, "scenario", scenario)
                s.insert(1, "replicate", r)
                s.insert(2, "seed", int(cfg.seed))
                scores.append(s)
        table = pd.concat(scores, ignore_index=True)
        staged.write_table("calibration_replicates.tsv", table)
        cols = [c for c in ("coverage_50", "coverage_95", "sign_recovery", "sign_error_rate", "false_positive_rate") if c in table]
        summary = table.groupby(["scenario", "effect_type"], as_index=False, sort=False).agg(
            replicates=("replicate", "nunique"), n=("n", "sum"), **{c: (c, "mean") for c in cols})
        staged.write_table("calibration.tsv", summary)
        calibration_figure(summary, staged.path("calibration.png"))
        staged.commit()
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return out_dir


def main(argv: list[str] | None = None) -> None:
    from .app import _quiet_libraries, fail

    ap = argparse.ArgumentParser(prog="megafc-calibrate", description=__doc__.split("\n\n")[0],
                                 epilog="Other arguments are megafc config overrides, e.g. pooling=pymc dataset.scale=0.5")
    ap.add_argument("--replicates", type=int, default=10, help="number of simulated datasets (default 10)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default calibration/<date>_<time>)")
    ap.add_argument("--scenario", action="append", default=None,
                    help=f"stress-test scenario, repeatable, or 'all' (default: default); one of {list(SCENARIOS)}")
    ap.add_argument("--min-effect", type=float, default=0.02,
                    help="|planted effect| (Fisher z) counted as non-zero for sign recovery (default 0.02)")
    args, overrides = ap.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    _quiet_libraries()
    out = args.out or Path("calibration") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    try:
        scenarios = list(SCENARIOS) if args.scenario and "all" in args.scenario else args.scenario
        calibrate(overrides, args.replicates, out, args.min_effect, scenarios)
    except MegafcError as exc:
        fail(exc)
    except Exception as exc:  # hydra override errors and bugs: still one paragraph
        fail(exc)
    sys.exit(0)
