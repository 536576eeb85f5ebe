"""How large R-hat gets by chance when the chains have converged, so a run can tell "not
converged" from "too short to show convergence".

Split chains that sample the same distribution still have means that scatter: with M split
chains of N draws and a quantity's effective sample size S, each split chain's mean varies
by W M / S (W the within-chain variance), so the split R-hat of converged chains is about

    R-hat^2 = 1 - 1/N + (M / S) chi2(M - 1) / (M - 1).

Over thousands of quantities some exceed 1.01 although nothing is wrong: 2 chains of 750
draws with a bulk ESS of ~650 (a lag-one autocorrelation of 0.4) put ~40 of 3,000 quantities
above 1.01. R-hat is the larger of the bulk R-hat and that of the folded draws (their distance
from the median), so the chance of exceeding is the sum of the two, each from its own ESS.
NUTS draws of sds are often antithetic in the bulk (ESS 6,000 from 3,000 draws) but not in
the folded draws (ESS 1,800): in the default run every R-hat above 1.003 was a folded one. On
that run's posterior and on simulated chains (normal, log-normal and folded, 2 and 4 chains)
the expected counts are within a factor of 2 of the observed ones; the rules below allow for
that. A quantity's own ESS falls when its chains disagree, which would excuse exactly the
chains that have not mixed, so each variable's quantities are judged against the median ESS
of that variable.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Above this, an R-hat is never put down to chance.
RHAT_NEVER_CHANCE = 1.05
#: A variable's largest R-hat is "beyond chance" when converged chains would give one as large
#: with probability below this (over all of the variable's quantities).
P_BEYOND_CHANCE = 0.001


def rhat_by_chance(r_hat: np.ndarray | float, ess: np.ndarray | float, n_chains: int, n_draws: int) -> np.ndarray:
    """Probability that converged chains of ``n_chains`` x ``n_draws`` give a split R-hat of at
    least ``r_hat`` for a quantity of effective sample size ``ess``."""
    from scipy.stats import chi2

    m, n = 2 * n_chains, n_draws // 2
    if m < 4 or n < 2:
        return np.full(np.shape(np.asarray(r_hat * ess)), np.nan)
    stat = (np.square(r_hat) - 1 + 1 / n) * np.asarray(ess, dtype=float) * (m - 1) / m
    return chi2.sf(stat, m - 1)


def _chance(r_hat: float, ess: tuple[float, ...], n_chains: int, n_draws: int) -> float:
    """Chance of a converged quantity's R-hat reaching ``r_hat`` by its bulk or its folded half
    (``ess``: their ESS; NaN ones are left out)."""
    return float(sum(rhat_by_chance(r_hat, e, n_chains, n_draws) for e in ess if np.isfinite(e)))


def draws_for_rhat(n_quantities: int, ess: tuple[float, ...], n_chains: int, n_draws: int, threshold: float,
                   expected: float = 0.5) -> int:
    """Draws per chain at which fewer than ``expected`` of ``n_quantities`` converged quantities
    would exceed ``threshold`` by chance (the ESS grows in proportion to the draws)."""
    def chance(factor: float) -> float:
        return n_quantities * _chance(threshold, tuple(e * factor for e in ess), n_chains, int(n_draws * factor))

    if not any(np.isfinite(e) and e > 0 for e in ess) or chance(1.0) < expected:
        return int(n_draws)
    low, high = 1.0, 2.0
    while chance(high) >= expected and high < 1e4:
        low, high = high, high * 2
    for _ in range(30):
        mid = (low + high) / 2
        low, high = (mid, high) if chance(mid) >= expected else (low, mid)
    return int(np.ceil(n_draws * high / 50) * 50)  # a round number of draws


def rhat_chance_columns(r_hat: np.ndarray, ess_bulk: np.ndarray, ess_folded: np.ndarray, n_chains: int,
                        n_draws: int, threshold: float) -> dict[str, float]:
    """diagnostics.tsv columns of one variable: how many of its quantities exceed ``threshold``,
    how many converged chains would put there by chance, the chance of its largest R-hat and
    the draws per chain that would make a chance exceedance unlikely. ``ess_folded`` may be of a
    sample of the quantities (its median is what counts); all NaN: only the bulk half counts."""
    r_hat, ess_bulk, ess_folded = (np.asarray(a, dtype=float) for a in (r_hat, ess_bulk, ess_folded))
    ok = np.isfinite(r_hat) & np.isfinite(ess_bulk)
    if not ok.any():
        return {"n_r_hat_over": 0, "r_hat_over_by_chance": np.nan, "p_r_hat_max": np.nan, "draws_for_r_hat": np.nan}
    r, n = r_hat[ok], int(ok.sum())
    folded = ess_folded[np.isfinite(ess_folded)]
    ess = (float(np.median(ess_bulk[ok])), float(np.median(folded)) if len(folded) else np.nan)
    return {
        "n_r_hat_over": int((r > threshold).sum()),
        "r_hat_over_by_chance": round(n * _chance(threshold, ess, n_chains, n_draws), 2),
        "p_r_hat_max": float(min(1.0, n * _chance(float(r.max()), ess, n_chains, n_draws))),
        "draws_for_r_hat": draws_for_rhat(n, ess, n_chains, n_draws, threshold),
    }


def beyond_chance(diagnostics: pd.DataFrame) -> pd.Series:
    """Per variable: R-hats that converged chains of this length would not give by chance (a
    largest R-hat improbable or above RHAT_NEVER_CHANCE, or far more quantities over the
    threshold than chance puts there)."""
    expected = diagnostics["r_hat_over_by_chance"].fillna(0.0)
    too_many = diagnostics["n_r_hat_over"] > 2 * expected + 3 * np.sqrt(expected) + 1
    return ((diagnostics["n_r_hat_over"] > 0)
            & ((diagnostics["p_r_hat_max"].fillna(0.0) < P_BEYOND_CHANCE)
               | (diagnostics["r_hat_max"] > RHAT_NEVER_CHANCE) | too_many))


def rhat_warning(diagnostics: pd.DataFrame, threshold: float) -> str | None:
    """The run's R-hat warning: "not converged" when some variable's R-hats are beyond chance,
    else, when some exceed ``threshold``, that these chains are too short to show convergence
    at that threshold and how many draws would. None when no R-hat exceeds it."""
    if not len(diagnostics) or "n_r_hat_over" not in diagnostics or not (diagnostics["n_r_hat_over"] > 0).any():
        return None
    d = diagnostics
    worst = d.loc[d["r_hat_max"].idxmax()]
    n_over, total = int(d["n_r_hat_over"].sum()), int(d["size"].sum())
    chance = float(d["r_hat_over_by_chance"].fillna(0.0).sum())
    length = f"{int(worst['chains'])} chains x {int(worst['draws'])} draws"
    said = (f"pooling: R-hat above {threshold} for {n_over} of {total} sampled quantities (largest "
            f"{worst['r_hat_max']:.3f}, {worst['variable']})")
    bad = beyond_chance(d)
    if bad.any():
        names = ", ".join(d.loc[bad, "variable"].astype(str))
        return (f"{said}: more than chance gives converged chains of {length} (an R-hat too large, or more "
                f"than the {chance:.1f} expected above {threshold}); chains have not converged "
                f"({names}; diagnostics.tsv)")
    need = int(d.loc[d["n_r_hat_over"] > 0, "draws_for_r_hat"].max())
    if need > int(worst["draws"]):
        return (f"{said}: about as many as converged chains of {length} give by chance ({chance:.1f}; "
                f"diagnostics.tsv), so this shows no failure to converge, but chains this short cannot show "
                f"convergence to {threshold} either; about {need} draws per chain would (pooling.draws)")
    # chains this long seldom put an R-hat there by chance, yet this one is not improbable enough
    # to call a failure: say both, and do not ask for the draws the run already has
    return (f"{said}: converged chains of {length} put {chance:.1f} there by chance, and a largest R-hat of "
            f"this size is not beyond what chance gives them (diagnostics.tsv: p_r_hat_max), so this shows no "
            f"failure to converge; more draws per chain (pooling.draws) would confirm it")
