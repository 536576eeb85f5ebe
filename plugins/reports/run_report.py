"""A self-contained HTML report of a finished run directory.

``write_report(run_dir)`` reads the files a run wrote (every one of them optional except the
directory itself), draws the report's figures (saved as PNG and SVG under ``figures/`` so they
can go into a paper), and writes ``report.html``: one file, with figures embedded as base64 PNG
data URIs and inline CSS, so it can be mailed, archived or opened offline without the run
directory next to it.

Each section is built by its own function from the loaded run; a section whose input is
missing says so in one line, and a section that fails (e.g. a third-party pooling plugin wrote
an unexpected table) is replaced by an error note instead of losing the whole report.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from megafc.core import Reporter
from megafc.core.qc import QCFC_ALERT, motion_advice, qcfc_share
from megafc.core.report import (
    FIGURE_PREFIX,
    ReportSection,
    Run,
    as_bool,
    esc,
    figure_html,
    load_run,
    new_figure,
    note,
    png_data_uri,
    save_figure,
)

from .figures import place_grid, text_inches
from .page import (
    excludes_zero,
    fmt,
    format_time,
    html_table,
    installed_version,
    interval_cell,
    markdown_to_html,
    render_page,
    side_by_side,
)
from .workers import can_fork, run_in_workers

log = logging.getLogger("megafc")


#: Pairs shown in the forest plot: the largest |overall mean|.
FOREST_PAIRS = 10
#: The false sign rate at which the report (and megafc-calibrate) select effects by their svalue.
FALSE_SIGN_RATE = 0.05


CONDITION_COLORS = {"placebo": "#4c72b0", "baseline": "#55a868", "drug": "#c44e52"}


# --------------------------------------------------------------------------- html helpers


# --------------------------------------------------------------------------- figures


def network_order(effects: pd.DataFrame) -> list[str]:
    """Networks in the order the pooling model wrote them (atlas order), not alphabetical."""
    names: dict[str, None] = {}
    for a, b in effects[["network_a", "network_b"]].itertuples(index=False):
        names.setdefault(str(a))
        names.setdefault(str(b))
    return list(names)


def effect_matrices(effects: pd.DataFrame, networks: list[str], effect: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean, interval excludes 0) as symmetric network x network matrices; NaN where no pair."""
    idx = {n: i for i, n in enumerate(networks)}
    k = len(networks)
    mean = np.full((k, k), np.nan)
    cred = np.zeros((k, k), dtype=bool)
    for row in effects[effects["effect"] == effect].itertuples(index=False):
        i, j = idx[str(row.network_a)], idx[str(row.network_b)]
        mean[i, j] = mean[j, i] = row.mean
        cred[i, j] = cred[j, i] = excludes_zero(row.hdi_low, row.hdi_high)
    return mean, cred


def matrix_figure(panels: list[tuple[str, np.ndarray, np.ndarray]], networks: list[str],
                  vmax: float, ncols: int, interval: str):
    """Network x network matrices on one colour scale (nilearn's plot_matrix); * = excludes 0."""
    import matplotlib
    from nilearn.plotting import plot_matrix

    k = len(networks)
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    star = max(3.0, min(8.0, 110.0 / max(k, 1)))
    label_size = max(4.0, min(8.0, 130.0 / max(k, 1)))
    side = max(2.4, 0.2 * k + 1.0)  # the matrix itself
    label = text_inches(networks, label_size) + 0.12
    left, right, top, bottom, wgap, hgap = label, 1.0, 0.35, label, label + 0.2, label + 0.4
    fig = new_figure(left + ncols * side + (ncols - 1) * wgap + right, top + nrows * side + (nrows - 1) * hgap + bottom,
                     layout=None)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    place_grid(fig, left, right, top, bottom, wgap, hgap)
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#dddddd")
    image = None
    for ax, (title, mean, cred) in zip(axes.flat, panels):
        image = plot_matrix(mean, labels=networks, axes=ax, vmin=-vmax, vmax=vmax, cmap=cmap,
                            colorbar=False, reorder=False, auto_fit=False)
        rows, cols = np.nonzero(cred)
        ax.plot(cols, rows, ls="none", marker="*", ms=star, color="k", mew=0)  # one artist: fast layout
        ax.tick_params(labelsize=label_size)
        ax.set_title(title, fontsize=11)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if image is not None:
        w, h = fig.get_size_inches()
        span = min(h - top - bottom, 2.2 * side)
        cax = fig.add_axes([1 - 0.8 / w, (h - top - span) / h, 0.14 / w, span / h])
        cb = fig.colorbar(image, cax=cax)
        cb.set_label(f"drug - control (Fisher z); * = {interval} excludes 0", fontsize=8)
    return fig


def forest_figure(effects: pd.DataFrame, pairs: list[tuple[str, str]], effect_names: list[str], interval: str):
    """One panel per network pair: each effect's mean and interval; filled = excludes 0."""
    import matplotlib

    ncols = 2 if len(pairs) > 1 else 1
    nrows = math.ceil(len(pairs) / ncols)
    height = max(1.2, 0.24 * len(effect_names) + 0.6)
    label = text_inches([n.split(":", 1)[-1] for n in effect_names], 8) + 0.15
    fig = new_figure(11 if ncols == 2 else 6, (height + 0.35) * nrows + 0.6, layout=None)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True)
    place_grid(fig, label, 0.15, 0.3, 0.5, wgap=label + 0.25, hgap=0.35)
    colors = ["#222222"] + [matplotlib.colormaps["tab10"](i % 10) for i in range(len(effect_names) - 1)]
    keyed = (effects.assign(network_a=effects["network_a"].astype(str), network_b=effects["network_b"].astype(str))
             .set_index(["network_a", "network_b", "effect"]).sort_index())
    ypos = np.arange(len(effect_names))[::-1]
    for ax, (a, b) in zip(axes.flat, pairs):
        for y, name, color in zip(ypos, effect_names, colors):
            if (a, b, name) not in keyed.index:
                continue
            row = keyed.loc[(a, b, name)]
            if isinstance(row, pd.DataFrame):
                row = row.iloc[0]
            filled = excludes_zero(row["hdi_low"], row["hdi_high"])
            ax.plot([row["hdi_low"], row["hdi_high"]], [y, y], color=color, lw=1.6)
            ax.plot([row["mean"]], [y], "o", color=color, ms=5, mfc=color if filled else "white")
        ax.axvline(0, color="#888888", lw=0.8, ls="--")
        ax.set_yticks(ypos)
        ax.set_yticklabels([n.split(":", 1)[-1] for n in effect_names], fontsize=8)
        ax.set_ylim(-0.7, len(effect_names) - 0.3)
        ax.set_title(f"{a} \u2013 {b}", fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", color="#eeeeee")
    for ax in list(axes.flat)[len(pairs):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(f"drug - control (Fisher z), mean and {interval}", fontsize=9)
    return fig


def fd_figure(scans: pd.DataFrame, threshold: float | None):
    """Mean FD per dataset and condition: boxes of included scans, every scan as a point."""
    datasets = dataset_order(scans)
    conditions = [c for c in ("placebo", "baseline", "drug") if c in set(scans["condition"])]
    conditions += sorted(set(scans["condition"].astype(str)) - set(conditions))
    width = 0.8 / max(len(conditions), 1)
    fig = new_figure(max(7.0, 0.75 * len(datasets) + 2), 4.2, layout=None)
    ax = fig.subplots()
    place_grid(fig, 0.7, 0.15, 0.4, 0.3 + 0.6 * text_inches(datasets, 8))
    rng = np.random.default_rng(0)
    fd = pd.to_numeric(scans["mean_fd"], errors="coerce")
    excluded = excluded_mask(scans)
    for c_i, cond in enumerate(conditions):
        color = CONDITION_COLORS.get(cond, f"C{c_i}")
        offset = (c_i - (len(conditions) - 1) / 2) * width
        for d_i, ds in enumerate(datasets):
            sel = (scans["dataset"] == ds) & (scans["condition"] == cond) & fd.notna()
            if not sel.any():
                continue
            x = d_i + offset
            kept = fd[sel & ~excluded]
            if len(kept):
                ax.boxplot([kept.to_numpy()], positions=[x], widths=width * 0.8, showfliers=False,
                           patch_artist=True, boxprops={"facecolor": color, "alpha": 0.25, "edgecolor": color},
                           medianprops={"color": color}, whiskerprops={"color": color}, capprops={"color": color})
            for mask, marker in ((sel & ~excluded, "o"), (sel & excluded, "x")):
                vals = fd[mask].to_numpy()
                jitter = rng.uniform(-width * 0.3, width * 0.3, len(vals))
                ax.scatter(x + jitter, vals, s=12 if marker == "o" else 28, marker=marker,
                           color=color if marker == "o" else "#d62728", alpha=0.8, linewidths=1, zorder=3)
        ax.scatter([], [], color=color, s=20, label=cond)
    if excluded.any():
        ax.scatter([], [], marker="x", color="#d62728", s=28, label="excluded scan")
    if threshold is not None:
        ax.axhline(threshold, color="#d62728", lw=1, ls="--", label=f"exclusion threshold {threshold:g} mm")
    ax.set_xticks(range(len(datasets)))
    ax.set_xticklabels(datasets, rotation=35, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(datasets) - 0.4)
    ax.set_ylabel("mean framewise displacement (mm)")
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.01), frameon=False, ncols=len(conditions) + 2)
    ax.grid(axis="y", color="#eeeeee")
    return fig


