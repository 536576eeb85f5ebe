"""The stages of a run, in order: load -> extract -> estimate -> aggregate -> pool -> derive.

Each stage is a function of plain values that returns one, so a stage can be run (and tested,
and benchmarked) on its own. ``run_experiment`` runs them in order, each inside ``stage(name)``
(lifecycle hooks, a timed log line, plugin errors named, warnings collected), gathers their
values in one ``RunResults`` and hands that to the one writer, ``outputs.write_run``.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from .aggregate import mark_uninformative, mark_unpaired, network_pair_table, select_pairs
from .checks import check_connectome, check_inputs, check_result, check_run_config
from .data import Atlas, Connectomes, DatasetInputs, PoolingInputs, PoolingResult, exclude, validate_scans
from .errors import ConfigError, InputError, MegafcError, PluginError
from .extraction import denoise_timeseries, extract_all, shard_of
from .pair_sets import with_summaries
from .plugin import AtlasLoader, ConnectivityEstimator, DatasetLoader, Denoiser, Harmonizer, Plugin
from .processes import children_die_with_parent
from .progress import Heartbeat
from .python_warnings import logged_in_this_thread
from .qc import (QCConfig, baseline_only_datasets, exclude_by_censoring, exclude_by_motion, exclusion_counts,
                 motion_advice, motion_change, qc_fc, validate_qc)
from .registry import Registry

log = logging.getLogger("megafc")

KINDS_IN_ORDER = ("atlas", "dataset", "denoiser", "estimator", "harmonizer", "pooling")
#: The stages of a full run, in order (``stage=extract`` runs the first two).
STAGE_NAMES = ("load", "extract", "estimate", "aggregate", "pool", "derive")


# -- the run's context and values ------------------------------------------------------------


@dataclass
class RunContext:
    """What every stage may consult besides the value the previous stage returned."""

    cfg: Any
    registry: Registry
    plugins: dict[str, Plugin]
    seed: int
    qc: QCConfig
    #: The folder whose files become the run's outputs (lifecycle hooks may add files); None
    #: when stages run outside a run (benchmarks, notebooks).
    staging_dir: Path | None = None
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    #: Every warning logged during a stage: {stage, message}; written to warnings.tsv.
    warnings: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def create(cls, cfg: Any, registry: Registry | None = None, staging_dir: Path | None = None) -> RunContext:
        """Check the run config and build its plugins (nothing is loaded yet)."""
        from omegaconf import OmegaConf

        from .registry import default_registry

        registry = registry or default_registry()
        check_run_config(cfg)
        qc = cfg.qc if isinstance(cfg.qc, QCConfig) else OmegaConf.to_object(cfg.qc)
        validate_qc(qc)
        plugins = {kind: registry.instantiate(kind, cfg[kind]) for kind in KINDS_IN_ORDER}
        return cls(cfg=cfg, registry=registry, plugins=plugins, seed=int(cfg.seed), qc=qc, staging_dir=staging_dir)

    @property
    def hook(self) -> Any:
        return self.registry.manager.hook

    @property
    def staging(self) -> str:
        return str(self.staging_dir) if self.staging_dir is not None else ""

    @property
    def source(self) -> str:
        return f"dataset '{self.plugins['dataset'].name}'"


@dataclass
class LoadedData:
    """Stage ``load``: the atlas, the dataset's inputs and the scan table (exclusions marked)."""

    atlas: Atlas
    inputs: DatasetInputs
    scans: pd.DataFrame


@dataclass
class ExtractedData:
    """Stage ``extract``: each included scan's region timeseries (or the given connectomes)."""

    scans: pd.DataFrame
    timeseries: dict[str, np.ndarray] | None
    connectomes: dict[str, np.ndarray] | None
    #: extraction.tsv (one row per scan given to extraction); None when inputs were not images.
    extraction: pd.DataFrame | None = None


@dataclass
class AggregatedData:
    """Stage ``aggregate``: the network-pair table analysed and what the pooling model is given."""

    #: One row per scan and analysed network pair (network_pairs.tsv).
    pairs: pd.DataFrame
    #: ``pairs`` plus each summary's per-scan mean as an outcome, for models that fit summaries.
    model_pairs: pd.DataFrame
    #: The connectomes the pairs were averaged from (after harmonisation).
    connectomes: Connectomes
    #: summary_pairs.tsv: which network pairs make up each fitted summary (None: none fitted).
    summary_pairs: pd.DataFrame | None = None


@dataclass
class DerivedData:
    """Stage ``derive``: what describes the run rather than estimates anything."""

    #: exclusions, motion and (with connectomes) qc_fc tables.
    tables: dict[str, pd.DataFrame]
    methods: str
    references: list[str]
    report_sections: list[Any]
    diagnostics_ok: bool


