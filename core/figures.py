"""Figures written with every run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def save_png_svg(fig, stem: Path) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.svg`` (folders made as needed), then close it."""
    import matplotlib.pyplot as plt

    paths = []
    for suffix in (".png", ".svg"):
        path = stem.with_suffix(suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def effect_matrix(effects: pd.DataFrame, networks: list[str], effect: str = "overall") -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and credibility (interval excludes 0) as symmetric network matrices."""
    idx = {n: i for i, n in enumerate(networks)}
    k = len(networks)
    mean = np.full((k, k), np.nan)
    cred = np.zeros((k, k), dtype=bool)
    sub = effects[effects["effect"] == effect]
    for row in sub.itertuples(index=False):
        i, j = idx[row.network_a], idx[row.network_b]
        mean[i, j] = mean[j, i] = row.mean
        cred[i, j] = cred[j, i] = (row.hdi_low > 0) or (row.hdi_high < 0)
    return mean, cred


def effect_matrix_figure(effects: pd.DataFrame, networks: list[str], path: Path, effect: str = "overall",
                         interval: str = "95% HDI") -> Path:
    """Network x network matrix of an effect's posterior mean; * marks intervals excluding 0.

    ``interval`` names the interval in effects.tsv (its level and kind: HDI, or CI for meta).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nilearn.plotting import plot_matrix

    mean, cred = effect_matrix(effects, networks, effect)
    vmax = float(np.nanmax(np.abs(mean))) if np.isfinite(mean).any() else 1.0
    size = max(5.0, 0.35 * len(networks) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    plot_matrix(np.nan_to_num(mean), labels=networks, axes=ax, vmin=-vmax, vmax=vmax,
                cmap="RdBu_r", colorbar=True, reorder=False,
                title=f"{effect} effect (drug - control, Fisher z); * = {interval} excludes 0")
    for i, j in zip(*np.nonzero(cred)):
        ax.text(j, i, "*", ha="center", va="center", fontsize=9, color="k")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