def qcfc_figure(r: np.ndarray, distance: np.ndarray | None = None):
    """QC-FC histogram; with region distances, QC-FC against distance beside it."""
    fig = new_figure(6.0 if distance is None else 10.0, 3.2, layout=None)
    axes = fig.subplots(1, 1 if distance is None else 2, squeeze=False)[0]
    place_grid(fig, 0.65, 0.15, 0.35, 0.55, wgap=0.8)
    ax = axes[0]
    if distance is not None:
        from scipy.stats import spearmanr

        rho = spearmanr(distance, r).statistic
        axes[1].hexbin(distance, r, gridsize=40, mincnt=1, cmap="Blues")
        axes[1].axhline(0, color="#444444", lw=0.8)
        axes[1].set_xlabel("distance between region centres (mm)")
        axes[1].set_ylabel("QC-FC r")
        axes[1].set_title(f"Spearman rho = {rho:.2f}", fontsize=9)
    ax.hist(r, bins=50, color="#4c72b0", alpha=0.85)
    ax.axvline(0, color="#444444", lw=0.8)
    ax.axvline(float(np.median(r)), color="#d62728", lw=1, ls="--", label=f"median r = {np.median(r):.3g}")
    ax.set_xlabel("QC-FC: correlation across scans of mean FD with edge FC")
    ax.set_ylabel("edges")
    ax.legend(fontsize=8, frameon=False)
    return fig


def recovery_figure(merged: pd.DataFrame, interval: str):
    """Planted (truth) vs estimated overall effect per network pair, with the identity line."""
    fig = new_figure(4.6, 4.4, layout=None)
    ax = fig.subplots()
    place_grid(fig, 0.75, 0.15, 0.35, 0.55)
    x, y = merged["truth"].to_numpy(float), merged["mean"].to_numpy(float)
    ax.errorbar(x, y, yerr=[y - merged["hdi_low"].to_numpy(float), merged["hdi_high"].to_numpy(float) - y],
                fmt="o", ms=3.5, color="#4c72b0", ecolor="#b8c7e0", elinewidth=1)
    finite = np.concatenate([x, merged["hdi_low"].to_numpy(float), merged["hdi_high"].to_numpy(float)])
    finite = finite[np.isfinite(finite)]
    lo, hi = (finite.min(), finite.max()) if len(finite) else (-1.0, 1.0)
    pad = 0.05 * (hi - lo or 1)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#888888", lw=0.8, ls="--")
    ax.set_xlabel("planted effect (truth.tsv)")
    ax.set_ylabel(f"estimate (mean, {interval})")
    ax.set_title("overall effect: recovery", fontsize=10)
    return fig


# --------------------------------------------------------------------------- derived tables


def dataset_order(scans: pd.DataFrame) -> list[str]:
    """Datasets grouped by drug, in first-seen order (the order of scans.tsv)."""
    first = scans.drop_duplicates("dataset")
    rank = {d: i for i, d in enumerate(dict.fromkeys(first["drug"]))}
    pairs = sorted(zip(first["drug"], first["dataset"]), key=lambda dd: rank[dd[0]])  # stable
    return [str(ds) for _, ds in pairs]


def excluded_mask(scans: pd.DataFrame) -> pd.Series:
    """True for excluded scans; a missing column or value counts as included."""
    if "excluded" not in scans:
        return pd.Series(False, index=scans.index)
    return scans["excluded"].eq(True)


def drug_scans(scans: pd.DataFrame) -> pd.DataFrame:
    """The drug scans: a control scan's drug column names its study's drug, or "placebo"."""
    return scans[scans["condition"] == "drug"] if "condition" in scans else scans


def dataset_table(scans: pd.DataFrame) -> pd.DataFrame:
    """Per dataset: drug, subjects (all, and those with a scan kept: the methods' count), scans,
    kept and excluded (with a total row)."""
    excluded = excluded_mask(scans)
    kept = scans[~excluded]
    given = drug_scans(scans)
    rows = []
    for ds in dataset_order(scans):
        sel = scans["dataset"] == ds
        rows.append({
            "dataset": ds,
            "drug": ", ".join(sorted(set(given.loc[given["dataset"] == ds, "drug"].astype(str)))),
            "subjects": scans.loc[sel, "subject"].nunique(),
            "subjects kept": kept.loc[kept["dataset"] == ds, "subject"].nunique(),
            "scans": int(sel.sum()),
            "kept": int((sel & ~excluded).sum()),
            "excluded": int((sel & excluded).sum()),
        })
    total = {"dataset": "total", "drug": f"{given['drug'].nunique()} drugs",
             "subjects": int(scans.groupby("dataset")["subject"].nunique().sum()),
             "subjects kept": int(kept.groupby("dataset")["subject"].nunique().sum()),
             "scans": len(scans), "kept": int((~excluded).sum()), "excluded": int(excluded.sum())}
    return pd.DataFrame(rows + [total])


def reason_table(scans: pd.DataFrame | None, exclusions: pd.DataFrame | None) -> pd.DataFrame:
    """Per dataset and exclusion reason: scans excluded (scans.tsv first, else exclusions.tsv)."""
    if scans is not None:
        excluded = excluded_mask(scans)
        out = (scans[excluded].fillna({"exclusion_reason": "(no reason given)"})
               .groupby(["dataset", "exclusion_reason"]).size().rename("scans").reset_index()
               .rename(columns={"exclusion_reason": "reason"}))
        return out
    if exclusions is not None:
        out = exclusions[exclusions["reason"] != "included"][["dataset", "reason", "n_scans"]]
        return out.rename(columns={"n_scans": "scans"}).reset_index(drop=True)
    return pd.DataFrame(columns=["dataset", "reason", "scans"])