@dataclass
class RunResults:
    """Everything a run computed; ``outputs.write_run`` writes it, nothing else does."""

    config: Any
    seed: int
    plugins: dict[str, Plugin]
    atlas: Atlas
    inputs: DatasetInputs
    scans: pd.DataFrame
    started: datetime
    extracted: ExtractedData | None = None
    #: Connectomes as estimated (before harmonisation): QC-FC and derivatives use these.
    connectomes: Connectomes | None = None
    aggregated: AggregatedData | None = None
    result: PoolingResult | None = None
    derived: DerivedData | None = None
    warnings: list[dict[str, str]] = field(default_factory=list)
    #: Seconds per stage.
    timings: dict[str, float] = field(default_factory=dict)
    #: The final run folder (set once the outputs are in place).
    run_dir: Path | None = None

    @property
    def pairs(self) -> pd.DataFrame:
        return self.aggregated.pairs if self.aggregated is not None else pd.DataFrame()

    # what stage derive gave (nothing before it, e.g. with stage=extract)
    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        return self.derived.tables if self.derived is not None else {}

    @property
    def methods(self) -> str:
        return self.derived.methods if self.derived is not None else ""

    @property
    def references(self) -> list[str]:
        return self.derived.references if self.derived is not None else []

    @property
    def report_sections(self) -> list[Any]:
        return self.derived.report_sections if self.derived is not None else []

    @property
    def diagnostics_ok(self) -> bool:
        return self.derived.diagnostics_ok if self.derived is not None else True


#: Kept for callers of earlier versions: ``run_experiment`` returned a RunOutcome.
RunOutcome = RunResults


# -- one stage's frame -----------------------------------------------------------------------


class _WarningCollector(logging.Handler):
    """Keeps every warning logged under ``megafc`` during a stage, so warnings.tsv (and the
    report) list the run's warnings without reading a log file. Only the stage's own thread
    counts (runs in other threads of the process log to the same logger), and of nested stages
    only the innermost, so a warning is kept once, under the stage that raised it."""

    innermost: dict[int, "_WarningCollector"] = {}

    def __init__(self, into: list[dict[str, str]], stage_name: str) -> None:
        super().__init__(level=logging.WARNING)
        self.into, self.stage_name, self.thread = into, stage_name, threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread and self.innermost.get(self.thread) is self:
            self.into.append({"stage": self.stage_name, "level": record.levelname.lower(),
                              "message": record.getMessage()})


@contextmanager
def stage(ctx: RunContext, name: str, timings: dict[str, float] | None = None) -> Iterator[None]:
    """Run one stage: hooks before and after (or on error), a log line with its duration, its
    warnings collected and the processes it forks bound to this one (they die with it). Plugin
    calls inside name their plugin when they fail (``_call``); any other error is megafc's own
    and passes through as it is (the command line reports it as a bug, with the stage named in
    the log)."""
    collector = _WarningCollector(ctx.warnings, name)
    outer = _WarningCollector.innermost.get(collector.thread)
    _WarningCollector.innermost[collector.thread] = collector
    log.addHandler(collector)
    started = time.perf_counter()
    try:
        ctx.hook.megafc_before_stage(stage=name, config=ctx.cfg)
        # a plugin's forked workers never outlive megafc; its warnings.warn reach warnings.tsv
        with children_die_with_parent(), logged_in_this_thread():
            yield
    except BaseException as exc:
        if not isinstance(exc, MegafcError):
            log.error("stage %s failed: %s: %s", name, type(exc).__name__, exc)
        try:
            ctx.hook.megafc_on_stage_error(stage=name, error=exc)
        except Exception as hook_exc:  # a failing observer must not hide the error it observes
            log.error("a megafc_on_stage_error hook failed (%s: %s)", type(hook_exc).__name__, hook_exc)
        raise
    finally:
        log.removeHandler(collector)
        if outer is None:
            del _WarningCollector.innermost[collector.thread]
        else:
            _WarningCollector.innermost[collector.thread] = outer
    seconds = time.perf_counter() - started
    if timings is not None:
        timings[name] = seconds
    log.info("stage %s: %.1f s", name, seconds)
    ctx.hook.megafc_after_stage(stage=name, seconds=seconds)


def _call(who: str, what: str, fn: Any, *args: Any) -> Any:
    """A plugin call whose unexpected error names the plugin (megafc's own errors pass through)."""
    try:
        return fn(*args)
    except MegafcError:
        raise
    except Exception as exc:
        raise PluginError(f"{who} failed{what}: {type(exc).__name__}: {exc}") from exc


# -- the stages ------------------------------------------------------------------------------


def load(ctx: RunContext) -> LoadedData:
    """The atlas, the dataset's scans and inputs, and the exclusions known before extraction."""
    dataset = ctx.plugins["dataset"]
    atlas = load_atlas(ctx.plugins["atlas"], dataset)
    log.info("atlas '%s': %d regions, %d networks", atlas.name, atlas.n_regions, len(atlas.groups("network")))
    inputs = _call(ctx.source, "", dataset.load, atlas, ctx.seed)
    scans = validate_scans(inputs.scans, source=ctx.source)
    scans = leave_out(scans, ctx.cfg.get("loo_dataset"))
    scans = exclude_by_motion(scans, ctx.qc)
    scans = usable_scans(ctx, scans)  # before extraction: nothing is extracted that cannot enter the model
    return LoadedData(atlas, inputs, scans)


