"""Forest plots as meta-analysts draw them: each dataset, each drug, the overall effect.

One plot per key summary (or, without summaries, per strongest network pair): rows of dataset
effects grouped under their drug, the drug effect, then the overall effect, with intervals and
each dataset's number of subjects; the between-drug and between-dataset sds (or I^2 for the
``meta`` model) in the title when the run reports them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from megafc.core.report import Run, figure_html, new_figure, note, save_figure

from .figures import place_grid, text_inches

#: Summaries drawn first when present (the paper's headline findings), then the strongest.
PREFERRED = ("transmodal-unimodal", "within_network", "between_network")
#: At most this many forest plots per report.
MAX_PLOTS = 6


def dataset_units(scans: pd.DataFrame) -> tuple[dict[str, str], dict[str, int]]:
    """Dataset-effect units (``lsd_1``, or ``ds[drug]`` for a dataset with several drugs): each
    unit's drug, and its number of subjects with an included drug scan."""
    drug_scans = scans[(scans["condition"] == "drug") & ~scans["excluded"].astype(bool)]
    drug_of, n_subjects = {}, {}
    for ds, g in drug_scans.groupby("dataset"):
        drugs = sorted(g["drug"].astype(str).unique())
        for d in drugs:
            unit = f"{ds}[{d}]" if len(drugs) > 1 else str(ds)
            drug_of[unit] = d
            n_subjects[unit] = int(g.loc[g["drug"].astype(str) == d, "subject"].nunique())
    return drug_of, n_subjects


def targets(run: Run) -> list[tuple[str, pd.DataFrame, str]]:
    """(title, effect rows of one outcome, heterogeneity text) for each plot."""
    summaries, effects = run.table("summaries"), run.table("effects")
    out: list[tuple[str, pd.DataFrame, str]] = []
    if summaries is not None and len(summaries):
        overall = summaries[summaries["effect"] == "overall"].set_index("summary")
        strength = (overall["mean"].abs() / overall["sd"]).sort_values(ascending=False)
        names = [n for n in PREFERRED if n in overall.index] + [n for n in strength.index if n not in PREFERRED]
        for name in names[:MAX_PLOTS]:
            n_pairs = int(overall.loc[name, "n_pairs"]) if "n_pairs" in overall else 0
            rows = summaries[summaries["summary"] == name]
            # heterogeneity.tsv holds network pairs only: a summary's subtitle has the meta model's I^2 at most
            out.append((f"{name} (summary of {n_pairs} network pairs)", rows, heterogeneity_text(rows, None, name, "")))
    elif effects is not None and len(effects):
        overall = effects[effects["effect"] == "overall"]
        strongest = overall.assign(s=overall["mean"].abs() / overall["sd"]).nlargest(MAX_PLOTS, "s")
        het = run.table("heterogeneity")
        for a, b in strongest[["network_a", "network_b"]].itertuples(index=False):
            rows = effects[(effects["network_a"] == a) & (effects["network_b"] == b)]
            out.append((f"{a} - {b}", rows, heterogeneity_text(rows, het, a, b)))
    return out


def heterogeneity_text(rows: pd.DataFrame, het: pd.DataFrame | None, a: str, b: str) -> str:
    parts = []
    if het is not None and len(het):
        h = het[(het["network_a"] == a) & (het["network_b"] == b)]
        for param, label in (("tau_drug", "between-drug sd"), ("tau_dataset", "between-dataset sd")):
            r = h[h["parameter"] == param]
            if len(r):
                r = r.iloc[0]
                parts.append(f"{label} {r['mean']:.3f} [{r['hdi_low']:.3f}, {r['hdi_high']:.3f}]")
    overall = rows[rows["effect"] == "overall"]
    if "i2" in rows and len(overall) and pd.notna(overall["i2"].iloc[0]):
        parts.append(f"I\u00b2 = {overall['i2'].iloc[0]:.0f}%")
    return "; ".join(parts)


