"""Every megafc hook, in one place: the plugin author's reference.

Plugins are discovered through the ``megafc`` entry-point group: an entry point names a module
(or object) whose functions are marked with ``megafc.core.hookimpl`` and named after the hooks
below. megafc's own built-in plugins register exactly this way.

Registration hooks return plugin *classes* (subclasses of the base classes in
``megafc.core``); their results from every plugin are gathered into one registry, and a name
registered twice within a kind is an error. Lifecycle hooks are called in pipeline order, with
keyword arguments; they observe and may add outputs but return nothing. Hooks given a
``staging_dir`` may write files there (they become outputs of the run); it is ``""`` when the
stages run outside a run (``megafc.core.pipeline.run_stages``, as benchmarks do): write nothing then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import pandas as pd

    from .data import Connectomes, PoolingResult
    from .report import ReportSection
    from .plugin import (
        AtlasLoader,
        ConnectivityEstimator,
        DatasetLoader,
        Denoiser,
        Harmonizer,
        PoolingModel,
        Reporter,
    )

PROJECT_NAME = "megafc"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -- registration: one hook per plugin kind -------------------------------------------------


@hookspec
def megafc_datasets() -> list[type[DatasetLoader]]:
    """Return dataset loader classes (subclasses of ``megafc.core.DatasetLoader``).

    Called once when the registry is built. Each class is selectable as
    ``megafc dataset=<cls.name>``; its ``Config`` dataclass becomes the ``dataset`` config node.
    """


@hookspec
def megafc_atlases() -> list[type[AtlasLoader]]:
    """Return atlas classes (subclasses of ``megafc.core.AtlasLoader``), ``atlas=<name>``."""


@hookspec
def megafc_denoisers() -> list[type[Denoiser]]:
    """Return denoising strategies (subclasses of ``megafc.core.Denoiser``), ``denoiser=<name>``."""


@hookspec
def megafc_estimators() -> list[type[ConnectivityEstimator]]:
    """Return connectivity estimators (subclasses of ``megafc.core.ConnectivityEstimator``).

    Selected with ``estimator=<name>``. The public example for plugin authors::

        class PartialCorrelation(ConnectivityEstimator):
            name = "partial"

            def estimate(self, timeseries):
                ...  # (n_volumes, n_regions) -> symmetric (n_regions, n_regions)

        @hookimpl
        def megafc_estimators():
            return [PartialCorrelation]
    """


@hookspec
def megafc_harmonizers() -> list[type[Harmonizer]]:
    """Return site harmonisation steps (subclasses of ``megafc.core.Harmonizer``),
    ``harmonizer=<name>``; applied to the connectomes between estimation and aggregation."""


@hookspec
def megafc_pooling_models() -> list[type[PoolingModel]]:
    """Return pooling models (subclasses of ``megafc.core.PoolingModel``), ``pooling=<name>``."""


@hookspec
def megafc_reporters() -> list[type[Reporter]]:
    """Return reporter classes (subclasses of ``megafc.core.Reporter``): what writes a run's
    report and figures (scope ``run``), a sweep's comparison (``sweep``) or a calibration's
    report (``calibration``). Every installed reporter of a scope is called."""


@hookspec
def megafc_report_sections(config: Any) -> list[ReportSection]:
    """Return extra sections for ``report.html`` (``megafc.core.report.ReportSection``).

    Each section has an ``ident`` (the HTML anchor), a ``title``, ``build(run) -> html`` that
    reads the run's tables from ``run`` (a ``megafc.core.report.Run``) and may save figures with
    ``megafc.core.report.save_figure``, ``after``: the ident of the section it follows
    (default ``effects``), and ``references``: what its reader should cite (they join the run's
    methods.md, provenance.json and references.bib). ``config`` is the run's resolved config
    (None outside a run), so a plugin can add a section only to the runs it concerns; an
    implementation may leave the argument out. A section that fails becomes a visible note,
    never a lost report.
    """


# -- lifecycle: called in pipeline order ------------------------------------------------------


@hookspec
def megafc_before_run(config: Any, staging_dir: str) -> None:
    """Called after plugins are instantiated, before any data is loaded.

    ``config`` is the resolved run config (an OmegaConf DictConfig, read-only);
    ``staging_dir`` is the temporary folder whose files become the run's outputs.
    """


@hookspec
def megafc_before_stage(stage: str, config: Any) -> None:
    """Called as each stage starts: ``load``, ``extract``, ``estimate``, ``aggregate``, ``pool``,
    ``derive`` (``megafc.core.pipeline.STAGE_NAMES``), then, in a run that writes its folder,
    ``write``."""


@hookspec
def megafc_after_stage(stage: str, seconds: float) -> None:
    """Called when a stage has finished, with its wall time in seconds."""


@hookspec
def megafc_on_stage_error(stage: str, error: BaseException) -> None:
    """Called when a stage fails, before the error is raised (and ``megafc_on_error`` called)."""


@hookspec
def megafc_after_scans(scans: pd.DataFrame, staging_dir: str) -> None:
    """Called with the final scan table (exclusions marked) before connectivity is estimated."""


@hookspec
def megafc_after_connectivity(
    connectomes: Connectomes, scans: pd.DataFrame, staging_dir: str
) -> None:
    """Called once every included scan has a connectome (e.g. to save extra matrices)."""


@hookspec
def megafc_after_aggregation(pairs: pd.DataFrame, staging_dir: str) -> None:
    """Called with the tidy network-pair table (one row per scan and network pair)."""


@hookspec
def megafc_after_fit(result: PoolingResult, staging_dir: str) -> None:
    """Called with the pooling result before outputs are written (e.g. to add figures)."""


@hookspec
def megafc_after_run(run_dir: str) -> None:
    """Called after the outputs were moved into ``run_dir``."""


@hookspec
def megafc_on_error(error: BaseException, config: Any) -> None:
    """Called when a run fails, before the staging folder is removed."""