def usable_scans(ctx: RunContext, scans: pd.DataFrame) -> pd.DataFrame:
    """Exclude scans the pooling model cannot use (unpaired for paired models)."""
    return mark_unpaired(scans) if ctx.plugins["pooling"].needs_pairs else mark_uninformative(scans)


def extract(ctx: RunContext, loaded: LoadedData) -> ExtractedData:
    """Region timeseries of every included scan: extracted from images (cached), denoised from
    given raw timeseries, or the given timeseries/connectomes as they are."""
    inputs, scans, atlas = loaded.inputs, loaded.scans.copy(), loaded.atlas
    given = [k for k in ("images", "timeseries", "connectomes") if getattr(inputs, k) is not None]
    if len(given) != 1:
        raise PluginError(f"{ctx.source}: must return exactly one of images, timeseries or connectomes (got {given})")
    cfg = ctx.cfg
    only_extract = str(cfg.get("stage", "all")) == "extract"
    if only_extract and inputs.images is None:
        raise ConfigError(f"config key 'stage' is 'extract', but {ctx.source} gives {given[0]}, not images: "
                          "there is nothing to extract (use a dataset plugin that gives BOLD images)")
    extraction = None
    if inputs.images is not None:
        todo = list(scans.loc[~scans["excluded"], "scan_id"])
        cache = str(Path(cfg.extraction.cache_dir).expanduser()) if cfg.extraction.cache_dir else None
        if only_extract:
            todo = shard_of(todo, int(cfg.extraction.shard), int(cfg.extraction.shards))
            log.info("stage extract: shard %d of %d, %d scans", int(cfg.extraction.shard),
                     int(cfg.extraction.shards), len(todo))
        extracted = extract_all(inputs.images, todo, atlas, ctx.plugins["denoiser"], cache,
                                int(cfg.extraction.n_jobs), str(cfg.extraction.space_mismatch))
        extraction = extraction_table(inputs, extracted)
        if only_extract:
            log.info("stage extract: %d scans extracted, %d already cached, %d not extractable; cache %s",
                     sum(not e.cached and not e.skipped for e in extracted.values()),
                     sum(e.cached for e in extracted.values()), sum(bool(e.skipped) for e in extracted.values()), cache)
            return ExtractedData(scans, None, None, extraction)
    else:
        extracted = denoise_given_timeseries(inputs, scans, ctx.plugins["denoiser"], ctx.source)
    timeseries = inputs.timeseries
    if extracted is not None:
        # volumes counted in the data where the scan table does not say (censored fractions need them)
        counted = scans["scan_id"].map({k: v.n_volumes for k, v in extracted.items()})
        scans["n_volumes"] = pd.to_numeric(scans["n_volumes"], errors="coerce").fillna(counted)
        scans = exclude_by_censoring(scans, {k: v.n_kept for k, v in extracted.items()}, ctx.qc)
        skipped = {k: v.skipped for k, v in extracted.items() if v.skipped}
        for reason in sorted(set(skipped.values())):
            scans = exclude(scans, scans["scan_id"].isin([k for k, r in skipped.items() if r == reason]), reason)
        timeseries = {k: v.timeseries for k, v in extracted.items() if v.timeseries is not None}
    scans = usable_scans(ctx, scans)  # again: censoring may have excluded more
    check_inputs(timeseries, inputs.connectomes, atlas, scans, ctx.source)
    log_exclusions(scans)
    ctx.hook.megafc_after_scans(scans=scans, staging_dir=ctx.staging)
    return ExtractedData(scans, timeseries, inputs.connectomes, extraction)


def estimate(ctx: RunContext, atlas: Atlas, data: ExtractedData) -> Connectomes:
    """One connectome per included scan (the estimator's, or the dataset's own)."""
    included = list(data.scans.loc[~data.scans["excluded"], "scan_id"])
    if not included:
        reasons = data.scans["exclusion_reason"].value_counts()
        raise InputError(f"{ctx.source}: no scans left after exclusions ("
                         + "; ".join(f"{n} x {r}" for r, n in reasons.items()) + ")")
    if data.timeseries is not None:
        connectomes = estimate_connectomes(ctx.plugins["estimator"], data.timeseries, included, atlas)
    else:
        log.info("connectivity: inputs are connectomes; estimator step skipped")
        connectomes = given_connectomes(data.connectomes, included, atlas, ctx.source)
    ctx.hook.megafc_after_connectivity(connectomes=connectomes, scans=data.scans, staging_dir=ctx.staging)
    return connectomes


