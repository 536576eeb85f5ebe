"""The stages of a run, in order. Each stage is a function of plain values."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .aggregate import mark_uninformative, mark_unpaired, network_pair_table, select_pairs
from .data import (
    AGGREGATION_LEVELS,
    EFFECT_COLUMNS,
    Atlas,
    Connectomes,
    DatasetInputs,
    PoolingResult,
    exclude,
    validate_scans,
)
from .errors import ConfigError, InputError, MegafcError, PluginError
from .derivatives import write_derivatives
from .dictionary import data_dictionary
from .extraction import denoise_timeseries, extract_all, shard_of
from .figures import figure_formats, reproducible_metadata
from .outputs import StagedRun, provenance
from .progress import Heartbeat
from .pair_sets import with_summaries
from .qc import (
    QCConfig,
    exclude_by_censoring,
    exclude_by_motion,
    exclusion_counts,
    motion_change,
    qc_fc,
    validate_qc,
    with_distances,
)
from .plugin import AtlasLoader, ConnectivityEstimator, DatasetLoader, Denoiser, Harmonizer, Plugin
from .registry import Registry

log = logging.getLogger("megafc")

KINDS_IN_ORDER = ("atlas", "dataset", "denoiser", "estimator", "harmonizer", "pooling")


@dataclass
class RunOutcome:
    run_dir: Path
    scans: pd.DataFrame
    pairs: pd.DataFrame
    #: None for stage=extract (no model is fitted)
    result: PoolingResult | None
    diagnostics_ok: bool


def instantiate_plugins(cfg: Any, registry: Registry) -> dict[str, Plugin]:
    return {kind: registry.instantiate(kind, cfg[kind]) for kind in KINDS_IN_ORDER}


def check_inputs(inputs: DatasetInputs, atlas: Atlas, scans: pd.DataFrame, source: str) -> None:
    """Every included scan must come with well-shaped timeseries or a connectome."""
    given = [k for k in ("images", "timeseries", "connectomes") if getattr(inputs, k) is not None]
    if len(given) != 1:
        raise PluginError(f"{source}: must return exactly one of images, timeseries or connectomes (got {given})")
    included = scans.loc[~scans["excluded"], "scan_id"]
    store = inputs.timeseries if inputs.timeseries is not None else inputs.connectomes
    missing = [s for s in included if s not in store]
    if missing:
        raise InputError(f"{source}: no data for included scan(s) {missing[:5]}")
    for scan_id in included:
        arr = np.asarray(store[scan_id])
        if inputs.timeseries is not None:
            if arr.ndim != 2 or arr.shape[1] != atlas.n_regions:
                raise InputError(
                    f"{source}: timeseries of scan '{scan_id}' has shape {arr.shape}, expected "
                    f"(n_volumes, {atlas.n_regions}) for atlas '{atlas.name}'"
                )
            if not np.all(np.isfinite(arr)):
                raise InputError(f"{source}: timeseries of scan '{scan_id}' contains NaN or inf")
            flat = np.flatnonzero(np.ptp(arr, axis=0) == 0)
            if len(flat):
                raise InputError(
                    f"{source}: timeseries of scan '{scan_id}' is constant in region(s) "
                    f"{[atlas.labels[i] for i in flat[:5]]}"
                )
        elif arr.shape != (atlas.n_regions, atlas.n_regions):
            raise InputError(
                f"{source}: connectome of scan '{scan_id}' has shape {arr.shape}, expected "
                f"({atlas.n_regions}, {atlas.n_regions}) for atlas '{atlas.name}'"
            )


def check_connectome(matrix: Any, n_regions: int, who: str, scan_id: str) -> np.ndarray:
    """A connectome must be a finite symmetric (n_regions, n_regions) array; diagonal zeroed."""
    arr = np.asarray(matrix, dtype=float) if isinstance(matrix, np.ndarray) else None
    if arr is None:
        raise PluginError(
            f"{who} returned {type(matrix).__name__} for scan '{scan_id}', expected a numpy array"
        )
    if arr.shape != (n_regions, n_regions):
        raise PluginError(
            f"{who} returned a matrix of shape {arr.shape} for scan '{scan_id}', expected "
            f"({n_regions}, {n_regions})"
        )
    off = ~np.eye(n_regions, dtype=bool)
    if not np.all(np.isfinite(arr[off])):
        raise PluginError(f"{who} returned NaN or inf off the diagonal for scan '{scan_id}'")
    scale = max(1.0, float(np.max(np.abs(arr[off]))) if n_regions > 1 else 1.0)
    if not np.allclose(arr, arr.T, atol=1e-6 * scale, rtol=0):
        raise PluginError(f"{who} returned a non-symmetric matrix for scan '{scan_id}'")
    arr = (arr + arr.T) / 2
    np.fill_diagonal(arr, 0.0)
    return arr


def estimate_connectomes(
    estimator: ConnectivityEstimator, timeseries: dict[str, np.ndarray], scan_ids: list[str], atlas: Atlas
) -> Connectomes:
    who = f"estimator '{estimator.name}'"
    n = atlas.n_regions
    mats = np.empty((len(scan_ids), n, n))
    if estimator.group_level:
        log.info("connectivity: estimator '%s' estimates all %d scans together", estimator.name, len(scan_ids))
        try:
            out = estimator.estimate_group([np.asarray(timeseries[s], dtype=float) for s in scan_ids])
        except MegafcError:
            raise
        except Exception as exc:
            raise PluginError(f"{who} failed on the group of {len(scan_ids)} scans: {type(exc).__name__}: {exc}") from exc
        if len(out) != len(scan_ids):
            raise PluginError(f"{who} returned {len(out)} matrices for {len(scan_ids)} scans")
        for i, scan_id in enumerate(scan_ids):
            mats[i] = check_connectome(out[i], n, who, scan_id)
        return Connectomes(scan_ids=list(scan_ids), matrices=mats, labels=atlas.labels, estimator=estimator.name)
    step = max(1, len(scan_ids) // 10)
    for i, scan_id in enumerate(scan_ids):
        try:
            out = estimator.estimate(np.asarray(timeseries[scan_id], dtype=float))
        except MegafcError:
            raise
        except Exception as exc:
            raise PluginError(f"{who} failed on scan '{scan_id}': {type(exc).__name__}: {exc}") from exc
        mats[i] = check_connectome(out, n, who, scan_id)
        if (i + 1) % step == 0 or i + 1 == len(scan_ids):
            log.info("connectivity: %d/%d scans", i + 1, len(scan_ids))
    return Connectomes(scan_ids=list(scan_ids), matrices=mats, labels=atlas.labels, estimator=estimator.name)


def harmonize(harmonizer: Plugin, connectomes: Connectomes, scans: pd.DataFrame) -> Connectomes:
    """The harmonizer's connectomes, checked to be the same scans and shape (QC-FC and the
    derivatives keep the connectomes as estimated; only aggregation and pooling see these)."""
    if type(harmonizer).harmonize is Harmonizer.harmonize:  # the identity: nothing to check
        return connectomes
    who = f"harmonizer '{harmonizer.name}'"
    try:
        with Heartbeat(who):
            out = harmonizer.harmonize(connectomes, scans)
    except MegafcError:
        raise
    except Exception as exc:
        raise PluginError(f"{who} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(out, Connectomes) or list(out.scan_ids) != list(connectomes.scan_ids):
        raise PluginError(f"{who} must return Connectomes of the same scans, in order")
    n = connectomes.matrices.shape[1]
    out.matrices = np.stack([check_connectome(m, n, who, s) for m, s in zip(out.matrices, out.scan_ids)])
    return out


def given_connectomes(inputs: DatasetInputs, scan_ids: list[str], atlas: Atlas, source: str) -> Connectomes:
    n = atlas.n_regions
    mats = np.stack([check_connectome(np.asarray(inputs.connectomes[s], dtype=float), n, source, s) for s in scan_ids])
    return Connectomes(scan_ids=list(scan_ids), matrices=mats, labels=atlas.labels, estimator="(precomputed)")


def check_result(result: Any, who: str) -> PoolingResult:
    if not isinstance(result, PoolingResult):
        raise PluginError(f"{who} returned {type(result).__name__}, expected a PoolingResult")
    missing = [c for c in EFFECT_COLUMNS if c not in result.effects.columns]
    if missing:
        raise PluginError(f"{who}: effects table lacks column(s) {missing}")
    return result


def run_experiment(cfg: Any, registry: Registry, run_dir: str | Path) -> RunOutcome:
    """Run every stage and write the run directory atomically."""
    from omegaconf import OmegaConf

    started = datetime.now(timezone.utc)
    hook = registry.manager.hook
    level = cfg.aggregate.level
    if cfg.derivatives not in ("auto", "all", "none"):
        raise ConfigError(f"config key 'derivatives' is '{cfg.derivatives}'; expected auto, all or none")
    if level not in AGGREGATION_LEVELS:
        raise ConfigError(f"config key 'aggregate.level' is '{level}'; expected one of {list(AGGREGATION_LEVELS)}")
    if int(cfg.extraction.n_jobs) == 0:
        raise ConfigError("config key 'extraction.n_jobs' is 0; expected a number of parallel jobs >= 1, "
                          "or -1 for one per CPU")
    stage = check_stage(cfg)
    figure_formats(cfg.get("figures"))  # refuse a bad figures value before anything runs
    for note in cfg.get("notes") or []:
        log.warning("note: %s", note)
    plugins = instantiate_plugins(cfg, registry)
    seed = int(cfg.seed)
    with StagedRun(run_dir) as staged:
        try:
            hook.megafc_before_run(config=cfg, staging_dir=str(staged.staging))
            atlas = load_atlas(plugins["atlas"], plugins["dataset"])
            log.info("atlas '%s': %d regions, %d networks", atlas.name, atlas.n_regions, len(atlas.groups("network")))
            source = f"dataset '{plugins['dataset'].name}'"
            inputs = plugins["dataset"].load(atlas, seed)
            scans = validate_scans(inputs.scans, source=source)
            scans = leave_out(scans, cfg.get("loo_dataset"))
            qc = OmegaConf.to_object(cfg.qc) if not isinstance(cfg.qc, QCConfig) else cfg.qc
            validate_qc(qc)
            scans = exclude_by_motion(scans, qc)
            usable = mark_unpaired if plugins["pooling"].needs_pairs else mark_uninformative
            scans = usable(scans)  # before extraction: nothing is extracted that cannot enter the model
            if stage == "extract" and inputs.images is None:
                raise ConfigError(f"config key 'stage' is 'extract', but {source} gives "
                                  f"{'connectomes' if inputs.connectomes is not None else 'timeseries'}, "
                                  "not images: there is nothing to extract (use dataset=fmriprep)")
            if inputs.images is not None:
                todo = list(scans.loc[~scans["excluded"], "scan_id"])
                cache = cfg.extraction.cache_dir
                cache = str(Path(cache).expanduser()) if cache else None
                if stage == "extract":
                    todo = shard_of(todo, int(cfg.extraction.shard), int(cfg.extraction.shards))
                    log.info("stage extract: shard %d of %d, %d scans", int(cfg.extraction.shard),
                             int(cfg.extraction.shards), len(todo))
                extracted = extract_all(inputs.images, todo, atlas, plugins["denoiser"], cache,
                                        int(cfg.extraction.n_jobs), str(cfg.extraction.space_mismatch))
                if stage == "extract":
                    run_path = finish_extract_stage(staged, cfg, plugins, registry, inputs, scans, extracted, seed,
                                                    started)
                    hook.megafc_after_run(run_dir=str(run_path))
                    return RunOutcome(run_path, scans, pd.DataFrame(), None, True)
                staged.write_table("extraction.tsv", extraction_table(inputs, extracted))
                images, inputs.images = inputs.images, None
            else:
                images = None
                extracted = denoise_given_timeseries(inputs, scans, plugins["denoiser"], source)
            if extracted is not None:
                # volumes counted in the data where the scan table does not say (censored fractions need them)
                counted = scans["scan_id"].map({k: v.n_volumes for k, v in extracted.items()})
                scans["n_volumes"] = pd.to_numeric(scans["n_volumes"], errors="coerce").fillna(counted)
                scans = exclude_by_censoring(scans, {k: v.n_kept for k, v in extracted.items()}, qc)
                skipped = {k: v.skipped for k, v in extracted.items() if v.skipped}
                for reason in sorted(set(skipped.values())):
                    scans = exclude(scans, scans["scan_id"].isin([k for k, r in skipped.items() if r == reason]), reason)
                inputs.timeseries = {k: v.timeseries for k, v in extracted.items() if v.timeseries is not None}
            scans = usable(scans)  # again: censoring may have excluded more
            check_inputs(inputs, atlas, scans, source)
            log_exclusions(scans)
            staged.write_table("exclusions.tsv", exclusion_counts(scans))
            motion = motion_change(scans)
            staged.write_table("motion.tsv", motion)
            for row in motion[motion["differs"] & (motion["drug"] != "all")].itertuples(index=False):
                log.warning("motion: %s scans move %+.3f mm FD [%.3f, %.3f] relative to their controls (%d subjects); "
                            "motion can masquerade as an FC effect (keep pooling.motion=true)",
                            row.drug, row.fd_change_mean, row.ci_low, row.ci_high, row.n_subjects)
            hook.megafc_after_scans(scans=scans, staging_dir=str(staged.staging))
            included = list(scans.loc[~scans["excluded"], "scan_id"])
            if not included:
                reasons = scans["exclusion_reason"].value_counts()
                raise InputError(f"{source}: no scans left after exclusions ("
                                 + "; ".join(f"{n} x {r}" for r, n in reasons.items()) + ")")
            if inputs.timeseries is not None:
                connectomes = estimate_connectomes(plugins["estimator"], inputs.timeseries, included, atlas)
            else:
                log.info("connectivity: inputs are connectomes; estimator step skipped")
                connectomes = given_connectomes(inputs, included, atlas, source)
            hook.megafc_after_connectivity(connectomes=connectomes, scans=scans, staging_dir=str(staged.staging))
            staged.write_table("qc_fc.tsv", with_distances(qc_fc(connectomes, scans), atlas.labels,
                                                           atlas.centroids(display=False)))
            if cfg.derivatives == "all" or (cfg.derivatives == "auto" and images is not None):
                write_derivatives(staged, inputs.timeseries, connectomes, scans, atlas, images, plugins)
            connectomes = harmonize(plugins["harmonizer"], connectomes, scans)
            all_pairs = network_pair_table(connectomes, atlas, scans, level=level)
            wanted = OmegaConf.to_container(cfg.aggregate, resolve=True)["pairs"]
            pairs = select_pairs(all_pairs, wanted)
            if wanted is not None:
                log.info("aggregate.pairs: %d of %d network pairs analysed", pairs.groupby(["network_a", "network_b"]).ngroups,
                         all_pairs.groupby(["network_a", "network_b"]).ngroups)
            hook.megafc_after_aggregation(pairs=pairs, staging_dir=str(staged.staging))
            log.info("network pairs: %d pairs x %d scans", pairs.groupby(["network_a", "network_b"]).ngroups, len(included))
            pooling = plugins["pooling"]
            if getattr(pooling, "needs_connectomes", False):
                pooling.set_connectomes(connectomes, atlas, scans)
            model_pairs = pairs
            if pooling.fits_summaries:
                model_pairs = select_pairs(with_summaries(all_pairs, atlas, OmegaConf.to_container(
                    cfg.summaries, resolve=True), bool(cfg.summaries_builtin)), wanted)
                members = model_pairs.attrs["summaries"]
                staged.write_table("summary_pairs.tsv", members)
                log.info("summaries: %d fitted as outcomes of their own (members in summary_pairs.tsv)",
                         members["summary"].nunique())
            try:
                with Heartbeat(f"pooling '{pooling.name}'"):
                    result = pooling.fit(model_pairs, seed)
            except MegafcError:
                raise
            except Exception as exc:
                raise PluginError(f"pooling '{pooling.name}' failed: {type(exc).__name__}: {exc}") from exc
            result = check_result(result, f"pooling '{pooling.name}'")
            hook.megafc_after_fit(result=result, staging_dir=str(staged.staging))
            diagnostics_ok = report_diagnostics(result)

            resolved = OmegaConf.to_container(cfg, resolve=True)
            staged.write_text("config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
            staged.write_table("scans.tsv", scans)
            staged.write_table("atlas_regions.tsv", region_table(atlas))
            staged.write_table("network_pairs.tsv", pairs)
            staged.write_table("effects.tsv", result.effects)
            who = f"pooling '{pooling.name}'"
            staged.write_json("effects.json", data_dictionary(result.effects, who, result.interval))
            staged.write_table("diagnostics.tsv", result.diagnostics)
            if inputs.truth is not None:
                staged.write_table("truth.tsv", inputs.truth)
            if result.idata is not None:
                log.info("writing posterior.nc ...")
                with Heartbeat("writing posterior.nc"):
                    result.idata.to_netcdf(str(staged.path("posterior.nc")))
            for name, table in result.tables.items():
                # large tables (e.g. one row per edge) ask to be gzipped
                staged.write_table(f"{name}.tsv.gz" if table.attrs.get("compress") else f"{name}.tsv", table)
                if name == "summaries":
                    staged.write_json("summaries.json", data_dictionary(table, who, result.interval))
            formats = figure_formats(cfg.get("figures"))
            for name, fig in result.figures.items():
                for fmt in formats or ["png"]:  # the model's own figures (predictive checks): always a PNG
                    fig.savefig(staged.path(f"figures/{name}.{fmt}"), dpi=110, bbox_inches="tight",
                                metadata=reproducible_metadata(fmt))
                _close(fig)
            staged.write_text("methods.md", methods_text(plugins, atlas, scans, level, result,
                                                         list(cfg.get("notes") or [])))
            if formats:
                from .figures import effect_matrix_figure

                effect_matrix_figure(result.effects, pairs.attrs["networks"], staged.path("figures/overall_effect.png"),
                                     interval=result.interval, formats=formats)
            staged.write_json("provenance.json", run_provenance(resolved, seed, plugins, registry, inputs, started))
            if cfg.report:
                with Heartbeat("writing report.html"):
                    write_run_report(staged.staging, staged.run_dir, registry)
            run_path = staged.commit()
        except BaseException as exc:
            hook.megafc_on_error(error=exc, config=cfg)
            raise
    hook.megafc_after_run(run_dir=str(run_path))
    log.info("results written to %s", run_path)
    return RunOutcome(run_path, scans, pairs, result, diagnostics_ok)


def denoise_given_timeseries(inputs: DatasetInputs, scans: pd.DataFrame, denoiser: Plugin,
                             source: str) -> dict | None:
    """Raw timeseries with confounds files (``DatasetInputs.confounds``) cleaned by the denoiser;
    None when there is nothing to do. A denoiser that cannot apply is said, not silently ignored."""
    if inputs.timeseries is None:
        return None
    acts = type(denoiser).confounds is not Denoiser.confounds
    if inputs.confounds is None:
        if acts:
            log.warning("denoiser '%s' is not applied: %s gives region timeseries without confounds files "
                        "(they are used as given)", denoiser.name, source)
        return None
    if not acts:
        log.info("denoiser '%s': the raw timeseries are used as given", denoiser.name)
        return None
    todo = list(scans.loc[~scans["excluded"], "scan_id"])
    missing = [s for s in todo if s not in inputs.confounds]
    if missing:
        raise InputError(f"{source}: no confounds file for scan(s) {missing[:5]}")
    t_r = pd.to_numeric(scans.set_index("scan_id")["t_r"], errors="coerce").to_dict() if "t_r" in scans else {}
    out = {}
    with Heartbeat(f"denoising with '{denoiser.name}'"):
        for s in todo:
            tr = float(t_r.get(s, np.nan))
            out[s] = denoise_timeseries(s, inputs.timeseries[s], inputs.confounds[s], denoiser,
                                        tr if np.isfinite(tr) else 2.0)
    log.info("denoiser '%s': %d scans' timeseries cleaned with their confounds", denoiser.name, len(out))
    return out


#: Values of config key ``stage``.
STAGES = ("all", "extract")


def check_stage(cfg: Any) -> str:
    """The stage to run, with the extraction keys it relies on checked before anything loads."""
    stage = str(cfg.get("stage", "all"))
    if stage not in STAGES:
        raise ConfigError(f"config key 'stage' is '{stage}'; expected one of {list(STAGES)}")
    ex = cfg.extraction
    if str(ex.space_mismatch) not in ("error", "warn"):
        raise ConfigError(f"config key 'extraction.space_mismatch' is '{ex.space_mismatch}'; expected error or warn")
    shards, shard = int(ex.shards), int(ex.shard)
    if shards < 1:
        raise ConfigError(f"config key 'extraction.shards' is {shards}; expected >= 1")
    if not 0 <= shard < shards:
        raise ConfigError(f"config key 'extraction.shard' is {shard}; expected 0 to {shards - 1} "
                          f"(extraction.shards={shards})")
    if shards > 1 and stage != "extract":
        raise ConfigError(f"config key 'extraction.shards' is {shards}, but only stage=extract runs shards; a "
                          "full run extracts (or finds in the cache) every scan")
    if stage == "extract" and not ex.cache_dir:
        raise ConfigError("config key 'extraction.cache_dir' is null, but stage=extract writes into the cache: "
                          "set it to a folder every job can reach")
    return stage


def extraction_table(inputs: DatasetInputs, extracted: dict) -> pd.DataFrame:
    """extraction.tsv: one row per scan given to extraction, where its timeseries is cached."""
    return pd.DataFrame([
        {"scan_id": e.scan_id, "cached": e.cached, "n_volumes": e.n_volumes, "n_volumes_kept": e.n_kept,
         "bold": inputs.images[e.scan_id].bold, "confounds": inputs.images[e.scan_id].confounds,
         "cache_file": e.path, "not_extracted": e.skipped or None} for e in extracted.values()
    ])


def run_provenance(resolved: dict, seed: int, plugins: dict[str, Plugin], registry: Registry,
                   inputs: DatasetInputs, started: datetime) -> dict[str, Any]:
    """provenance.json: config, seed, versions, input fingerprints, and which distribution gave
    each plugin (and each module that only implements hooks)."""
    plugin_info = {
        kind: {
            "name": p.name,
            "class": f"{type(p).__module__}:{type(p).__qualname__}",
            "distribution": registry.get(kind, p.name).distribution,
            "version": registry.get(kind, p.name).version,
        }
        for kind, p in plugins.items()
    }
    hook_plugins = registry.hook_plugins()
    dists = sorted({v["distribution"] for v in [*plugin_info.values(), *hook_plugins]} - {"(registered in code)"})
    return {**provenance(config=resolved, seed=seed, plugins=plugin_info, fingerprints=inputs.fingerprints,
                         started=started, extra_packages=dists),
            "hook_plugins": hook_plugins}


def finish_extract_stage(staged: StagedRun, cfg: Any, plugins: dict[str, Plugin], registry: Registry,
                         inputs: DatasetInputs, scans: pd.DataFrame, extracted: dict, seed: int,
                         started: datetime) -> Path:
    """A stage=extract job's outputs: what it extracted (extraction.tsv), the scan table with the
    scans left out before extraction and why (scans.tsv), its config and provenance."""
    from omegaconf import OmegaConf

    staged.write_table("extraction.tsv", extraction_table(inputs, extracted))
    staged.write_table("scans.tsv", scans)
    staged.write_text("config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    staged.write_json("provenance.json", run_provenance(OmegaConf.to_container(cfg, resolve=True), seed, plugins,
                                                        registry, inputs, started))
    n_new = sum(not e.cached and not e.skipped for e in extracted.values())
    log.info("stage extract: %d scans extracted, %d already cached, %d not extractable; cache %s", n_new,
             sum(e.cached for e in extracted.values()), sum(bool(e.skipped) for e in extracted.values()),
             Path(str(cfg.extraction.cache_dir)).expanduser())
    return staged.commit()


def plugin_report_sections(registry: Registry) -> list:
    """The report sections every installed plugin adds (hook ``megafc_report_sections``); a plugin
    whose hook fails is logged and skipped, so one broken plugin never costs the report."""
    out = []
    for impl in registry.manager.hook.megafc_report_sections.get_hookimpls():
        try:
            out += list(impl.function() or [])
        except Exception as exc:
            log.warning("report: plugin '%s' could not give its sections (%s: %s)", impl.plugin_name,
                        type(exc).__name__, exc)
    return out


def write_run_report(folder: Path, final: Path, registry: Registry) -> None:
    """report.html from the staged outputs; a report bug is logged loudly, results still land."""
    from .report import write_report

    try:
        write_report(folder, shown_as=final, extra_sections=plugin_report_sections(registry))
    except Exception as exc:  # the tables and posterior are the results; the report summarises them
        log.error("report.html could not be written (%s: %s); the results are complete", type(exc).__name__, exc)


def _close(fig: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def leave_out(scans: pd.DataFrame, dataset: str | None) -> pd.DataFrame:
    """Leave-one-dataset-out: exclude one dataset's scans, saying so in scans.tsv."""
    if dataset is None:
        return scans
    known = sorted(scans["dataset"].unique())
    if dataset not in known:
        raise ConfigError(f"config key 'loo_dataset' is '{dataset}', which is not a dataset in the data; known: {known}")
    return exclude(scans, scans["dataset"] == dataset, "left out (leave-one-dataset-out)")


