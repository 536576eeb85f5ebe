"""What core checks between stages: the run config before anything loads, and every value a
plugin hands back (shapes, finiteness, symmetry), so a plugin's mistake is named where it happens."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .data import EFFECT_COLUMNS, Atlas, PoolingResult
from .errors import ConfigError, InputError, PluginError


def check_run_config(cfg: Any) -> str:
    """Refuse bad run-level config values before anything loads; return the stage to run."""
    from .figures import figure_formats

    # derivatives, aggregate.level, stage and extraction.space_mismatch are Enums in the schema
    # (megafc.core.config): OmegaConf has refused any other value while composing the config
    check_run_keys(cfg)
    if int(cfg.extraction.n_jobs) == 0:
        raise ConfigError("config key 'extraction.n_jobs' is 0; expected a number of parallel jobs >= 1, "
                          "or -1 for one per CPU")
    workers = cfg.get("report_workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"config key 'report_workers' is {workers!r}; expected a whole number of processes >= 1")
    figure_formats(cfg.get("figures"))
    return check_stage(cfg)


def check_run_keys(cfg: Any) -> None:
    """Refuse keys the run config and its sections do not have. Hydra adds any key given as
    ``+key=value`` (its own error for a misspelt key suggests exactly that), so without this
    ``+qc.max_fd=0.1`` ran with no motion limit and said nothing. Plugin sections are checked
    against each plugin's ``Config`` when the plugin is built."""
    import dataclasses
    import difflib

    from .config import AggregateConfig, ExtractionConfig, RunConfig
    from .qc import QCConfig

    for prefix, schema in (("", RunConfig), ("qc.", QCConfig), ("aggregate.", AggregateConfig),
                           ("extraction.", ExtractionConfig)):
        node = cfg if not prefix else cfg.get(prefix[:-1])
        if not hasattr(node, "keys"):
            continue
        known = [f.name for f in dataclasses.fields(schema)]
        for key in sorted(set(node.keys()) - set(known)):
            close = difflib.get_close_matches(key, known, n=1)
            raise ConfigError(f"config key '{prefix}{key}' is not a megafc setting"
                              + (f"; did you mean '{prefix}{close[0]}'?" if close else "")
                              + f" (the {'run' if not prefix else prefix[:-1]} settings are: {', '.join(known)})")


def check_stage(cfg: Any) -> str:
    """The stage to run, with the extraction keys it relies on checked before anything loads."""
    stage = str(cfg.get("stage", "all"))
    ex = cfg.extraction
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


def check_inputs(timeseries: dict | None, connectomes: dict | None, atlas: Atlas, scans: pd.DataFrame,
                 source: str) -> None:
    """Every included scan must come with well-shaped timeseries or a connectome (the extract
    stage has checked that the dataset gave exactly one kind of input)."""
    included = scans.loc[~scans["excluded"], "scan_id"]
    store = timeseries if timeseries is not None else connectomes
    missing = [s for s in included if s not in store]
    if missing:
        raise InputError(f"{source}: no data for included scan(s) {missing[:5]}")
    for scan_id in included:
        arr = np.asarray(store[scan_id])
        if timeseries is not None:
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


def check_result(result: Any, who: str) -> PoolingResult:
    if not isinstance(result, PoolingResult):
        raise PluginError(f"{who} returned {type(result).__name__}, expected a PoolingResult")
    missing = [c for c in EFFECT_COLUMNS if c not in result.effects.columns]
    if missing:
        raise PluginError(f"{who}: effects table lacks column(s) {missing}")
    if result.interval_kind not in ("HDI", "CI", "ETI"):
        raise PluginError(f"{who}: interval_kind is '{result.interval_kind}'; expected HDI, CI or ETI")
    covariates = result.adjusted_for
    if covariates is not None and (isinstance(covariates, str) or not all(isinstance(c, str) for c in covariates)):
        raise PluginError(f"{who}: adjusted_for is {covariates!r}; expected a list of covariate names (or None)")
    for table, described in (result.columns or {}).items():
        if not isinstance(described, dict) or not all(
                isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in described.values()):
            raise PluginError(f"{who}: columns['{table}'] must map column names to (description, units or None); "
                              "columns is keyed by table name first")
    return result
