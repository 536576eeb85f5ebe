"""The ``meta`` pooling model: a frequentist two-stage meta-analysis, the comparator.

"Meta- vs mega-analysis": the Bayesian models (``pymc``, ``bambi``) fit every drug scan at
once (a mega-analysis). This model instead summarises each dataset on its own and then pools
the summaries, as a conventional meta-analysis of published studies would:

1. per dataset and network pair, an ordinary least-squares regression of every scan's FC on
   subject fixed effects (when any subject of the dataset has both drug and control scans: a
   within-subject estimate, to which subjects with a single scan add nothing) or an intercept
   (parallel groups: the drug group minus the placebo group), one drug indicator per *unit*
   (the dataset, or ``dataset[drug]`` when a dataset gives several drugs) and mean FD (when every
   scan has it: effects at equal motion); each unit's coefficient and its classical standard
   error;
2. a DerSimonian-Laird random-effects meta-analysis of those means across datasets,
   overall (all datasets) and per drug (that drug's datasets);
3. drug contrasts (``contrast:a-b``, every pair of drugs or ``pooling.contrasts``): the
   difference of two drugs' pooled estimates, their standard errors combined as independent
   (their datasets are distinct; where one dataset gives both drugs they share its subjects'
   controls, whose positive correlation makes that standard error conservative).

Conventions (read these before comparing with the Bayesian models' effects.tsv):

- ``mean``/``sd`` are the pooled estimate and its standard error; ``hdi_low``/``hdi_high``
  hold a Wald **confidence interval** at ``ci_level`` (estimate +- z * se), not a highest
  density interval. Dataset rows use the same normal interval (within-dataset variances are
  treated as known, as DerSimonian-Laird does).
- ``pd`` is the one-sided normal probability of the estimate's sign, ``max(Phi(z), 1 - Phi(z))``
  (= 1 - p/2), the frequentist analogue of the probability of direction.
- ``r_hat``, ``ess_bulk``, ``ess_tail`` are NaN and ``divergences`` 0: nothing is sampled.
- ``ok`` is False for the overall effect when fewer than 2 datasets enter it, for a drug
  effect when none of its datasets can enter it, and for a dataset whose regression has no
  residual degrees of freedom (no standard error; such a dataset is left out of the
  meta-analysis); the reasons are in ``PoolingResult.warnings``.
- A drug with a single dataset has that dataset's estimate and standard error as its drug
  effect, with ``tau2 = 0`` (between-dataset heterogeneity cannot be estimated from one
  study) and ``q = i2 = 0``.
- Extra columns: ``tau2`` (DL between-dataset variance), ``i2`` (Higgins' I^2, %), ``q``
  (Cochran's Q), ``k`` (datasets pooled), ``z``, ``p`` (two-sided), ``p_fdr``
  (Benjamini-Hochberg across network pairs within each effect).
- A dataset's standard error of exactly 0 (all its differences equal) is floored at
  ``MIN_VARIANCE`` so that weights stay finite (a warning says so).

Several drug scans of one subject share its fixed effect, so repeated scans are not
counted as independent subjects; a dataset with several drugs given to the same subjects
contributes correlated units, which the meta-analysis ignores (a warning says so).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd
from scipy import stats

from megafc.core import ConfigError, PoolingModel, PoolingResult

from .adaptive_shrinkage import REFERENCE as ASH_REFERENCE
from .derived import FALSE_SIGN_TEXT, absent_drugs, contrast_pairs, split_summaries, summary_columns
from .design import outcomes_text
from .scan_design import ScanDesign, motion_on, scan_design

#: Floor on a dataset's sampling variance (Fisher z squared; se 1e-6) so weights are finite.
MIN_VARIANCE = 1e-12

#: Columns added after EFFECT_COLUMNS (with system_a, system_b, n_obs as the Bayesian models).
META_COLUMNS = ("tau2", "i2", "q", "k", "z", "p", "p_fdr")


def dersimonian_laird(estimates, variances) -> dict[str, np.ndarray]:
    """DerSimonian-Laird random-effects meta-analysis, vectorised over columns.

    ``estimates``, ``variances``: arrays of shape (k, n) (k studies, n independent
    meta-analyses, e.g. network pairs); a 1-D input is treated as one meta-analysis. A study
    is left out of a column where its estimate or variance is NaN. Variances must be > 0.

    Returns a dict of arrays of shape (n,): ``estimate``, ``se``, ``tau2``, ``q`` (Cochran's
    Q), ``i2`` (I^2 in %, ``max(0, (Q - df) / Q) * 100``), ``k`` (studies used), ``df``
    (``k - 1``), ``fixed`` and ``fixed_se`` (the inverse-variance fixed-effect estimate).

    tau^2 = max(0, (Q - (k - 1)) / (sum w - sum w^2 / sum w)) with w = 1/v, truncated at 0;
    with k = 1 it is 0 and the estimate is the study's own. With k = 0 everything is NaN.
    """
    y = np.asarray(estimates, dtype=float)
    v = np.asarray(variances, dtype=float)
    squeeze = y.ndim == 1
    if squeeze:
        y, v = y[:, None], v[:, None]
    if y.shape != v.shape or y.ndim != 2:
        raise ValueError(f"estimates {y.shape} and variances {v.shape} must have the same (k, n) shape")
    valid = np.isfinite(y) & np.isfinite(v)
    if np.any(v[valid] <= 0):
        raise ValueError("dersimonian_laird: variances must be positive")
    k = valid.sum(axis=0)
    y0 = np.where(valid, y, 0.0)
    w = np.where(valid, 1.0 / np.where(valid, v, 1.0), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sw = w.sum(axis=0)
        fixed = (w * y0).sum(axis=0) / sw
        # one study has no spread: Q is 0, not the rounding error of its own deviation (which
        # made I^2 = (Q - 0) / Q = 100%)
        q = np.where(k >= 2, (w * (y0 - fixed) ** 2).sum(axis=0), 0.0)
        df = k - 1
        c = sw - (w**2).sum(axis=0) / sw
        tau2 = np.where((k >= 2) & (c > 0), np.maximum(0.0, (q - df) / np.where(c > 0, c, 1.0)), 0.0)
        ws = np.where(valid, 1.0 / (np.where(valid, v, 1.0) + tau2), 0.0)
        sws = ws.sum(axis=0)
        est = (ws * y0).sum(axis=0) / sws
        se = np.sqrt(1.0 / sws)
        i2 = np.where(q > 0, np.maximum(0.0, (q - df) / np.where(q > 0, q, 1.0)) * 100.0, 0.0)
    none = k == 0
    out = {
        "estimate": est, "se": se, "tau2": tau2, "q": q, "i2": i2, "k": k, "df": df,
        "fixed": fixed, "fixed_se": np.sqrt(1.0 / np.where(none, np.nan, sw)),
    }
    for key in ("estimate", "se", "tau2", "q", "i2", "fixed"):
        out[key] = np.where(none, np.nan, out[key])
    if squeeze:
        out = {key: val[0] for key, val in out.items()}
    return out


def _median(values: np.ndarray) -> float:
    return float(np.nanmedian(values)) if np.isfinite(values).any() else np.nan


def _bh_numpy(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values of a 1-D array without NaN."""
    n = len(p)
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.clip(adj, 0.0, 1.0)
    return out


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini-Hochberg (1995) adjusted p-values; NaN entries stay NaN and are not counted."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if not ok.any():
        return out
    fdc = getattr(stats, "false_discovery_control", None)
    out[ok] = fdc(p[ok], method="bh") if fdc is not None else _bh_numpy(p[ok])
    return out


