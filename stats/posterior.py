"""Posterior summaries with their own sampling diagnostics (ArviZ's estimators, vectorised)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .convergence import diagnose, ess_folded, summarise
from .rhat_chance import rhat_chance_columns

#: Default thresholds for the ``ok`` flag (Vehtari et al. 2021 recommendations).
RHAT_MAX = 1.01
ESS_MIN = 400.0
#: Quantities of a variable whose folded ESS is computed (the median of a sample serves).
FOLDED_SAMPLE = 256
#: Energy BFMI below this: the momentum resampling cannot move the chain across the energy
#: levels the posterior needs (Betancourt 2016; Stan's threshold).
BFMI_MIN = 0.3


def summarise_draws(draws: np.ndarray, hdi_prob: float = 0.95, hdi50: bool = True,
                    lower_bound: np.ndarray | float | None = None) -> pd.DataFrame:
    """Summarise draws of shape (chain, draw, n) into one row per quantity.

    Columns: mean, sd, hdi_low, hdi_high (``hdi_prob`` HDI), hdi50_low, hdi50_high (50% HDI,
    for calibration checks; only with ``hdi50``), pd (probability of direction), r_hat, ess_bulk,
    ess_tail. R-hat and ESS are computed on the quantity itself, so derived effects (e.g. a
    drug's effect = overall + deviation) carry honest diagnostics.

    ``lower_bound`` (per quantity or one for all; -inf: none): where the support ends below,
    e.g. 0 for an sd. Where the interval from the bound up to the draw that gives it ``prob``
    of the draws is as narrow as the narrowest one (within 1%: which of such near-equal windows
    wins is decided by sampling noise), the density is highest at the bound and the exact HDI
    starts there; that interval is reported. Without this a between-drug sd of exactly 0 could
    never lie inside its interval.
    """
    probs = (hdi_prob, 0.5) if hdi50 else (hdi_prob,)
    out = summarise(draws, probs)
    if lower_bound is not None:
        bound = np.broadcast_to(np.asarray(lower_bound, dtype=float), out["mean"].shape)
        flat = np.asarray(draws, dtype=float).reshape(-1, draws.shape[-1])
        for prob in probs:
            low, high = out[f"hdi_low:{prob}"], out[f"hdi_high:{prob}"]
            inc = int(np.floor(prob * flat.shape[0]))
            edge_high = np.partition(flat, inc, axis=0)[inc]
            at_edge = np.isfinite(bound) & (edge_high - bound <= (high - low) * 1.01)
            out[f"hdi_low:{prob}"] = np.where(at_edge, bound, low)
            out[f"hdi_high:{prob}"] = np.where(at_edge, edge_high, high)
    columns = {"mean": out["mean"], "sd": out["sd"],
               "hdi_low": out[f"hdi_low:{hdi_prob}"], "hdi_high": out[f"hdi_high:{hdi_prob}"]}
    if hdi50:
        columns.update(hdi50_low=out["hdi_low:0.5"], hdi50_high=out["hdi_high:0.5"])
    columns.update(pd=out["pd"], r_hat=out["r_hat"], ess_bulk=out["ess_bulk"], ess_tail=out["ess_tail"])
    return pd.DataFrame(columns)


def flag_ok(
    effects: pd.DataFrame, rhat_max: float = RHAT_MAX, ess_min: float = ESS_MIN
) -> pd.Series:
    """True where R-hat, bulk/tail ESS and divergences are all acceptable."""
    return (
        (effects["r_hat"] <= rhat_max)
        & (effects["ess_bulk"] >= ess_min)
        & (effects["ess_tail"] >= ess_min)
        & (effects["divergences"] == 0)
    )


def treedepth_hits(idata) -> int:
    """Draws whose NUTS trajectory stopped at the maximum tree depth (pymc and nutpie name the
    flag differently); many mean the sampler could not explore at that depth."""
    stats = getattr(idata, "sample_stats", None)
    for name in ("reached_max_treedepth", "maxdepth_reached"):
        if stats is not None and name in stats:
            return int(stats[name].to_numpy().astype(bool).sum())
    return 0


def sampler_diagnostics(idata, var_names: list[str], rhat_max: float, ess_min: float,
                        summarised: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per sampled variable: worst R-hat and ESS, plus run-level divergences, draws at
    the maximum tree depth and BFMI.

    ``summarised``: variables whose quantities were already summarised (tables with ``r_hat``,
    ``ess_bulk``, ``ess_tail`` per quantity, e.g. the effects table): their rows are taken from
    there instead of diagnosing the draws twice (seconds for thousands of quantities).
    Each row also says how many of its R-hats exceed ``rhat_max`` and how many converged chains
    of this length would put there by chance (``rhat_chance``).
    """
    import arviz as az

    post = idata.posterior
    div = int(idata.sample_stats["diverging"].sum()) if "diverging" in idata.sample_stats else 0
    depth_hits = treedepth_hits(idata)
    try:
        bfmi = np.atleast_1d(az.bfmi(idata))
        bfmi_min = float(np.min(bfmi))
    except Exception:  # e.g. samplers that do not record energy
        bfmi_min = float("nan")
    rows = []
    n_chains, n_draws = int(post.sizes["chain"]), int(post.sizes["draw"])
    summarised = summarised or {}
    for name in list(var_names) + list(summarised):
        if name not in post:
            continue
        values = post[name].to_numpy()
        values = values.reshape(values.shape[0], values.shape[1], -1)
        if name in summarised:
            t = summarised[name]
            r_hat, bulk, tail = (t[col].to_numpy(dtype=float) for col in ("r_hat", "ess_bulk", "ess_tail"))
        else:
            r_hat, bulk, tail = diagnose(values)
        # the folded draws' ESS of up to FOLDED_SAMPLE quantities: rhat_chance needs their median
        sample = np.unique(np.linspace(0, values.shape[2] - 1, FOLDED_SAMPLE).astype(int))
        folded = ess_folded(values[..., sample])
        r, eb, et = _worst(r_hat, np.nanmax), _worst(bulk, np.nanmin), _worst(tail, np.nanmin)
        rows.append(
            {
                "variable": name,
                "size": int(np.prod([post.sizes[d] for d in post[name].dims[2:]] or [1])),
                "r_hat_max": r,
                "ess_bulk_min": eb,
                "ess_tail_min": et,
                "divergences": div,
                "treedepth_hits": depth_hits,
                "bfmi_min": bfmi_min,
                "chains": n_chains,
                "draws": n_draws,
                **rhat_chance_columns(r_hat, bulk, folded, n_chains, n_draws, rhat_max),
            }
        )
    out = pd.DataFrame(rows)
    if len(out):
        out["ok"] = (
            (out["r_hat_max"] <= rhat_max)
            & (out["ess_bulk_min"] >= ess_min)
            & (out["ess_tail_min"] >= ess_min)
            & (out["divergences"] == 0)
            & ~(out["bfmi_min"] < BFMI_MIN)
        )
    return out


def _worst(values: np.ndarray, reduce) -> float:
    """max/min over quantities, NaN when none could be assessed (e.g. a single chain)."""
    return float(reduce(values)) if np.isfinite(values).any() else float("nan")


def bfmi_warning(diagnostics: pd.DataFrame) -> str | None:
    """The run's BFMI warning, None when the energy BFMI of every chain is fine (or unknown)."""
    if not len(diagnostics) or "bfmi_min" not in diagnostics:
        return None
    low = float(diagnostics["bfmi_min"].min())
    if not low < BFMI_MIN:
        return None
    return (f"pooling: energy BFMI {low:.2f} (below {BFMI_MIN}): the sampler explored the posterior's tails "
            "poorly, so intervals may be too narrow; tune longer (pooling.tune) or reparametrise")


def sampler_healthy(diagnostics: pd.DataFrame) -> bool:
    """False when the sampler's own checks put every interval in doubt: some sampled variable's
    R-hats beyond what converged chains give by chance, or a low energy BFMI."""
    from .rhat_chance import beyond_chance

    if not len(diagnostics):
        return True
    if "n_r_hat_over" in diagnostics and beyond_chance(diagnostics).any():
        return False
    return not (diagnostics["bfmi_min"].min() < BFMI_MIN) if "bfmi_min" in diagnostics else True