def drug_table(scans: pd.DataFrame) -> pd.DataFrame:
    """Per drug: its datasets and what the analysis keeps of them: the drug's scans and every
    control scan of those datasets, whatever their drug column says. A subject with a control
    scan only (a parallel design's placebo group, a dropout) counts: the models use its scans.
    A dataset giving two drugs lends its controls to both."""
    kept = scans[~excluded_mask(scans)]
    given = drug_scans(scans)
    rows = []
    for drug in dict.fromkeys(given["drug"]):
        datasets = list(dict.fromkeys(given.loc[given["drug"] == drug, "dataset"].astype(str)))
        sel = kept[kept["dataset"].astype(str).isin(datasets)
                   & ((kept["condition"] != "drug") | (kept["drug"] == drug))
                   if "condition" in kept else kept["drug"] == drug]
        rows.append({
            "drug": drug,
            "datasets": ", ".join(datasets),
            "subjects kept": int(sel.groupby("dataset")["subject"].nunique().sum()),
            "drug scans kept": int((sel["condition"] == "drug").sum()),
            "control scans kept": int((sel["condition"] != "drug").sum()),
        })
    return pd.DataFrame(rows)


def top_pairs(effects: pd.DataFrame, n: int) -> list[tuple[str, str]]:
    overall = effects[effects["effect"] == "overall"].dropna(subset=["mean"])
    order = overall.assign(size=overall["mean"].abs()).sort_values("size", ascending=False)
    return [(str(a), str(b)) for a, b in order[["network_a", "network_b"]].head(n).itertuples(index=False)]


def drug_effects(effects: pd.DataFrame) -> list[str]:
    names = effects.loc[effects["effect"].astype(str).str.startswith("drug:"), "effect"]
    return list(dict.fromkeys(names.astype(str)))


def pair_key(a: Any, b: Any) -> tuple[str, str]:
    """Order-free network pair key (truth and estimates may order a pair differently)."""
    return tuple(sorted((str(a), str(b))))  # type: ignore[return-value]


def recovery_table(truth: pd.DataFrame, effects: pd.DataFrame, level: str) -> pd.DataFrame:
    """Truth merged with estimates for the run's aggregation level (one row per pair and effect)."""
    t = truth[truth["aggregation"].astype(str) == str(level)] if "aggregation" in truth else truth
    t = t.assign(key=[pair_key(a, b) for a, b in t[["network_a", "network_b"]].itertuples(index=False)])
    e = effects.assign(key=[pair_key(a, b) for a, b in effects[["network_a", "network_b"]].itertuples(index=False)])
    cols = ["key", "effect", "effect_type", "mean", "hdi_low", "hdi_high"]
    cols = [c for c in cols if c in e]
    # a drug contrast's truth is the difference of its drugs' planted effects
    drug = t[t["effect"].astype(str).str.startswith("drug:")].set_index(["key", "effect"])["truth"]
    contrasts = []
    for name in sorted({str(x) for x in e["effect"] if str(x).startswith("contrast:")}):
        a, _, b = name.split(":", 1)[1].partition("-")
        both = pd.concat([drug.xs(f"drug:{a}", level="effect", drop_level=True).rename("a"),
                          drug.xs(f"drug:{b}", level="effect", drop_level=True).rename("b")], axis=1).dropna() \
            if {f"drug:{a}", f"drug:{b}"} <= set(drug.index.get_level_values("effect")) else pd.DataFrame()
        if len(both):
            contrasts.append(pd.DataFrame({"key": both.index, "effect": name, "truth": both["a"] - both["b"]}))
    t = pd.concat([t[["key", "effect", "truth"]], *contrasts], ignore_index=True)
    return t.merge(e[cols], on=["key", "effect"], how="inner")


def recovery_stats(merged: pd.DataFrame) -> pd.DataFrame:
    rows = []
    kind = merged["effect"].astype(str).str.split(":").str[0]
    for k in dict.fromkeys(kind):
        m = merged[(kind == k) & merged["mean"].notna()]
        if not len(m):
            continue
        err = m["mean"] - m["truth"]
        covered = (m["hdi_low"] <= m["truth"]) & (m["truth"] <= m["hdi_high"])
        r = float(np.corrcoef(m["truth"], m["mean"])[0, 1]) if len(m) > 2 and m["truth"].std() > 0 else np.nan
        rows.append({"effects": k, "estimates": len(m), "r(truth, estimate)": r,
                     "RMSE": float(np.sqrt((err**2).mean())), "interval covers truth (%)": 100 * covered.mean()})
    return pd.DataFrame(rows)


def is_bayesian(run: Run) -> bool:
    eff = run.table("effects")
    has_rhat = eff is not None and "r_hat" in eff and pd.to_numeric(eff["r_hat"], errors="coerce").notna().any()
    return (run.path / "posterior.nc").is_file() or has_rhat


# --------------------------------------------------------------------------- sections


def header_items(run: Run) -> list[tuple[str, Any]]:
    """The facts under the report's title: when, which version, which run folder and plugins."""
    prov = run.provenance
    version = prov.get("megafc_version") or (prov.get("packages") or {}).get("megafc") or installed_version()
    finished = prov.get("finished") or prov.get("started")
    items = [
        ("run date", format_time(finished) if finished else "unknown"),
        ("report written", format_time(datetime.now(timezone.utc).isoformat())),
        ("megafc version", version),
        ("run id", prov.get("run_id", "unknown")),
        ("seed", prov.get("seed", run.cfg("seed", default="unknown"))),
        ("run directory", str(run.shown_as or run.path)),
    ]
    kinds = list(prov.get("plugins") or {}) or ["dataset", "atlas", "denoiser", "estimator", "harmonizer", "pooling"]
    plugins = ", ".join(f"{k} = {run.plugin(k)}" for k in kinds if run.plugin(k))
    if plugins:
        items.append(("plugins", plugins))
    if run.cfg("aggregate", "level"):
        items.append(("aggregation level", run.cfg("aggregate", "level")))
    return items


def data_section(run: Run) -> str:
    scans, exclusions = run.table("scans"), run.table("exclusions")
    if scans is None and exclusions is None:
        return note("scans.tsv and exclusions.tsv are missing: no data summary.")
    parts = []
    if scans is not None:
        parts.append("<h3>Datasets</h3>")
        parts.append(html_table(dataset_table(scans), "datasets-table",
                                row_class=lambda r: "total" if r["dataset"] == "total" else ""))
    else:
        per = exclusions.groupby("dataset").agg(scans=("dataset_scans", "first"))
        per["kept"] = exclusions[exclusions["reason"] == "included"].groupby("dataset")["n_scans"].sum()
        per = per.fillna({"kept": 0}).reset_index()
        per["excluded"] = per["scans"] - per["kept"]
        parts.append(note("scans.tsv is missing; counts from exclusions.tsv."))
        parts.append(html_table(per, "datasets-table"))
    reasons = reason_table(scans, exclusions)
    parts.append("<h3>Exclusions</h3>")
    if len(reasons):
        parts.append(html_table(reasons, "exclusions-table"))
    else:
        parts.append(note("No scans were excluded."))
    if scans is not None:
        parts.append("<h3>Drugs</h3>")
        parts.append(html_table(drug_table(scans), "drugs-table"))
    return "\n".join(parts)


