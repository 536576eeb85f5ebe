"""Compare the jobs of a sweep: how robust is each network pair's effect across pipelines?

``megafc-compare <multirun dir>`` reads every completed job of a ``megafc --multirun`` sweep
(a job directory holding ``provenance.json``; directories without it are listed as incomplete
and never used) and writes, into ``<multirun dir>/comparison/``:

- ``robustness.tsv``: one row per network pair and effect: each pipeline's ``mean[<pipeline>]``,
  ``hdi_low[<pipeline>]``, ``hdi_high[<pipeline>]``, the cross-pipeline summary
  (``n_pipelines``, ``n_pipelines_with_pair``, ``sign_agree``, ``all_credible``, ``credible_in``, ``min_mean``,
  ``max_mean``) and, from leave-one-dataset-out jobs, ``n_loo[...]``, ``loo_min[...]``,
  ``loo_max[...]``, ``loo_sign_stable[...]`` per pipeline and ``loo_sign_stable`` overall;
- ``robustness_long.tsv``: the same, one row per network pair, effect and pipeline;
- ``jobs.tsv``: every job directory, its pipeline label and plugins (incomplete ones flagged),
  and the sweep's planned jobs that never started (``overrides``, from ``multirun.yaml``);
- ``figures/robustness.png`` / ``.svg``: pairs x pipelines heatmap of the overall effect;
- ``summaries_long.tsv`` and ``figures/specification_curve.png`` / ``.svg``: every key
  summary's overall effect under every pipeline (when the jobs wrote ``summaries.tsv``);
- ``report.html``: a self-contained summary (figure embedded).

A *pipeline* is a combination of choices that varies across the sweep's jobs (plugin names
and any other config value, e.g. ``seed`` or ``aggregate.level``); a job whose config has a
non-null ``loo_dataset`` is a leave-one-dataset-out refit of the pipeline with the same label.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from megafc.core import InputError, Reporter
from megafc.core.config import override_key
from megafc.core.run_folder import COMPLETION_MARKER, StagedRun, hydra_records
from megafc.core.report import esc, figure_html, png_data_uri

from .figures import save_png_svg
from .page import html_table, render_page
from .specification_curve import specification_curve_figure

log = logging.getLogger("megafc.compare")

#: Plugin kinds, in the order they appear in pipeline labels.
PLUGIN_KINDS = ("dataset", "atlas", "denoiser", "estimator", "harmonizer", "pooling")

#: Config keys that never distinguish pipelines: how to run, not what is computed.
IGNORED_KEYS = frozenset({
    "loo_dataset", "rerun", "figures", "figures.enabled", "figures.formats", "fail_on_bad_diagnostics",
    "extraction.cache_dir", "extraction.n_jobs", "pooling.cores", "notes", "stage", "extraction.shards",
    "extraction.shard", "extraction.space_mismatch", "dataset.confounds_dir", "report_svg", "report",
})

#: Columns a job's effects.tsv must have.
REQUIRED_EFFECT_COLUMNS = ("network_a", "network_b", "effect", "mean", "hdi_low", "hdi_high")

#: Per-job values kept in the long table when the job's effects.tsv has them.
OPTIONAL_EFFECT_COLUMNS = ("system_a", "system_b", "effect_type", "sd", "pd", "ok")

PAIR_KEY = ["network_a", "network_b", "effect"]

DEFAULT_OUT = "comparison"


# --------------------------------------------------------------------------------------
# Collecting jobs
# --------------------------------------------------------------------------------------

def _looks_like_job(path: Path) -> bool:
    """A Hydra job directory, complete or not."""
    return bool(hydra_records(path)) or any((path / name).exists() for name in (COMPLETION_MARKER, "config.yaml",
                                                                                 "megafc.log"))


def _candidate_dirs(sweep_dir: Path, skip: set[Path]) -> list[Path]:
    """Job directories at any depth below ``sweep_dir`` (hidden ones and ``skip`` excluded).

    A job's own subfolders are not searched; folders made by older megafc versions from
    overrides holding paths nest jobs several levels deep, so the depth is not limited.
    """
    found: list[Path] = []

    def visit(p: Path) -> None:
        for c in sorted(p.iterdir()):
            if not c.is_dir() or c.is_symlink() or c.name.startswith(".") or c.resolve() in skip:
                continue
            if _looks_like_job(c):
                found.append(c)
            else:
                visit(c)

    visit(sweep_dir)
    return found


def _job_sort_key(relative: str) -> tuple:
    """Hydra's job number first (``12_pooling=meta`` after ``2_...``), then the path."""
    parts = []
    for part in Path(relative).parts:
        m = re.match(r"(\d+)", part)
        parts.append((int(m.group(1)) if m else float("inf"), part))
    return tuple(parts)


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config mapping -> {'a.b': value}; lists become compact JSON strings."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list):
        return {prefix: json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)}
    return {prefix: value}


def _format_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _job_overrides(job_dir: Path) -> list[str]:
    """The overrides a job was started with (``.hydra/overrides.yaml``), as given."""
    overrides_file = next((r / "overrides.yaml" for r in hydra_records(job_dir) if (r / "overrides.yaml").is_file()),
                          None)
    overrides = (_read_yaml(overrides_file) or []) if overrides_file is not None else []
    return [str(o) for o in overrides] if isinstance(overrides, list) else []


