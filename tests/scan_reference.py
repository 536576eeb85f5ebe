"""Dense reference implementations of the scan-level model (tests only).

Batched small-matrix algebra, written for clarity (and differentiable by PyTensor): the fast
kernel in :mod:`megafc.plugins.pooling.scan_kernel` is held equal to these, and these to the
multivariate normal of all scans.
"""

from __future__ import annotations

import numpy as np

from megafc.plugins.pooling.scan_model import ScanStatistics


def dataset_likelihoods(st: ScanStatistics, sigma, omega, slopes, xp):
    """Per dataset and outcome: the Gaussian likelihood of its units' effects, alpha profiled out.

    ``sigma``, ``omega``: (K, P); ``slopes``: (Q, P) or None. ``xp`` is numpy or
    pytensor.tensor (one formula for the model and the conditional draws; leading batch
    dimensions of sigma/omega/slopes broadcast in numpy). Returns (const (..., K, P),
    H (..., K, P, m, m), g (..., K, P, m)) with m = R - 1 unit slots.
    """
    s2 = sigma ** 2
    o2 = omega ** 2
    lam = xp.stack([1.0 / s2] + [1.0 / (s2 + n * o2) for n in st.sizes], axis=-2)  # (..., K, C, P)
    sxy, syy = st.sxy, st.syy
    if slopes is not None and st.sxw.shape[-1]:
        b = slopes  # (..., Q, P)
        sxy = sxy - (st.sxw[..., :, :, None] * b[..., None, None, None, :, :]).sum(axis=-2)
        swy_b = (st.swy * b[..., None, None, :, :]).sum(axis=-2)  # (..., K, C, P)
        bwb = (st.sww[..., None] * b[..., None, None, :, None, :] * b[..., None, None, None, :, :]).sum(axis=(-3, -2))
        syy = syy - 2.0 * swy_b + bwb
    lam_ = xp.moveaxis(lam, -1, -2)
    # F (..., K, P, R, R), h (..., K, P, R), q (..., K, P)
    F = (lam_[..., :, :, :, None, None] * st.sxx[:, None, :, :, :]).sum(axis=-3)
    h = (lam[..., :, :, None, :] * sxy).sum(axis=-3)
    h = xp.moveaxis(h, -1, -2)
    q = (lam * syy).sum(axis=-2)
    logdet = (st.n_subjects[:, :, None] * ((st.sizes[:, None] - 1.0) * xp.log(s2)[..., None, :]
                                           + xp.log(s2[..., None, :] + st.sizes[:, None] * o2[..., None, :]))).sum(axis=-2)
    faa = F[..., 0, 0]
    fta = F[..., 1:, 0]
    ha = h[..., 0]
    H = F[..., 1:, 1:] - fta[..., :, None] * fta[..., None, :] / faa[..., None, None]
    g = h[..., 1:] - fta * (ha / faa)[..., None]
    const = -0.5 * (logdet + q - ha ** 2 / faa + xp.log(faa))
    return const, H, g


def assemble(st: ScanStatistics, H, g, xp):
    """Dataset blocks -> (..., P, U, U) precision and (..., P, U) score over all units."""
    ku, mu = st.unit_dataset, st.unit_slot - 1
    same = (ku[:, None] == ku[None, :]).astype(float)
    Hu = H[..., ku[:, None], :, mu[:, None], mu[None, :]]  # (U, U, ..., P) by advanced indexing rules
    gu = g[..., ku, :, mu]  # (U, ..., P)
    return xp.moveaxis(Hu, (0, 1), (-2, -1)) * same, xp.moveaxis(gu, 0, -1)


def loadings(st: ScanStatistics, tau_drug, tau_dataset, effect_sd: float, xp):
    """L (..., P, U, 1 + D + U): theta = L e with e ~ Normal(0, I).

    ``tau_drug``/``tau_dataset``: (..., P) arrays (0 where a level is omitted).
    """
    n_units = st.n_units
    drug = np.eye(st.n_drugs)[st.unit_drug]  # (U, D)
    if xp is np:
        batch = np.broadcast_shapes(np.shape(tau_drug), np.shape(tau_dataset))
        return np.concatenate([
            np.broadcast_to(effect_sd * np.ones((n_units, 1)), batch + (n_units, 1)),
            np.asarray(tau_drug)[..., None, None] * drug + np.zeros(batch + (1, 1)),
            np.asarray(tau_dataset)[..., None, None] * np.eye(n_units) + np.zeros(batch + (1, 1)),
        ], axis=-1)
    one = xp.ones_like(tau_drug)[..., None, None]
    return xp.concatenate([one * effect_sd * np.ones((n_units, 1)), tau_drug[..., None, None] * drug,
                           tau_dataset[..., None, None] * np.eye(n_units)], axis=-1)