def aggregate(ctx: RunContext, atlas: Atlas, connectomes: Connectomes, scans: pd.DataFrame) -> AggregatedData:
    """Harmonise, then average edges within and between networks; add the summary outcomes."""
    from omegaconf import OmegaConf

    cfg = ctx.cfg
    level = cfg.aggregate.level
    harmonized = harmonize(ctx.plugins["harmonizer"], connectomes, scans)
    all_pairs = network_pair_table(harmonized, atlas, scans, level=level)
    wanted = OmegaConf.to_container(cfg.aggregate, resolve=True)["pairs"]
    pairs = select_pairs(all_pairs, wanted)
    n_pairs = pairs.groupby(["network_a", "network_b"]).ngroups
    if wanted is not None:
        log.info("aggregate.pairs: %d of %d network pairs analysed", n_pairs,
                 all_pairs.groupby(["network_a", "network_b"]).ngroups)
    ctx.hook.megafc_after_aggregation(pairs=pairs, staging_dir=ctx.staging)
    log.info("network pairs: %d pairs x %d scans", n_pairs, len(connectomes.scan_ids))
    model_pairs, members = pairs, None
    if ctx.plugins["pooling"].fits_summaries:
        wanted_summaries = OmegaConf.to_container(cfg.summaries, resolve=True)
        model_pairs = select_pairs(with_summaries(all_pairs, atlas, wanted_summaries, bool(cfg.summaries_builtin)),
                                   wanted)
        members = model_pairs.attrs["summaries"]
        log.info("summaries: %d fitted as outcomes of their own (members in summary_pairs.tsv)",
                 members["summary"].nunique())
    elif cfg.summaries:  # checked all the same (a sweep's other models fit them), and said to be unused
        from .pair_sets import membership

        membership(atlas, level, OmegaConf.to_container(cfg.summaries, resolve=True), bool(cfg.summaries_builtin))
        log.warning("summaries %s: pooling '%s' fits no summary outcomes, so they are not estimated in this run",
                    sorted(cfg.summaries), ctx.plugins["pooling"].name)
    return AggregatedData(pairs, model_pairs, harmonized, members)


def pool(ctx: RunContext, atlas: Atlas, scans: pd.DataFrame, aggregated: AggregatedData) -> PoolingResult:
    """The pooling model's result (the connectomes only reach models that declare they need them)."""
    model = ctx.plugins["pooling"]
    wants = model.needs_connectomes
    inputs = PoolingInputs(pairs=aggregated.model_pairs, seed=ctx.seed, scans=scans,
                           connectomes=aggregated.connectomes if wants else None, atlas=atlas if wants else None)
    who = f"pooling '{model.name}'"
    with Heartbeat(who):
        result = check_result(_call(who, "", model.pool, inputs), who)
    ctx.hook.megafc_after_fit(result=result, staging_dir=ctx.staging)
    return result


def derive(ctx: RunContext, results: RunResults) -> DerivedData:
    """Exclusion counts, motion by drug, QC-FC, the report sections plugins add, what to cite,
    the diagnostics verdict and the methods paragraph, from the earlier stages' values."""
    scans = results.scans
    tables = {"exclusions": exclusion_counts(scans)}
    motion = motion_change(scans)
    tables["motion"] = motion
    covariates = adjusted_for(results.result)
    for row in motion[motion["differs"] & (motion["drug"] != "all")].itertuples(index=False):
        log.warning("motion: %s scans move %+.3f mm FD [%.3f, %.3f] relative to their controls (%d subjects); "
                    "motion can masquerade as an FC effect: %s", row.drug, row.fd_change_mean, row.ci_low,
                    row.ci_high, row.n_subjects, motion_advice(covariates))
    adjusted = "session_order" in (covariates or ())
    for ds in baseline_only_datasets(scans):
        log.warning("design: dataset %s compares its drug scans only with baselines scanned before them (pre/post, "
                    "no placebo): anything that changes with session order (habituation, expectancy, scanner "
                    "drift) looks like the drug in its own scans; %s", ds,
                    "its effects are taken at equal session order, with the order effect learned from the datasets "
                    "whose sessions come in either order (covariate:session_order)" if adjusted else
                    "its effects include it (a pooling model can take out an order effect learned from datasets with "
                    "counterbalanced sessions, given a session_order column)")
    if results.connectomes is not None:
        from .qc import QCFC_ALERT, qcfc_share, with_distances

        atlas = results.atlas
        tables["qc_fc"] = with_distances(qc_fc(results.connectomes, scans), atlas.labels,
                                         atlas.centroids(display=False))
        share = qcfc_share(tables["qc_fc"])
        if share > QCFC_ALERT:
            log.warning("QC-FC: %.0f%% of edges correlate with mean FD across scans at p < 0.05, where about 5%% "
                        "would if motion did not drive FC (qc_fc.tsv; where drug scans move more, a drug effect "
                        "shows here too): consider stricter denoising and qc.max_mean_fd", 100 * share)
    sections = []
    if ctx.cfg.get("report"):
        from .outputs import plugin_report_sections

        sections = plugin_report_sections(ctx.registry, ctx.cfg)
    acting = acted(results)
    references = run_references(ctx, results, sections, acting)
    ok, methods = True, ""
    if results.result is not None:
        ok = report_diagnostics(results.result)
        methods = methods_text(ctx, results, references, acting)
    return DerivedData(tables, methods, references, sections, ok)


