"""The run's typed config schema, registered with Hydra's ConfigStore together with every
plugin's ``Config`` (one group per plugin kind), and the run config composed from them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from .data import AGGREGATION_LEVELS
from .plugin import Choice
from .qc import QCConfig
from .registry import PluginInfo, Registry


class SpaceMismatch(Choice):
    error = "error"
    warn = "warn"


#: ``network`` or ``subnetwork`` (``megafc.core.AGGREGATION_LEVELS``).
AggregationLevel = Choice("AggregationLevel", [(level, level) for level in AGGREGATION_LEVELS])


class Derivatives(Choice):
    auto = "auto"
    all = "all"
    none = "none"


class Stage(Choice):
    all = "all"
    extract = "extract"


@dataclass
class ExtractionConfig:
    #: Where extracted timeseries are cached (shared by every run and sweep job); null: no cache.
    cache_dir: Optional[str] = "~/.cache/megafc/extraction"
    #: Scans extracted in parallel (joblib); -1 uses every core.
    n_jobs: int = 1
    #: With stage=extract: split the included scans into this many shards (round robin over
    #: the sorted scan ids) and extract only shard number ``shard`` (0-based) into cache_dir.
    #: Sweep it over a cluster with Hydra's submitit launcher:
    #: ``megafc --multirun stage=extract extraction.shards=N 'extraction.shard=range(N)'
    #: hydra/launcher=submitit_slurm``.
    shards: int = 1
    shard: int = 0
    #: A BOLD whose space- entity differs from the atlas's space: error (default) or warn (e.g.
    #: nilearn's FSL-MNI152 Schaefer image on MNI152NLin2009cAsym BOLD, a few mm apart).
    space_mismatch: SpaceMismatch = SpaceMismatch.error


@dataclass
class AggregateConfig:
    #: ``network`` (e.g. Default) or ``subnetwork`` (e.g. DefaultA) pairs.
    level: AggregationLevel = AggregationLevel.network
    #: Only these network pairs (e.g. [[Default, Vis], [Caudate, SomMot]]); null: all. Summaries
    #: are still means over all their member pairs.
    pairs: Optional[list[list[str]]] = None


@dataclass
class RunConfig:
    dataset: Any = MISSING
    atlas: Any = MISSING
    denoiser: Any = MISSING
    estimator: Any = MISSING
    harmonizer: Any = MISSING
    pooling: Any = MISSING
    #: Seeds data simulation and MCMC; recorded in provenance.json.
    seed: int = 0
    aggregate: AggregateConfig = field(default_factory=AggregateConfig)
    #: Summaries (named sets of network pairs) fitted as outcomes of their own, added to the
    #: built-ins: {name: {pairs: [[Default, Vis], ...]} | {systems: [transmodal, unimodal]} |
    #: {networks: [Caudate], systems: [unimodal]}}; see megafc.core.pair_sets.
    summaries: dict[str, Any] = field(default_factory=dict)
    #: Include the built-in summaries (within/between-network, transmodal-unimodal, ...).
    summaries_builtin: bool = True
    qc: QCConfig = field(default_factory=QCConfig)
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    #: Write per-scan timeseries and connectomes as xcp_d-style TSVs under derivatives/:
    #: auto (when extracted from images), all, or none.
    derivatives: Derivatives = Derivatives.auto
    #: Exit non-zero (after writing outputs) when any posterior fails its diagnostics.
    fail_on_bad_diagnostics: bool = False
    #: Figures (matplotlib) in figures/: ``figures.formats`` lists the file formats of every
    #: figure (png, svg, pdf; the report embeds the PNG), ``figures.enabled=false`` (or
    #: ``figures=false``) saves none but the pooling model's predictive checks
    #: (``pooling.predictive_checks=false`` leaves those out); report.html still embeds its own.
    figures: Any = field(default_factory=lambda: {"enabled": True, "formats": ["png"]})
    #: Write report.html (self-contained: data, QC, effects, diagnostics, methods, provenance).
    report: bool = True
    #: Write the posterior draws (posterior.nc, ArviZ InferenceData), when the pooling model has
    #: them; false saves the time and disk of runs read only through their tables (calibration).
    posterior_nc: bool = True
    #: Write network_pairs.tsv (one row per scan and network pair, 8 MB at full size); false for
    #: runs read only through their effect tables (each calibration replicate: 1.9 GB a full run).
    network_pairs_tsv: bool = True
    #: Also (true) or never (false) save the report's figures as SVG, whatever figures.formats says
    #: (kept from earlier versions, where SVG was the default).
    report_svg: Optional[bool] = None
    #: Processes that draw the report's sections side by side (forked, Linux); 1: one process.
    report_workers: int = 2
    #: Leave this dataset out (its scans stay in scans.tsv as excluded, with the reason).
    #: Sweep it for a leave-one-dataset-out analysis: --multirun loo_dataset=null,ds1,ds2,...
    loo_dataset: Optional[str] = None
    #: Sentences about this run's choices that a reader of the results must see (experiment
    #: configs say what they swapped or guessed): logged at the start and written to methods.md.
    notes: list[str] = field(default_factory=list)
    #: ``all``: every stage; ``extract``: only region timeseries extraction into the cache
    #: (one shard of it with extraction.shards/shard), for studies too large for one job.
    stage: Stage = Stage.all
    #: Recompute a run whose directory already holds a complete run of the same config
    #: (otherwise it is skipped, which is how an interrupted sweep resumes).
    rerun: bool = False


def config_node(info: PluginInfo) -> type:
    """A dataclass for Hydra: the plugin's Config plus the ``name`` that selects it."""
    return dataclasses.make_dataclass(
        f"{info.cls.__name__}Config",
        [("name", str, dataclasses.field(default=info.name))],
        bases=(info.cls.Config,),
    )