def marginal_loglik(st: ScanStatistics, sigma, omega, slopes, tau_drug, tau_dataset, effect_sd: float):
    """Log-likelihood (up to a constant) of every scan, all means integrated out (pytensor)."""
    import pytensor.tensor as pt

    const, H, g = dataset_likelihoods(st, sigma, omega, slopes, pt)
    Hu, gu = assemble(st, H, g, pt)
    L = loadings(st, tau_drug, tau_dataset, effect_sd, pt)  # (P, U, J)
    Lt = L.dimshuffle(0, 2, 1)
    G = pt.eye(L.shape[-1]) + pt.matmul(Lt, pt.matmul(Hu, L))
    chol = pt.linalg.cholesky(G)
    r = pt.matmul(Lt, gu[:, :, None])  # (P, J, 1)
    s = pt.linalg.solve_triangular(chol, r, lower=True, b_ndim=2)
    logdet = 2.0 * pt.log(pt.diagonal(chol, axis1=-2, axis2=-1)).sum()
    return const.sum() - 0.5 * logdet + 0.5 * (s ** 2).sum()


def conditional_effects(st: ScanStatistics, draws: dict[str, np.ndarray], effect_sd: float,
                        rng: np.random.Generator, chunk: int = 256) -> dict[str, np.ndarray]:
    """One draw of the overall (C, S, P), drug (C, S, D, P) and dataset (C, S, U, P) effects per
    posterior draw of the sds and slopes, from their exact Gaussian conditionals.

    ``draws``: "sigma", "omega" (C, S, K, P); "tau_drug", "tau_dataset" (C, S, P) (absent:
    level omitted); "slopes" (C, S, Q, P) (absent: none).
    """
    n_chain, n_draw, n_ds, n_out = draws["sigma"].shape
    flat = {k: v.reshape(n_chain * n_draw, *v.shape[2:]) for k, v in draws.items()}
    zeros = np.zeros((n_chain * n_draw, n_out))
    n_units, n_drugs = st.n_units, st.n_drugs
    e_all = np.empty((n_chain * n_draw, n_out, 1 + n_drugs + n_units))
    for start in range(0, n_chain * n_draw, chunk):
        sl = slice(start, start + chunk)
        slopes = flat["slopes"][sl] if "slopes" in flat else None
        _, H, g = dataset_likelihoods(st, flat["sigma"][sl], flat["omega"][sl], slopes, np)
        Hu, gu = assemble(st, H, g, np)
        L = loadings(st, flat.get("tau_drug", zeros)[sl], flat.get("tau_dataset", zeros)[sl], effect_sd, np)
        Lt = np.swapaxes(L, -1, -2)
        G = np.eye(L.shape[-1]) + Lt @ Hu @ L
        chol = np.linalg.cholesky(G)
        mean = np.linalg.solve(G, (Lt @ gu[..., None]))[..., 0]
        xi = rng.standard_normal(mean.shape)
        # e = mean + chol^-T xi has covariance (chol chol^T)^-1 = G^-1
        e_all[sl] = mean + np.linalg.solve(np.swapaxes(chol, -1, -2), xi[..., None])[..., 0]
    mu = effect_sd * e_all[..., 0]
    tau_d = flat.get("tau_drug", zeros)
    tau_k = flat.get("tau_dataset", zeros)
    beta = mu[:, None, :] + tau_d[:, None, :] * np.moveaxis(e_all[..., 1:1 + n_drugs], -1, 1)
    theta = beta[:, st.unit_drug, :] + tau_k[:, None, :] * np.moveaxis(e_all[..., 1 + n_drugs:], -1, 1)
    shape = (n_chain, n_draw)
    return {"overall": mu.reshape(*shape, n_out), "drug_effect": beta.reshape(*shape, n_drugs, n_out),
            "dataset_effect": theta.reshape(*shape, n_units, n_out)}
