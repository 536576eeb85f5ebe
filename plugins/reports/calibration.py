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
import os
import sys
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from megafc.core import ConfigError, MegafcError, Reporter
from megafc.core.aggregate import parent_pairs
from megafc.core.config import override_key
from megafc.core.run_folder import COMPLETION_MARKER, StagedRun

from .run_report import FALSE_SIGN_RATE

#: |planted value| below which it has no sign: the simulator's Monte Carlo error of a planted
#: effect (~0.0001 Fisher z). lfsr claims the probability of a wrong sign or an exact zero, so
#: its claims are held to this (``wrong_sign_selected``), not to the ``zero`` stratum.
NO_SIGN_BELOW = 1e-4

log = logging.getLogger("megafc")

#: Stress-test scenarios: name -> synthetic-dataset overrides added to the user's.
SCENARIOS: dict[str, list[str]] = {
    "default": [],
    "parallel": ["dataset.design=parallel"],
    "prepost_two_drug_scans": ["dataset.design=prepost", "dataset.drug_scans=2"],
    "crossover_two_drug_scans": ["dataset.design=crossover", "dataset.drug_scans=2"],
    "noisy_site": ["dataset.site_noise={lsd_2: 3.0}"],
    "mixed_designs": ["dataset.design=mixed"],
    "heavy_tails": ["dataset.noise_df=3"],
    "outlier_scans": ["dataset.outlier_fraction=0.05"],
    "correlated_pairs": ["dataset.scan_offset_sd=0.05", "dataset.dataset_offset_sd=0.05"],
    "dataset_heterogeneity": ["dataset.effects.dataset_deviation_sd=0.5"],
    "order_effect": ["dataset.order_effect=0.02"],
    "motion_null": ["dataset.effects.transmodal_unimodal=0", "dataset.effects.thalamus_sensory=0",
                    "dataset.effects.striatum_sommot=0", "dataset.effects.cerebellum_sommot=0",
                    "dataset.effects.within_sensory_loading=0", "dataset.effects.drug_deviation_sd=0"],
}


