"""The page every megafc report is rendered into (Jinja2 templates in ``templates/``), and
the HTML pieces the reports share: formatted cells, tables, the methods markdown."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from megafc.core.report import esc


@lru_cache(maxsize=1)
def environment():
    """Jinja2 with autoescaping: section bodies are passed as Markup, everything else escaped."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(loader=PackageLoader("megafc.plugins.reports", "templates"),
                       autoescape=select_autoescape(["html", "j2"]), keep_trailing_newline=True)


def render_page(title: str, sections: list[tuple[str, str, str]], meta: list[tuple[str, Any]] | None = None,
                intro: str = "") -> str:
    """One self-contained HTML page: a title, a definition list of facts about what is reported,
    a navigation bar, then the sections (ident, title, HTML body)."""
    from markupsafe import Markup

    return environment().get_template("page.html.j2").render(
        title=title, meta=meta or [], intro=Markup(intro),
        sections=[{"ident": i, "title": t, "body": Markup(b)} for i, t, b in sections])


def fmt(value: Any) -> str:
    """A table cell: numbers to 3 significant digits, missing as an en dash, text escaped."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "&ndash;"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isinf(v):
            return "&infin;" if v > 0 else "&minus;&infin;"
        if v.is_integer() and abs(v) < 1e6:
            return str(int(v))
        return esc(f"{v:.3g}")
    return esc(value)


def interval_cell(mean: float, low: float, high: float) -> str:
    """``mean [low, high]``, bold when the interval excludes 0."""
    text = f"{fmt(mean)} [{fmt(low)}, {fmt(high)}]"
    return f"<strong>{text}</strong>" if excludes_zero(low, high) else text


def excludes_zero(low: float, high: float) -> bool:
    return bool((pd.notna(low) and low > 0) or (pd.notna(high) and high < 0))


def html_table(df: pd.DataFrame, table_id: str | None = None, raw: Iterable[str] = (),
               row_class: Callable[[pd.Series], str] | None = None, scroll: bool = False,
               headers: list[str] | None = None) -> str:
    """A zebra table; columns in ``raw`` already hold HTML, every other cell is formatted."""
    raw = set(raw)
    head = "".join(f"<th>{esc(c)}</th>" for c in (headers or df.columns))
    rows = []
    for _, row in df.iterrows():
        cls = row_class(row) if row_class else ""
        cells = "".join(
            f"<td>{row[c] if c in raw else fmt(row[c])}</td>" for c in df.columns
        )
        rows.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    ident = f' id="{esc(table_id)}"' if table_id else ""
    table = f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return f'<div class="scroll">{table}</div>' if scroll else table


def side_by_side(items: list[tuple[Any, Any]], names: tuple[str, str], groups: int) -> pd.DataFrame:
    """A long two-column list as ``groups`` column pairs side by side (shorter tables)."""
    per = math.ceil(len(items) / groups) if items else 0
    cols = {}
    for g in range(groups):
        chunk = items[g * per:(g + 1) * per] + [("", "")] * (per - len(items[g * per:(g + 1) * per]))
        if not items[g * per:(g + 1) * per]:
            break
        cols[f"{names[0]}_{g}"] = [k for k, _ in chunk]
        cols[f"{names[1]}_{g}"] = [v for _, v in chunk]
    return pd.DataFrame(cols)


def markdown_to_html(text: str, shift: int = 0) -> str:
    """The small markdown subset methods.md uses: headings, paragraphs, bullets, `code`, **bold**."""
    out: list[str] = []
    para: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if para:
            out.append(f"<p>{'<br>'.join(inline(p) for p in para)}</p>")  # keep the file's line breaks
            para.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in text.splitlines():
        stripped = line.strip()
        heading = re.match(r"(#{1,6})\s+(.*)", stripped)
        bullet = re.match(r"[-*+]\s+(.*)", stripped)
        if not stripped:
            flush()
        elif heading:
            flush()
            level = min(6, len(heading.group(1)) + shift)
            out.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        elif bullet:
            if para:
                flush()
            items.append(bullet.group(1))
        elif items and line[:1].isspace():
            items[-1] += " " + stripped  # continuation of a bullet
        else:
            if items:
                flush()
            para.append(stripped)
    flush()
    return "\n".join(out)


def inline(text: str) -> str:
    """Escape, then `code` and **bold** (applied to the escaped text, so no HTML gets in)."""
    s = esc(text)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)


def installed_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("megafc")
    except metadata.PackageNotFoundError:
        return "unknown"


def format_time(iso: str) -> str:
    try:
        t = datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso)
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc)
        return t.strftime("%Y-%m-%d %H:%M UTC")
    return t.strftime("%Y-%m-%d %H:%M")
