"""Figures written with every run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


FIGURE_FORMATS = ("png", "svg", "pdf")


def figure_formats(figures: Any) -> list[str]:
    """The file formats a run draws its figures in, from the ``figures`` config value: a mapping
    with ``enabled`` and ``formats``, or a bare true/false (earlier versions); [] when disabled."""
    from omegaconf import DictConfig, OmegaConf

    from .errors import ConfigError

    if isinstance(figures, DictConfig):
        figures = OmegaConf.to_container(figures, resolve=True)
    if isinstance(figures, bool) or figures is None:
        return ["png"] if figures else []
    if not isinstance(figures, dict) or set(figures) - {"enabled", "formats"}:
        raise ConfigError(f"config key 'figures' is {figures!r}; expected true/false or "
                          "{enabled: true|false, formats: [png, svg, pdf]}")
    formats = figures.get("formats", ["png"])
    if isinstance(formats, str):
        formats = [formats]
    bad = [f for f in formats if f not in FIGURE_FORMATS]
    if bad or not formats:
        raise ConfigError(f"config key 'figures.formats' is {list(formats)}; expected a non-empty list of "
                          f"{list(FIGURE_FORMATS)}")
    if not isinstance(figures.get("enabled", True), bool):
        raise ConfigError(f"config key 'figures.enabled' is {figures.get('enabled')!r}; expected true or false")
    # PNG always: the report embeds it and lists the run's figures by their .png
    return list(dict.fromkeys(["png", *formats])) if figures.get("enabled", True) else []


def save_formats(fig, stem: Path, formats: list[str], dpi: int = 110) -> list[Path]:
    """Save ``fig`` as ``<stem>.<format>`` for each format (folders made as needed), then close it."""
    import matplotlib.pyplot as plt

    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata=reproducible_metadata(fmt))
        paths.append(path)
    plt.close(fig)
    return paths


def reproducible_metadata(fmt: str) -> dict | None:
    """savefig metadata without a creation date, so reruns write the same bytes."""
    return {"Date": None} if fmt == "svg" else {"CreationDate": None} if fmt == "pdf" else None


def save_png_svg(fig, stem: Path) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.svg`` (the sweep comparison's figures), then close it."""
    return save_formats(fig, stem, ["png", "svg"])


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
                         interval: str = "95% HDI", formats: tuple[str, ...] = ("png",)) -> Path:
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
    save_formats(fig, Path(path), list(formats), dpi=120)
    return path