def forest_rows(rows: pd.DataFrame, units: dict[str, str], n_subjects: dict[str, int]) -> pd.DataFrame:
    """Plot rows top to bottom: per drug its datasets then the drug, finally the overall effect."""
    by = rows.set_index("effect")
    out = []
    drugs = sorted({e.split(":", 1)[1] for e in by.index if e.startswith("drug:")}, key=str.lower)
    for d in drugs:
        for unit in sorted(u for u, drug in units.items() if drug == d):
            if f"dataset:{unit}" in by.index:
                out.append({"label": f"   {unit}", "kind": "dataset", "n": n_subjects.get(unit, np.nan),
                            **by.loc[f"dataset:{unit}", ["mean", "hdi_low", "hdi_high"]].to_dict()})
        out.append({"label": d, "kind": "drug", "n": np.nan, **by.loc[f"drug:{d}", ["mean", "hdi_low", "hdi_high"]].to_dict()})
    if "overall" in by.index:
        out.append({"label": "overall", "kind": "overall", "n": np.nan,
                    **by.loc["overall", ["mean", "hdi_low", "hdi_high"]].to_dict()})
    return pd.DataFrame(out)


def forest_figure(table: pd.DataFrame, title: str, subtitle: str, interval: str):
    n = len(table)
    labels = [f"{lab}  (n={int(k)})" if np.isfinite(k) else lab for lab, k in zip(table["label"], table["n"])]
    top = 0.3 + 0.16 * (title + (f"\n{subtitle}" if subtitle else "")).count("\n")
    fig = new_figure(7.2, 0.75 + top + 0.24 * n, layout=None)
    ax = fig.add_subplot()
    place_grid(fig, text_inches(labels, 8) + 0.1, 1.75, top, 0.5)
    y = np.arange(n)[::-1]
    style = {"dataset": ("s", "#888888", 4), "drug": ("D", "#2a5db0", 6), "overall": ("D", "#111111", 8)}
    total = np.nansum(table["n"])
    for yi, row in zip(y, table.itertuples(index=False)):
        marker, color, size = style[row.kind]
        if row.kind == "dataset" and total > 0 and np.isfinite(row.n):
            size = 3 + 9 * np.sqrt(row.n / total)
        ax.plot([row.hdi_low, row.hdi_high], [yi, yi], color=color, lw=1.2)
        ax.plot([row.mean], [yi], marker=marker, color=color, markersize=size, linestyle="none")
    ax.axvline(0, color="#bbbbbb", lw=0.8, zorder=0)
    ax.set_yticks(y, labels, fontsize=8)
    for yi, row in zip(y, table.itertuples(index=False)):
        ax.annotate(f"{row.mean:+.3f} [{row.hdi_low:+.3f}, {row.hdi_high:+.3f}]", (1.01, yi),
                    xycoords=("axes fraction", "data"), fontsize=7.5, va="center")
    ax.set_xlabel(f"drug minus control FC (Fisher z): mean and {interval}")
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=9, loc="left")
    ax.set_ylim(-0.7, n - 0.3)
    return fig


def forest_section(run: Run) -> str:
    scans = run.table("scans")
    plots = targets(run)
    if scans is None or not plots:
        return note("No effects table with dataset and drug effects: nothing to draw.")
    units, n_subjects = dataset_units(scans)
    interval = run.interval
    parts = [note(f"Each dataset's effect (grey squares, sized by its number of subjects n), each drug's (blue) "
                  f"and the overall effect (black), with their {interval}s. How the datasets combine into each "
                  "drug's and the overall effect is the pooling model's (see the methods).")]
    for i, (title, rows, subtitle) in enumerate(plots):
        table = forest_rows(rows, units, n_subjects)
        if table.empty:
            continue
        fig = forest_figure(table, title, subtitle, interval)
        name = f"datasets_forest_{i}"
        caption = f"Forest plot: {title}" + (f"; {subtitle}" if subtitle else "")
        parts.append(figure_html(save_figure(run, fig, name), caption, name))
    return "\n".join(parts) if len(parts) > 1 else note("No dataset or drug effects to draw.")
