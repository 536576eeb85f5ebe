"""How much the outcomes' estimation errors move together, for adaptive shrinkage.

FC of every network pair of a scan shares part of its noise (a per-scan offset of all
correlations: global signal, arousal, residual motion), so the effects a model estimates for the
pairs of one dataset err together. Adaptive shrinkage, fitted as if they erred independently,
reads such a common error as signal on every pair and claims too few false signs (simulated
studies whose pairs move together: 91 wrong signs among those selected at a 5% false sign rate,
28 claimed). The correlation it needs is measured here, per dataset, as the mean correlation
across outcomes of each scan's FC residual once the model's own terms are taken out (condition
and drug, subject, motion, session order): a dataset effect's error is a fixed combination of
its scans' residuals, so its errors correlate across pairs as the residuals do (on the
simulated studies: 0.056-0.060 measured, 0.06-0.07 realised by the effects' errors).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

#: Correlations are kept below this: at 1 the pairs' own errors would vanish.
MAX_CORRELATION = 0.9

#: Residual degrees of freedom a dataset needs for a correlation of its own (else: the pooled one).
MIN_RESIDUAL_DF = 10


@dataclass(frozen=True)
class ErrorCorrelation:
    """Mean error correlation across outcomes, per dataset and pooled over datasets (every
    dataset's residuals together, also those too few for a value of their own); 0 where it
    cannot be measured."""

    per_dataset: dict[str, float] = field(default_factory=dict)
    pooled: float = 0.0

    def of(self, dataset: str) -> float:
        return self.per_dataset.get(dataset, self.pooled)


def residual_correlation(table: pd.DataFrame, outcomes: pd.Series | np.ndarray | None = None) -> ErrorCorrelation:
    """The mean off-diagonal correlation across outcomes (``outcomes``: which rows of the long
    pair table to use, e.g. the network pairs or the summaries) of each scan's residual FC, per
    dataset; negative means count as 0 (no common shift), none above MAX_CORRELATION."""
    needed = {"scan_id", "dataset", "network_a", "network_b", "fc", "condition"}
    if not needed <= set(table.columns):
        return ErrorCorrelation()
    rows = table if outcomes is None else table[np.asarray(outcomes, dtype=bool)]
    if rows.empty:
        return ErrorCorrelation()
    wide = rows.pivot_table(index="scan_id", columns=["network_a", "network_b"], values="fc", sort=False).dropna(axis=0)
    scans = rows.drop_duplicates("scan_id").set_index("scan_id")
    per_dataset, residuals = {}, []
    for dataset, ids in scans.loc[scans.index.intersection(wide.index)].groupby("dataset", sort=False).groups.items():
        x = _design(scans.loc[ids])
        df = len(ids) - np.linalg.matrix_rank(x)
        if df < 1:
            continue
        y = wide.loc[ids].to_numpy(dtype=float)
        residual = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
        residuals.append(residual)
        if df >= MIN_RESIDUAL_DF:
            per_dataset[str(dataset)] = _mean_correlation(residual)
    if not residuals:
        return ErrorCorrelation()
    return ErrorCorrelation(per_dataset=per_dataset, pooled=_mean_correlation(np.vstack(residuals)))


def _mean_correlation(residual: np.ndarray) -> float:
    """Mean off-diagonal correlation of the columns (outcomes without spread left out), in [0, MAX_CORRELATION]."""
    spread = residual.std(axis=0)
    residual = residual[:, spread > 1e-12 * max(float(spread.max(initial=0.0)), 1e-300)]
    p = residual.shape[1]
    if p < 2:
        return 0.0
    corr = np.corrcoef(residual, rowvar=False)
    return float(np.clip((corr.sum() - p) / (p * (p - 1)), 0.0, MAX_CORRELATION))


def _design(scans: pd.DataFrame) -> np.ndarray:
    """Intercept, one column per condition (and drug), per subject with several scans, and mean
    FD and session order where they vary: what the models take out of a scan's FC."""
    n = len(scans)
    columns = [np.ones(n)]
    label = scans["condition"].astype(str)
    if "drug" in scans:
        label = label + ":" + scans["drug"].astype(str)
    columns += _dummies(label)
    if "subject" in scans and scans["subject"].duplicated().any():
        columns += _dummies(scans["subject"].astype(str))
    for name in ("mean_fd", "session_order"):
        if name in scans:
            value = pd.to_numeric(scans[name], errors="coerce").to_numpy(dtype=float)
            if np.isfinite(value).all() and np.ptp(value) > 0:
                columns.append(value - value.mean())
    return np.column_stack(columns)


def _dummies(label: pd.Series) -> list[np.ndarray]:
    levels = sorted(label.unique())
    return [(label == level).to_numpy(dtype=float) for level in levels[1:]]