def run_references(ctx: RunContext, results: RunResults, sections: list[Any], acting: set[str]) -> list[str]:
    """Everything this run should cite: megafc and what core uses, each plugin's declared
    references, the atlas's and the fit's own, and those of the report sections plugins add."""
    from .fingerprints import package_versions
    from .references import CORE_REFERENCES, plugin_references, software_reference, unique

    refs = [software_reference(package_versions().get("megafc", "unknown")), *CORE_REFERENCES]
    for kind, plugin in ctx.plugins.items():
        if kind in acting:
            refs += plugin_references(plugin)
    refs += results.atlas.references
    if results.result is not None:
        refs += results.result.references
    for section in sections:
        refs += list(getattr(section, "references", ()) or ())
    return unique(refs)


def acted(results: RunResults) -> set[str]:
    """The plugin kinds whose plugin did something in this run: an estimator is skipped when the
    data are connectomes, a denoiser when nothing is extracted or cleaned with confounds."""
    inputs = results.inputs
    kinds = set(results.plugins) - {"estimator", "denoiser"}
    if results.connectomes is not None and results.connectomes.estimator != "(precomputed)":
        kinds.add("estimator")
    cleans = "denoiser" in results.plugins and acts_on_given_timeseries(results.plugins["denoiser"])
    if inputs.images is not None or (inputs.timeseries is not None and inputs.confounds is not None and cleans):
        kinds.add("denoiser")
    return kinds


# -- the run ---------------------------------------------------------------------------------


def run_stages(ctx: RunContext, until: str = "derive") -> RunResults:
    """The stages in order up to and including ``until``, as values (nothing is written): what
    ``run_experiment`` writes, and what benchmarks call (e.g. ``until="aggregate"``)."""
    if until not in STAGE_NAMES:
        raise ConfigError(f"run_stages(until='{until}'): expected one of {list(STAGE_NAMES)}")
    stop = STAGE_NAMES.index(until)
    timings: dict[str, float] = {}
    ctx.warnings = []
    for note in ctx.cfg.get("notes") or []:
        log.warning("note: %s", note)
        ctx.warnings.append({"stage": "config", "level": "warning", "message": f"note: {note}"})
    with stage(ctx, "load", timings):
        loaded = load(ctx)
    results = RunResults(config=ctx.cfg, seed=ctx.seed, plugins=ctx.plugins, atlas=loaded.atlas, inputs=loaded.inputs,
                         scans=loaded.scans, started=ctx.started, warnings=ctx.warnings, timings=timings)
    with stage(ctx, "extract", timings):
        results.extracted = extract(ctx, loaded)
    results.scans = results.extracted.scans
    if str(ctx.cfg.get("stage", "all")) == "extract" or stop < 2:
        return results
    with stage(ctx, "estimate", timings):
        results.connectomes = estimate(ctx, loaded.atlas, results.extracted)
    if stop < 3:
        return results
    with stage(ctx, "aggregate", timings):
        results.aggregated = aggregate(ctx, loaded.atlas, results.connectomes, results.scans)
    if stop < 4:
        return results
    with stage(ctx, "pool", timings):
        results.result = pool(ctx, loaded.atlas, results.scans, results.aggregated)
    if stop < 5:
        return results
    with stage(ctx, "derive", timings):
        results.derived = derive(ctx, results)
    return results


def run_experiment(cfg: Any, registry: Registry, run_dir: str | Path) -> RunResults:
    """Run every stage and write the run directory atomically."""
    from .outputs import planned_entries, write_run
    from .run_folder import StagedRun

    ctx = RunContext.create(cfg, registry)
    with StagedRun(run_dir) as staged:
        staged.check_room(planned_entries(cfg))
        ctx.staging_dir = staged.staging
        try:
            ctx.hook.megafc_before_run(config=cfg, staging_dir=ctx.staging)
            results = run_stages(ctx)
            with stage(ctx, "write", results.timings):
                write_run(staged, results, registry)
            results.run_dir = staged.commit()
        except BaseException as exc:
            ctx.hook.megafc_on_error(error=exc, config=cfg)
            raise
    ctx.hook.megafc_after_run(run_dir=str(results.run_dir))
    log.info("results written to %s", results.run_dir)
    return results


# -- helpers of the stages -------------------------------------------------------------------


