"""The joint model with every effect integrated out (``parametrization=marginal``).

For a normal likelihood the model in :mod:`.design` is Gaussian in every group effect given
the per-pair scales (tau_drug, tau_dataset, sigma) and covariate slopes. So:

* the likelihood of unit k's paired differences depends on them only through the unit's
  size n, mean ybar and within-unit sum of squares SSW (after removing the covariates);
* the effects sit on a tree (scans -> dataset -> drug -> overall) of Gaussians, so theta,
  beta and mu integrate out exactly by collapsing it bottom-up, O(units x pairs).

NUTS then samples only the three scales per pair (and any covariate slopes) instead of about
20 numbers, on a posterior without the group-level funnels that made the sampled
parametrisations slow and prone to rare excursions. The overall, drug and dataset effects are
drawn afterwards, draw by draw, from their exact Gaussian conditionals, so the posterior is the
same as the sampled parametrisations'.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class UnitStatistics:
    """Sufficient statistics of the paired differences per dataset unit (centred within unit)."""

    n: np.ndarray  # (K,) drug scans per unit
    ybar: np.ndarray  # (K, P) unit means
    ssw: np.ndarray  # (K, P) within-unit sums of squares
    xbar: np.ndarray  # (K, Q) covariate means
    sxx: np.ndarray  # (K, Q, Q) within-unit cross-products of covariates
    sxy: np.ndarray  # (K, Q, P) within-unit covariate x difference cross-products
    incidence: np.ndarray  # (D, K) 1 where unit k belongs to drug d


def unit_statistics(y: np.ndarray, unit_idx: np.ndarray, unit_drug: np.ndarray, n_drugs: int,
                    covariates: np.ndarray) -> UnitStatistics:
    """``covariates``: (scans, Q) per-scan covariates (Q may be 0)."""
    n_units = len(unit_drug)
    n = np.bincount(unit_idx, minlength=n_units).astype(float)
    ybar = np.zeros((n_units, y.shape[1]))
    np.add.at(ybar, unit_idx, y)
    ybar /= n[:, None]
    xbar = np.zeros((n_units, covariates.shape[1]))
    np.add.at(xbar, unit_idx, covariates)
    xbar /= n[:, None]
    yc = y - ybar[unit_idx]
    xc = covariates - xbar[unit_idx]
    ssw = np.zeros_like(ybar)
    np.add.at(ssw, unit_idx, yc * yc)
    sxx = np.zeros((n_units, xc.shape[1], xc.shape[1]))
    np.add.at(sxx, unit_idx, xc[:, :, None] * xc[:, None, :])
    sxy = np.zeros((n_units, xc.shape[1], y.shape[1]))
    np.add.at(sxy, unit_idx, xc[:, :, None] * yc[:, None, :])
    incidence = np.zeros((n_drugs, n_units))
    incidence[unit_drug, np.arange(n_units)] = 1.0
    return UnitStatistics(n, ybar, ssw, xbar, sxx, sxy, incidence)


def adjusted(stats: UnitStatistics, slopes, xp):
    """(ybar, ssw) of y - x @ slopes per unit; ``slopes`` is a list of Q (P,) arrays.

    ``xp`` is numpy or pytensor.tensor, so the model and the conditional draws share one formula.
    """
    ybar, ssw = stats.ybar, stats.ssw
    for q, b in enumerate(slopes):
        ybar = ybar - stats.xbar[:, q:q + 1] * b
        ssw = ssw - 2.0 * stats.sxy[:, q, :] * b
        for r, b2 in enumerate(slopes):
            ssw = ssw + stats.sxx[:, q, r:r + 1] * b * b2
    return ybar, ssw


def marginal_loglik(stats: UnitStatistics, tau_drug, tau_dataset, sigma, slopes, effect_sd: float):
    """Log-likelihood (up to a constant) of all paired differences, every effect integrated out.

    Collapses the tree bottom-up: a unit's scans to its mean (variance v = tau_dataset^2 +
    sigma^2/n), a drug's units to their precision-weighted mean (variance 1/W), the drugs to
    theirs around mu (variance u = tau_drug^2 + 1/W), and mu against its Normal(0, effect_sd)
    prior. Arguments are pytensor tensors of shape (P,) or scalars; tau_drug / tau_dataset may
    be 0 (level omitted).
    """
    import pytensor.tensor as pt

    A = stats.incidence
    unit_drug = A.argmax(axis=0)
    n = stats.n[:, None]
    ybar, ssw = adjusted(stats, slopes, pt)
    s2 = sigma ** 2
    ll = (-(n - 1.0) * pt.log(sigma) - ssw / (2.0 * s2)).sum()
    v = tau_dataset ** 2 + s2 / n  # (K, P)
    w = 1.0 / v
    W = pt.dot(A, w)  # (D, P)
    m = pt.dot(A, ybar * w) / W
    ll -= 0.5 * (pt.log(v).sum() + pt.log(W).sum())
    if (A.sum(axis=1) > 1).any():  # spread of units around their drug's mean: identically 0 with one
        ll -= 0.5 * (w * (ybar - m[unit_drug]) ** 2).sum()  # unit per drug, where PyTensor 2.38's rewrites loop
    u = tau_drug ** 2 + 1.0 / W
    U = (1.0 / u).sum(axis=0)  # (P,)
    mbar = (m / u).sum(axis=0) / U
    ll -= 0.5 * (pt.log(u).sum() + pt.log(U).sum())
    if A.shape[0] > 1:  # spread of drugs around the overall mean (0, and the same trouble, with one drug)
        ll -= 0.5 * ((m - mbar) ** 2 / u).sum()
    T = 1.0 / U + effect_sd ** 2
    return ll - 0.5 * (pt.log(T) + mbar ** 2 / T).sum()


def conditional_effects(stats: UnitStatistics, draws: dict[str, np.ndarray], slope_names: list[str],
                        effect_sd: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One draw of overall (C, S, P), drug (C, S, D, P) and dataset (C, S, K, P) effects per
    posterior draw of the scales, from their exact Gaussian conditionals (top-down).

    ``draws`` holds "sigma" (C, S, P) and "tau_drug", "tau_dataset" of shape (C, S, P) or
    (C, S) (shared), a missing scale meaning the level is omitted. Uses variance forms that
    stay finite as a scale goes to 0.
    """
    shape = draws["sigma"].shape

    def per_pair(name):
        x = draws.get(name)
        if x is None:
            return np.zeros(shape)
        return np.broadcast_to(x[..., None], shape) if x.ndim == 2 else x

    td2 = per_pair("tau_drug")[:, :, None, :] ** 2
    tk2 = per_pair("tau_dataset")[:, :, None, :] ** 2
    s2 = per_pair("sigma")[:, :, None, :] ** 2
    slopes = [draws[name][:, :, None, :] for name in slope_names]
    ybar, _ = adjusted(stats, slopes, np)
    ybar = np.broadcast_to(ybar, shape[:2] + stats.ybar.shape)  # (C, S, K, P)
    A = stats.incidence
    unit_drug = A.argmax(axis=0)
    v = tk2 + s2 / stats.n[:, None]
    W = np.einsum("dk,cskp->csdp", A, 1.0 / v)
    m = np.einsum("dk,cskp->csdp", A, ybar / v) / W
    u = td2 + 1.0 / W
    U = (1.0 / u).sum(axis=2)
    mbar = (m / u).sum(axis=2) / U
    prec = U + 1.0 / effect_sd ** 2
    mu = U * mbar / prec + rng.standard_normal(U.shape) / np.sqrt(prec)
    mu_ = mu[:, :, None, :]
    beta = mu_ + td2 * W * (m - mu_) / (1.0 + td2 * W) + np.sqrt(td2 / (1.0 + td2 * W)) * rng.standard_normal(m.shape)
    b = beta[:, :, unit_drug, :]
    theta = b + tk2 * (ybar - b) / v + np.sqrt(tk2 * (v - tk2) / v) * rng.standard_normal(b.shape)
    return {"overall": mu, "drug_effect": beta, "dataset_effect": theta}
