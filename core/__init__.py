"""megafc.core: the data model and the plugin contract. It imports no plugin.

Plugin authors need only this module::

    from megafc.core import ConnectivityEstimator, hookimpl
"""

from .aggregate import mark_uninformative, mark_unpaired, network_pair_table, paired_differences
from .data import (
    AGGREGATION_LEVELS,
    CONDITIONS,
    CONTROL_CONDITIONS,
    EFFECT_COLUMNS,
    FISHER_Z_MAX_ABS_R,
    SCAN_COLUMNS,
    SYSTEMS,
    Atlas,
    Connectomes,
    DatasetInputs,
    PoolingInputs,
    PoolingResult,
    ScanImages,
    exclude,
    validate_scans,
)
from .errors import ConfigError, InputError, MegafcError, PluginError
from .hookspecs import hookimpl, hookspec
from .fingerprints import fingerprint_file, fingerprint_value
from .pair_sets import with_summaries
from .qc import baseline_only_datasets
from .plugin import (
    AtlasLoader,
    Choice,
    ConnectivityEstimator,
    DatasetLoader,
    Harmonizer,
    Denoiser,
    Plugin,
    PoolingModel,
    Reporter,
)
from .run_folder import write_text_atomic

__all__ = [
    "AGGREGATION_LEVELS", "CONDITIONS", "CONTROL_CONDITIONS", "EFFECT_COLUMNS", "FISHER_Z_MAX_ABS_R", "SCAN_COLUMNS",
    "SYSTEMS", "Atlas", "AtlasLoader", "Choice", "ConfigError", "Connectomes", "ConnectivityEstimator",
    "DatasetInputs", "DatasetLoader", "PoolingInputs", "Denoiser", "Harmonizer", "InputError", "MegafcError", "Plugin",
    "PluginError", "PoolingModel", "PoolingResult", "Reporter", "ScanImages", "baseline_only_datasets", "exclude", "fingerprint_file", "fingerprint_value", "hookimpl", "hookspec",
    "mark_uninformative", "mark_unpaired", "network_pair_table", "paired_differences", "validate_scans", "with_summaries", "write_text_atomic",
]

#: Helpers that moved to ``megafc.stats`` (statistics, not contract); still importable from here.
_MOVED_TO_STATS = ("flag_ok", "sampler_diagnostics", "summarise_draws")


def __getattr__(name: str):
    if name in _MOVED_TO_STATS:
        import warnings

        import megafc.stats

        warnings.warn(f"megafc.core.{name} moved to megafc.stats.{name}", DeprecationWarning, stacklevel=2)
        return getattr(megafc.stats, name)
    raise AttributeError(f"module 'megafc.core' has no attribute '{name}'")