def fdr_within(p: np.ndarray, is_summary: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg across network pairs, and separately across summaries."""
    out = np.empty(len(p))
    for family in (is_summary, ~is_summary):
        out[family] = benjamini_hochberg(p[family]) if family.any() else np.nan
    return out


def dataset_summaries(design: ScanDesign, motion: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Per unit and network pair: the regression estimate of the drug effect, its sampling
    variance and n (drug scans); shapes (n_units, n_pairs). Also how each dataset was modelled.

    The variance is NaN where the regression has no residual degrees of freedom.
    """
    n_units, n_pairs = len(design.units), design.y.shape[1]
    est = np.full((n_units, n_pairs), np.nan)
    var = np.full((n_units, n_pairs), np.nan)
    n = np.repeat(np.bincount(design.unit_idx[design.is_drug], minlength=n_units).astype(float)[:, None], n_pairs, axis=1)
    fd = design.obs["mean_fd"].to_numpy(dtype=float)
    how = []
    for k, ds in enumerate(design.datasets):
        rows = np.flatnonzero(design.dataset_idx == k)
        units = np.flatnonzero(design.unit_dataset == k)
        subjects = design.subject_idx[rows]
        paired = any(design.is_drug[rows][subjects == j].any() and (~design.is_drug[rows][subjects == j]).any()
                     for j in np.unique(subjects))
        if paired:
            base = (subjects[:, None] == np.unique(subjects)[None, :]).astype(float)
        else:
            base = np.ones((len(rows), 1))
        drug = (design.unit_idx[rows][:, None] == units[None, :]).astype(float)
        cols = [base, drug] + ([fd[rows, None]] if motion else [])
        x = np.hstack(cols)
        coef, _, rank, _ = np.linalg.lstsq(x, design.y[rows], rcond=None)
        df = len(rows) - rank
        how.append(f"{ds}: {'subject fixed effects' if paired else 'group difference'}")
        if df < 1:
            est[units] = coef[base.shape[1]:base.shape[1] + len(units)]
            continue
        resid = design.y[rows] - x @ coef
        s2 = (resid ** 2).sum(axis=0) / df
        xtx_inv = np.linalg.pinv(x.T @ x)
        for i, u in enumerate(units):
            c = base.shape[1] + i
            est[u] = coef[c]
            var[u] = s2 * xtx_inv[c, c]
    return est, var, n, how


class MetaAnalysisPooling(PoolingModel):
    """Two-stage DerSimonian-Laird random-effects meta-analysis (frequentist comparator)."""

    name = "meta"
    references = [
        "DerSimonian R, Laird N (1986) Meta-analysis in clinical trials. Control Clin Trials 7:177-188",
        "Benjamini Y, Hochberg Y (1995) Controlling the false discovery rate: a practical and powerful approach to "
        "multiple testing. J R Stat Soc B 57:289-300",
        ASH_REFERENCE,
    ]
    fits_summaries = True

    @dataclass
    class Config:
        #: Level of the Wald confidence intervals written to hdi_low/hdi_high.
        ci_level: float = 0.95
        #: Adjust for each scan's mean FD: null = whenever every scan has mean_fd.
        motion: Optional[bool] = None
        #: Drug contrasts to report as "a-b" (e.g. psilocybin-LSD); empty: every pair of drugs.
        contrasts: list[str] = field(default_factory=list)

    def __init__(self, config=None):
        super().__init__(config)
        if not 0 < self.config.ci_level < 1:
            raise ConfigError(f"config key 'pooling.ci_level' is {self.config.ci_level}; expected in (0, 1)")

    def fit(self, pairs: pd.DataFrame, seed: int) -> PoolingResult:
        design = scan_design(pairs)
        contrasts = (contrast_pairs(design.drugs, self.config.contrasts, absent_drugs(pairs), say=True)
                     if len(design.drugs) > 1 else [])
        motion, note = motion_on(design, self.config.motion)
        mean, var, n, how = dataset_summaries(design, motion)
        warnings: list[str] = [f"meta: {note}"] if note else []
        few = [u for i, u in enumerate(design.units) if not np.isfinite(var[i]).any()]
        if few:
            warnings.append(
                f"meta: dataset(s) {few} leave no residual degrees of freedom, so no standard error; "
                "they are reported alone (ok = false) and left out of the meta-analysis"
            )
        zero = np.isfinite(var) & (var <= MIN_VARIANCE)
        if zero.any():
            units = [design.units[i] for i in np.unique(np.nonzero(zero)[0])]
            warnings.append(
                f"meta: {int(zero.sum())} dataset x network pair variance(s) are (near) zero (datasets {units}); "
                f"floored at {MIN_VARIANCE:g} so that inverse-variance weights stay finite"
            )
            var = np.where(zero, MIN_VARIANCE, var)
        usable = np.isfinite(mean) & np.isfinite(var)
        est_in = np.where(usable, mean, np.nan)

        blocks = []  # (effect, effect_type, level, result dict, n_obs per pair)
        res = dersimonian_laird(est_in, var)
        blocks.append(("overall", "overall", "", res, (usable * n).sum(axis=0)))
        by_drug = {}
        for d_i, drug in enumerate(design.drugs):
            rows = np.nonzero(design.unit_drug == d_i)[0]
            r = dersimonian_laird(est_in[rows], var[rows])
            by_drug[drug] = (r, (usable[rows] * n[rows]).sum(axis=0))
            blocks.append((f"drug:{drug}", "drug", drug, *by_drug[drug]))
        for a, b in contrasts:
            (ra, na), (rb, nb) = by_drug[a], by_drug[b]
            nan = np.full(ra["se"].shape, np.nan)
            r = {"estimate": ra["estimate"] - rb["estimate"], "se": np.sqrt(ra["se"] ** 2 + rb["se"] ** 2),
                 "tau2": nan, "q": nan, "i2": nan, "k": ra["k"] + rb["k"]}
            blocks.append((f"contrast:{a}-{b}", "contrast", f"{a}-{b}", r, na + nb))
        for u_i, unit in enumerate(design.units):
            se = np.sqrt(var[u_i])
            nan = np.full(se.shape, np.nan)
            r = {"estimate": mean[u_i], "se": se, "tau2": nan, "q": nan, "i2": nan, "k": np.ones(se.shape, dtype=int)}
            blocks.append((f"dataset:{unit}", "dataset", unit, r, n[u_i]))

        zcrit = stats.norm.ppf(0.5 + self.config.ci_level / 2)
        is_summary = summary_columns(design.pairs, pairs)
        out = []
        for effect, etype, level, r, n_obs in blocks:
            with np.errstate(invalid="ignore", divide="ignore"):
                z = r["estimate"] / r["se"]
            p = 2 * stats.norm.sf(np.abs(z))
            if etype == "overall":
                ok = r["k"] >= 2
            elif etype == "drug":
                ok = r["k"] >= 1
            else:
                ok = np.isfinite(r["se"])
            phi = stats.norm.cdf(z)
            out.append(pd.DataFrame({
                "network_a": design.pairs["network_a"].to_numpy(),
                "network_b": design.pairs["network_b"].to_numpy(),
                "system_a": design.pairs["system_a"].to_numpy(),
                "system_b": design.pairs["system_b"].to_numpy(),
                "effect": effect,
                "effect_type": etype,
                "level": level,
                "mean": r["estimate"],
                "sd": r["se"],
                "hdi_low": r["estimate"] - zcrit * r["se"],
                "hdi_high": r["estimate"] + zcrit * r["se"],
                "pd": np.where(np.isfinite(z), np.maximum(phi, 1 - phi), np.nan),
                "r_hat": np.nan,
                "ess_bulk": np.nan,
                "ess_tail": np.nan,
                "divergences": 0,
                "ok": np.asarray(ok, dtype=bool),
                "n_obs": np.asarray(n_obs, dtype=int),
                "tau2": r["tau2"],
                "i2": r["i2"],
                "q": r["q"],
                "k": np.asarray(r["k"], dtype=int),
                "z": z,
                "p": p,
                "p_fdr": fdr_within(p, is_summary),
            }))
        effects, summaries = split_summaries(pd.concat(out, ignore_index=True), pairs)

        k_overall = int(blocks[0][3]["k"].max())
        if k_overall < 2:
            warnings.append(
                f"meta: only {k_overall} dataset(s) can be pooled; " + (
                    "the overall effect is that dataset's estimate and between-dataset heterogeneity cannot be "
                    "estimated (ok = false)" if k_overall else "every effect is NaN (ok = false)")
            )
        no_data = [lv for _, t, lv, r, _ in blocks if t == "drug" and int(r["k"].max()) == 0]
        if no_data:
            warnings.append(f"meta: drug(s) {no_data} have no dataset with a standard error; their effects are NaN")

        diagnostics = pd.DataFrame([
            {
                "effect": effect, "effect_type": etype, "level": level,
                "k": int(np.max(r["k"])), "n_obs": int(np.max(n_obs)),
                # over the network pairs, as n_p_fdr_05 (summaries are outcomes of their own)
                "tau2_median": _median(r["tau2"][~is_summary]),
                "i2_median": _median(r["i2"][~is_summary]),
                "n_p_fdr_05": int((effects.loc[effects["effect"] == effect, "p_fdr"] < 0.05).sum()),
            }
            for effect, etype, level, r, n_obs in blocks
        ])
        warnings += [f"pooling: {note}" for note in _notes(design)]
        return PoolingResult(
            effects=effects, diagnostics=diagnostics, idata=None,
            description=f"{self.describe_fit(design, k_overall, how, motion)} {FALSE_SIGN_TEXT}", warnings=warnings,
            tables={} if summaries is None else {"summaries": summaries},
            interval=f"{100 * self.config.ci_level:g}% CI", adjusted_for=["mean_fd"] if motion else [],
            columns={"effects": COLUMNS, "summaries": COLUMNS},
        )

    def describe_fit(self, design: ScanDesign, k: int, how: list[str], motion: bool) -> str:
        level = f"{100 * self.config.ci_level:g}"
        return (
            "two-stage random-effects meta-analysis (frequentist comparator to the mega-analysis): "
            f"for each of {len(design.datasets)} datasets and {outcomes_text(design.pairs)}, an ordinary "
            "least-squares regression of scan-level FC on subject fixed effects (or, for parallel groups, an "
            "intercept), the dataset's drug indicator(s)"
            + (" and mean FD (effects at equal motion)" if motion else "")
            + f" gave each dataset's drug effect and its standard error ({'; '.join(how)}; "
            f"{len(design.obs)} scans of {design.n_subjects} subjects: {design.design_summary()}); these were pooled "
            f"across datasets ({k} with a standard error) with the DerSimonian-Laird random-effects estimator "
            f"(DerSimonian & Laird, 1986), overall and per drug ({len(design.drugs)} drugs; a drug with one "
            f"dataset takes that dataset's estimate, tau^2 = 0); drug contrasts as differences of the drugs' "
            "pooled estimates with their standard errors combined as independent; heterogeneity as tau^2, "
            "Cochran's Q and I^2; "
            f"{level}% Wald confidence intervals (columns hdi_low/hdi_high); two-sided z-test p-values adjusted "
            "across network pairs within each effect with the Benjamini-Hochberg false discovery rate procedure "
            "(Benjamini & Hochberg, 1995)."
        )


#: The columns meta adds to effects.tsv and summaries.tsv (their JSON data dictionaries).
COLUMNS: dict[str, tuple[str, str | None]] = {
    "tau2": ("DerSimonian-Laird between-dataset variance.", "Fisher z squared"),
    "i2": ("Higgins' I^2, the share of variation across datasets beyond sampling error.", "percent"),
    "q": ("Cochran's Q heterogeneity statistic.", None),
    "k": ("number of datasets pooled (a contrast: both drugs' together).", None),
    "z": ("Wald z statistic of the pooled estimate.", None),
    "p": ("two-sided p-value of the Wald test.", None),
    "p_fdr": ("Benjamini-Hochberg adjusted p-value within the effect.", None),
}


def _notes(design: ScanDesign) -> list[str]:
    multi = sorted({design.datasets[k] for k in design.unit_dataset[~np.isin(design.units, design.datasets)]})
    if multi:
        return [f"dataset(s) {multi} have several drugs; each dataset[drug] is pooled as a separate study "
                "(their shared subjects make them correlated, which the meta-analysis ignores)"]
    return []