def motion_section(run: Run) -> str:
    scans, qc = run.table("scans"), run.table("qc_fc")
    parts = ["<h3>Mean framewise displacement</h3>"]
    if scans is not None and "mean_fd" in scans and pd.to_numeric(scans["mean_fd"], errors="coerce").notna().any():
        threshold = run.cfg("qc", "max_mean_fd")
        threshold = float(threshold) if isinstance(threshold, (int, float)) else None
        uri = save_figure(run, fd_figure(scans, threshold), "mean_fd")
        parts.append(figure_html(uri, "Mean FD per dataset and condition: boxes over included scans, "
                                      "every scan a point, excluded scans as red crosses.", "mean_fd"))
        fd = pd.to_numeric(scans["mean_fd"], errors="coerce")
        by = (scans.assign(mean_fd=fd).groupby("condition")["mean_fd"]
              .agg(scans="count", median="median", mean="mean", max="max").reset_index())
        parts.append(html_table(by, "fd-table"))
    else:
        parts.append(note("No mean FD values (scans.tsv missing or mean_fd empty)."))
    motion = run.table("motion")
    if motion is not None and len(motion):
        parts.append("<h3>Does motion differ between drug and control scans?</h3>")
        differs = motion[motion["differs"].astype(str).str.lower().eq("true") & (motion["drug"] != "all")]
        if len(differs):
            which = "; ".join(f"{r.drug} {r.fd_change_mean:+.3f} mm [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
                              for r in differs.itertuples(index=False))
            parts.append(f'<div class="banner warn" id="motion-banner"><strong>Drug scans move differently from '
                         f"control scans</strong> ({esc(which)}; mean FD change per subject with 95% CI). Motion "
                         f"changes FC, so it can masquerade as a drug effect: {esc(motion_advice(adjusted(run)))}; "
                         "compare denoising strategies too.</div>")
        else:
            parts.append('<div class="banner good" id="motion-banner">No drug changes mean FD credibly '
                         "(every 95% CI of the drug-minus-control change includes 0).</div>")
        parts.append(html_table(motion.drop(columns=["differs"]), "motion-table"))
    parts.append("<h3>QC-FC</h3>")
    if qc is None or not len(qc) or "r" not in qc:
        parts.append(note("qc_fc.tsv is missing or empty (e.g. no variation in mean FD): no QC-FC check."))
        return "\n".join(parts)
    r = pd.to_numeric(qc["r"], errors="coerce").dropna().to_numpy()
    p = pd.to_numeric(qc.get("p"), errors="coerce") if "p" in qc else pd.Series(dtype=float)
    stats = pd.DataFrame([{
        "edges": len(r),
        "median |r|": float(np.median(np.abs(r))) if len(r) else np.nan,
        "edges with p < 0.05 (%)": 100 * float((p < 0.05).mean()) if len(p) else np.nan,
    }])
    share = qcfc_share(qc)
    if share > QCFC_ALERT:
        parts.append(f'<div class="banner warn" id="qcfc-banner"><strong>QC-FC: {100 * share:.0f}% of edges</strong> '
                     "correlate with mean FD across scans at p &lt; 0.05, where about 5% would if motion did not "
                     "drive FC (when drug scans move more, a drug effect also shows up here). Consider stricter "
                     "denoising (denoiser=scrubbing or compcor) and qc.max_mean_fd.</div>")
    distance = None
    if "distance_mm" in qc:
        both = qc[["r", "distance_mm"]].apply(pd.to_numeric, errors="coerce").dropna()
        if len(both) > 2:
            from scipy.stats import spearmanr

            r, distance = both["r"].to_numpy(), both["distance_mm"].to_numpy()
            stats["QC-FC vs distance (Spearman rho)"] = float(spearmanr(distance, r).statistic)
    uri = save_figure(run, qcfc_figure(r, distance), "qc_fc")
    parts.append(figure_html(uri, "QC-FC: distribution over edges of the across-scan correlation between "
                                  "mean FD and edge FC (Power et al. 2014); centred on 0 with ~5% of edges "
                                  "at p < 0.05 means motion does not drive FC."
                                  + (" Right: QC-FC against the distance between the regions; motion "
                                     "artefact raises short-range more than long-range FC, so a trend with "
                                     "distance is its signature." if distance is not None else ""), "qc_fc"))
    parts.append(html_table(stats, "qcfc-table"))
    return "\n".join(parts)


