"""The report contract: what a report section gets (``Run``, a finished run folder read back)
and gives (``ReportSection``), and the few helpers every section needs to embed a figure.

Reports themselves are plugins (kind ``reporter``; megafc's own run report, sweep comparison
and calibration report are built-in plugins like any other). Any plugin adds a section to the
run report through the hook ``megafc_report_sections``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

log = logging.getLogger("megafc")

#: Tables a run may contain; each is loaded when present (network_pairs.tsv is not needed).
TABLES = ("scans", "exclusions", "effects", "diagnostics", "summaries", "drug_similarity", "drug_scales", "qc_fc",
          "truth", "heterogeneity", "atlas_regions", "motion", "warnings")

#: Prefix of the report's figure files, so they never overwrite a pooling model's own.
FIGURE_PREFIX = "report_"

#: Figure resolution of the embedded PNGs (dots per inch).
DPI = 100


@dataclass
class Run:
    """Everything read from a run directory; absent files are None."""

    path: Path
    config: dict[str, Any]
    config_text: str | None
    provenance: dict[str, Any]
    tables: dict[str, pd.DataFrame | None]
    methods: str | None
    figures_dir: Path
    made: list[Path] = field(default_factory=list)
    #: The folder the run lives in once committed (``path`` may be its staging folder).
    shown_as: Path | None = None

    def table(self, name: str) -> pd.DataFrame | None:
        """``<name>.tsv`` (or ``.tsv.gz``) of the run; tables beyond TABLES (a plugin's own) are
        read on first use; None when absent."""
        if name not in self.tables:
            self.tables[name] = read_run_table(self.path, name)
        return self.tables[name]

    def cfg(self, *keys: str, default: Any = None) -> Any:
        """A nested config value (``cfg("pooling", "name")``), or ``default``."""
        node: Any = self.config
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                return default
            node = node[k]
        return node

    def plugin(self, kind: str) -> str | None:
        """The name of the run's plugin of this kind (provenance first, then config)."""
        info = (self.provenance.get("plugins") or {}).get(kind) or {}
        return info.get("name") or self.cfg(kind, "name")

    @property
    def interval(self) -> str:
        """What hdi_low/hdi_high are, as the pooling result declared it: e.g. '95% HDI' or '95% CI'."""
        declared = (self.provenance.get("pooling_interval") or {}).get("label")
        if declared:
            return str(declared)
        # runs of earlier versions: effects.json says "Lower end of this run's 95% HDI."
        described = read_text(self.path / "effects.json") or ""
        found = re.search(r"this run's ([^\"]+?)\.\"", described)
        return found.group(1) if found else "interval"


def read_tsv(path: Path) -> pd.DataFrame | None:
    """A run table (``n/a`` is missing), or None when the file does not exist."""
    if not path.is_file():
        return None
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=True, low_memory=False)


def read_run_table(run_dir: Path, name: str) -> pd.DataFrame | None:
    """``<name>.tsv``, or ``<name>.tsv.gz`` (large tables may be written gzipped), or None."""
    found = read_tsv(run_dir / f"{name}.tsv")
    return found if found is not None else read_tsv(run_dir / f"{name}.tsv.gz")


def read_text(path: Path) -> str | None:
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None


def load_run(run_dir: Path, shown_as: Path | None = None) -> Run:
    """Read a run directory; ``shown_as`` is where it will live (a staged run's final folder)."""
    import yaml

    config_text = read_text(run_dir / "config.yaml")
    try:
        config = yaml.safe_load(config_text) if config_text else {}
    except yaml.YAMLError:
        config = {}
    prov_text = read_text(run_dir / "provenance.json")
    try:
        provenance = json.loads(prov_text) if prov_text else {}
    except json.JSONDecodeError:
        provenance = {}
    tables = {name: read_run_table(run_dir, name) for name in TABLES}
    for name in ("scans", "effects", "diagnostics"):
        t = tables[name]
        for col in ("excluded", "ok"):
            if t is not None and col in t:
                t[col] = as_bool(t[col])
    return Run(
        path=run_dir,
        shown_as=shown_as or run_dir,
        config=config if isinstance(config, dict) else {},
        config_text=config_text,
        provenance=provenance if isinstance(provenance, dict) else {},
        tables=tables,
        methods=read_text(run_dir / "methods.md"),
        figures_dir=run_dir / "figures",
    )


def as_bool(values: pd.Series) -> pd.Series:
    """True/False from bools or their spellings in a TSV; missing stays missing (object dtype)."""
    if values.dtype == bool:
        return values
    mapping = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
    return values.map(lambda v: v if isinstance(v, (bool, np.bool_)) or pd.isna(v)
                      else mapping.get(str(v).strip().lower(), pd.NA)).astype(object)


@dataclass
class ReportSection:
    """A report section a plugin adds (hook ``megafc_report_sections``).

    ``build(run) -> html`` reads the run's tables from ``run`` and may embed figures with
    ``save_figure``; a section that fails becomes a visible note, never a lost report.
    """

    ident: str
    title: str
    build: Callable[[Run], str]
    #: The ident of the section this one follows.
    after: str = "effects"
    #: What a reader of this section should cite (collected with the plugins' references into
    #: methods.md, provenance.json and references.bib).
    references: list[str] = field(default_factory=list)


# -- what a section needs to show a figure ---------------------------------------------------


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def note(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{esc(text)}</p>'


def figure_html(uri: str, caption: str, name: str = "") -> str:
    alt = esc(caption)
    return (f'<figure><img src="{uri}" alt="{alt}" data-name="{esc(name)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def new_figure(width: float, height: float, **kwargs):
    """A matplotlib Figure on the Agg canvas, without pyplot (no global state, no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(fig)
    return fig


def report_formats(run: Run) -> list[str]:
    """Formats of the report's figure files beyond the PNG it embeds: figures.formats, with
    report_svg=true/false forcing SVG on or off."""
    from .figures import figure_formats

    extra = [f for f in figure_formats(run.cfg("figures", default=True)) if f != "png"]
    forced = run.cfg("report_svg")
    if forced is True and "svg" not in extra:
        extra.append("svg")
    return [f for f in extra if not (forced is False and f == "svg")]


def save_figure(run: Run, fig, name: str, file_stem: str | None = None) -> str:
    """Save ``figures/report_<name>.png`` (or ``figures/<file_stem>.png``) and the other formats
    of ``figures.formats``; return the PNG as a data URI. With ``figures=false`` nothing is saved:
    the report still shows the figure (embedded), and figures/ holds no file of it."""
    from .figures import figure_formats, reproducible_metadata

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)  # constrained layout: no costly bbox_inches="tight"
    png = buf.getvalue()
    if not figure_formats(run.cfg("figures", default=True)):
        return png_data_uri(png)
    run.figures_dir.mkdir(parents=True, exist_ok=True)
    stem = file_stem or f"{FIGURE_PREFIX}{name}"
    png_path = run.figures_dir / f"{stem}.png"
    png_path.write_bytes(png)
    run.made.append(png_path)
    for fmt in report_formats(run):
        path = run.figures_dir / f"{stem}.{fmt}"
        fig.savefig(path, format=fmt, metadata=reproducible_metadata(fmt))
        run.made.append(path)
    return png_data_uri(png)
