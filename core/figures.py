"""The run's figure formats (config key ``figures``), checked before anything runs, and saving a
figure in them."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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


def reproducible_metadata(fmt: str) -> dict | None:
    """savefig metadata without a creation date, so reruns write the same bytes."""
    return {"Date": None} if fmt == "svg" else {"CreationDate": None} if fmt == "pdf" else None


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