def effects_section(run: Run) -> str:
    effects = run.table("effects")
    if effects is None or not len(effects):
        return note("effects.tsv is missing: no effects to show.")
    interval = run.interval
    parts = []
    networks = network_order(effects)
    drugs = drug_effects(effects)
    panels = [("overall", *effect_matrices(effects, networks, "overall"))]
    panels += [(d.split(":", 1)[1], *effect_matrices(effects, networks, d)) for d in drugs]
    finite = np.concatenate([np.abs(m[np.isfinite(m)]) for _, m, _ in panels]) if panels else np.array([])
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    parts.append("<h3>Network x network effects</h3>")
    parts.append(f"<p>Posterior mean (or pooled estimate) of drug minus control connectivity for every network "
                 f"pair; <code>*</code> marks pairs whose {esc(interval)} excludes 0. All panels share one colour "
                 f"scale (&plusmn;{fmt(vmax)}).</p>")
    uri = save_figure(run, matrix_figure(panels[:1], networks, vmax, 1, interval), "effect_overall",
                      file_stem="overall_effect")
    parts.append(figure_html(uri, "Overall effect (all drugs pooled).", "effect_overall"))
    if len(panels) > 1:
        uri = save_figure(run, matrix_figure(panels[1:], networks, vmax, 2, interval), "effect_drugs")
        parts.append(figure_html(uri, "Effect of each drug (same colour scale).", "effect_drugs"))
    upper = np.triu_indices(len(networks))  # each pair once
    counts = [{"effect": name, "network pairs": int(np.isfinite(m[upper]).sum()),
               f"{interval} excludes 0": int(c[upper].sum())} for name, m, c in panels]
    parts.append(html_table(pd.DataFrame(counts), "credible-counts"))
    if "svalue" in effects:
        parts.append(false_sign_block(effects, interval))

    pairs = top_pairs(effects, FOREST_PAIRS)
    if pairs:
        parts.append("<h3>Key network pairs</h3>")
        uri = save_figure(run, forest_figure(effects, pairs, ["overall"] + drugs, interval), "forest")
        parts.append(figure_html(uri, f"The {len(pairs)} pairs with the largest |overall effect|: overall "
                                      f"(black) and per-drug means with {interval}s; filled markers exclude 0.",
                                 "forest"))
    contrasts = effects[effects["effect"].astype(str).str.startswith("contrast:")]
    if len(contrasts):
        parts.append("<h3>Drug contrasts</h3>")
        parts.append(html_table(contrast_table(contrasts, interval), "contrasts-table"))
    parts.append("<h3>Summaries</h3>")
    summaries = run.table("summaries")
    if summaries is not None and len(summaries):
        parts.append(f"<p>Mean effect over sets of network pairs (mean [{esc(interval)}]; bold: excludes 0).</p>")
        parts.append(summary_pivot(summaries))
        if "svalue" in summaries:
            parts.append(false_sign_block(summaries, interval, "summaries"))
    else:
        parts.append(note("summaries.tsv is missing: no within/between-network summaries."))
    specificity = run.table("specificity")
    if specificity is not None and len(specificity):
        parts.append(table_block(
            "Subnetwork specificity", "How unevenly each network pair's overall effect falls on its subnetwork "
            "pairs: the sd of their effects, draw by draw, with the posterior noise's share removed (0: every "
            "subnetwork pair changes alike). Per drug in <code>specificity.tsv</code>.",
            specificity[specificity["effect"] == "overall"].sort_values("mean", ascending=False),
            ("network_a", "network_b", "n_pairs", "mean", "hdi_low", "hdi_high", "r_hat"), "specificity-table",
            scroll=True))
    similarity = run.table("drug_similarity")
    if similarity is not None and len(similarity):
        parts.append(table_block(
            "Drug similarity", "Per pair of drugs, computed draw by draw on the drug-level effects across network "
            "pairs, with the share of each draw's spread due to the estimates' error and the posterior noise "
            "(twice the posterior variance) subtracted: the maps' correlation "
            "(<code>pattern_r_corrected</code>, blind to scale), drug a's root-mean-square effect over drug b's "
            "(<code>rms_ratio</code>), the root-mean-square difference (<code>rms_distance</code>) and, with "
            "<code>pooling.drug_scale=true</code>, the ratio of the drugs' scales (<code>scale_ratio</code>); "
            "<code>pearson_r_across_pairs</code> is the uncorrected correlation (attenuated by that noise; it "
            "estimates no population quantity). <code>p_above_1</code>: the share of draws in which drug a is the "
            "stronger. The correction makes these intervals a heuristic, not a posterior: on simulated studies "
            "(docs/calibration.md) they covered the planted values at 0.87-1.00 (<code>rms_ratio</code> lowest in "
            "designs with two drug scans a subject, <code>rms_distance</code> 0.89 where network pairs move "
            "together), and one study's ranking of drug pairs by closeness can differ from the planted one where "
            "intervals overlap: compare drugs by whether intervals separate, not by the order of the means.",
            similarity, ("drug_a", "drug_b", "measure", "mean", "sd", "hdi_low", "hdi_high", "p_above_1", "r_hat",
                         "ess_bulk"),
            "similarity-table"))
    scales = run.table("drug_scales")
    if scales is not None and len(scales):
        parts.append(table_block(
            "Drug scales", "The strength at which each drug shows the shared pattern of effects (geometric mean of "
            "all drugs' = 1; with <code>pooling.dataset_scale</code>, of the drug's population of datasets).",
            scales, ("drug", "mean", "sd", "hdi_low", "hdi_high", "r_hat", "ess_bulk"), "scales-table"))
    datasets = run.table("dataset_scales")
    if datasets is not None and len(datasets):
        parts.append(table_block(
            "Dataset scales", "The strength at which each dataset shows its drug's effects, relative to the drug's "
            "other datasets (the datasets' samples of subjects have geometric mean 1 within a drug; reported for each "
            "dataset's population of subjects; a drug's only dataset is 1, and the spread between datasets a new "
            "dataset of that drug could show is carried by its drug effects"
            + (" and the drug's scale above" if scales is not None and len(scales) else "") + ").",
            datasets, ("dataset", "drug", "mean", "sd", "hdi_low", "hdi_high", "r_hat", "ess_bulk"),
            "dataset-scales-table"))
    truth = run.table("truth")
    if truth is not None and len(truth):
        parts.append(recovery_block(run, effects, truth, interval))
    return "\n".join(parts)


def table_block(title: str, text: str, table: pd.DataFrame, columns: tuple[str, ...], table_id: str,
                scroll: bool = False) -> str:
    """A titled table of a derived result (``text`` is HTML); only the ``columns`` it has."""
    keep = [c for c in columns if c in table]
    return f"<h3>{esc(title)}</h3><p>{text}</p>" + html_table(table[keep], table_id, scroll=scroll)


def false_sign_table(table: pd.DataFrame, interval: str, rate: float = FALSE_SIGN_RATE) -> pd.DataFrame:
    """Per effect type: how many effects are called credible, by the interval and by svalue <=
    rate, and how many of each list the model expects to have the wrong sign (sum of lfsr)."""
    excl = np.array([excludes_zero(lo, hi) for lo, hi in table[["hdi_low", "hdi_high"]].itertuples(index=False)],
                    dtype=bool)
    t = table.assign(_excl=excl, _sel=table["svalue"] <= rate, _lfsr=table["lfsr"].fillna(0.0))
    rows = []
    for etype, g in t.groupby("effect_type", sort=False):
        share = pd.to_numeric(g["null_share"], errors="coerce") if "null_share" in g else pd.Series(dtype=float)
        shared = (pd.to_numeric(g["error_correlation"], errors="coerce") if "error_correlation" in g
                  else pd.Series(dtype=float))
        rows.append({"effect type": etype, "effects": len(g),
                     f"{interval} excludes 0": int(g["_excl"].sum()),
                     "expected false signs among them": round(float(g.loc[g["_excl"], "_lfsr"].sum()), 1),
                     f"svalue \u2264 {rate:g}": int(g["_sel"].sum()),
                     "expected false signs among these": round(float(g.loc[g["_sel"], "_lfsr"].sum()), 1),
                     "share of zeros learned": round(float(share.mean()), 2) if share.notna().any() else np.nan,
                     "error correlation allowed for": (round(float(shared.mean()), 2) if shared.notna().any()
                                                       else np.nan)})
    return pd.DataFrame(rows)


def all_null_families(table: pd.DataFrame) -> list[str]:
    """Effects whose adaptive-shrinkage fit put (nearly) all its weight on exact zeros."""
    if "null_share" not in table:
        return []
    share = pd.to_numeric(table["null_share"], errors="coerce")
    return sorted(set(table.loc[share >= 0.99, "effect"].astype(str)))


def false_sign_block(table: pd.DataFrame, interval: str, what: str = "network-pair effects") -> str:
    nulls = all_null_families(table)
    warn = (f'<div class="banner warn"><strong>No sign is sure by lfsr for {esc(", ".join(nulls))}</strong>: '
            "adaptive shrinkage found these effects spread no more than their noise makes them and put (nearly) all "
            "its weight on exact zeros, so every lfsr is about 1, also where an interval excludes 0. That says the "
            "data do not show such effects beyond what chance gives over this many pairs, not that the credible "
            "ones have the wrong sign.</div>") if nulls else ""
    return (f"<p>How many {what} are called credible, and how many of those the model expects to be false signs "
            f"(the effect zero or of the other sign: the sum of their local false sign rates, <code>lfsr</code>). "
            f"Selecting by <code>svalue &le; {FALSE_SIGN_RATE:g}</code> keeps the expected share of false signs at "
            f"or below {100 * FALSE_SIGN_RATE:g}% across the many pairs looked at; choose another rate by filtering "
            f"the <code>svalue</code> column. The last columns are the share of exact zeros adaptive shrinkage learned "
            f"for each effect (<code>null_share</code>) and the correlation of the effects' errors within a dataset it "
            f"allowed for (<code>error_correlation</code>: scans' FC moves together across pairs, so their effects err "
            f"together, which taken as independent would pass for signal).</p>" + warn
            + html_table(false_sign_table(table, interval), f"false-signs-{what.split()[0]}"))


def contrast_table(contrasts: pd.DataFrame, interval: str) -> pd.DataFrame:
    """Per drug contrast: network pairs, how many intervals exclude 0, the largest |difference|."""
    excl = [excludes_zero(lo, hi) for lo, hi in contrasts[["hdi_low", "hdi_high"]].itertuples(index=False)]
    return (contrasts.assign(excl=excl, size=contrasts["mean"].abs())
            .groupby("effect", sort=False)
            .agg(**{"network pairs": ("excl", "size"), f"{interval} excludes 0": ("excl", "sum"),
                    "largest |mean|": ("size", "max")})
            .reset_index())