def _command_line(job_dir: Path) -> dict[str, str]:
    """The overrides a job was started with, key -> value: which dataset it left out, and which
    config group it chose (``pooling=pymc_quick``: a preset keeps its plugin's name in the config,
    so only the override tells a quick pilot from the full model)."""
    out = {}
    for item in _job_overrides(job_dir):
        key, value = override_key(str(item))
        if value not in (None, ""):
            out[key] = str(value)
    return out


def _read_job(sweep_dir: Path, job_dir: Path) -> dict[str, Any]:
    relative = job_dir.relative_to(sweep_dir).as_posix()
    config_file = job_dir / "config.yaml"
    if not config_file.is_file():
        raise InputError(f"job {job_dir} has {COMPLETION_MARKER} but no config.yaml; "
                         "cannot tell which pipeline it ran")
    config = _read_yaml(config_file)
    if not isinstance(config, dict):
        raise InputError(f"{config_file} is not a YAML mapping (the resolved config of a megafc run)")
    provenance_file = job_dir / COMPLETION_MARKER
    try:
        provenance = json.loads(provenance_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {provenance_file}: {exc}") from exc
    provenance = provenance if isinstance(provenance, dict) else {}  # not a mapping: nothing recorded
    effects_file = job_dir / "effects.tsv"
    if not effects_file.is_file():
        if str(config.get("stage", "all")) == "extract":
            raise InputError(f"job {job_dir} only extracted timeseries (stage=extract): an extraction sweep has "
                             "no effects to compare; compare the analysis sweep that uses its cache")
        raise InputError(f"job {job_dir} is complete ({COMPLETION_MARKER} exists) but has no effects.tsv")

    prov_plugins = provenance.get("plugins") or {}
    plugins = {}
    for kind in list(PLUGIN_KINDS) + sorted(k for k in prov_plugins if k not in PLUGIN_KINDS):
        section = config.get(kind)
        name = section.get("name") if isinstance(section, dict) else None
        if name is None and isinstance(prov_plugins.get(kind), dict):
            name = prov_plugins[kind].get("name")
        if name is not None:
            plugins[kind] = str(name)
    model = plugins.get("pooling")
    command_line = _command_line(job_dir)
    plugins.update({kind: command_line[kind] for kind in plugins if kind in command_line})

    loo = (config.get("loo_dataset") if "loo_dataset" in config
           else None if command_line.get("loo_dataset") == "None" else command_line.get("loo_dataset"))
    settings = {k: v for k, v in _flatten(config).items()
                if k not in IGNORED_KEYS and not (k.endswith(".name") and k[:-5] in plugins)}
    return {
        "job": relative,
        "loo_dataset": None if loo in (None, "", "null") else str(loo),
        "plugins": plugins,
        "pooling_model": model,  # the plugin itself, whatever preset of it the job chose
        "settings": settings,
        "seed": provenance.get("seed", config.get("seed")),
        "effects_file": str(effects_file),
        "interval": (provenance.get("pooling_interval") or {}).get("label"),
        # a job whose diagnostics failed still enters the counts; the report names it
        "diagnostics_ok": provenance.get("diagnostics_ok"),
        "sampler_ok": provenance.get("sampler_ok"),
        "fingerprint": provenance.get("config_fingerprint"),
        "finished": str(provenance.get("finished") or ""),
    }


def _superseded(records: list[dict[str, Any]]) -> dict[str, str]:
    """Jobs whose config another, later job ran too (job -> that job): a sweep rerun with one more
    value renumbers its job folders, so the same config lands in a second folder and the first
    would count as a pipeline of its own."""
    latest: dict[str, dict[str, Any]] = {}
    for r in records:
        key = r["fingerprint"]
        if key and (key not in latest or r["finished"] >= latest[key]["finished"]):
            latest[key] = r
    return {r["job"]: latest[r["fingerprint"]]["job"] for r in records
            if r["fingerprint"] and latest[r["fingerprint"]] is not r}


def _labels(records: list[dict[str, Any]]) -> list[str]:
    """Pipeline label of each job: the plugin choices and settings that vary across jobs."""
    kinds = []
    for r in records:
        kinds.extend(k for k in r["plugins"] if k not in kinds)
    varying_kinds = [k for k in kinds if len({r["plugins"].get(k) for r in records}) > 1]
    keys = sorted({k for r in records for k in r["settings"]})
    # A setting varies when jobs that have it disagree (a key only some plugins have, e.g.
    # pooling.draws, does not by itself make a pipeline: its plugin name already does).
    varying_keys = [k for k in keys
                    if len({_format_value(r["settings"][k]) for r in records if k in r["settings"]}) > 1]
    labels = []
    for r in records:
        parts = [f"{k}={r['plugins'][k]}" for k in varying_kinds if k in r["plugins"]]
        parts += [f"{k}={_format_value(r['settings'][k])}" for k in varying_keys if k in r["settings"]]
        if not parts:  # a single pipeline: name it by its pooling model (or whatever it has)
            kind = "pooling" if "pooling" in r["plugins"] else next(iter(r["plugins"]), None)
            parts = [f"{kind}={r['plugins'][kind]}"] if kind else ["pipeline"]
        labels.append(" ".join(parts))
    return labels


def planned_jobs(sweep: Path) -> list[list[str]] | None:
    """Every job's overrides as the sweep planned them (``multirun.yaml``, which Hydra writes as a
    sweep starts): a sweep stopped early, or a launcher that lost jobs, leaves jobs with no
    folder at all, which no folder can tell. None when the sweep's plan cannot be read (not a
    Hydra sweep folder, or a sweeper other than Hydra's basic one, which plans as it goes)."""
    planned = sweep / "multirun.yaml"
    if not planned.is_file():
        return None
    config = _read_yaml(planned)
    hydra_cfg = config.get("hydra") if isinstance(config, dict) else None
    if not isinstance(hydra_cfg, dict):
        return None
    sweeper = hydra_cfg.get("sweeper") or {}
    if not str(sweeper.get("_target_", "")).endswith("basic_sweeper.BasicSweeper"):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    task = [str(o) for o in ((hydra_cfg.get("overrides") or {}).get("task") or [])]
    try:
        parsed = OverridesParser.create().parse_overrides(params + task)
        return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except Exception as exc:  # a plan Hydra itself ran can be read; if not, say so and go on without it
        log.warning("%s: could not read the sweep's planned jobs (%s); jobs that never started are not counted",
                    planned, exc)
        return None


def never_started(sweep: Path, dirs: list[Path]) -> list[str]:
    """The planned jobs (their overrides, as on a command line) that no job folder below ``sweep`` ran."""
    planned = planned_jobs(sweep)
    if planned is None:
        return []
    if any(not hydra_records(d) for d in dirs):  # hydra.output_subdir=null: no job says how it was started
        log.info("%s: some job folders hold no Hydra record (.hydra); jobs that never started are not counted", sweep)
        return []
    seen = {tuple(sorted(_job_overrides(d))) for d in dirs}
    return [" ".join(job) for job in planned if tuple(sorted(job)) not in seen]


def collect_jobs(sweep_dir: str | Path, *, skip: list[str | Path] | None = None) -> pd.DataFrame:
    """One row per completed job of a sweep (job directories at any depth).

    Columns: ``job`` (directory relative to ``sweep_dir``), ``pipeline`` (label built from
    the choices that vary across jobs, ``loo_dataset`` excluded), ``loo_dataset`` (None for a
    full-data job), ``seed``, one column per plugin kind (its plugin name, or the preset the job
    chose on the command line, e.g. pymc_quick), ``interval``, ``pooling_model`` (the plugin
    itself), ``diagnostics_ok`` and ``sampler_ok`` (provenance.json; None from earlier versions)
    and ``effects_file``. Job directories without ``provenance.json`` are incomplete: they are
    logged, listed in ``result.attrs["incomplete"]`` and never used; planned jobs with no folder
    are logged and listed in ``result.attrs["never_started"]`` (their overrides); a job whose
    config a later job ran too is left out and listed in ``result.attrs["superseded"]``.
    """
    sweep = Path(sweep_dir)
    if not sweep.exists():
        raise InputError(f"sweep directory {sweep} does not exist; pass the directory "
                         "`megafc --multirun` wrote (e.g. multirun/<date>/<time>)")
    if not sweep.is_dir():
        raise InputError(f"{sweep} is not a directory; pass the sweep directory of `megafc --multirun`")
    skip_set = {Path(s).resolve() for s in (skip or [])} | {(sweep / DEFAULT_OUT).resolve()}
    dirs = _candidate_dirs(sweep, skip_set)
    complete = [d for d in dirs if (d / COMPLETION_MARKER).is_file()]
    incomplete = sorted((d.relative_to(sweep).as_posix() for d in dirs if d not in complete), key=_job_sort_key)
    for job in incomplete:
        log.warning("job %s is incomplete (no %s): ignored", job, COMPLETION_MARKER)
    missing = never_started(sweep, dirs)
    if missing:
        log.warning("%d of the sweep's planned jobs never started (no job folder; %s lists them): %s",
                    len(missing), sweep / "multirun.yaml", "; ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
    if not complete:
        if (sweep / COMPLETION_MARKER).is_file():
            raise InputError(f"{sweep} is one megafc run, not a sweep: pass the sweep directory of "
                             "`megafc --multirun` (the folder that holds the job folders)")
        extra = f" ({len(incomplete)} incomplete job(s) without it: {', '.join(incomplete)})" if incomplete else ""
        raise InputError(f"no completed megafc job in {sweep}: no directory below it "
                         f"holds {COMPLETION_MARKER}{extra}; pass the sweep directory of "
                         "`megafc --multirun` after at least one job has finished")

    records = sorted((_read_job(sweep, d) for d in complete), key=lambda r: _job_sort_key(r["job"]))
    superseded = _superseded(records)
    for job, kept in superseded.items():
        log.warning("job %s ran the same config as the later job %s: not compared (it would count twice)", job, kept)
    records = [r for r in records if r["job"] not in superseded]
    labels = _labels(records)
    kinds = []
    for r in records:
        kinds.extend(k for k in r["plugins"] if k not in kinds)
    rows = []
    for r, label in zip(records, labels):
        row = {"job": r["job"], "pipeline": label, "loo_dataset": r["loo_dataset"], "seed": r["seed"]}
        row.update({k: r["plugins"].get(k) for k in kinds})
        row["interval"] = r["interval"]
        row["pooling_model"] = r["pooling_model"]
        row["diagnostics_ok"], row["sampler_ok"] = r["diagnostics_ok"], r["sampler_ok"]
        row["effects_file"] = r["effects_file"]
        rows.append(row)
    jobs = pd.DataFrame(rows)
    jobs["loo_dataset"] = jobs["loo_dataset"].astype(object).where(jobs["loo_dataset"].notna(), None)

    # Two full-data jobs with the same label (e.g. a run repeated with figures on and off)
    # would collide in the table: tell them apart by their directory.
    full = jobs["loo_dataset"].isna()
    dup = full & jobs.loc[full].duplicated("pipeline", keep=False).reindex(jobs.index, fill_value=False)
    if dup.any():
        log.warning("jobs %s run the same pipeline; labelled by directory", ", ".join(jobs.loc[dup, "job"]))
        jobs.loc[dup, "pipeline"] = jobs.loc[dup, "pipeline"] + " [" + jobs.loc[dup, "job"] + "]"
    jobs.attrs["incomplete"] = incomplete
    jobs.attrs["never_started"] = missing
    jobs.attrs["superseded"] = superseded
    jobs.attrs["sweep_dir"] = str(sweep)
    return jobs


# --------------------------------------------------------------------------------------
# Robustness tables
# --------------------------------------------------------------------------------------

def _read_table(path: str | Path, required: tuple[str, ...], what: str) -> pd.DataFrame:
    """A job's result table with numeric means and interval bounds; InputError naming the file."""
    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=True)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise InputError(f"{path} lacks column(s) {', '.join(missing)} (expected a megafc {what})")
    for c in ("mean", "hdi_low", "hdi_high"):
        table[c] = pd.to_numeric(table[c], errors="coerce")
    return table


def _read_effects(path: str) -> pd.DataFrame:
    return _read_table(path, REQUIRED_EFFECT_COLUMNS, "effects.tsv")


def _credible(low: pd.Series, high: pd.Series) -> pd.Series:
    """+1 / -1 when the interval excludes 0 above / below it, 0 otherwise."""
    return pd.Series(np.where(low > 0, 1, np.where(high < 0, -1, 0)), index=low.index)


def robustness_long(jobs: pd.DataFrame) -> pd.DataFrame:
    """One row per network pair, effect and pipeline (full-data jobs), with LOO ranges.

    Columns: network_a, network_b, system_a, system_b, effect, effect_type, pipeline, job,
    mean, sd, hdi_low, hdi_high, pd, ok, credible (+1/-1: interval excludes 0 above/below;
    0: it does not), n_loo, loo_missing (LOO jobs of the pipeline without this effect: their
    refit could not estimate it), loo_min, loo_max, loo_sign_stable (every LOO job has the effect
    and its mean has the sign of the full-data mean; NA without LOO jobs).
    """
    frames = []
    loo_frames = []
    for job in jobs.itertuples(index=False):
        eff = _read_effects(job.effects_file)
        keep = PAIR_KEY + [c for c in OPTIONAL_EFFECT_COLUMNS if c in eff.columns] + ["mean", "hdi_low", "hdi_high"]
        eff = eff[list(dict.fromkeys(keep))].copy()
        eff["pipeline"] = job.pipeline
        eff["job"] = job.job
        (frames if job.loo_dataset is None or pd.isna(job.loo_dataset) else loo_frames).append(eff)
    if not frames:
        raise InputError(f"the sweep in {jobs.attrs.get('sweep_dir', 'this directory')} has only "
                         "leave-one-dataset-out jobs (loo_dataset set); add a full-data job "
                         "(loo_dataset=null) to compare against")
    long = pd.concat(frames, ignore_index=True)
    for c in OPTIONAL_EFFECT_COLUMNS:
        if c not in long.columns:
            long[c] = pd.NA
    long["credible"] = _credible(long["hdi_low"], long["hdi_high"])

    if loo_frames:
        loo = pd.concat(loo_frames, ignore_index=True)
        stats = (loo.groupby(PAIR_KEY + ["pipeline"], sort=False)["mean"]
                 .agg(n_loo="count", loo_min="min", loo_max="max").reset_index())
        long = long.merge(stats, on=PAIR_KEY + ["pipeline"], how="left")
        # a refit without one dataset may lack an effect (its drug's only dataset left out): then
        # the effect is not shown to survive leaving that dataset out
        refits = loo.groupby("pipeline")["job"].nunique()
        long["loo_missing"] = long["pipeline"].map(refits).fillna(0).astype(int) - long["n_loo"].fillna(0).astype(int)
    else:
        long["n_loo"] = np.nan
        long["loo_min"] = np.nan
        long["loo_max"] = np.nan
        long["loo_missing"] = 0
    long["n_loo"] = long["n_loo"].fillna(0).astype(int)
    sign = np.sign(long["mean"])
    stable = (((sign > 0) & (long["loo_min"] > 0)) | ((sign < 0) & (long["loo_max"] < 0))) & (long["loo_missing"] == 0)
    long["loo_sign_stable"] = pd.Series(stable, dtype="boolean").where(
        ((long["n_loo"] > 0) | (long["loo_missing"] > 0)) & long["mean"].notna(), pd.NA)

    columns = ["network_a", "network_b", "system_a", "system_b", "effect", "effect_type", "pipeline", "job",
               "mean", "sd", "hdi_low", "hdi_high", "pd", "ok", "credible",
               "n_loo", "loo_missing", "loo_min", "loo_max", "loo_sign_stable"]
    return long[columns]


def summaries_long(jobs: pd.DataFrame) -> pd.DataFrame:
    """One row per summary, effect and pipeline (full-data jobs that wrote a summaries.tsv):
    summary, effect, pipeline, job, mean, hdi_low, hdi_high, credible (as in robustness_long)."""
    columns = ["summary", "effect", "pipeline", "job", "mean", "hdi_low", "hdi_high", "credible"]
    frames = []
    for job in jobs.itertuples(index=False):
        path = Path(job.effects_file).with_name("summaries.tsv")
        if path.is_file() and (job.loo_dataset is None or pd.isna(job.loo_dataset)):
            table = _read_table(path, ("summary", "effect", "mean", "hdi_low", "hdi_high"), "summaries.tsv")
            frames.append(table.assign(pipeline=job.pipeline, job=job.job))
    if not frames:
        return pd.DataFrame(columns=columns)
    out = pd.concat(frames, ignore_index=True)
    out["credible"] = _credible(out["hdi_low"], out["hdi_high"])
    return out[columns]


def _pipelines(jobs: pd.DataFrame) -> list[str]:
    full = jobs[jobs["loo_dataset"].isna()]
    return list(dict.fromkeys(full["pipeline"]))


def _summarise(group: pd.DataFrame) -> pd.Series:
    """The cross-pipeline summary of one pair and effect (``robustness_table`` then requires
    every pipeline that has the pair to have estimated it)."""
    g = group[group["mean"].notna()]
    signs = np.sign(g["mean"])
    cred = g["credible"]
    n = len(g)
    everywhere = n > 0
    loo = g["loo_sign_stable"].dropna()
    return pd.Series({
        "n_pipelines": n,
        "sign_agree": bool(everywhere and ((signs > 0).all() or (signs < 0).all())),
        "all_credible": bool(everywhere and ((cred > 0).all() or (cred < 0).all())),
        "credible_in": int((cred != 0).sum()),
        "min_mean": g["mean"].min() if n else np.nan,
        "max_mean": g["mean"].max() if n else np.nan,
        "loo_sign_stable": bool(loo.all()) if len(loo) else pd.NA,
    })


def robustness_table(jobs: pd.DataFrame, long: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per network pair and effect; per-pipeline columns plus the robustness summary.

    Columns: network_a, network_b, system_a, system_b, effect, effect_type, then n_pipelines
    (how many pipelines estimated it), sign_agree (every pipeline with the pair estimated it and
    every mean has the same sign), all_credible (likewise, every interval excludes 0 on the same
    side), credible_in (how many pipelines' intervals exclude
    0), min_mean, max_mean, loo_sign_stable (every pipeline with leave-one-dataset-out jobs
    keeps its sign in all of them; NA without LOO jobs), then for each pipeline
    ``mean[p]``, ``hdi_low[p]``, ``hdi_high[p]`` and, for pipelines with LOO jobs,
    ``n_loo[p]``, ``loo_missing[p]``, ``loo_min[p]``, ``loo_max[p]``, ``loo_sign_stable[p]``. The tidy
    one-row-per-pipeline version is :func:`robustness_long`.
    """
    if long is None:
        long = robustness_long(jobs)
    pipelines = _pipelines(jobs)
    first = long.groupby(PAIR_KEY, sort=False)[["system_a", "system_b", "effect_type"]].first()
    summary = long.groupby(PAIR_KEY, sort=False)[["mean", "credible", "loo_sign_stable"]].apply(_summarise)
    table = first.join(summary)
    # the pipelines that estimated anything for the pair: agreement needs all of them. An effect
    # one model lacks (a contrast) once counted as 'credible in all' on the other model alone;
    # pipelines at another aggregation level have other pairs and do not count against these.
    having = long[long["mean"].notna()].groupby(["network_a", "network_b"])["pipeline"].nunique()
    table["n_pipelines_with_pair"] = having.reindex(
        pd.MultiIndex.from_arrays([table.index.get_level_values("network_a"),
                                   table.index.get_level_values("network_b")])).fillna(0).astype(int).to_numpy()
    partial = table["n_pipelines"] < table["n_pipelines_with_pair"]
    table.loc[partial, ["sign_agree", "all_credible"]] = False
    # a pair only one pipeline has (another aggregation level, aggregate.pairs) agrees with nothing
    if len(pipelines) > 1:
        table.loc[table["n_pipelines_with_pair"] < 2, ["sign_agree", "all_credible"]] = False
    with_loo = [p for p in pipelines if (long.loc[long["pipeline"] == p, "n_loo"] > 0).any()]
    for p in pipelines:
        sub = long[long["pipeline"] == p].set_index(PAIR_KEY)
        stats = ["mean", "hdi_low", "hdi_high"]
        if p in with_loo:
            stats += ["n_loo", "loo_missing", "loo_min", "loo_max", "loo_sign_stable"]
        for stat in stats:
            table[f"{stat}[{p}]"] = sub[stat].reindex(table.index)
    table = table.reset_index()
    table["n_pipelines"] = table["n_pipelines"].astype(int)
    table["credible_in"] = table["credible_in"].astype(int)
    table["loo_sign_stable"] = table["loo_sign_stable"].astype("boolean")
    order = ["network_a", "network_b", "system_a", "system_b", "effect", "effect_type"]
    return table[order + [c for c in table.columns if c not in order]]


# --------------------------------------------------------------------------------------
# Figure and report
# --------------------------------------------------------------------------------------

def robustness_figure(long: pd.DataFrame, pipelines: list[str], stem: Path, effect: str = "overall",
                      interval: str = "interval") -> list[Path]:
    """Pairs x pipelines heatmap of an effect's mean; ``*`` = interval excludes 0. PNG + SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = long[long["effect"] == effect]
    sub = sub.assign(pair=sub["network_a"].astype(str) + " - " + sub["network_b"].astype(str))
    mean = sub.pivot_table(index="pair", columns="pipeline", values="mean", aggfunc="first")
    cred = sub.pivot_table(index="pair", columns="pipeline", values="credible", aggfunc="first")
    cols = [p for p in pipelines if p in mean.columns]
    rows = mean[cols].mean(axis=1).sort_values(ascending=False).index if len(mean) else []
    mean = mean.reindex(index=rows, columns=cols)
    cred = cred.reindex(index=rows, columns=cols).fillna(0)

    values = mean.to_numpy(dtype=float) if mean.size else np.full((1, 1), np.nan)
    finite = np.isfinite(values)
    vmax = float(np.nanmax(np.abs(values))) if finite.any() else 1.0
    vmax = vmax or 1.0
    n_rows, n_cols = values.shape
    height = min(60.0, max(3.5, 0.2 * n_rows + 2.0))
    width = max(5.0, 1.1 * n_cols + 3.5)
    fig, ax = plt.subplots(figsize=(width, height))
    cmap = matplotlib.colormaps["RdBu_r"].copy()
    cmap.set_bad("0.85")
    im = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap=cmap, vmin=-vmax, vmax=vmax,
                   interpolation="nearest")
    for i, j in zip(*np.nonzero(cred.to_numpy() != 0)):
        ax.text(j, i, "*", ha="center", va="center", fontsize=8, color="k")
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels(list(mean.index), fontsize=7 if n_rows > 40 else 8)
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels([c.replace(" ", "\n") for c in cols], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_title(f"{effect} effect (drug - control, Fisher z) across pipelines\n"
                 f"* = {interval} excludes 0; rows sorted by mean across pipelines", fontsize=9, pad=12)
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02, label="mean")
    return save_png_svg(fig, stem)


def summary_counts(table: pd.DataFrame, effect: str = "overall") -> dict[str, Any]:
    """How many pairs' ``effect`` is credible in all pipelines / sign-consistent / LOO-stable."""
    sub = table[table["effect"] == effect]
    loo = sub["loo_sign_stable"].dropna()
    return {
        "effect": effect,
        "n_pairs": len(sub),
        "all_credible": int(sub["all_credible"].sum()),
        "sign_agree": int(sub["sign_agree"].sum()),
        "partial": int((sub["n_pipelines"] < sub["n_pipelines_with_pair"]).sum()),
        "single": int((sub["n_pipelines_with_pair"] < 2).sum()),
        "loo_checked": len(loo),
        "loo_stable": int(loo.astype(bool).sum()),
        "robust": int(robust_pairs(table, effect).shape[0]),
    }


def robust_pairs(table: pd.DataFrame, effect: str = "overall") -> pd.DataFrame:
    """Pairs whose ``effect`` is credible, same side, in every pipeline (and LOO-stable where
    checked), strongest first (by the smallest |mean| across pipelines)."""
    sub = table[(table["effect"] == effect) & table["all_credible"]
                & (table["loo_sign_stable"].fillna(True).astype(bool))].copy()
    sub["weakest"] = np.minimum(sub["min_mean"].abs(), sub["max_mean"].abs())
    return sub.sort_values("weakest", ascending=False)


def render_report(jobs: pd.DataFrame, table: pd.DataFrame, png: Path, sweep_dir: Path,
                  curve: Path | None = None) -> str:
    """report.html: self-contained (figures are base64 data URIs; no external resources)."""
    pipelines = _pipelines(jobs)
    c = summary_counts(table)
    n_loo_jobs = int(jobs["loo_dataset"].notna().sum())
    incomplete = list(jobs.attrs.get("incomplete", []))
    intro = [f"<p>{len(jobs)} completed job(s): {len(pipelines)} pipeline(s) on the full data and {n_loo_jobs} "
             "leave-one-dataset-out job(s).</p>"]
    if incomplete:
        intro.append(f'<p class="banner warn">{len(incomplete)} incomplete job(s) (no {COMPLETION_MARKER}) '
                     "were ignored: " + ", ".join(f"<code>{esc(j)}</code>" for j in incomplete) + ".</p>")
    superseded = jobs.attrs.get("superseded", {})
    if superseded:
        intro.append(f'<p class="banner warn">{len(superseded)} job(s) ran the same config as a later job (a sweep '
                     "rerun with other values renumbers its folders) and were left out, so that no pipeline counts "
                     "twice: " + ", ".join(f"<code>{esc(j)}</code> (as <code>{esc(k)}</code>)"
                                          for j, k in superseded.items()) + ".</p>")
    missing = list(jobs.attrs.get("never_started", []))
    if missing:
        intro.append(f'<p class="banner warn">{len(missing)} of the sweep\'s planned jobs never started (no job '
                     "folder; the sweep was stopped, or its launcher lost them), so this comparison lacks them: "
                     + ", ".join(f"<code>{esc(j)}</code>" for j in missing) + ".</p>")
    models = sorted(set(jobs["pooling_model"].dropna().astype(str))) if "pooling_model" in jobs else []
    if len(models) > 1:
        intro.append(f"<p>The jobs use {len(models)} pooling models ({esc(', '.join(models))}): an effect of one name "
                     "can be a different quantity under each (e.g. an overall effect pooled over datasets directly, "
                     "or the mean of the drugs' effects; each job's methods.md says which), so agreement across "
                     "them is agreement between those quantities.</p>")
    kinds = _interval_kinds(jobs)
    if len(kinds) > 1:
        intro.append("<p>The jobs' intervals are not all of one kind: " + "; ".join(
            f"{esc(label)} for {n} job(s)" for label, n in kinds.items()) + " (hdi_low/hdi_high of each job).</p>")

    failed = jobs[jobs["diagnostics_ok"].astype(object).eq(False)] if "diagnostics_ok" in jobs else jobs.iloc[:0]
    if len(failed):
        intro.append(f'<p class="banner bad">{len(failed)} job(s) failed their diagnostics (provenance.json '
                     "diagnostics_ok false; see each job's report): " + ", ".join(
                         f"<code>{esc(j)}</code>" + (" (the sampler's own checks)" if s_ok is False else "")
                         for j, s_ok in zip(failed["job"], failed.get("sampler_ok", [None] * len(failed))))
                     + ". Their intervals still enter every count below: rerun them, or read the counts with "
                       "that in mind.</p>")
    partial = (f" {c['partial']} of them are estimated by only some of the pipelines that have the pair (an "
               "effect one model lacks) and never count as credible everywhere." if c["partial"] else "")
    single = (f" {c['single']} of them are had by a single pipeline (another aggregation level, or pairs chosen "
              "by aggregate.pairs) and count as neither credible everywhere nor sign-consistent."
              if c["single"] and len(pipelines) > 1 else "")
    summary = [f"<ul><li>{c['n_pairs']} network pairs.{partial}{single}</li>",
               "<li>Credible in every pipeline that has the pair ("
               + (f"at least two of the {len(pipelines)}" if len(pipelines) > 1 else "the one pipeline")
               + "; interval excludes 0 on the same side): "
               f"<b>{c['all_credible']}</b>.</li>",
               f"<li>Sign-consistent across pipelines: <b>{c['sign_agree']}</b>.</li>"]
    if c["loo_checked"]:
        summary.append(f"<li>Leave-one-dataset-out sign-stable: <b>{c['loo_stable']}</b> of "
                       f"{c['loo_checked']} pairs checked.</li>")
    else:
        summary.append("<li>No leave-one-dataset-out jobs (sweep <code>loo_dataset=null,&lt;dataset&gt;,...</code> "
                       "to check stability).</li>")
    summary.append(f"<li>Robust (credible everywhere{', LOO-stable' if c['loo_checked'] else ''}): "
                   f"<b>{c['robust']}</b>.</li>")
    passed = jobs[~jobs["job"].isin(failed["job"])]
    if len(failed) and len(_pipelines(passed)) > 1:
        without = summary_counts(robustness_table(passed))
        summary.append(f"<li>Without the jobs whose diagnostics failed ({len(_pipelines(passed))} pipelines): credible "
                       f"in every pipeline that has the pair <b>{without['all_credible']}</b>, robust "
                       f"<b>{without['robust']}</b>.</li>")
    summary.append("</ul>")

    top = robust_pairs(table).head(15)
    cols = ["network_a", "network_b", "n_pipelines", "credible_in", "min_mean", "max_mean", "loo_sign_stable"]
    robust = html_table(top[cols]) if len(top) else "<p>No pair's overall effect is credible in every pipeline.</p>"

    per = []
    overall = table[table["effect"] == "overall"]
    for p in pipelines:
        m, lo, hi = overall.get(f"mean[{p}]"), overall.get(f"hdi_low[{p}]"), overall.get(f"hdi_high[{p}]")
        n_cred = int(((lo > 0) | (hi < 0)).sum()) if lo is not None else 0
        per.append({"pipeline": p, "pairs": int(m.notna().sum()) if m is not None else 0,
                    "credible pairs": n_cred,
                    "LOO jobs": int(((jobs["pipeline"] == p) & jobs["loo_dataset"].notna()).sum())})

    sections = [
        ("summary", "Summary (overall effect)", "".join(summary)),
        ("robust", "Most robust pairs (overall effect)", robust),
        ("pipelines", "Pipelines", html_table(pd.DataFrame(per))),
        ("heatmap", "Overall effect across pipelines",
         figure_html(png_data_uri(png.read_bytes()), "Pairs x pipelines heatmap of the overall effect.", "robustness")),
    ]
    if curve is not None:
        sections.append(("specification-curve", "Key summaries across pipelines (specification curve)",
                         "<p>Each panel is one summary's overall effect under every pipeline, sorted by the "
                         "estimate; filled markers: the interval excludes 0. A finding that holds whatever the "
                         "pipeline keeps its side of 0 across the whole curve (table: "
                         "<code>summaries_long.tsv</code>).</p>"
                         + figure_html(png_data_uri(curve.read_bytes()), "Specification curve of the key summaries.",
                                       "specification_curve")))
    job_cols = [col for col in jobs.columns if col != "effects_file"]
    sections.append(("jobs", "Jobs", html_table(jobs[job_cols], scroll=True)
                     + "<p>Tables: <code>robustness.tsv</code> (one row per pair and effect), "
                       "<code>robustness_long.tsv</code> (one row per pair, effect and pipeline), "
                       "<code>jobs.tsv</code>.</p>"))
    return render_page("megafc sweep comparison", sections, [("sweep", str(sweep_dir))], intro="".join(intro))


def _interval_kinds(jobs: pd.DataFrame) -> dict[str, int]:
    """How many jobs declared each interval (provenance.json's pooling_interval)."""
    labels = jobs["interval"] if "interval" in jobs else pd.Series(dtype=object)
    return labels.dropna().astype(str).value_counts().to_dict()


def _jobs_file(jobs: pd.DataFrame) -> pd.DataFrame:
    out = jobs.drop(columns=["effects_file"]).assign(status="complete")
    incomplete = pd.DataFrame({"job": jobs.attrs.get("incomplete", []),
                               "status": f"incomplete (no {COMPLETION_MARKER})"})
    missing = pd.DataFrame({"job": None, "status": "never started (no job folder)",
                            "overrides": jobs.attrs.get("never_started", [])})
    superseded = pd.DataFrame({"job": list(jobs.attrs.get("superseded", {})),
                               "status": [f"superseded (the same config as {kept}; not compared)"
                                          for kept in jobs.attrs.get("superseded", {}).values()]})
    return pd.concat([t for t in (out, incomplete, missing, superseded) if len(t)], ignore_index=True)


def compare(sweep_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the comparison of a sweep's jobs into ``out_dir`` (default ``<sweep_dir>/comparison``).

    Everything is staged in ``<out_dir>/.megafc-staging-*`` and moved in only when complete.
    """
    sweep = Path(sweep_dir)
    out = Path(out_dir) if out_dir is not None else sweep / DEFAULT_OUT
    jobs = collect_jobs(sweep, skip=[out])
    long = robustness_long(jobs)
    table = robustness_table(jobs, long)
    log.info("%d completed job(s), %d pipeline(s), %d pair x effect rows",
             len(jobs), len(_pipelines(jobs)), len(table))
    with StagedRun(out, kind="comparison") as staged:
        staged.write_table("robustness.tsv", table)
        staged.write_table("robustness_long.tsv", long)
        staged.write_table("jobs.tsv", _jobs_file(jobs))
        kinds = _interval_kinds(jobs)
        interval = next(iter(kinds)) if len(kinds) == 1 else ("each job's own interval" if kinds else "interval")
        png, _ = robustness_figure(long, _pipelines(jobs), staged.path("figures/robustness.png"), interval=interval)
        summaries = summaries_long(jobs)
        curve = None
        if len(summaries):
            staged.write_table("summaries_long.tsv", summaries)
            curve = next(iter(specification_curve_figure(summaries, staged.path("figures/specification_curve.png"),
                                                         interval=interval)), None)
        staged.write_text("report.html", render_report(jobs, table, png, sweep, curve))
        staged.commit()
    return out


def main(argv: list[str] | None = None) -> None:
    """``megafc-compare <multirun dir> [--out DIR]``."""
    from megafc.cli.app import fail

    parser = argparse.ArgumentParser(
        prog="megafc-compare",
        description="Compare the completed jobs of a `megafc --multirun` sweep: per network pair and "
                    "effect, how consistent is the result across pipelines and leave-one-dataset-out refits.")
    parser.add_argument("sweep_dir", help="the sweep directory (e.g. multirun/<date>/<time>)")
    parser.add_argument("--out", default=None,
                        help=f"output directory (default: <sweep_dir>/{DEFAULT_OUT})")
    args = parser.parse_args(argv)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("megafc-compare: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    parent = logging.getLogger("megafc")
    if not parent.handlers:  # fail() logs the error too; print it only once
        parent.addHandler(logging.NullHandler())
    try:
        out = compare(args.sweep_dir, args.out)
    except Exception as exc:
        fail(exc)
    print(f"comparison written to {out}")


class SweepComparison(Reporter):
    """comparison/: how each network pair's effect holds up across a sweep's pipelines."""

    name = "compare"
    scope = "sweep"

    def write(self, folder: Path, shown_as: Path | None = None, sections=()) -> Path | None:
        return compare(folder, shown_as) / "report.html"
