"""Prior and posterior predictive checks: observed drug-minus-control differences vs replicates."""

from __future__ import annotations

import numpy as np

from .scan_design import ScanDesign


def paired_contrasts(design: ScanDesign) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Observed drug-minus-control differences of subjects with both kinds of scans.

    Returns (diffs (N, P), drug-scan rows (N,), control-mean weights (N, S) averaging each
    row's subject's control scans, number of control scans (N,)).
    """
    rows, weights = [], []
    for j in np.unique(design.subject_idx):
        mine = np.flatnonzero(design.subject_idx == j)
        ctrl = mine[~design.is_drug[mine]]
        drug = mine[design.is_drug[mine]]
        if len(ctrl) and len(drug):
            w = np.zeros(len(design.obs))
            w[ctrl] = 1.0 / len(ctrl)
            for d in drug:
                rows.append(d)
                weights.append(w)
    rows = np.asarray(rows, dtype=int)
    weights = np.asarray(weights).reshape(len(rows), len(design.obs))
    return design.y[rows] - weights @ design.y, rows, weights, (weights > 0).sum(axis=1)


def replicate_contrasts(design: ScanDesign, theta: np.ndarray, sigma: np.ndarray, slopes: np.ndarray,
                        x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Replicated differences (draws, N, P) given unit effects theta (draws, U, P), residual sds
    (draws, K, P), slopes (draws, Q, P) on covariates x (S, Q): subject intercepts cancel, a
    subject's control-mean noise is shared by its drug scans."""
    _, rows, weights, n_ctrl = paired_contrasts(design)
    subj = design.subject_idx[rows]
    _, first = np.unique(subj, return_inverse=True)
    k = design.dataset_idx[rows]
    sd = sigma[:, k, :]  # (draws, N, P)
    dx = x[rows] - weights @ x  # (N, Q)
    mean = theta[:, design.unit_idx[rows], :] + np.einsum("nq,dqp->dnp", dx, slopes)
    ctrl_noise = rng.standard_normal((theta.shape[0], first.max() + 1, theta.shape[2]))[:, first, :]
    noise = rng.standard_normal(mean.shape) + ctrl_noise / np.sqrt(n_ctrl)[None, :, None]
    return mean + sd * noise


def ppc_figure(observed: np.ndarray, replicated: np.ndarray, title: str):
    """Density of observed FC differences against replicated datasets (subsampled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    obs = observed.ravel()
    reps = replicated.reshape(-1, *observed.shape)
    lo, hi = np.quantile(obs, [0.001, 0.999])
    span = hi - lo
    bins = np.linspace(lo - span, hi + span, 120)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for rep in reps[:40]:
        h, e = np.histogram(rep.ravel(), bins=bins, density=True)
        ax.plot((e[1:] + e[:-1]) / 2, h, color="tab:blue", alpha=0.15, lw=0.8)
    h, e = np.histogram(obs, bins=bins, density=True)
    ax.plot((e[1:] + e[:-1]) / 2, h, color="k", lw=1.5, label="observed")
    ax.plot([], [], color="tab:blue", label="replicated")
    ax.set_xlabel("drug - control FC (Fisher z), all network pairs")
    ax.set_title(title)
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig
