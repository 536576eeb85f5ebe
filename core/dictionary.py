"""Data dictionaries: a JSON sidecar describing every column of a result table (BIDS TSV+JSON habit).

Columns a plugin adds that are not described here are listed with that said, so a reader never
meets an unexplained column.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

#: Column -> (description, units or None). Shared by effects.tsv and summaries.tsv.
EFFECT_COLUMNS_DESCRIBED: dict[str, tuple[str, str | None]] = {
    "network_a": ("First network (or subnetwork) of the pair; network_a <= network_b in atlas order.", None),
    "network_b": ("Second network of the pair (equal to network_a for a within-network pair).", None),
    "system_a": ("System class of network_a: transmodal, unimodal, attention, subcortical or cerebellar.", None),
    "system_b": ("System class of network_b.", None),
    "summary": ("Name of the summary: a named set of network pairs whose per-scan mean FC was fitted as an "
                "outcome of its own (members in summary_pairs.tsv).", None),
    "n_pairs": ("Number of network pairs averaged in the summary.", None),
    "effect": ("Which effect: overall, drug:<drug>, dataset:<dataset> (dataset[drug] when a dataset gives several "
               "drugs), contrast:<drug a>-<drug b> (a minus b) or covariate:<name> (a slope).", None),
    "effect_type": ("The part of effect before the colon: overall, drug, dataset, contrast or covariate.", None),
    "level": ("The part of effect after the colon (drug, dataset or contrast name); empty for overall.", None),
    "mean": ("Posterior mean (or pooled point estimate for non-Bayesian models) of the drug-minus-control "
             "change in FC.", "Fisher z (per covariate unit for covariate rows)"),
    "sd": ("Posterior standard deviation (standard error for non-Bayesian models).", "Fisher z"),
    "hdi_low": ("Lower end of the interval: highest-density interval at pooling.hdi_prob (95% by default); "
                "a confidence interval for frequentist models.", "Fisher z"),
    "hdi_high": ("Upper end of that interval.", "Fisher z"),
    "hdi50_low": ("Lower end of the 50% highest-density interval.", "Fisher z"),
    "hdi50_high": ("Upper end of the 50% highest-density interval.", "Fisher z"),
    "pd": ("Probability of direction: posterior probability that the effect has the sign of its mean "
           "(for a frequentist model, 1 - p/2 of its two-sided test: not a probability of the sign).", None),
    "lfsr": ("Local false sign rate (Stephens 2017): probability that the effect is zero or of the other sign "
             "than its mean, under the distribution of effects adaptive shrinkage learned from all rows of the same "
             "effect (so it pays for the many pairs looked at; 1 - pd when an effect has too few rows to learn "
             "from, n/a for a row without an estimate).", None),
    "null_share": ("Share of exact zeros adaptive shrinkage learned for this row's effect (all its rows): near 1, "
                   "the estimates spread no more than their noise makes them, so no row's sign is sure by lfsr "
                   "even where its interval excludes 0.", None),
    "error_correlation": ("Correlation of the estimation errors of this effect's rows in one dataset that adaptive "
                          "shrinkage allowed for when it gave lfsr (a shift of every row together; the mean correlation "
                          "across outcomes of the scans' residual FC, per dataset for dataset effects, pooled otherwise); "
                          "n/a where lfsr is 1 - pd.", None),
    "svalue": ("Expected proportion of zero or wrong-sign effects among all effects of this effect name at least as sure as "
               "this one (mean lfsr of that list): svalue <= 0.05 selects effects at a 5% false sign rate.", None),
    "p_rope": ("Posterior probability that the effect lies within the region of practical equivalence "
               "(pooling.rope) around 0.", None),
    "r_hat": ("Rank-normalised split R-hat (Vehtari et al. 2021); n/a for non-Bayesian models.", None),
    "ess_bulk": ("Bulk effective sample size; n/a for non-Bayesian models.", None),
    "ess_tail": ("Tail effective sample size; n/a for non-Bayesian models.", None),
    "divergences": ("Divergent transitions in the whole fit (the same on every row of a run).", None),
    "ok": ("False when any diagnostic is bad (R-hat above pooling.rhat_max, ESS below the threshold, "
           "divergences); for non-Bayesian models, false where the model could not estimate the row as "
           "specified (its warnings say why).", None),
    "n_obs": ("Scans (scan-level models), drug-minus-control differences (paired models) or drug scans "
              "(two-stage models) informing the effect.", None),
}


def data_dictionary(table: pd.DataFrame, source: str, interval: str | None = None,
                    described: dict[str, tuple[str, str | None]] | None = None) -> dict[str, Any]:
    """A BIDS-style sidecar: one entry per column, with Description and Units when known.

    ``interval`` (e.g. "95% CI") says what this run's hdi_low/hdi_high are; ``described``: the
    columns the pooling model adds, in its own words (``PoolingResult.columns``).
    """
    out: dict[str, Any] = {}
    known = {**EFFECT_COLUMNS_DESCRIBED, **(described or {})}
    for col in table.columns:
        desc, units = known.get(
            str(col), (f"Added by {source}; see its documentation (not described by megafc).", None))
        if interval and col in ("hdi_low", "hdi_high") and str(col) not in (described or {}):
            desc = f"{'Lower' if col == 'hdi_low' else 'Upper'} end of this run's {interval}."
        out[str(col)] = {"Description": desc, **({"Units": units} if units else {})}
    return out