def summary_pivot(summaries: pd.DataFrame) -> str:
    """Rows: summary (pairs); columns: effects; cells: mean [interval]."""
    cells = summaries.assign(cell=[interval_cell(m, lo, hi) for m, lo, hi in
                                   summaries[["mean", "hdi_low", "hdi_high"]].itertuples(index=False)])
    effects = list(dict.fromkeys(cells["effect"].astype(str)))
    wide = cells.pivot_table(index=["summary", "n_pairs"] if "n_pairs" in cells else ["summary"],
                             columns="effect", values="cell", aggfunc="first", sort=False)
    wide = wide.reindex(columns=effects).fillna("&ndash;").reset_index()
    wide.columns = [str(c).replace("drug:", "") for c in wide.columns]
    raw = [str(c).replace("drug:", "") for c in effects]
    return html_table(wide, "summaries-table", raw=raw, scroll=True)


def recovery_block(run: Run, effects: pd.DataFrame, truth: pd.DataFrame, interval: str) -> str:
    level = run.cfg("aggregate", "level", default="network")
    merged = recovery_table(truth, effects, level)
    parts = ["<h3>Recovery of planted effects</h3>"]
    overall = merged[merged["effect"] == "overall"].dropna(subset=["mean"])
    if not len(overall):
        missing = f"truth.tsv has no overall effects matching the run's pairs at level '{level}'."
        return "\n".join(parts + [note(missing)])
    uri = save_figure(run, recovery_figure(overall, interval), "recovery")
    fig = figure_html(uri, f"Truth vs estimate, overall effect ({level} level).", "recovery")
    parts.append(f'<div class="row">{fig}<div>{html_table(recovery_stats(merged), "recovery-table")}</div></div>')
    similarity = similarity_recovery(run.table("drug_similarity"), truth, level, effects)
    if len(similarity):
        parts.append("<p>Drug similarity against the same measures of the planted drug maps over the analysed pairs "
                     "(rms_ratio above 1: drug a the stronger; one study's intervals, which the calibration scores "
                     "over many).</p>" + html_table(similarity, "similarity-recovery-table", scroll=True))
    return "\n".join(parts)


def similarity_recovery(similarity: pd.DataFrame | None, truth: pd.DataFrame, level: str,
                        effects: pd.DataFrame) -> pd.DataFrame:
    """Per drug pair and measure: the planted value, the estimate with its interval, and whether
    the interval covers it; empty without both tables."""
    from .calibration import similarity_truth

    if similarity is None or not len(similarity) or "aggregation" not in truth:
        return pd.DataFrame()
    pairs = effects.loc[effects["effect"] == "overall", ["network_a", "network_b"]]
    planted = similarity_truth(truth, level, pairs)
    merged = similarity.merge(planted, on=["drug_a", "drug_b", "measure"], how="inner").dropna(subset=["mean"])
    if not len(merged):
        return pd.DataFrame()
    merged["covered"] = (merged["hdi_low"] <= merged["truth"]) & (merged["truth"] <= merged["hdi_high"])
    return merged[["drug_a", "drug_b", "measure", "truth", "mean", "hdi_low", "hdi_high", "covered"]]


def adjusted(run: Run) -> list[str] | None:
    """The covariates the run's effects are adjusted for (provenance.json; None: not recorded)."""
    covariates = run.provenance.get("adjusted_for")
    return list(covariates) if isinstance(covariates, list) else None


def flagged_rows(run: Run) -> tuple[int, int]:
    """(rows flagged not ok, rows flagged at all) over effects.tsv and summaries.tsv."""
    bad = total = 0
    for name in ("effects", "summaries"):
        table = run.table(name)
        if table is not None and "ok" in table:
            ok = as_bool(table["ok"])
            bad += int((ok == False).sum())  # noqa: E712 (missing values are neither)
            total += int(ok.notna().sum())
    return bad, total


def sampler_failed(run: Run) -> bool:
    """The sampler's own checks (chains not converged on a sampled quantity, low BFMI) failed:
    provenance.json ``sampler_ok`` (earlier runs: a false verdict with every row ok)."""
    prov = run.provenance
    if "sampler_ok" in prov:
        return prov["sampler_ok"] is False
    return prov.get("diagnostics_ok") is False and flagged_rows(run)[0] == 0


def chance_only(run: Run) -> bool:
    """Rows over the strict thresholds are what converged chains of this length give by chance:
    the run recorded ``sampler_ok`` true and its diagnostics.tsv passes the sampler's checks
    (``megafc.stats.sampler_healthy``). Anything less (a run of an earlier version, a model that
    does not check its sampler) is not known to be chance, and is reported as a failure."""
    from megafc.stats import sampler_healthy

    if run.provenance.get("sampler_ok") is not True:
        return False
    d = run.table("diagnostics")
    needed = {"n_r_hat_over", "r_hat_over_by_chance", "p_r_hat_max", "r_hat_max"}
    if d is None or not len(d) or not needed <= set(d.columns):
        return False
    numbers = d.assign(**{c: pd.to_numeric(d[c], errors="coerce") for c in needed | ({"bfmi_min"} & set(d.columns))})
    return sampler_healthy(numbers)


def diverged(run: Run) -> bool:
    effects = run.table("effects")
    return effects is not None and "divergences" in effects and bool(
        (pd.to_numeric(effects["divergences"], errors="coerce") > 0).any())


def over_thresholds(diagnostics: pd.DataFrame | None) -> list[str]:
    """The variables diagnostics.tsv flags not ok (ancillary sds as well as effects)."""
    if diagnostics is None or "ok" not in diagnostics or "variable" not in diagnostics:
        return []
    flagged = diagnostics[~as_bool(diagnostics["ok"])]
    return list(dict.fromkeys(flagged["variable"].astype(str)))


def diagnostics_state(run: Run) -> str:
    """The run's diagnostics in one word, for both banners: ``ok``; ``model`` (a non-Bayesian
    model flagged rows it could not estimate); ``sampler`` (every row passes, the sampler's own
    checks failed); ``caution`` (rows over the strict per-quantity thresholds at the rate converged
    chains of this length give by chance, no divergence); ``failed`` (rows flagged otherwise)."""
    bad = flagged_rows(run)[0]
    if not bad:
        return "sampler" if sampler_failed(run) else "ok"
    if not is_bayesian(run):
        return "model"
    return "caution" if chance_only(run) and not diverged(run) else "failed"


