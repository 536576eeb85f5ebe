"""Quantities derived from posterior draws: drug contrasts, summary rows, map similarity, false sign rates.

Each is computed draw by draw, so it carries its own interval and diagnostics, rather than
being assembled from per-pair summaries after the fact.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pandas as pd

from megafc.core import ConfigError
from megafc.stats import summarise_draws
from megafc.core.aggregate import parent_pairs

from .adaptive_shrinkage import MIN_EFFECTS, adaptive_shrinkage
from .error_correlation import ErrorCorrelation, residual_correlation

log = logging.getLogger("megafc")


def contrast_pairs(drugs: list[str], requested: list[str], absent: list[str] = (),
                   say: bool = False) -> list[tuple[str, str]]:
    """Drug pairs to contrast; ``requested`` entries are "a-b" and must name known drugs. One
    naming a drug the data have but this analysis does not (``absent``: a leave-one-dataset-out
    job's left-out drug) is left out, with a warning when ``say``."""
    if not requested:
        return list(itertools.combinations(drugs, 2))
    out = []
    for item in requested:
        a, sep, b = str(item).partition("-")
        if sep and a != b and {a, b} <= {*drugs, *absent} and {a, b} & set(absent):
            if say:
                log.warning("pooling.contrasts: '%s' is not estimated: drug(s) %s have no analysed drug scan in "
                            "this run (left out or excluded; scans.tsv)", item, sorted({a, b} & set(absent)))
            continue
        if not sep or a not in drugs or b not in drugs or a == b:
            raise ConfigError(
                f"config key 'pooling.contrasts' has '{item}'; expected 'drugA-drugB' with two different "
                f"drugs from the data: {drugs}"
            )
        out.append((a, b))
    return out


def contrast_blocks(drugs: list[str], drug_draws: np.ndarray, requested: list[str], absent: list[str] = ()):
    """(effect, type, level, draws) blocks of drug-minus-drug differences."""
    idx = {d: i for i, d in enumerate(drugs)}
    return [
        (f"contrast:{a}-{b}", "contrast", f"{a}-{b}", drug_draws[:, :, idx[a]] - drug_draws[:, :, idx[b]])
        for a, b in contrast_pairs(drugs, requested, absent)
    ]


def absent_drugs(pairs: pd.DataFrame) -> list[str]:
    """Drugs of the data with no analysed drug scan (``attrs`` the aggregation stage sets)."""
    return list(pairs.attrs.get("absent_drugs", ()))


def summary_columns(pairs_meta: pd.DataFrame, table: pd.DataFrame) -> np.ndarray:
    """Which outcome columns are summaries (pseudo pairs the pipeline added), not network pairs."""
    names = set(table.attrs.get("summaries", pd.DataFrame(columns=["summary"]))["summary"])
    return (pairs_meta["network_b"].to_numpy() == "") & pairs_meta["network_a"].isin(names).to_numpy()


def false_sign_rates(table: pd.DataFrame, datasets_together: bool = True,
                     correlation: ErrorCorrelation | None = None) -> pd.DataFrame:
    """Add ``lfsr`` and ``svalue`` (Stephens 2017) to an effects or summaries table.

    lfsr, the local false sign rate, is the probability that the effect is zero or of the other
    sign than its mean, from adaptive shrinkage over all rows of the same effect (``overall``,
    ``drug:LSD`` ... over the network pairs, or over the summaries), so that looking at many
    pairs is paid for (see adaptive_shrinkage.py); an effect of fewer than MIN_EFFECTS rows gets
    1 - pd. On 20 simulated null studies, svalue <= 0.05 on 1 - pd selected 2,527 pair effects and
    361 summary effects, all false; on these lfsr, none. With ``datasets_together`` (network
    pairs) the dataset effects of all datasets share one fit: one dataset's 120 pairs left its
    prior's share of non-zero effects loose enough that null dataset effects were selected
    (1-3 in 20 null studies where their lfsr expected 0.0-0.1; none over all datasets' pairs).
    Summaries keep one fit per dataset: ~20 summaries a dataset, mostly non-zero, made one
    joint prior too ready to call small ones (false signs among selected summary dataset effects
    53 where 35 were expected, against 24 / 24 per dataset). An effect's svalue
    is the mean lfsr of every effect of its kind at least as sure as it: selecting the effects
    with svalue <= a expects at most a fraction a of them to have the wrong sign or be zero.
    ``null_share`` is the share of exact zeros the fit learned for the row's family: near 1, the
    family's estimates are as spread as their noise alone makes them, and no row's sign is sure,
    whatever its interval says. ``correlation``: how much the rows' errors move together (per
    dataset for dataset effects, pooled for the others; see error_correlation.py), which the fit
    integrates out as a shift common to a family's rows of one dataset (``error_correlation``).
    """
    correlation = correlation or ErrorCorrelation()
    out = table.copy()
    out["lfsr"] = (1.0 - out["pd"]).clip(lower=0.0)
    out["svalue"] = np.nan
    out["null_share"] = np.nan
    out["error_correlation"] = np.nan
    family = out["effect"]
    if datasets_together and "effect_type" in out:
        family = family.where(out["effect_type"] != "dataset", "dataset:*")
    for _, idx in out.groupby(family, sort=False).groups.items():
        rows = out.loc[idx]
        fit = rows["mean"].notna() & np.isfinite(rows["sd"]) & (rows["sd"] > 0)
        if fit.sum() >= MIN_EFFECTS:
            dataset = _dataset_of(rows.loc[fit])
            rho = dataset.map(correlation.of).where(dataset.notna(), correlation.pooled).to_numpy(dtype=float)
            shrunk = adaptive_shrinkage(rows.loc[fit, "mean"].to_numpy(), rows.loc[fit, "sd"].to_numpy(),
                                        correlation=rho, groups=dataset.fillna("").to_numpy())
            out.loc[fit[fit].index, "lfsr"] = shrunk.lfsr
            out.loc[fit[fit].index, "error_correlation"] = rho
            out.loc[idx, "null_share"] = shrunk.null_weight
            out.loc[fit[~fit].index, "lfsr"] = np.nan  # no estimate to shrink: unknown, not 1 - pd
    for _, idx in out.groupby("effect", sort=False).groups.items():  # one list per effect
        lfsr = out.loc[idx, "lfsr"].dropna()
        order = lfsr.sort_values(kind="stable").index
        out.loc[order, "svalue"] = (lfsr.loc[order].cumsum() / np.arange(1, len(order) + 1)).to_numpy()
    return out


def _dataset_of(rows: pd.DataFrame) -> pd.Series:
    """The dataset of each dataset effect (``dataset:x`` or ``dataset:x[drug]``); NaN for other effects."""
    return rows["effect"].astype(str).str.extract(r"^dataset:([^\[]*)", expand=False)


#: What the lfsr and svalue columns are, for a model's methods text.
FALSE_SIGN_TEXT = (
    "Local false sign rates (lfsr: the probability that an effect is zero or of the other sign) and s-values by "
    "adaptive shrinkage (Stephens 2017) of each effect over the network pairs (the dataset effects of all datasets "
    f"together), and over the summaries (1 - probability of direction for an effect of fewer than {MIN_EFFECTS}), "
    "allowing for errors shared by all rows of an effect in one dataset (their correlation: the mean correlation "
    "across outcomes of the scans' residual FC after condition, subject, motion and session order; column "
    "error_correlation); "
    "effects selected at a false sign rate a are those with svalue <= a."
)


def bayesian_description(description: str, effects: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> str:
    """A Bayesian fit's methods paragraph: the model's own words, then the false sign rates and
    the quantities derived from the draws."""
    return f"{description} {FALSE_SIGN_TEXT} {derived_text(tables, made_contrasts(effects))}".rstrip()


def made_contrasts(effects: pd.DataFrame) -> list[str]:
    return sorted({str(e) for e in effects["effect"] if str(e).startswith("contrast:")})


def derived_text(tables: dict[str, pd.DataFrame], contrasts: list[str]) -> str:
    """The methods' sentence on the quantities derived from the draws, as this fit made them
    (``contrasts``: the contrast effects made, e.g. ``contrast:LSD-psilocybin``)."""
    parts = []
    if contrasts:
        parts.append(f"drug contrasts (contrast:A-B, drug A's effect minus drug B's: {len(contrasts)} "
                     f"pair{'s' if len(contrasts) != 1 else ''} of drugs)")
    if "drug_similarity" in tables:
        parts.append("drug similarity per pair of drugs across network pairs (pattern_r_corrected, the maps' "
                     "correlation; rms_ratio, drug A's root-mean-square effect over drug B's; rms_distance, the "
                     "root-mean-square difference), each draw's cross-pair (co)variances less twice the posterior "
                     "(co)variance averaged over pairs, so that their intervals are a heuristic, not a posterior")
    if "specificity" in tables:
        parts.append("each network pair's subnetwork specificity (the sd of its subnetwork pairs' effects, less the "
                     "posterior noise's share)")
    return ("Derived from the posterior draws: " + "; ".join(parts) + ".") if parts else ""


def split_summaries(effects: pd.DataFrame, table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(effects of network pairs, summaries table) from a model's effects over every outcome,
    each with its false sign rates (computed within pairs and within summaries separately).

    The summaries table has one row per summary and effect, with the number of member pairs.
    """
    members = table.attrs.get("summaries")
    if members is None or members.empty:
        return false_sign_rates(effects, correlation=residual_correlation(table)), None
    is_summary = summary_columns(effects, table)
    summary_rows = summary_columns(table, table)
    n_pairs = members.groupby("summary").size()
    summaries = effects[is_summary].drop(columns=["network_b", "system_a", "system_b"], errors="ignore")
    summaries = summaries.rename(columns={"network_a": "summary"})
    summaries.insert(1, "n_pairs", summaries["summary"].map(n_pairs).astype(int))
    return (false_sign_rates(effects[~is_summary].reset_index(drop=True),
                             correlation=residual_correlation(table, ~summary_rows)),
            false_sign_rates(summaries.reset_index(drop=True), datasets_together=False,
                             correlation=residual_correlation(table, summary_rows)))


#: A draw differs from the true map by the posterior noise and by the posterior mean's own error.
ERRORS_PER_DRAW = 2


def bounded_interval(row: pd.Series, edges: pd.Series, low: float, high: float) -> pd.Series:
    """``row`` with the HDIs of ``edges`` (the summary of its unbounded draws) cut to [low, high]."""
    out = row.copy()
    for column in ("hdi_low", "hdi_high", "hdi50_low", "hdi50_high"):
        out[column] = float(np.clip(edges[column], low, high))
    return out


def drug_similarity(drugs: list[str], drug_draws: np.ndarray, hdi_prob: float,
                    scales: np.ndarray | None = None, factors: np.ndarray | None = None) -> pd.DataFrame:
    """How alike two drugs' effect maps are (across network pairs), each measure computed draw
    by draw on the drug-level effects.

    A draw of a map is the posterior mean plus posterior noise, and the posterior mean is the
    true map plus an estimation error of about the same variance (drug effects have priors far
    wider than their data's spread). Across ~100 mostly-null pairs those two errors dominate
    what a draw's correlation or spread sees: on simulated studies the raw correlation of draws
    came out ~0.2-0.3 below the planted one (its 95% intervals covered it in 0 of 200 drug
    pairs) and raw distances several times too large. The ``_corrected`` measures therefore
    subtract, from each draw's cross-pair (co)variances, twice the posterior (co)variances
    averaged over pairs (the two errors' expected share, as in disattenuating a correlation for
    measurement error; subtracting it once left the distances ~2 sds too large). That is only
    right where the posterior variance is the estimate's real error, as with the default
    learned between-dataset sds (``heterogeneity: learned``); the interval keeps the draws'
    spread, a heuristic rather than a posterior. The measures: ``pattern_r_corrected`` (the
    maps' correlation), ``rms_ratio`` (drug a's root-mean-square effect over drug b's: which
    is stronger) and ``rms_distance`` (root-mean-square difference). Where a map cannot be
    told from the noise (its corrected spread <= 0 in more than 5% of draws, or fewer than 3
    pairs) the measure is NaN: undefined, not 0 or +-1; in up to 5% of draws a ratio is capped
    at its largest other draw. A corrected correlation beyond +-1 (the correction overshoots
    where two maps differ by less than their noise) is capped at +-1 in its draws (mean, sd),
    but its interval is the HDI of the uncapped draws, cut to [-1, 1]: the HDI of capped draws
    piles up at the cap and shrank to [1, 1] where nearly alike maps were planted 0.99-0.9996
    apart (95% coverage 0.84 on maps with correlated pairs). Likewise a distance whose
    corrected square falls below 0 is 0 in its draws, and its interval is taken on the signed
    root and cut at 0 (it was [0, 0] for planted distances of 0.003-0.006).
    ``pearson_r_across_pairs`` is the raw correlation
    of earlier versions. ``scale_ratio`` (models with drug scales: ``scales`` (chain, draw,
    drug)): scale a / scale b, the strengths at which the drugs show the shared pattern.
    ``drug_draws``: (chain, draw, drug, pair).

    ``factors`` (chain, draw, drug; models with dataset scales): each drug's population effects
    are its fitted ones (``drug_draws``) times one factor per draw, the unknown strength of a new
    dataset of the drug. That factor is common to all of a drug's pairs, not noise independent
    from pair to pair, so the noise correction is computed on the fitted draws and the factor
    applied after: it widens the magnitudes (a drug seen in one dataset cannot be told from that
    dataset's strength) and leaves the correlations, blind to scale, as they are.
    """
    n_chain, n_draw, n_drugs, n_pairs = drug_draws.shape
    flat = drug_draws.reshape(n_chain * n_draw, n_drugs, n_pairs)
    dev = flat - flat.mean(axis=0)
    denom = max(len(flat) - 1, 1) * n_pairs
    # posterior (co)variance averaged over pairs, twice: the draws' noise and the estimate's error
    noise = ERRORS_PER_DRAW * np.einsum("sdp,sep->de", dev, dev) / denom
    dev_c = dev - dev.mean(axis=-1, keepdims=True)  # what is left of it in statistics centred over pairs
    noise_c = ERRORS_PER_DRAW * np.einsum("sdp,sep->de", dev_c, dev_c) / denom
    f = np.ones((n_chain, n_draw, n_drugs)) if factors is None else factors
    rows = []
    for a, b in itertools.combinations(range(n_drugs), 2):
        x = drug_draws[:, :, a] - drug_draws[:, :, a].mean(axis=-1, keepdims=True)
        y = drug_draws[:, :, b] - drug_draws[:, :, b].mean(axis=-1, keepdims=True)
        sab, saa, sbb = (x * y).mean(-1), (x ** 2).mean(-1), (y ** 2).mean(-1)
        va, vb = saa - noise_c[a, a], sbb - noise_c[b, b]
        fa, fb = f[:, :, a], f[:, :, b]
        ms_a = fa ** 2 * ((drug_draws[:, :, a] ** 2).mean(-1) - noise[a, a])
        ms_b = fb ** 2 * ((drug_draws[:, :, b] ** 2).mean(-1) - noise[b, b])
        ms_d = (((fa[..., None] * drug_draws[:, :, a] - fb[..., None] * drug_draws[:, :, b]) ** 2).mean(-1)
                - (fa ** 2 * noise[a, a] + fb ** 2 * noise[b, b] - 2 * fa * fb * noise[a, b]))
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            uncapped = (sab - noise_c[a, b]) / np.sqrt(np.maximum(va, 0.0) * np.maximum(vb, 0.0))
            uncapped = np.where(np.isfinite(uncapped), uncapped, np.sign(sab - noise_c[a, b]))
            corrected = np.clip(uncapped, -1.0, 1.0)
            ratio = np.where(ms_b > 0, np.sqrt(np.maximum(ms_a, 0.0) / ms_b), np.nan)
            if np.isnan(ratio).any() and np.isfinite(ratio).any():  # b lost in the noise in a few draws:
                ratio = np.where(np.isnan(ratio), np.nanmax(ratio), ratio)  # censored at the largest seen
            defined = n_pairs >= 3 and ((va <= 0) | (vb <= 0)).mean() <= 0.05
            measures = {
                "pattern_r_corrected": corrected if defined else np.full_like(sab, np.nan),
                "pearson_r_across_pairs": sab / np.sqrt(saa * sbb),
                "rms_ratio": ratio if n_pairs >= 3 and (ms_b <= 0).mean() <= 0.05 else np.full_like(sab, np.nan),
                "rms_distance": np.sqrt(np.maximum(ms_d, 0.0)),
            }
        if scales is not None:
            measures["scale_ratio"] = scales[:, :, a] / scales[:, :, b]
        # the intervals of the bounded measures come from their unbounded draws, summarised alongside
        unbounded = {"rms_distance": (np.sign(ms_d) * np.sqrt(np.abs(ms_d)), 0.0, np.inf)}
        if defined:
            unbounded["pattern_r_corrected"] = (uncapped, -1.0, 1.0)
        names = list(measures)
        summary = summarise_draws(np.stack([*measures.values(), *(u for u, _, _ in unbounded.values())], axis=-1),
                                  hdi_prob=hdi_prob)
        stacked = summary.iloc[:len(names)].copy()
        for k, (name, (_, low, high)) in enumerate(unbounded.items()):
            i = names.index(name)
            stacked.iloc[i] = bounded_interval(stacked.iloc[i], summary.iloc[len(names) + k], low, high)
        for i, m in enumerate(names):
            row = {"drug_a": drugs[a], "drug_b": drugs[b], "measure": m, **stacked.iloc[i].to_dict()}
            if m in RATIOS:  # a ratio is positive: its question is whether drug a is the stronger one
                row["pd"], row["p_above_1"] = np.nan, share_above_1(measures[m])
            elif m == "rms_distance":
                row["pd"] = np.nan  # a distance has no sign (pd would be the share of draws above the floor)
            rows.append(row)
    return pd.DataFrame(rows)


def share_above_1(draws: np.ndarray) -> float:
    """The share of draws above 1; NaN for an undefined measure or one fixed by the model (a
    drug's only dataset has scale 1 in every draw), which no data moved either way."""
    x = np.asarray(draws, dtype=float)
    if not np.isfinite(x).any() or np.nanmax(x) == np.nanmin(x):
        return float("nan")
    return float(np.mean(x[np.isfinite(x)] > 1))


#: drug_similarity measures that are ratios (drug a over drug b), positive by construction.
RATIOS = ("rms_ratio", "scale_ratio")

#: The columns of the derived tables (drug_similarity, drug_scales, dataset_scales, specificity,
#: heterogeneity) for their JSON data dictionaries.
DERIVED_COLUMN_TEXT: dict[str, tuple[str, str | None]] = {
    "mean": ("Posterior mean of the row's quantity (a measure, scale, spread or sd: see the row).", None),
    "sd": ("Posterior standard deviation of the row's quantity.", None),
    "hdi_low": ("Lower end of the row's highest-density interval at pooling.hdi_prob (for bounded quantities, "
                "taken on their unbounded draws and cut at the bound).", None),
    "hdi_high": ("Upper end of that interval.", None),
    "hdi50_low": ("Lower end of the 50% interval.", None),
    "hdi50_high": ("Upper end of the 50% interval.", None),
    "pd": ("Probability of direction of a signed quantity (a correlation, a slope); n/a for ratios, distances, "
           "spreads and sds, which have no sign.", None),
    "drug_a": ("The first drug of the pair; ratios are drug_a over drug_b.", None),
    "drug_b": ("The second drug of the pair.", None),
    "measure": ("pattern_r_corrected: correlation of the two drugs' effect maps across network pairs, corrected "
                "for posterior noise (a heuristic interval: see docs/calibration.md); rms_ratio: root-mean-square "
                "effect of drug_a over drug_b's (> 1: drug_a the stronger); rms_distance: root-mean-square "
                "difference of the maps (Fisher z); scale_ratio: drug_a's scale over drug_b's (models with drug "
                "scales); pearson_r_across_pairs: the raw correlation of draws, attenuated by their noise "
                "(descriptive only).", None),
    "p_above_1": ("Posterior share of draws above 1: for a ratio, that drug_a is the stronger; for a scale, "
                  "that the drug (dataset) is stronger than the shared pattern (its drug's).", None),
    "drug": ("The drug (drug_scales: its strength relative to the shared pattern; dataset_scales: the dataset's "
             "drug).", None),
    "dataset": ("The dataset unit (dataset[drug] for a dataset with several drugs).", None),
    "parameter": ("heterogeneity.tsv: tau_dataset (between-dataset sd of a pair's effect), tau_drug (between-drug "
                  "sd, random drug effects), residual_sd and subject_sd (per dataset, in level), or "
                  "slope:<covariate> (per pair, in the unit level says).", None),
    "level": ("heterogeneity.tsv: the dataset of a residual_sd or subject_sd row, the unit of a slope row "
              "(e.g. per mm of mean FD); empty for a pair's tau.", None),
    "n_pairs": ("specificity.tsv: subnetwork pairs whose effects' spread is measured.", None),
    "effect": ("specificity.tsv: the effect (overall, drug:<drug>) whose spread over a network pair's subnetwork "
               "pairs the row measures.", None),
}

#: PoolingResult.columns of the Bayesian models: their derived tables, each described.
DERIVED_COLUMNS = {name: DERIVED_COLUMN_TEXT for name in
                   ("drug_similarity", "drug_scales", "dataset_scales", "specificity", "heterogeneity")}


def subnetwork_specificity(pairs_meta: pd.DataFrame, table: pd.DataFrame,
                           blocks: list[tuple[str, str, str, np.ndarray]], hdi_prob: float) -> pd.DataFrame | None:
    """How unevenly a network pair's effect falls on its subnetwork pairs: per network pair
    (with >= 2 subnetwork pairs) and effect, the sd of its subnetwork pairs' effects, draw by
    draw (None unless the table is at subnetwork level: ``table.attrs["parents"]``).

    A draw of the effects is their values plus posterior noise, which alone would make even
    an even effect look uneven. As for drug similarity, each draw's variance across the
    subnetwork pairs has the noise's expected share, (tr C - 1'C1/n) / (n - 1) with C the
    posterior covariance of the n pairs' effects, subtracted (floored at 0), so a network pair
    whose subnetwork pairs move alike has a spread near 0 and its interval says how uneven the
    effect could be. ``blocks``: (effect, type, level, draws (chain, draw, pair)) of the overall
    and drug effects, pairs as in ``pairs_meta``.
    """
    parents = table.attrs.get("parents")
    if not parents:
        return None
    groups = parent_pairs(pairs_meta["network_a"], pairs_meta["network_b"], parents).dropna()  # row i: pair i
    rows, spreads = [], []
    for (net_a, net_b), members in groups.groupby(["network_a", "network_b"], sort=False):
        idx = members.index.to_numpy()
        n = len(idx)
        if n < 2:
            continue
        for effect, _, _, draws in blocks:
            x = draws[..., idx]
            flat = x.reshape(-1, n)
            cov = np.cov(flat, rowvar=False)
            noise = (np.trace(cov) - cov.sum() / n) / (n - 1)
            variance = x.var(axis=-1, ddof=1) - noise
            spreads.append(np.sqrt(np.maximum(variance, 0.0)))
            rows.append({"network_a": net_a, "network_b": net_b, "effect": effect, "n_pairs": n})
    if not rows:
        return None
    out = summarise_draws(np.stack(spreads, axis=-1), hdi_prob=hdi_prob).drop(columns="pd", errors="ignore")
    return pd.concat([pd.DataFrame(rows), out.reset_index(drop=True)], axis=1)  # a spread has no sign


def scale_table(names: list[str], scales: np.ndarray, hdi_prob: float, column: str = "drug") -> pd.DataFrame:
    """One row per drug (relative to the overall pattern) or dataset unit (relative to its
    drug): the posterior of its scale."""
    out = summarise_draws(scales, hdi_prob=hdi_prob).drop(columns="pd")  # a scale is positive: pd says nothing
    flat = scales.reshape(-1, scales.shape[-1])
    out["p_above_1"] = [share_above_1(flat[:, k]) for k in range(flat.shape[1])]
    out.insert(0, column, names)
    return out