def _open_mappings(node: Any) -> Any:
    """Let dict-typed fields (e.g. ``dataset.roots``) take new keys: ``dataset.roots={a: /x}``.

    Hydra composes in struct mode, which otherwise refuses any key a default dict lacks.
    """
    from omegaconf import DictConfig, OmegaConf

    for key in list(node.keys()) if isinstance(node, DictConfig) else []:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            if child._metadata.object_type in (dict, None):
                OmegaConf.set_struct(child, False)
            else:
                _open_mappings(child)
    return node


def register_configs(registry: Registry) -> None:
    """Store each plugin's config in Hydra's ConfigStore as ``<kind>/<name>``."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    cs.store(name="megafc_schema", node=RunConfig)
    for info in registry.rows():
        node = _open_mappings(OmegaConf.structured(config_node(info)))
        cs.store(group=info.kind, name=info.name, node=node, provider=info.distribution)


def compose(overrides: list[str] | None = None, registry: Any = None) -> Any:
    """The run config exactly as ``megafc <overrides>`` composes it, for Python callers
    (benchmarks, calibration, notebooks): ``RunContext.create(compose(["seed=1"]))``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from .errors import ConfigError
    from .registry import default_registry

    register_configs(registry or default_registry())
    with initialize_config_module(config_module="megafc.conf", version_base="1.3"):
        try:
            return hydra_compose(config_name="config", overrides=list(overrides or []))
        except (HydraException, OmegaConfBaseException) as exc:  # a bad override: the user's, named
            cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else None
            detail = " ".join(str(cause or exc).split())
            raise ConfigError(f"the config cannot be composed from {list(overrides or [])}: {detail}") from exc


def override_key(override: str) -> tuple[str, str | None]:
    """The config key a command-line override sets and its value: ``a.b=1``, ``+a.b=1`` and
    ``++a.b=1`` give ``("a.b", "1")``; a deletion ``~a.b`` gives ``("a.b", None)``."""
    key, sep, value = override.partition("=")
    return key.lstrip("+~"), (value if sep else None)