def diagnostics_caveat(run: Run) -> str:
    """A banner over the whole report when the run's diagnostics failed, since every interval,
    star and credible count below depends on them. Rows over the strict per-quantity thresholds
    while the sampler passed its own checks (R-hats at the level converged chains of this length
    give by chance, no divergence) are a caution, not a failure: that is what the run's R-hat
    warning says too."""
    state = diagnostics_state(run)
    bad, total = flagged_rows(run)
    if state == "ok":
        return ""
    if state == "model":
        what = f"{bad} of {total} rows of effects.tsv and summaries.tsv are flagged not ok by the pooling model"
        return (f'<div class="banner bad" id="diagnostics-caveat"><strong>{what}</strong> (see the pooling '
                'warnings in <a href="#diagnostics">Diagnostics</a>); read those rows with that in mind.</div>')
    if state == "caution":
        return (f'<div class="banner warn" id="diagnostics-caveat"><strong>{bad} of {total} effects and summaries '
                "are over the strict per-quantity thresholds</strong> (R-hat above pooling.rhat_max or too few "
                "effective draws) although the sampler passed its own checks: these chains are too short to show "
                "convergence at that threshold. Read those rows' intervals with care, or rerun with more draws (the "
                'R-hat warning in <a href="#diagnostics">Diagnostics</a> says how many).</div>')
    what = ("the sampler's own checks failed (chains not converged on a sampled quantity, or a low energy BFMI)"
            if sampler_failed(run) else "the sampler had divergent transitions" if diverged(run)
            else "rows exceed the per-quantity thresholds")
    rows = f"; {bad} of {total} effects and summaries are flagged not ok" if bad else ""
    return (f'<div class="banner bad" id="diagnostics-caveat"><strong>Sampling diagnostics failed: {what}'
            f"{rows}.</strong> The intervals, stars and credible counts in this report are not trustworthy "
            'until the model is rerun with longer chains (see <a href="#diagnostics">Diagnostics</a> and the '
            "warnings).</div>")


def diagnostics_section(run: Run) -> str:
    effects, diagnostics = run.table("effects"), run.table("diagnostics")
    parts = []
    if effects is not None and "ok" in effects:
        bad, total = flagged_rows(run)
        state = diagnostics_state(run)
        if state == "model":
            parts.append(f'<div class="banner bad" id="diagnostics-banner"><strong>{bad} of {total} effects and '
                         f"summaries are flagged not ok</strong> by the pooling model (e.g. an effect that fewer "
                         f"than two datasets inform; the pooling warnings below say which).</div>")
        elif state == "caution":
            parts.append(f'<div class="banner warn" id="diagnostics-banner"><strong>{bad} of {total} effects and '
                         f"summaries are over the strict per-quantity thresholds</strong> (R-hat above pooling.rhat_max "
                         f"or too few effective draws), with no divergence and R-hats at the level converged chains of "
                         f"this length give by chance (the R-hat warning below): the chains are too short to show "
                         f"convergence at that threshold. Read those rows' intervals with care, or rerun with more "
                         f"draws.</div>")
        elif state == "failed":
            also = (" The sampler's own checks failed too (warnings below)." if sampler_failed(run) else "")
            parts.append(f'<div class="banner bad" id="diagnostics-banner"><strong>{bad} of {total} effects and '
                         f"summaries are flagged not ok</strong> (R-hat, effective sample size or divergences beyond "
                         f"their thresholds). Their intervals are not trustworthy: rerun with more draws/tuning "
                         f"before interpreting them.{also}</div>")
        elif state == "sampler":
            parts.append(f'<div class="banner bad" id="diagnostics-banner"><strong>The sampler\'s own checks '
                         f"failed</strong> although all {total} effects and summaries pass theirs: chains that have "
                         f"not converged on a sampled hyperparameter, or a low energy BFMI (the warnings below say "
                         f"which). Every interval depends on those: rerun with longer chains.</div>")
        elif not is_bayesian(run):
            parts.append(f'<div class="banner good" id="diagnostics-banner">All {total} effects and summaries ok. '
                         f"Non-Bayesian pooling: no MCMC diagnostics apply.</div>")
        else:
            over = over_thresholds(diagnostics)
            named = ", ".join(over[:5]) + (f" and {len(over) - 5} more" if len(over) > 5 else "")
            also = (f" Sampled quantities of {named} are over the strict thresholds in diagnostics.tsv, "
                    "at the rate converged chains of this length give by chance (the R-hat warning below)."
                    if over else "")
            parts.append(f'<div class="banner good" id="diagnostics-banner">All {total} effects and summaries '
                         f"passed the R-hat, ESS and divergence checks, and the sampler's own checks.{also}</div>")
        parts.append(html_table(ok_by_type(effects), "ok-table"))
    else:
        parts.append(note("effects.tsv (with its 'ok' column) is missing: no per-effect diagnostics."))
    parts.append("<h3>Pooling diagnostics (diagnostics.tsv)</h3>")
    if diagnostics is not None and len(diagnostics):
        def bad_row(r: pd.Series) -> str:
            return "bad" if pd.notna(r.get("ok", True)) and not bool(r.get("ok", True)) else ""

        parts.append(html_table(diagnostics, "diagnostics-table", row_class=bad_row, scroll=True))
    else:
        parts.append(note("diagnostics.tsv is missing or empty."))
    parts.append("<h3>Warnings of the run (warnings.tsv)</h3>")
    warnings = run.table("warnings")
    if warnings is None:
        parts.append(note("warnings.tsv is missing (a run of an earlier megafc version?)."))
    elif len(warnings):
        parts.append("<ul class=\"warnings\">" + "".join(
            f"<li>{esc(r.level.upper())} ({esc(r.stage)}): {esc(r.message)}</li>"
            for r in warnings.itertuples(index=False)) + "</ul>")
    else:
        parts.append(note("The run logged no warnings."))
    extra = [figure_html(png_data_uri(p.read_bytes()), f"{p.stem.replace('_', ' ')} (written by the pooling plugin)",
                         p.stem) for p in other_figures(run)]
    if extra:
        parts.append("<h3>Figures from the pooling plugin</h3>")
        parts.append(f'<div class="row">{"".join(extra)}</div>')
    return "\n".join(parts)


def ok_by_type(effects: pd.DataFrame) -> pd.DataFrame:
    """Per effect type: how many effects, how many not ok, and the worst diagnostics."""
    kind = effects["effect_type"] if "effect_type" in effects else effects["effect"].astype(str).str.split(":").str[0]
    rows = []
    for k in dict.fromkeys(kind.astype(str)):
        sub = effects[kind.astype(str) == k]
        row = {"effect type": k, "effects": len(sub), "not ok": int((sub["ok"] == False).sum())}  # noqa: E712
        for col, agg, label in (("r_hat", "max", "max R-hat"), ("ess_bulk", "min", "min bulk ESS"),
                                ("ess_tail", "min", "min tail ESS"), ("divergences", "max", "divergences")):
            if col in sub:
                row[label] = getattr(pd.to_numeric(sub[col], errors="coerce"), agg)()
        rows.append(row)
    return pd.DataFrame(rows).dropna(axis=1, how="all")  # e.g. no R-hat/ESS for a meta-analysis


def other_figures(run: Run) -> list[Path]:
    """PNGs the pooling plugin wrote (e.g. predictive checks); not ours, not the overall matrix."""
    if not run.figures_dir.is_dir():
        return []
    return sorted(p for p in run.figures_dir.glob("*.png")
                  if not p.name.startswith(FIGURE_PREFIX) and p.name != "overall_effect.png")


def methods_section(run: Run) -> str:
    parts = []
    if run.methods:
        parts.append(f'<div class="methods">{markdown_to_html(run.methods, shift=2)}</div>')
    else:
        parts.append(note("methods.md is missing."))
    parts.append("<h3>Citations</h3>")
    refs = run.provenance.get("references") or []
    if refs:
        parts.append("<ol class=\"citations\">" + "".join(f"<li>{esc(c)}</li>" for c in refs) + "</ol>")
        parts.append("<p>BibTeX: <code>references.bib</code>.</p>")
    else:
        parts.append(note("provenance.json lists no references (a run of an earlier megafc version?)."))
    return "\n".join(parts)