def load_atlas(atlas_plugin: AtlasLoader, dataset_plugin: DatasetLoader) -> Atlas:
    """Most atlases load on their own; ``from_labels`` needs the dataset's region labels."""
    if atlas_plugin.needs_data_labels:
        labels = dataset_plugin.region_labels()
        if labels is None:
            raise ConfigError(
                f"atlas '{atlas_plugin.name}' reads region labels from the data, but dataset "
                f"'{dataset_plugin.name}' provides none; use dataset=timeseries or dataset=connectomes, "
                "or choose an atlas with files"
            )
        return atlas_plugin.load_labels(labels)
    return atlas_plugin.load()


def region_table(atlas: Atlas) -> pd.DataFrame:
    """The atlas's regions with their networks and, when known, MNI centres (x, y, z in mm)."""
    table = atlas.regions[["label", "network", "subnetwork", "system"]].copy()
    centres = atlas.centroids()
    if centres is not None:
        table[["x", "y", "z"]] = np.round(centres, 2)
    return table


def log_exclusions(scans: pd.DataFrame) -> None:
    per = scans.groupby("dataset")["excluded"].agg(["size", "sum"])
    for ds, row in per.iterrows():
        if row["sum"]:
            log.warning("dataset %s: %d of %d scans excluded (reasons in scans.tsv)", ds, row["sum"], row["size"])
    for line in dropped_out(scans):
        log.warning(line)
    log.info("scans: %d included, %d excluded", int((~scans["excluded"]).sum()), int(scans["excluded"].sum()))