def estimate_connectomes(
    estimator: ConnectivityEstimator, timeseries: dict[str, np.ndarray], scan_ids: list[str], atlas: Atlas
) -> Connectomes:
    who = f"estimator '{estimator.name}'"
    n = atlas.n_regions
    mats = np.empty((len(scan_ids), n, n))
    if estimator.group_level:
        log.info("connectivity: estimator '%s' estimates all %d scans together", estimator.name, len(scan_ids))
        out = _call(who, f" on the group of {len(scan_ids)} scans", estimator.estimate_group,
                    [np.asarray(timeseries[s], dtype=float) for s in scan_ids])
        if len(out) != len(scan_ids):
            raise PluginError(f"{who} returned {len(out)} matrices for {len(scan_ids)} scans")
        for i, scan_id in enumerate(scan_ids):
            mats[i] = check_connectome(out[i], n, who, scan_id)
        return Connectomes(scan_ids=list(scan_ids), matrices=mats, labels=atlas.labels, estimator=estimator.name)
    step = max(1, len(scan_ids) // 10)
    for i, scan_id in enumerate(scan_ids):
        out = _call(who, f" on scan '{scan_id}'", estimator.estimate, np.asarray(timeseries[scan_id], dtype=float))
        mats[i] = check_connectome(out, n, who, scan_id)
        if (i + 1) % step == 0 or i + 1 == len(scan_ids):
            log.info("connectivity: %d/%d scans", i + 1, len(scan_ids))
    return Connectomes(scan_ids=list(scan_ids), matrices=mats, labels=atlas.labels, estimator=estimator.name)


def harmonizes(harmonizer: Plugin) -> bool:
    """Whether the harmonizer changes connectomes (it overrides the base class's identity)."""
    return type(harmonizer).harmonize is not Harmonizer.harmonize


def acts_on_given_timeseries(denoiser: Plugin) -> bool:
    """Whether the denoiser cleans given region timeseries with their confounds (it overrides
    ``Denoiser.confounds``; a denoiser for images only leaves them as they are)."""
    return type(denoiser).confounds is not Denoiser.confounds


def harmonize(harmonizer: Plugin, connectomes: Connectomes, scans: pd.DataFrame) -> Connectomes:
    """The harmonizer's connectomes, checked to be the same scans and shape (QC-FC and the
    derivatives keep the connectomes as estimated; only aggregation and pooling see these)."""
    if not harmonizes(harmonizer):  # the identity: nothing to check
        return connectomes
    who = f"harmonizer '{harmonizer.name}'"
    with Heartbeat(who):
        out = _call(who, "", harmonizer.harmonize, connectomes, scans)
    if not isinstance(out, Connectomes) or list(out.scan_ids) != list(connectomes.scan_ids):
        raise PluginError(f"{who} must return Connectomes of the same scans, in order")
    n = connectomes.matrices.shape[1]
    out.matrices = np.stack([check_connectome(m, n, who, s) for m, s in zip(out.matrices, out.scan_ids)])
    return out


def given_connectomes(connectomes: dict[str, np.ndarray], scan_ids: list[str], atlas: Atlas,
                      source: str) -> Connectomes:
    n = atlas.n_regions
    mats = np.stack([check_connectome(np.asarray(connectomes[s], dtype=float), n, source, s) for s in scan_ids])
    return Connectomes(scan_ids=list(scan_ids), matrices=mats, labels=atlas.labels, estimator="(precomputed)")


def denoise_given_timeseries(inputs: DatasetInputs, scans: pd.DataFrame, denoiser: Plugin,
                             source: str) -> dict | None:
    """Raw timeseries with confounds files (``DatasetInputs.confounds``) cleaned by the denoiser;
    None when there is nothing to do. A denoiser that cannot apply is said, not silently ignored."""
    if inputs.timeseries is None:
        return None
    acts = acts_on_given_timeseries(denoiser)
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


def extraction_table(inputs: DatasetInputs, extracted: dict) -> pd.DataFrame:
    """extraction.tsv: one row per scan given to extraction, where its timeseries is cached."""
    return pd.DataFrame([
        {"scan_id": e.scan_id, "cached": e.cached, "n_volumes": e.n_volumes, "n_volumes_kept": e.n_kept,
         "bold": inputs.images[e.scan_id].bold, "confounds": inputs.images[e.scan_id].confounds,
         "cache_file": e.path, "not_extracted": e.skipped or None} for e in extracted.values()
    ])


def leave_out(scans: pd.DataFrame, dataset: str | None) -> pd.DataFrame:
    """Leave-one-dataset-out: exclude one dataset's scans, saying so in scans.tsv."""
    if dataset is None:
        return scans
    known = sorted(scans["dataset"].unique())
    if dataset not in known:
        raise ConfigError(f"config key 'loo_dataset' is '{dataset}', which is not a dataset in the data; known: {known}")
    return exclude(scans, scans["dataset"] == dataset, "left out (leave-one-dataset-out)")


def load_atlas(atlas_plugin: AtlasLoader, dataset_plugin: DatasetLoader) -> Atlas:
    """Most atlases load on their own; an atlas that declares ``needs_data_labels`` is built
    from the dataset's own region labels (``DatasetLoader.region_labels``)."""
    if atlas_plugin.needs_data_labels:
        labels = dataset_plugin.region_labels()
        if labels is None:
            raise ConfigError(
                f"atlas '{atlas_plugin.name}' reads region labels from the data, but dataset "
                f"'{dataset_plugin.name}' provides none; choose a dataset that gives region timeseries "
                "or connectomes with labels, or an atlas with files"
            )
        return _call(f"atlas '{atlas_plugin.name}'", "", atlas_plugin.load_labels, labels)
    return _call(f"atlas '{atlas_plugin.name}'", "", atlas_plugin.load)


def log_exclusions(scans: pd.DataFrame) -> None:
    per = scans.groupby("dataset")["excluded"].agg(["size", "sum"])
    for ds, row in per.iterrows():
        if row["sum"]:
            log.warning("dataset %s: %d of %d scans excluded (reasons in scans.tsv)", ds, row["sum"], row["size"])
    for line in dropped_out(scans) + control_drug_mismatches(scans):
        log.warning(line)
    log.info("scans: %d included, %d excluded", int((~scans["excluded"]).sum()), int(scans["excluded"].sum()))


def dropped_out(scans: pd.DataFrame) -> list[str]:
    """Sentences for datasets and drugs that lost every scan, and datasets left with one subject.

    A whole study vanishing from a pooled estimate changes what the estimate means, so it is
    said in warnings.tsv (and thus the report) and in methods.md, not only in scans.tsv.
    """
    inc = scans[~scans["excluded"]]
    out = []
    for ds, group in scans.groupby("dataset", sort=True):
        if group["excluded"].all():
            reasons = group["exclusion_reason"].value_counts()
            why = "; ".join(f"{n} x {r}" for r, n in reasons.items())
            out.append(f"dataset {ds}: all {len(group)} scans excluded ({why}); it is not part of any estimate")
        elif inc.loc[inc["dataset"] == ds, "subject"].nunique() == 1:
            out.append(f"dataset {ds}: a single subject left; its dataset effect rests on that one person and "
                       "says nothing of how its subjects vary")
    given = scans["condition"] == "drug"  # a control scan's drug column may name its study's drug, or "placebo"
    for drug in sorted(set(scans.loc[given, "drug"]) - set(inc.loc[inc["condition"] == "drug", "drug"])):
        out.append(f"drug {drug}: every scan of every dataset excluded; there is no {drug} effect in the results")
    return out


def control_drug_mismatches(scans: pd.DataFrame) -> list[str]:
    """Datasets whose control scans name a drug none of their drug scans has: the scan table
    asks for the study drug on placebo and baseline rows too, so this is likely a typo or a
    "placebo" label. Pairing is by subject, so the results stand; the warning says so."""
    out = []
    for ds, group in scans.groupby("dataset", sort=True):
        is_drug = group["condition"] == "drug"
        odd = sorted(set(group.loc[~is_drug, "drug"]) - set(group.loc[is_drug, "drug"]))
        if odd and is_drug.any():
            out.append(f"dataset {ds}: its placebo/baseline scans name drug(s) {odd}, which none of its drug scans "
                       f"has ({sorted(set(group.loc[is_drug, 'drug']))}); the drug column of a control scan is the "
                       "study drug. Scans are paired by subject, so the results do not change, but check the table")
    return out


def adjusted_for(result: PoolingResult | None) -> list[str] | None:
    """The covariates a fit's effects are adjusted for: as the model declares them, else as its
    ``covariate:<name>`` rows show (None: no fit, or a model that says nothing either way)."""
    if result is None:
        return None
    if result.adjusted_for is not None:
        return list(result.adjusted_for)
    rows = result.effects["effect"].astype(str)
    named = sorted({e.split(":", 1)[1] for e in rows if e.startswith("covariate:")})
    return named or None


def report_diagnostics(result: PoolingResult) -> bool:
    """Log the fit's warnings and say whether its diagnostics hold: every row of effects.tsv
    and summaries.tsv (``ok``), and the sampler as a whole (``sampler_ok``: e.g. chains not
    converged on a hyperparameter that every effect depends on)."""
    for w in result.warnings:
        log.warning(w)
    good = result.sampler_ok
    flagged = {"effects": result.effects, "summaries": result.tables.get("summaries")}
    for name, table in flagged.items():
        if table is None or "ok" not in table or table["ok"].isna().all():
            continue
        bad = table[~table["ok"].fillna(True).astype(bool)]
        if not len(bad):
            continue
        good = False
        worst = [f"max R-hat {table['r_hat'].max():.3f}" if "r_hat" in table and table["r_hat"].notna().any() else "",
                 f"min bulk ESS {table['ess_bulk'].min():.0f}" if "ess_bulk" in table and table["ess_bulk"].notna().any() else "",
                 f"divergences {int(table['divergences'].max())}" if "divergences" in table
                 and table["divergences"].max() > 0 else ""]
        log.warning("DIAGNOSTICS: %d of %d rows of %s are flagged not ok (%ssee the pooling warnings above, "
                    "column 'ok' and diagnostics.tsv)", len(bad), len(table), name,
                    "".join(f"{w}; " for w in worst if w))
    if not result.sampler_ok:
        log.warning("DIAGNOSTICS: the sampler's own checks failed (see the pooling warnings above and "
                    "diagnostics.tsv): every interval of this fit is in doubt")
    return good


def methods_text(ctx: RunContext, results: RunResults, references: list[str], acting: set[str]) -> str:
    """methods.md: what was analysed and how, in the order a methods section tells it; every
    setting that changes the numbers is in a sentence, and the plugins' parameters follow."""
    plugins, atlas, scans, result = ctx.plugins, results.atlas, results.scans, results.result
    inc = scans[~scans["excluded"]]
    harmonizer = plugins.get("harmonizer")
    level = ctx.cfg.aggregate.level
    lines = [
        "# Methods (generated by megafc)",
        "",
        f"Data: {inc['dataset'].nunique()} datasets, {inc.groupby(['dataset', 'subject']).ngroups} subjects, "
        f"{len(inc)} scans included of {len(scans)} "
        f"({int(scans['excluded'].sum())} excluded; reasons in scans.tsv). "
        f"Drugs: {', '.join(sorted(inc.loc[inc['condition'] == 'drug', 'drug'].unique()))}." + "".join(f" Note: {d[0].upper()}{d[1:]}." for d in dropped_out(scans)),
        f"Quality control: {qc_text(ctx.cfg.qc, scans)}.",
        *([f"Denoising: '{plugins['denoiser'].name}': {plugins['denoiser'].describe()}."]
          if "denoiser" in acting and "denoiser" in plugins else []),
        f"Atlas: {atlas.name} ({atlas.n_regions} regions). {atlas.description}".strip(),
        (f"Connectivity: estimator '{plugins['estimator'].name}' ({plugins['estimator'].describe()}), "
         if "estimator" in acting else "Connectivity: the dataset's own connectomes (no estimator was run), ")
        + f"averaged within and between {level}s (mean Fisher z over each pair's edges).",
        *([f"Harmonisation: '{harmonizer.name}' ({harmonizer.describe()}) applied to the "
           "connectomes before aggregation; QC-FC and derivatives use the connectomes before it."]
          if harmonizer is not None and harmonizes(harmonizer) else []),
        f"Outcomes: {outcomes_text(ctx, results)}",
        f"Pooling: {result.description}",
        *[f"Note: {n}" for n in list(ctx.cfg.get("notes") or [])],
        "",
        "Plugin parameters:",
    ]
    for kind, p in plugins.items():
        lines.append(f"- {kind} `{p.name}`: {p.params()}")
    if references:
        lines += ["", "References (also in references.bib):", *[f"- {ref}" for ref in references]]
    return "\n".join(lines) + "\n"


def qc_text(qc: Any, scans: pd.DataFrame) -> str:
    """The exclusion rules as they were applied (the numbers in scans.tsv follow from them), and
    where a rule could not be checked because the scans do not say what it needs."""
    kept = scans[~scans["excluded"]] if "excluded" in scans else scans  # those the rule let into the analysis

    def unknown(column: str, what: str) -> str:
        n = int(pd.to_numeric(kept[column], errors="coerce").isna().sum()) if column in kept else len(kept)
        return f" (not checked for {n} of the {len(kept)} scans analysed, which have no {what})" if n else ""

    text = (f"scans with mean framewise displacement above {qc.max_mean_fd} mm excluded" + unknown("mean_fd", "mean FD")
            if qc.max_mean_fd is not None else "no limit on mean framewise displacement")
    text += f"; scans with fewer than {qc.min_volumes} volumes excluded" + unknown("n_volumes", "volume count")
    if "censored_fraction" in scans:  # the denoiser's censoring ran (extraction, or given timeseries cleaned)
        text += (f", and those with more than {100 * qc.max_censored_fraction:g}% of their volumes censored by the "
                 f"denoiser or fewer than {qc.min_volumes} left after censoring")
    return text


def outcomes_text(ctx: RunContext, results: RunResults) -> str:
    """Which network pairs were analysed (all, or the ones aggregate.pairs chose) and which
    summary outcomes were fitted beside them, so that a focused analysis does not read as a
    whole-connectome one."""
    from omegaconf import OmegaConf

    agg = results.aggregated
    if agg is None:
        return "none"
    level = ctx.cfg.aggregate.level
    n = agg.pairs.groupby(["network_a", "network_b"]).ngroups
    wanted = OmegaConf.to_container(ctx.cfg.aggregate, resolve=True).get("pairs")
    if wanted is None:
        n_groups = len(agg.pairs.attrs.get("networks") or [])
        text = f"every {level} pair with an edge ({n}" + (f" pairs of {n_groups} {level}s)" if n_groups else " pairs)")
    else:
        chosen = agg.pairs[["network_a", "network_b"]].drop_duplicates()
        text = (f"{n} {level} pairs chosen by aggregate.pairs ("
                + ", ".join(f"{a}-{b}" for a, b in chosen.itertuples(index=False)) + ")")
    members = agg.summary_pairs
    if members is not None and len(members):
        names = list(dict.fromkeys(members["summary"]))
        text += (f", and {len(names)} summary outcomes ({', '.join(names)}): each scan's mean FC over a named set "
                 "of network pairs (members in summary_pairs.tsv), fitted as outcomes of their own, so that their "
                 "intervals carry the correlation between the pairs (how they were pooled: below)")
    return text + "."