def provenance_section(run: Run) -> str:
    prov = run.provenance
    parts = []
    if not prov:
        parts.append(note("provenance.json is missing (an incomplete run?)."))
    else:
        keys = ("started", "finished", "python", "platform", "hostname", "config_fingerprint")
        info = [(k, prov[k]) for k in keys if k in prov]
        if prov.get("command"):
            cmd = prov["command"]
            info.append(("command", shlex.join(map(str, cmd)) if isinstance(cmd, list) else cmd))
        parts.append(html_table(pd.DataFrame(info, columns=["item", "value"]), "run-table"))
        plugins = prov.get("plugins") or {}
        if plugins:
            parts.append("<h3>Plugins</h3>")
            cols = ("name", "class", "distribution", "version")
            rows = [{"kind": k, **{c: v.get(c) for c in cols}} for k, v in plugins.items()]
            parts.append(html_table(pd.DataFrame(rows), "plugins-table"))
        packages = prov.get("packages") or {}
        if packages:
            parts.append("<h3>Package versions</h3>")
            wide = side_by_side(list(packages.items()), ("package", "version"), 3)
            parts.append(html_table(wide, "packages-table", headers=["package", "version"] * (wide.shape[1] // 2)))
        fps = prov.get("input_fingerprints") or {}
        parts.append("<h3>Input fingerprints</h3>")
        if fps:
            table = pd.DataFrame(list(fps.items()), columns=["input", "fingerprint"])
            parts.append(html_table(table, "fingerprints-table", scroll=True))
        else:
            parts.append(note("No input fingerprints recorded."))
    parts.append("<h3>Resolved config</h3>")
    if run.config_text:
        parts.append(f"<pre class=\"config\">{esc(run.config_text)}</pre>")
    else:
        parts.append(note("config.yaml is missing."))
    return "\n".join(parts)


# --------------------------------------------------------------------------- methods text


# --------------------------------------------------------------------------- citations


# --------------------------------------------------------------------------- page

SECTIONS: tuple[tuple[str, str, Callable[[Run], str]], ...] = (
    ("data", "Data", data_section),
    ("motion", "Motion QC", motion_section),
    ("effects", "Effects", effects_section),
    ("diagnostics", "Diagnostics", diagnostics_section),
    ("methods", "Methods", methods_section),
    ("provenance", "Provenance", provenance_section),
)

#: Seconds each built-in section took on the default run (effects: 13 figures in all): the
#: workers start the costliest first.
SECTION_COST = {"effects": 2.6, "brain": 1.5, "datasets": 1.1, "motion": 1.0}


def warm_up() -> None:
    """What every worker would otherwise do first, done once before they are forked: import
    nilearn's plotting (~1 s) and load matplotlib's fonts by drawing a word."""
    import importlib

    importlib.import_module("nilearn.plotting")
    fig = new_figure(1, 1)
    fig.text(0.5, 0.5, "megafc")
    fig.canvas.draw()


def arrange_sections(extra: list[ReportSection]) -> list[tuple[str, str, Callable[[Run], str]]]:
    """The built-in sections with the plugins' sections placed after the ones they name."""
    out = list(SECTIONS)
    for s in extra:
        idents = [i for i, _, _ in out]
        if s.ident in idents:
            log.warning("report: a second section '%s' (%s) is left out; section idents must be unique",
                        s.ident, s.title)
            continue
        at = idents.index(s.after) + 1 if s.after in idents else len(out)
        while at < len(out) and out[at][0] in {e.ident for e in extra}:  # keep plugins' order
            at += 1
        out.insert(at, (s.ident, s.title, s.build))
    return out


def build_section(run: Run, ident: str, title: str, builder: Callable[[Run], str]) -> str:
    """One section; a failure becomes a visible note (and a log warning), not a lost report."""
    try:
        body = builder(run)
    except Exception as exc:  # a report should survive an odd table from a third-party plugin
        log.warning("report: section '%s' failed: %s: %s", title, type(exc).__name__, exc, exc_info=True)
        body = (f'<div class="report-error">This section could not be built: '
                f"{esc(type(exc).__name__)}: {esc(exc)}</div>")
    return body


def write_report(run_dir: str | Path, title: str | None = None, shown_as: str | Path | None = None,
                 extra_sections: list[ReportSection] | None = None, workers: int | None = None) -> Path:
    """Write ``<run_dir>/report.html`` (self-contained) and the report's figures; return its path.

    ``workers``: processes drawing the sections side by side (default: the run's report_workers).

    ``shown_as`` is the folder the report will end up in when ``run_dir`` is a staging folder:
    the title, the "run directory" line and the log messages name it.

    Optional files that are absent (qc_fc.tsv, truth.tsv, summaries.tsv, posterior.nc, ...)
    only drop their part of the report. Figures go to ``figures/report_*.png`` (and ``figures.formats``' others).
    """
    import matplotlib

    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory '{path}' does not exist")
    final = Path(shown_as) if shown_as is not None else path
    run = load_run(path, final)
    title = title or f"megafc report: {final.resolve().name}"
    arranged = arrange_sections(list(extra_sections or []))

    def task(ident: str, name: str, builder: Callable[[Run], str]) -> Callable[[], tuple[str, list[Path]]]:
        def build() -> tuple[str, list[Path]]:
            before, started = len(run.made), time.perf_counter()
            body = build_section(run, ident, name, builder)
            log.debug("report section '%s': %.2f s (process %d)", ident, time.perf_counter() - started, os.getpid())
            return body, run.made[before:]
        return build

    tasks = [task(*section) for section in arranged]
    costly = sorted(range(len(arranged)), key=lambda i: -SECTION_COST.get(arranged[i][0], 0.0))
    with matplotlib.rc_context({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                                "svg.hashsalt": "megafc"}):
        workers = int(run.cfg("report_workers", default=1)) if workers is None else workers
        if workers > 1 and len(tasks) > 1 and can_fork():
            warm_up()
        built = run_in_workers(tasks, workers, order=costly)
    sections = []
    for (ident, name, _), (body, made) in zip(arranged, built):
        sections.append((ident, name, body))
        run.made.extend(p for p in made if p not in run.made)
    out = path / "report.html"
    out.write_text(render_page(title, sections, header_items(run), intro=diagnostics_caveat(run)), encoding="utf-8")
    log.info("report written to %s (%d figures)", final / out.name, len([p for p in run.made if p.suffix == ".png"]))
    return out


def overall_effect_figure(run: Run) -> str | None:
    """figures/overall_effect.png: the overall effect's network matrix (the report shows the
    same figure); None when the run has no effects."""
    effects = run.table("effects")
    if effects is None or not (effects["effect"] == "overall").any():
        return None
    networks = network_order(effects)
    mean, cred = effect_matrices(effects, networks, "overall")
    finite = np.abs(mean[np.isfinite(mean)])
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    return save_figure(run, matrix_figure([("overall", mean, cred)], networks, vmax, 1, run.interval),
                       "effect_overall", file_stem="overall_effect")


class RunReport(Reporter):
    """report.html: one self-contained page per run (data, motion QC, effects, diagnostics, methods)."""

    name = "run_report"
    scope = "run"

    def write(self, folder: Path, shown_as: Path | None = None, sections=()) -> Path | None:
        import matplotlib

        from megafc.core.figures import figure_formats

        run = load_run(Path(folder), shown_as)
        if run.cfg("report", default=True):
            return write_report(folder, shown_as=shown_as, extra_sections=list(sections))
        if figure_formats(run.cfg("figures", default=True)):
            with matplotlib.rc_context({"font.size": 9, "svg.hashsalt": "megafc"}):
                overall_effect_figure(run)
        return None
