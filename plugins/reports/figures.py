"""Saving the reports' figures to files (the sweep comparison's PNG + SVG)."""

from __future__ import annotations

from pathlib import Path

from megafc.core.figures import reproducible_metadata


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


def save_png_svg(fig, stem: Path) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.svg`` (the sweep comparison's figures), then close it."""
    return save_formats(fig, stem, ["png", "svg"])
