"""The one writer: every file of a run, from its ``RunResults``, into the staged run folder;
and the reports, rendered against the folder the results end up in."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .fingerprints import config_files, fingerprint_value, package_versions
from .run_folder import COMPLETION_MARKER, StagedRun

log = logging.getLogger("megafc")

def provenance(
    *,
    config: dict[str, Any],
    seed: int,
    plugins: dict[str, dict[str, str]],
    fingerprints: dict[str, str],
    started: datetime,
    extra_packages: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "megafc_version": package_versions().get("megafc", "unknown"),
        "started": started.isoformat(),
        "finished": datetime.now(timezone.utc).isoformat(),
        "seed": seed,
        "command": sys.argv,
        # relative paths in the command and config (dataset.metadata=meta.tsv) are relative to it
        "working_directory": os.getcwd(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": platform.node(),
        "run_id": uuid.uuid4().hex,
        "plugins": plugins,
        "packages": package_versions(extra_packages),
        "input_fingerprints": fingerprints,
        # every file the config names (atlas image and labels, ...): a rerun compares them again
        "config_files": config_files(config),
        # 'rerun' only says whether to redo a finished run; it does not change the results
        "config_fingerprint": fingerprint_value({k: v for k, v in config.items() if k != "rerun"}),
    }


def planned_entries(cfg: Any) -> list[str]:
    """The entries a run of ``cfg`` surely writes (more may follow from what it finds), so a name
    in their way is refused as the run starts."""
    names = ["scans.tsv", "config.yaml", "warnings.tsv", COMPLETION_MARKER]
    if str(cfg.get("stage", "all")) != "extract":
        names += ["atlas_regions.tsv", "effects.tsv", "effects.json", "diagnostics.tsv", "methods.md",
                  "references.bib"]
    return names


def write_run(staged: StagedRun, results: Any, registry: Any) -> None:
    """The one writer: every file of a run, from its ``RunResults``, into the staging folder."""
    from omegaconf import OmegaConf

    from .dictionary import data_dictionary
    from .figures import figure_formats, save_formats

    cfg = results.config
    extracted = results.extracted
    staged.write_table("scans.tsv", results.scans)
    if extracted is not None and extracted.extraction is not None:
        staged.write_table("extraction.tsv", extracted.extraction)
    staged.write_text("config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    if results.result is None:  # stage=extract: what was extracted, and the scans left out before it
        write_warnings(staged, results)
        staged.write_json(COMPLETION_MARKER, run_provenance(results, registry))
        return
    result, aggregated = results.result, results.aggregated
    for name in ("exclusions", "motion", "qc_fc"):
        if name in results.tables:
            staged.write_table(f"{name}.tsv", results.tables[name])
    derivatives = str(cfg.derivatives)
    images = results.inputs.images
    if derivatives == "all" or (derivatives == "auto" and images is not None):
        from .derivatives import write_derivatives

        write_derivatives(staged, extracted.timeseries if extracted else None, results.connectomes, results.scans,
                          results.atlas, images, results.plugins)
    if aggregated.summary_pairs is not None:
        staged.write_table("summary_pairs.tsv", aggregated.summary_pairs)
    staged.write_table("atlas_regions.tsv", region_table(results.atlas))
    if cfg.get("network_pairs_tsv", True):
        staged.write_table("network_pairs.tsv", aggregated.pairs)
    who = f"pooling '{results.plugins['pooling'].name}'"
    staged.write_table("effects.tsv", result.effects)
    staged.write_json("effects.json", data_dictionary(result.effects, who, result.interval,
                                                      result.columns.get("effects")))
    staged.write_table("diagnostics.tsv", result.diagnostics)
    if results.inputs.truth is not None:
        staged.write_table("truth.tsv", results.inputs.truth)
    if result.idata is not None and cfg.get("posterior_nc", True):
        from .progress import Heartbeat

        log.info("writing posterior.nc ...")
        started = time.perf_counter()
        with Heartbeat("writing posterior.nc"):
            result.idata.to_netcdf(str(staged.path("posterior.nc")))
        log.info("posterior.nc: %.1f s", time.perf_counter() - started)
    for name, table in result.tables.items():
        # large tables (e.g. one row per edge) ask to be gzipped
        staged.write_table(f"{name}.tsv.gz" if table.attrs.get("compress") else f"{name}.tsv", table)
        staged.write_json(f"{name}.json", data_dictionary(table, who, result.interval, result.columns.get(name)))
    formats = figure_formats(cfg.get("figures"))
    for name, fig in result.figures.items():  # the model's own figures (predictive checks): always a PNG
        save_formats(fig, staged.path(f"figures/{name}.png"), formats or ["png"])
    staged.write_text("methods.md", results.methods)
    from .references import to_bibtex

    staged.write_text("references.bib", to_bibtex(results.references))
    # the reporters read these two (the folder moves into place as a whole, so the completion
    # marker being written before the reports does not make an incomplete run look complete)
    write_warnings(staged, results)
    staged.write_json(COMPLETION_MARKER, run_provenance(results, registry))
    if cfg.report or formats:
        write_reports(registry, "run", staged.staging, staged.run_dir, results.report_sections, staging=True)
        write_warnings(staged, results)  # again, with the reporters' own


def write_warnings(staged: StagedRun, results: Any) -> None:
    staged.write_table("warnings.tsv", pd.DataFrame(results.warnings, columns=["stage", "level", "message"]))


def region_table(atlas: Any) -> pd.DataFrame:
    """The atlas's regions with their networks and, when known, MNI centres (x, y, z in mm)."""
    import numpy as np

    table = atlas.regions[["label", "network", "subnetwork", "system"]].copy()
    centres = atlas.centroids()
    if centres is not None:
        table[["x", "y", "z"]] = np.round(centres, 2)
    return table