def dropped_out(scans: pd.DataFrame) -> list[str]:
    """Sentences for datasets and drugs that lost every scan, and datasets left with one subject.

    A whole study vanishing from a pooled estimate changes what the estimate means, so it is
    said in the log (and thus the report) and in methods.md, not only in scans.tsv.
    """
    inc = scans[~scans["excluded"]]
    out = []
    for ds, group in scans.groupby("dataset", sort=True):
        if group["excluded"].all():
            reasons = group["exclusion_reason"].value_counts()
            why = "; ".join(f"{n} x {r}" for r, n in reasons.items())
            out.append(f"dataset {ds}: all {len(group)} scans excluded ({why}); it is not part of any estimate")
        elif inc.loc[inc["dataset"] == ds, "subject"].nunique() == 1:
            out.append(f"dataset {ds}: a single subject left; its dataset effect and between-subject sd rest "
                       "largely on the priors")
    for drug in sorted(set(scans["drug"]) - set(inc["drug"])):
        out.append(f"drug {drug}: every scan of every dataset excluded; there is no {drug} effect in the results")
    return out


def report_diagnostics(result: PoolingResult) -> bool:
    for w in result.warnings:
        log.warning(w)
    eff = result.effects
    if "ok" not in eff or eff["ok"].isna().all():
        return True
    bad = eff[~eff["ok"].astype(bool)]
    if len(bad):
        log.warning(
            "DIAGNOSTICS: %d of %d effects are flagged not ok (max R-hat %.3f, min bulk ESS %.0f, "
            "divergences %d; see the pooling warnings above, effects.tsv column 'ok' and diagnostics.tsv)",
            len(bad), len(eff), eff["r_hat"].max(), eff["ess_bulk"].min(), int(eff["divergences"].max()),
        )
        return False
    return True


