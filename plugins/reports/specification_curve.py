"""Summaries across a sweep's pipelines (``compare.summaries_long``), drawn as a specification curve.

A specification curve (Simonsohn, Simmons & Nelson 2020, Nat Hum Behav 4:1208) shows one
result under every defensible analysis: here each key summary's overall effect (estimate and
interval) under every pipeline of a sweep, pipelines sorted by the estimate. It answers the
reader's question "would another denoising, atlas or model have changed the conclusion?" at a
glance, which a table of pipelines x pairs does not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .figures import save_png_svg

#: The paper's findings, as summaries (``megafc.core.pair_sets`` built-ins), in display order.
KEY_SUMMARIES = (
    "transmodal-unimodal", "within_network", "between_network", "within_visual", "within_somatomotor",
    "Caudate-unimodal", "Putamen-unimodal", "Thalamus-unimodal", "Cerebellum-unimodal",
    "Caudate-transmodal", "Putamen-transmodal", "Thalamus-transmodal", "Cerebellum-transmodal",
)

def short_label(pipeline: str) -> str:
    """``denoiser=simple aggregate.level=network`` -> ``simple / network`` (the keys are the
    same in every label of a sweep; the values tell the pipelines apart)."""
    return " / ".join(part.split("=", 1)[-1] for part in pipeline.split())


def specification_curve_figure(long: pd.DataFrame, stem: Path, effect: str = "overall",
                               summaries: tuple[str, ...] = KEY_SUMMARIES, interval: str = "interval") -> list[Path]:
    """One panel per key summary: every pipeline's estimate and interval, sorted by estimate;
    filled markers where the interval excludes 0. PNG + SVG; [] when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = long[long["effect"] == effect]
    names = [s for s in summaries if s in set(sub["summary"])] or sorted(set(sub["summary"]))[:12]
    if not names:
        return []
    n_cols = min(3, len(names))
    n_rows = int(np.ceil(len(names) / n_cols))
    n_pipes = sub["pipeline"].nunique()
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, (2.2 + 0.12 * n_pipes) * n_rows),
                             squeeze=False)
    for ax, name in zip(axes.flat, names):
        s = sub[sub["summary"] == name].sort_values("mean").reset_index(drop=True)
        x = np.arange(len(s))
        ax.axhline(0, color="0.6", lw=0.8)
        ax.vlines(x, s["hdi_low"], s["hdi_high"], color="0.35", lw=1.2)
        cred = s["credible"] != 0
        ax.plot(x[cred], s.loc[cred, "mean"], "o", color="#b2182b", ms=5, label="interval excludes 0")
        ax.plot(x[~cred], s.loc[~cred, "mean"], "o", mfc="white", mec="0.2", ms=5, label="interval includes 0")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(x)
        ax.set_xticklabels([short_label(p) for p in s["pipeline"]], rotation=60, ha="right", fontsize=6)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    axes.flat[0].set_ylabel(f"{effect} effect (Fisher z)", fontsize=8)
    axes.flat[0].legend(fontsize=6, loc="best")
    keys = " / ".join(part.split("=", 1)[0] for part in str(sub["pipeline"].iloc[0]).split())
    fig.suptitle(f"Specification curve: each key summary under every pipeline (sorted by estimate; bars: {interval})"
                 f"\npipelines: {keys}", fontsize=10)
    fig.tight_layout()
    return save_png_svg(fig, stem)