def run_provenance(results: Any, registry: Any) -> dict[str, Any]:
    """provenance.json: config, seed, versions, input fingerprints, and which distribution gave
    each plugin (and each module that only implements hooks)."""
    from omegaconf import OmegaConf

    from .pipeline import adjusted_for

    plugin_info = {
        kind: {
            "name": p.name,
            "class": f"{type(p).__module__}:{type(p).__qualname__}",
            "distribution": registry.get(kind, p.name).distribution,
            "version": registry.get(kind, p.name).version,
        }
        for kind, p in results.plugins.items()
    }
    hook_plugins = registry.hook_plugins()
    dists = sorted({v["distribution"] for v in [*plugin_info.values(), *hook_plugins]} - {"(registered in code)"})
    dists += list(dict.fromkeys(name for p in results.plugins.values() for name in getattr(p, "packages", ())))
    return {**provenance(config=OmegaConf.to_container(results.config, resolve=True), seed=results.seed,
                         plugins=plugin_info, fingerprints=results.inputs.fingerprints, started=results.started,
                         extra_packages=dists),
            "stage_seconds": {k: round(v, 2) for k, v in results.timings.items()},
            "references": list(results.references),
            **({"pooling_interval": {"label": results.result.interval, "kind": results.result.interval_kind},
                # a skipped rerun with fail_on_bad_diagnostics=true fails as the run did
                "diagnostics_ok": bool(results.diagnostics_ok),
                # what the report needs to say which failure it was, and what motion means here
                "sampler_ok": bool(results.result.sampler_ok),
                "adjusted_for": adjusted_for(results.result)}
               if results.result is not None else {}),
            "hook_plugins": hook_plugins}


def plugin_report_sections(registry: Any, config: Any = None) -> list:
    """The report sections every installed plugin adds to a run of ``config`` (hook
    ``megafc_report_sections``); a plugin whose hook fails is logged and skipped, so one broken
    plugin never costs the report."""
    out = []
    for impl in registry.manager.hook.megafc_report_sections.get_hookimpls():
        try:
            out += list(impl.function(*[{"config": config}[a] for a in impl.argnames]) or [])
        except Exception as exc:
            log.warning("report: plugin '%s' could not give its sections (%s: %s)", impl.plugin_name,
                        type(exc).__name__, exc)
    return out


def write_reports(registry: Any, scope: str, folder: Path, shown_as: Path | None = None,
                  sections: list | None = None, staging: bool = False) -> list[Path]:
    """Call every installed reporter of ``scope``; a reporter's failure is logged loudly and the
    results it would have described stay complete. In a ``staging`` folder (a run's own, which
    nothing else writes) a failed reporter's partial files are removed, and a disk error fails
    the run as it would fail its commit."""
    from .progress import Heartbeat

    written = []
    folder = Path(folder)
    reporters = registry.reporters(scope)
    if not reporters:
        log.warning("no reporter plugin for %s reports is loaded, so none is written (is it left out by "
                    "MEGAFC_LOAD_PLUGINS or MEGAFC_DISABLE_PLUGINS?)", scope)
    for reporter in reporters:
        who = f"reporter '{reporter.name}'"
        before = _entries(folder) if staging else set()
        started = time.perf_counter()
        try:
            with Heartbeat(who):
                out = reporter.write(folder, shown_as=shown_as, sections=list(sections or []))
        except Exception as exc:  # the tables and posterior are the results; a report summarises them
            if staging:
                _remove_new(folder, before)
                if isinstance(exc, OSError):  # a full disk or a permission problem: the run cannot land either
                    raise
            log.error("%s could not write its report (%s: %s); the results are complete%s", who,
                      type(exc).__name__, exc, " and its partial files were removed" if staging else "")
            continue
        log.info("%s: %.1f s", who, time.perf_counter() - started)
        if out is not None:
            written.append(Path(out))
    return written


def _entries(folder: Path) -> set[Path]:
    return set(folder.rglob("*")) if folder.is_dir() else set()


def _remove_new(folder: Path, before: set[Path]) -> None:
    """Remove what a failed reporter added, so no half-written report lands."""
    for path in sorted(_entries(folder) - before, key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