def methods_text(plugins: dict[str, Plugin], atlas: Atlas, scans: pd.DataFrame, level: str, result: PoolingResult,
                 notes: list[str] | None = None) -> str:
    inc = scans[~scans["excluded"]]
    lines = [
        "# Methods (generated by megafc)",
        "",
        f"Data: {inc['dataset'].nunique()} datasets, {inc.groupby(['dataset', 'subject']).ngroups} subjects, "
        f"{len(inc)} scans included of {len(scans)} "
        f"({int(scans['excluded'].sum())} excluded; reasons in scans.tsv). "
        f"Drugs: {', '.join(sorted(inc['drug'].unique()))}." + "".join(f" Note: {d[0].upper()}{d[1:]}." for d in dropped_out(scans)),
        f"Atlas: {atlas.name} ({atlas.n_regions} regions). {atlas.description}".strip(),
        f"Connectivity: estimator '{plugins['estimator'].name}' ({plugins['estimator'].summary()}), "
        f"averaged within and between {level}s (mean Fisher z over each pair's edges).",
        *([f"Harmonisation: '{plugins['harmonizer'].name}' ({plugins['harmonizer'].summary()}) applied to the "
           "connectomes before aggregation; QC-FC and derivatives use the connectomes before it."]
          if "harmonizer" in plugins and plugins["harmonizer"].name != "none" else []),
        f"Pooling: {result.description}",
        *[f"Note: {n}" for n in notes or []],
        "",
        "Plugin parameters:",
    ]
    for kind, p in plugins.items():
        lines.append(f"- {kind} `{p.name}`: {p.params()}")
    cited = [ref for p in plugins.values() for ref in (p.references() if hasattr(p, "references") else [])]
    if cited:
        lines += ["", "References (methods):", *[f"- {ref}" for ref in cited]]
    return "\n".join(lines) + "\n"