def attach_truth(table: pd.DataFrame, truth: pd.DataFrame, level: str,
                 members: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows of an effects or summaries table with the planted value they estimate (``truth``).

    Contrasts ``contrast:a-b`` are drug a's truth minus drug b's; a summary's truth is the mean
    of its member pairs' truths. Rows without a planted value (covariate slopes) are dropped.
    """
    t = truth[truth["aggregation"] == level]
    wide = t.pivot_table(index=["network_a", "network_b"], columns="effect", values="truth", sort=False)
    for effect in table["effect"].unique():
        kind, _, name = effect.partition(":")
        if kind == "contrast" and effect not in wide:
            a, _, b = name.partition("-")
            if f"drug:{a}" in wide and f"drug:{b}" in wide:
                wide[effect] = wide[f"drug:{a}"] - wide[f"drug:{b}"]
    long = wide.reset_index().melt(id_vars=["network_a", "network_b"], var_name="effect", value_name="truth")
    if "summary" in table.columns:
        if members is None or members.empty:
            return table.iloc[:0].assign(truth=np.nan)
        per = members.merge(long, on=["network_a", "network_b"]).groupby(["summary", "effect"], as_index=False)["truth"].mean()
        return table.merge(per, on=["summary", "effect"], how="inner")
    return table.merge(long, on=["network_a", "network_b", "effect"], how="inner")


def similarity_truth(truth: pd.DataFrame, level: str, pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The planted values of drug_similarity.tsv's measures, per ordered drug pair: computed, as
    the models compute them draw by draw, on the drugs' planted effects across the network
    pairs analysed (``pairs``: network_a, network_b; default all); a scale's planted value is
    the least-squares slope of the drug's planted map on the overall one (the overall effect
    being the drugs' common pattern). ``pearson_r_across_pairs``, the raw correlation of
    noisy draws kept for comparison with earlier versions, estimates no planted quantity (it
    covered the planted correlation in 0 of 200 drug pairs per scenario) and is not scored."""
    t = truth[truth["aggregation"] == level]
    if pairs is not None:
        t = t.merge(pairs[["network_a", "network_b"]].drop_duplicates(), on=["network_a", "network_b"])
    wide = t.pivot_table(index=["network_a", "network_b"], columns="effect", values="truth", sort=False)
    drugs = [c.split(":", 1)[1] for c in wide.columns if c.startswith("drug:")]
    if "overall" not in wide or len(drugs) < 2:
        return pd.DataFrame(columns=["drug_a", "drug_b", "measure", "truth"])
    overall = wide["overall"].to_numpy()
    maps = {d: wide[f"drug:{d}"].to_numpy() for d in drugs}
    rows = []
    with np.errstate(divide="ignore", invalid="ignore"):  # planted maps of zeros (motion_null): no truth
        rms = {d: np.sqrt(np.mean(m ** 2)) for d, m in maps.items()}
        # numpy scalars, so a zero slope divides into inf/NaN (dropped below), never ZeroDivisionError
        slope = {d: np.float64(m @ overall) / np.float64(overall @ overall) for d, m in maps.items()}
        for a in drugs:
            for b in drugs:
                if a != b:
                    # a correlation needs two pairs (np.corrcoef of one warns and gives NaN)
                    r = (float(np.corrcoef(maps[a], maps[b])[0, 1]) if rms[a] > 0 and rms[b] > 0 and len(overall) > 1
                         else np.nan)
                    rows += [(a, b, "pattern_r_corrected", r),
                             (a, b, "rms_ratio", rms[a] / rms[b]),
                             (a, b, "rms_distance", float(np.sqrt(np.mean((maps[a] - maps[b]) ** 2)))),
                             (a, b, "scale_ratio", float(slope[a] / slope[b]))]
    out = pd.DataFrame(rows, columns=["drug_a", "drug_b", "measure", "truth"])
    return out[np.isfinite(out["truth"])].reset_index(drop=True)


def tau_truth(truth: pd.DataFrame, level: str, dataset_drug: dict[str, str], drug_scales: bool = False,
              dataset_scales: bool = False, pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The planted between-drug and between-dataset sds per network pair, as the models' tau_drug
    and tau_dataset (drug effects ~ Normal(overall, tau_drug), dataset effects ~ Normal(their
    drug's, tau_dataset)) describe them: the sd of the drugs' planted effects around their mean
    (the overall truth; n - 1 in the denominator, an unbiased estimate of tau_drug^2) and the
    root-mean-square of the datasets' planted effects around their drug's. These are the
    spreads of the drugs and datasets this study has, of which tau is the population's: a
    study of five drugs pins tau_drug down to about +-35%, which its interval should carry.

    With drug (dataset) scales, tau is the spread around each drug's (dataset's) own multiple of
    the overall (its drug's) effect: a map's deviations are what is left of it after its
    least-squares multiple of the map it is centred on (which multiple of the centre a model calls
    scale 1 does not change that), fitted over the network pairs analysed (``pairs``, as in
    ``similarity_truth``). ``dataset_drug``: each dataset's drug (datasets giving several drugs
    are left out)."""
    t = truth[truth["aggregation"] == level]
    if pairs is not None:
        t = t.merge(pairs[["network_a", "network_b"]].drop_duplicates(), on=["network_a", "network_b"])
    wide = t.pivot_table(index=["network_a", "network_b"], columns="effect", values="truth", sort=False)

    def around(maps: pd.DataFrame, centre: pd.Series, scaled: bool) -> pd.DataFrame:
        if not scaled:
            return maps.sub(centre, axis=0)
        c, m = centre.fillna(0.0), maps.fillna(0.0)  # a pair without a planted value does not enter the fit
        norm = float(c @ c)
        slopes = m.T.dot(c) / norm if norm > 0 else 0.0 * m.sum()
        return maps - np.outer(centre, slopes)

    drugs = [c for c in wide.columns if c.startswith("drug:")]
    rows = []
    if len(drugs) > 1:
        spread = around(wide[drugs], wide[drugs].mean(axis=1), drug_scales)
        rows.append(np.sqrt((spread ** 2).sum(axis=1) / (len(drugs) - 1)).rename("tau_drug"))
    drug_of = {f"dataset:{ds}": f"drug:{drug}" for ds, drug in dataset_drug.items()}
    sites = [s for s in wide.columns if s.startswith("dataset:") and drug_of.get(s) in wide]
    deviations = [around(wide[[s]], wide[drug_of[s]], dataset_scales) for s in sites]
    if deviations:
        rows.append(np.sqrt((pd.concat(deviations, axis=1) ** 2).mean(axis=1)).rename("tau_dataset"))
    if not rows:
        return pd.DataFrame(columns=["network_a", "network_b", "parameter", "truth"])
    return (pd.concat(rows, axis=1).reset_index()
            .melt(id_vars=["network_a", "network_b"], var_name="parameter", value_name="truth"))


def specificity_truth(truth: pd.DataFrame, parents: dict[str, str]) -> pd.DataFrame:
    """The planted subnetwork specificity: per network pair with two or more subnetwork pairs
    and per overall or drug effect, the sd (n - 1) of its subnetwork pairs' planted effects
    (what specificity.tsv estimates); ``parents``: each subnetwork's network, in atlas order."""
    t = truth[(truth["aggregation"] == "subnetwork")
              & ((truth["effect"] == "overall") | truth["effect"].str.startswith("drug:"))].reset_index(drop=True)
    t = t.assign(**parent_pairs(t["network_a"], t["network_b"], parents))
    out = t.groupby(["network_a", "network_b", "effect"], sort=False)["truth"].agg(["std", "size"]).reset_index()
    return out[out["size"] >= 2].drop(columns="size").rename(columns={"std": "truth"})


def strata(truth: pd.Series, min_effect: float) -> pd.Series:
    """zero (|truth| < min_effect / 10; not "null", which table readers take for a missing value), small (< min_effect) or large."""
    size = truth.abs()
    return pd.Series(np.where(size < min_effect / 10, "zero", np.where(size < min_effect, "small", "large")),
                     index=truth.index)


def score_table(rows: pd.DataFrame, min_effect: float, signed: pd.Series | bool = True,
                fsr: float = FALSE_SIGN_RATE) -> pd.DataFrame:
    """Coverage, bias, width and sign errors of rows that carry ``truth``, per effect type and
    stratum of |truth| (and over all strata). ``signed`` False (per row, or for all): a positive
    quantity (a ratio, a distance) that is never "credible" and has no sign to recover.

    Two lists are scored: ``credible`` (the interval excludes 0) and ``selected`` (svalue <=
    ``fsr``, the list a reader picks at a stated false sign rate), whose false signs
    (``false_selected``: wrong sign or a truth in the ``zero`` stratum) are set against the number the
    model expects (``expected_false_selected``, the sum of their lfsr); lfsr's own event is a wrong
    sign or a truth of 0, which ``wrong_sign_selected`` counts (truths within NO_SIGN_BELOW of 0
    have no sign: the truth's Monte Carlo error)."""
    rows = rows.assign(stratum=strata(rows["truth"], min_effect), _signed=signed)
    credible = ((rows["hdi_low"] > 0) | (rows["hdi_high"] < 0)) & rows["_signed"]
    rows = rows.assign(
        inside95=(rows["hdi_low"] <= rows["truth"]) & (rows["truth"] <= rows["hdi_high"]),
        credible=credible,
        # a credible effect whose sign is not the truth's (a null truth has no sign to get right)
        false_sign=credible & ((np.sign(rows["mean"]) != np.sign(rows["truth"])) | (rows["stratum"] == "zero")),
        right_sign=credible & (np.sign(rows["mean"]) == np.sign(rows["truth"])),
        error=rows["mean"] - rows["truth"], width=rows["hdi_high"] - rows["hdi_low"],
    )
    if "svalue" in rows:  # the list a reader selects at the stated false sign rate
        selected = (rows["svalue"] <= fsr) & rows["_signed"]
        wrong_sign = np.sign(rows["mean"]) != np.sign(rows["truth"])
        rows = rows.assign(selected=selected, false_selected=selected & (wrong_sign | (rows["stratum"] == "zero")),
                           wrong_sign_selected=selected & (wrong_sign | (rows["truth"].abs() < NO_SIGN_BELOW)))
    if {"hdi50_low", "hdi50_high"} <= set(rows.columns):
        rows = rows.assign(inside50=(rows["hdi50_low"] <= rows["truth"]) & (rows["truth"] <= rows["hdi50_high"]))
    out = []
    for stratum, part in [("all", rows)] + list(rows.groupby("stratum")):
        for etype, g in part.groupby("effect_type", sort=False):
            row = {"effect_type": etype, "stratum": stratum, "n": len(g), "coverage_95": g["inside95"].mean(),
                   "bias": g["error"].mean(), "bias_sd": (g["error"] / g["sd"]).mean() if "sd" in g else np.nan,
                   "width_95": g["width"].mean(), "n_credible": int(g["credible"].sum()),
                   "false_sign_rate": g.loc[g["credible"], "false_sign"].mean() if g["credible"].any() else 0.0}
            if "inside50" in g:
                row["coverage_50"] = g["inside50"].mean()
            if "lfsr" in g:
                row["reported_false_sign_rate"] = g.loc[g["credible"], "lfsr"].mean() if g["credible"].any() else 0.0
            if "selected" in g:
                row["n_selected"] = int(g["selected"].sum())
                row["false_selected"] = int(g["false_selected"].sum())
                row["wrong_sign_selected"] = int(g["wrong_sign_selected"].sum())
                row["expected_false_selected"] = float(g.loc[g["selected"], "lfsr"].sum())
            large = g[(g["stratum"] == "large") & g["_signed"]]
            row["n_large"] = len(large)
            row["sign_recovery"] = large["right_sign"].mean() if len(large) else np.nan
            out.append(row)
    return pd.DataFrame(out)


def score_replicate(effects: pd.DataFrame, truth: pd.DataFrame, level: str, min_effect: float,
                    summaries: pd.DataFrame | None = None, members: pd.DataFrame | None = None,
                    similarity: pd.DataFrame | None = None, heterogeneity: pd.DataFrame | None = None,
                    dataset_drug: dict[str, str] | None = None, specificity: pd.DataFrame | None = None,
                    parents: dict[str, str] | None = None,
                    scales: tuple[bool, bool] = (False, False)) -> pd.DataFrame:
    """Scores of one replicate for every table with planted values: effects (overall, drug,
    dataset, contrast), summaries, drug similarity (one "effect type" per measure) and the
    between-drug and between-dataset sds (``heterogeneity``, with ``dataset_drug``; ``scales``:
    whether the model had drug and dataset scales, see ``tau_truth``) and subnetwork
    specificity (``specificity``, with ``parents``). One row per table, effect type and stratum."""
    parts = [score_table(attach_truth(effects, truth, level), min_effect).assign(table="effects")]
    analysed = effects.loc[effects["effect"] == "overall", ["network_a", "network_b"]]
    if summaries is not None and members is not None and len(summaries):
        parts.append(score_table(attach_truth(summaries, truth, level, members), min_effect).assign(table="summaries"))
    if similarity is not None and len(similarity):
        rows = similarity.merge(similarity_truth(truth, level, analysed), on=["drug_a", "drug_b", "measure"])
        rows = rows[np.isfinite(rows["mean"])]  # measures undefined for this replicate (a map lost in noise)
        if len(rows):
            # ratios and distances are positive: "credible" and signs mean nothing for them
            signed = rows["measure"] == "pattern_r_corrected"
            part = score_table(rows.assign(effect_type=rows["measure"]), min_effect, signed)
            parts.append(part[part["stratum"] == "all"].assign(table="drug_similarity"))
    if heterogeneity is not None and dataset_drug is not None:
        rows = heterogeneity.merge(tau_truth(truth, level, dataset_drug, *scales, pairs=analysed),
                                   on=["network_a", "network_b", "parameter"])
        if len(rows):  # sds: no sign, never "credible"
            part = score_table(rows.assign(effect_type=rows["parameter"]), min_effect, signed=False)
            parts.append(part.assign(table="heterogeneity"))
    if specificity is not None and parents:
        rows = specificity.merge(specificity_truth(truth, parents), on=["network_a", "network_b", "effect"])
        if len(rows):  # spreads: no sign, never "credible"
            part = score_table(rows.assign(effect_type=rows["effect"].str.partition(":")[0]), min_effect,
                               signed=False)
            parts.append(part.assign(table="specificity"))
    out = pd.concat(parts, ignore_index=True)
    return out[["table"] + [c for c in out.columns if c != "table"]]


def summarise_scores(table: pd.DataFrame) -> pd.DataFrame:
    """Over replicates: rates pooled (weighted by each replicate's counts), bias and width averaged."""
    keys = ["scenario", "table", "effect_type", "stratum"]
    rates = [c for c in ("coverage_95", "coverage_50") if c in table]
    t = table.assign(**{f"_{c}": table[c] * table["n"] for c in rates},
                     # the rows a rate is pooled over: NaN for tables without that interval
                     # (heterogeneity has no 50% one)
                     **{f"_n_{c}": table["n"].where(table[c].notna(), 0) for c in rates},
                     _sign=table["sign_recovery"].fillna(0) * table["n_large"],
                     _false=table["false_sign_rate"] * table["n_credible"],
                     **({"_reported": table["reported_false_sign_rate"] * table["n_credible"]}
                        if "reported_false_sign_rate" in table else {}))
    g = t.groupby(keys, sort=False)
    out = g.agg(replicates=("replicate", "nunique"), n=("n", "sum"), n_credible=("n_credible", "sum"),
                bias=("bias", "mean"), bias_sd=("bias_sd", "mean"), width_95=("width_95", "mean"),
                **{c: (c, lambda x: x.sum(min_count=1))  # NaN, not 0, for tables without lfsr
                   for c in ("n_selected", "false_selected", "wrong_sign_selected", "expected_false_selected")
                   if c in table}
                ).reset_index()
    for c in rates:
        out[c] = (g[f"_{c}"].sum(min_count=1) / g[f"_n_{c}"].sum()).to_numpy()
    large = g["n_large"].sum().to_numpy()
    out["sign_recovery"] = np.where(large > 0, g["_sign"].sum().to_numpy() / np.maximum(large, 1), np.nan)
    credible = g["n_credible"].sum().to_numpy()
    out["false_sign_rate"] = np.where(credible > 0, g["_false"].sum().to_numpy() / np.maximum(credible, 1), 0.0)
    if "_reported" in t:
        out["reported_false_sign_rate"] = np.where(credible > 0, g["_reported"].sum().to_numpy() / np.maximum(credible, 1), 0.0)
    return out


def calibration_figure(summary: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summary[summary["stratum"] == "all"].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(summary)), 3.5))
    x = np.arange(len(summary))
    for offset, (col, nominal, colour) in enumerate((("coverage_50", 0.5, "tab:orange"), ("coverage_95", 0.95, "tab:blue"))):
        if col not in summary:
            continue
        ax.bar(x + (offset - 0.5) * 0.35, summary[col], width=0.35, color=colour, label=f"{int(nominal * 100)}% interval")
        ax.axhline(nominal, color=colour, ls="--", lw=1)
    labels = summary["table"] + ": " + summary["effect_type"]
    if summary["scenario"].nunique() > 1:
        labels = summary["scenario"] + ", " + labels
    ax.set_xticks(x, labels, rotation=90, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("coverage of planted effects")
    ax.set_title("Interval calibration over simulated replicates (dashed: nominal)")
    ax.legend(frameon=False, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


#: Pooling outputs a replicate never scores, switched off where a model has them: predictive
#: checks (~2 s) and the pointwise log-likelihood (~2.5 s of a full-size replicate).
UNREAD_POOLING_OUTPUTS = {"predictive_checks": False, "log_likelihood": "none"}

#: Most draws per chain of a replicate unless the command line sets pooling.draws. Coverage is a
#: property of the posterior, not of how many draws describe it: at 2 x 1000 draws the slowest
#: sd of the full-size study kept a bulk ESS of ~1,000 (2 x 2000 draws, a run's default, took
#: ~40% of a replicate's time for the same intervals to within Monte Carlo error). Fewer draws
#: place each interval's ends a little less exactly, which if anything lowers its coverage.
CALIBRATION_DRAWS = 600

#: Most tuning steps per chain of a replicate unless the command line sets pooling.tune: nutpie's
#: own default, by which its mass-matrix adaptation has settled on the full-size study (bulk ESS
#: and R-hat as at 500 steps in eight single replicates). With 2 x 750 draws after 500 steps the
#: twelve scenarios x 20 replicates took 64 min on 2 cores; 300 steps and 600 draws save ~17% of
#: a replicate's CPU time alone, but the full run only 7% (60 min; docs/calibration.md), every
#: effects and summaries row within 0.02 of its coverage at the longer chains.
CALIBRATION_TUNE = 300


def lighten_pooling(cfg: Any, overrides: list[str]) -> None:
    """Switch off what a replicate never reads and cap its draws and tuning steps
    (CALIBRATION_DRAWS, CALIBRATION_TUNE), where the pooling model has those keys; what the
    command line sets explicitly stays."""
    given = {override_key(o)[0] for o in overrides}
    for key, value in UNREAD_POOLING_OUTPUTS.items():  # only posterior.nc and figures hold them
        if key in cfg.pooling and f"pooling.{key}" not in given:
            cfg.pooling[key] = value
    for key, cap in (("draws", CALIBRATION_DRAWS), ("tune", CALIBRATION_TUNE)):
        if key in cfg.pooling and f"pooling.{key}" not in given:
            cfg.pooling[key] = min(cfg.pooling[key], cap)


def run_replicate(overrides: list[str], scenario: str, replicate: int, seed: int, run_dir: Path,
                  min_effect: float = 0.02) -> pd.DataFrame:
    """Replicate number ``replicate`` of ``scenario``, simulated with ``seed``, analysed into
    ``run_dir`` and scored against its planted effects: the rows of calibration_replicates.tsv."""
    try:
        return _scored_replicate(overrides, scenario, replicate, seed, run_dir, min_effect)
    except BaseException as e:  # the error alone does not say which of hundreds of replicates it was
        log.error("calibration: %s/replicate-%02d (seed %d) failed: %s: %s", scenario, replicate, seed,
                  type(e).__name__, e)
        raise


def _scored_replicate(overrides: list[str], scenario: str, replicate: int, seed: int, run_dir: Path,
                      min_effect: float) -> pd.DataFrame:
    from megafc.core.config import compose
    from megafc.core.pipeline import run_experiment
    from megafc.core.registry import default_registry

    registry = default_registry()
    # figures, report, posterior draws and the per-scan pair table are never read here: only the
    # effect tables are scored
    cfg = compose(overrides + SCENARIOS[scenario] + [f"seed={seed}", "figures=false", "report=false",
                                                     "posterior_nc=false", "network_pairs_tsv=false"], registry)
    lighten_pooling(cfg, overrides)
    log.info("calibration: %s/replicate-%02d (seed %d)", scenario, replicate, cfg.seed)
    outcome = run_experiment(cfg, registry, run_dir)
    truth_file = outcome.run_dir / "truth.tsv"
    if not truth_file.exists():
        raise ConfigError(
            f"dataset '{cfg.dataset.name}' returns no planted effects (truth), so intervals cannot be "
            "checked; calibrate with a simulating dataset such as dataset=synthetic"
        )
    truth = pd.read_csv(truth_file, sep="\t", keep_default_na=False, na_values=["n/a"])
    members_file = outcome.run_dir / "summary_pairs.tsv"
    members = pd.read_csv(members_file, sep="\t", keep_default_na=False) if members_file.exists() else None
    scans = outcome.scans
    drugs = scans[scans["condition"] == "drug"].groupby("dataset")["drug"].unique()
    tables = outcome.result.tables
    s = score_replicate(outcome.result.effects, truth, cfg.aggregate.level, min_effect,
                        tables.get("summaries"), members, tables.get("drug_similarity"), tables.get("heterogeneity"),
                        {ds: str(d[0]) for ds, d in drugs.items() if len(d) == 1}, tables.get("specificity"),
                        dict(zip(outcome.atlas.regions["subnetwork"], outcome.atlas.regions["network"])),
                        scales=("drug_scales" in tables, "dataset_scales" in tables))
    s.insert(0, "scenario", scenario)
    s.insert(1, "replicate", replicate)
    s.insert(2, "seed", int(cfg.seed))
    return s


def replicate_diagnostics(folder: Path) -> dict[str, Any]:
    """A finished replicate's sampling diagnostics in one row (empty for a model that writes no
    R-hat, such as ``meta``): its intervals are scored whatever they were, so the calibration
    says how many came from chains that had not converged or had diverged."""
    from megafc.core.report import read_tsv
    from megafc.stats.rhat_chance import beyond_chance

    d = read_tsv(Path(folder) / "diagnostics.tsv")
    if d is None or not {"variable", "r_hat_max", "n_r_hat_over"} <= set(d.columns) or not len(d):
        return {}
    worst = d.loc[d["r_hat_max"].idxmax()]
    bad = beyond_chance(d)
    return {
        "converged": not bool(bad.any()),
        "not_converged": ", ".join(d.loc[bad, "variable"].astype(str)),
        "divergences": int(d["divergences"].max()) if "divergences" in d else 0,
        "r_hat_max": float(worst["r_hat_max"]),
        "r_hat_max_variable": str(worst["variable"]),
        "ess_bulk_min": float(d["ess_bulk_min"].min()) if "ess_bulk_min" in d else float("nan"),
        "sampling_seconds": float(d["sampling_seconds"].iloc[0]) if "sampling_seconds" in d else float("nan"),
    }


def diagnostics_table(tasks: list[tuple]) -> pd.DataFrame:
    """calibration_diagnostics.tsv: one row per finished replicate (``tasks`` as ``calibrate``
    builds them) with its sampling diagnostics; empty when the model reports none."""
    rows = []
    for _, scenario, replicate, seed, run_dir, _ in tasks:
        if (run_dir / COMPLETION_MARKER).exists():
            found = replicate_diagnostics(run_dir)
            if found:
                rows.append({"scenario": scenario, "replicate": replicate, "seed": seed, **found})
    return pd.DataFrame(rows)


def diagnostics_by_scenario(diagnostics: pd.DataFrame) -> pd.DataFrame:
    """Per scenario: replicates, how many had not converged or had divergent transitions, the
    largest R-hat and the median sampling time."""
    g = diagnostics.groupby("scenario", sort=False)
    return pd.DataFrame({
        "replicates": g.size(),
        "not_converged": g["converged"].apply(lambda c: int((~c.astype(bool)).sum())),
        "with_divergences": g["divergences"].apply(lambda d: int((d > 0).sum())),
        "r_hat_max": g["r_hat_max"].max().round(3),
        "sampling_seconds_median": g["sampling_seconds"].median().round(1),
    }).reset_index()


def _worker_start(level: int, parent: int) -> None:
    """A spawned worker dies with megafc-calibrate (killed, not only interrupted, it left its
    workers sampling) and logs like it (its lines go to the same stderr)."""
    from megafc.cli.app import _quiet_libraries
    from megafc.core.processes import die_with_parent

    die_with_parent(parent)
    logging.basicConfig(level=level, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    _quiet_libraries()


class ReplicatesFailed(MegafcError):
    """Some (or all) replicates of a --keep-going calibration failed."""

    def __init__(self, message: str, nothing_written: bool) -> None:
        super().__init__(message)
        self.nothing_written = nothing_written


def calibrate(overrides: list[str], replicates: int, out_dir: Path, min_effect: float = 0.02,
              scenarios: list[str] | None = None, jobs: int = 1, keep_going: bool = False) -> Path:
    """Run ``replicates`` simulated analyses per scenario into out_dir/<scenario>/replicate-XX and score them.

    ``jobs`` > 1 runs that many replicates at once, in a pool of that many spawned processes,
    overlapping one replicate's single-threaded steps with another's sampling: worth most for
    small studies and fast models (at full size the chains keep two cores busy for most of a
    replicate). Each replicate is seeded by its number, so the scores do not depend on ``jobs``.

    The first failing replicate ends the run with nothing written, unless ``keep_going``: then
    the other replicates finish and are scored, the failed ones are listed in
    calibration_failures.tsv (and the report), and :class:`ReplicatesFailed` is raised after the
    folder is complete, so the exit status still says that something failed (an hour-long run
    is not lost to one replicate's crash).
    """
    from megafc.core.config import compose
    from megafc.core.registry import default_registry

    if replicates < 1:
        raise ConfigError(f"--replicates is {replicates}; expected >= 1")
    if jobs < 1:
        raise ConfigError(f"--jobs is {jobs}; expected >= 1")
    scenarios = scenarios or ["default"]
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        import difflib

        close = [m for u in unknown for m in difflib.get_close_matches(u, list(SCENARIOS), n=1)]
        raise ConfigError(f"--scenario {unknown} unknown" + (f" (did you mean {close}?)" if close else "")
                          + f"; expected 'all' or some of {list(SCENARIOS)}")
    registry = default_registry()
    # replicate r of a scenario is seeded seed + r; a bad override fails here, before any replicate runs
    seeds = {scenario: int(compose(overrides + SCENARIOS[scenario], registry).seed) for scenario in scenarios}
    with StagedRun(out_dir, kind="calibration") as staged:
        tasks = [(overrides, scenario, r, seeds[scenario] + r, staged.staging / scenario / f"replicate-{r:02d}",
                  min_effect) for scenario in scenarios for r in range(replicates)]
        scores, failures = [], []

        def collect(task: tuple, get_scores: Callable[[], pd.DataFrame]) -> None:
            try:
                scores.append(get_scores())
            except BrokenProcessPool:  # a worker died (killed, out of memory): every later replicate
                raise  # fails with it, and which one crashed is unknown
            except Exception as e:  # Ctrl-C and exits always end the run
                if not keep_going:
                    raise
                run_dir = task[4]  # kept when the analysis finished and its scoring failed
                failures.append({"scenario": task[1], "replicate": task[2], "seed": task[3],
                                 "error": f"{type(e).__name__}: {e}",
                                 "folder": str(run_dir.relative_to(staged.staging))
                                 if (run_dir / COMPLETION_MARKER).exists() else None})

        if jobs == 1:
            for task in tasks:
                collect(task, partial(run_replicate, *task))
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_worker_start, initargs=(log.getEffectiveLevel(), os.getpid())) as pool:
                futures = [pool.submit(run_replicate, *task) for task in tasks]
                try:
                    for task, future in zip(tasks, futures):
                        collect(task, future.result)
                except BaseException:  # the first failure (or Ctrl-C) ends the run, not hours later
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
        if not scores:  # nothing to score, so no calibration folder: the errors are said here instead
            errors = list(dict.fromkeys(f["error"] for f in failures))
            raise ReplicatesFailed(f"all {len(tasks)} replicates failed, so nothing was scored (first: "
                                   f"{failures[0]['scenario']}/replicate-{failures[0]['replicate']:02d}); their "
                                   f"{len(errors)} distinct error(s): " + " | ".join(errors[:3])
                                   + (" | ..." if len(errors) > 3 else ""), nothing_written=True)
        table = pd.concat(scores, ignore_index=True)
        if failures:
            staged.write_table("calibration_failures.tsv", pd.DataFrame(failures))
            for folder in staged.staging.iterdir():  # a scenario none of whose replicates finished
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        staged.write_table("calibration_replicates.tsv", table)
        diagnostics = diagnostics_table(tasks)
        if len(diagnostics):
            staged.write_table("calibration_diagnostics.tsv", diagnostics)
            unconverged = int((~diagnostics["converged"]).sum())
            if unconverged:
                log.warning("calibration: the chains of %d of %d replicates have not converged (R-hat beyond "
                            "chance; calibration_diagnostics.tsv); their intervals are scored with the others",
                            unconverged, len(diagnostics))
        summary = summarise_scores(table)
        staged.write_table("calibration.tsv", summary)
        calibration_figure(summary, staged.path("calibration.png"))
        from megafc.core.outputs import write_reports

        write_reports(registry, "calibration", staged.staging, Path(out_dir), staging=True)
        staged.commit()
    print(summary[summary["stratum"] == "all"].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if failures:
        raise ReplicatesFailed(f"{len(failures)} of {len(tasks)} replicates failed (listed in "
                               f"{Path(out_dir) / 'calibration_failures.tsv'}); the other {len(tasks) - len(failures)} "
                               f"are scored in {out_dir}", nothing_written=False)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    from megafc.cli.app import _quiet_libraries, fail

    ap = argparse.ArgumentParser(prog="megafc-calibrate", description=__doc__.split("\n\n")[0].replace("``", ""),
                                 epilog="Other arguments are megafc config overrides, e.g. pooling=pymc dataset.scale=0.5")
    ap.add_argument("--replicates", type=int, default=10, help="number of simulated datasets (default 10)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default calibration/<date>_<time>)")
    ap.add_argument("--scenario", action="append", default=None,
                    help="stress-test scenario, repeatable, or 'all' (default: default); one of "
                         + ", ".join(SCENARIOS))
    ap.add_argument("--jobs", type=int, default=1,
                    help="replicates run at once, in that many worker processes (default 1; 2 helps most "
                         "for small studies and fast models)")
    ap.add_argument("--keep-going", action="store_true",
                    help="a failing replicate does not end the run: the others are scored, the failures are "
                         "listed in calibration_failures.tsv and the exit status is still non-zero")
    ap.add_argument("--min-effect", type=float, default=0.02,
                    help="|planted effect| (Fisher z) counted as non-zero for sign recovery (default 0.02)")
    args, overrides = ap.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    _quiet_libraries()
    out = args.out or Path("calibration") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    try:
        _check_overrides(overrides)
        scenarios = list(SCENARIOS) if args.scenario and "all" in args.scenario else args.scenario
        calibrate(overrides, args.replicates, out, args.min_effect, scenarios, args.jobs, args.keep_going)
    except MegafcError as exc:
        fail(exc)
    except Exception as exc:  # hydra override errors and bugs: still one paragraph
        fail(exc)
    sys.exit(0)


def _check_overrides(overrides: list[str]) -> None:
    """Every argument argparse did not take must be a config override (``key=value`` or ``~key``):
    ``--scenario a b`` would otherwise reach Hydra's parser as the override ``b``."""
    for arg in overrides:
        if "=" in arg or arg.startswith("~"):
            continue
        if arg in SCENARIOS or arg == "all":
            raise ConfigError(f"'{arg}' is a scenario, not a config override (key=value): give each scenario "
                              f"its own --scenario, e.g. --scenario default --scenario {arg}")
        raise ConfigError(f"argument '{arg}' is not a megafc-calibrate option or a config override (key=value, "
                          "e.g. pooling=meta)")


class CalibrationReport(Reporter):
    """report.html of a megafc-calibrate folder: coverage, bias and false signs per scenario and table."""

    name = "calibration_report"
    scope = "calibration"

    def write(self, folder: Path, shown_as: Path | None = None, sections=()) -> Path | None:
        from megafc.core.report import figure_html, png_data_uri, read_tsv

        from .page import html_table, render_page

        folder = Path(folder)
        summary = read_tsv(folder / "calibration.tsv")
        if summary is None:
            return None
        parts = [("overview", "Coverage of the planted effects",
                  "<p>How often each table's 50% and 95% intervals contain the planted value, over the simulated "
                  "replicates (dashed lines: nominal).</p>"
                  + figure_html(png_data_uri((folder / "calibration.png").read_bytes()), "Interval coverage.",
                                "calibration"))]
        failures = read_tsv(folder / "calibration_failures.tsv")
        if failures is not None:  # run with --keep-going: what is not in the tables, and why
            parts.append(("failures", f"Failed replicates ({len(failures)})",
                          "<p>These replicates failed and are not scored; the tables below hold the others "
                          "(column <code>replicates</code>).</p>" + html_table(failures)))
        diagnostics = read_tsv(folder / "calibration_diagnostics.tsv")
        if diagnostics is not None:
            parts.append(("diagnostics", "Sampling diagnostics of the replicates",
                          "<p>Every replicate's intervals are scored, whatever its chains did. Not converged: "
                          "R-hats beyond what converged chains of this length give by chance (the run's own "
                          "warning); per replicate in <code>calibration_diagnostics.tsv</code>.</p>"
                          + html_table(diagnostics_by_scenario(diagnostics))))
        for scenario, rows in summary.groupby("scenario", sort=False):
            parts.append((f"scenario-{scenario}", f"Scenario: {scenario}",
                          f"<p>Overrides: <code>{' '.join(SCENARIOS.get(str(scenario), [])) or '(none)'}</code>.</p>"
                          + html_table(rows.drop(columns="scenario"), scroll=True)))
        out = folder / "report.html"
        shown = Path(shown_as or folder)
        out.write_text(render_page(f"megafc calibration: {shown.resolve().name}", parts,
                                   [("folder", str(shown)), ("replicates", int(summary["replicates"].max()))]),
                       encoding="utf-8")
        return out
