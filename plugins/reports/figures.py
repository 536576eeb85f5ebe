"""Saving the reports' figures to files (the sweep comparison's PNG + SVG)."""

from __future__ import annotations

from pathlib import Path

from megafc.core.figures import save_formats


def save_png_svg(fig, stem: Path) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.svg`` (the sweep comparison's figures), then close it."""
    return save_formats(fig, stem, ["png", "svg"])


def text_inches(labels, fontsize: float) -> float:
    """Rough width (inches) of the longest label: what a margin must hold."""
    longest = max((len(str(label)) for label in labels), default=0)
    return longest * fontsize * 0.6 / 72


def place_grid(fig, left: float, right: float, top: float, bottom: float, wgap: float = 0.3,
               hgap: float = 0.3) -> None:
    """Lay out a figure's subplot grid by margins and gaps in inches.

    What constrained layout would find for these simple grids, without its cost: it measures
    every tick label on every draw, which was most of the report's drawing time.
    """
    w, h = fig.get_size_inches()
    # very long labels: keep at least half the figure for the plots (labels may then be cut)
    shrink_w = min(1.0, 0.5 * w / max(left + right, 1e-9))
    shrink_h = min(1.0, 0.5 * h / max(top + bottom, 1e-9))
    left, right, wgap = left * shrink_w, right * shrink_w, wgap * shrink_w
    top, bottom, hgap = top * shrink_h, bottom * shrink_h, hgap * shrink_h
    nrows, ncols = fig.axes[0].get_subplotspec().get_gridspec().get_geometry()
    width = max((w - left - right - (ncols - 1) * wgap) / ncols, 0.1)
    height = max((h - top - bottom - (nrows - 1) * hgap) / nrows, 0.1)
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h,
                        wspace=wgap / width if ncols > 1 else 0.0, hspace=hgap / height if nrows > 1 else 0.0)
