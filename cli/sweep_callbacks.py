"""Hydra callbacks: what a sweep's launching process does as the sweep starts and when it has finished.

``CompareWhenSweepEnds`` runs every ``sweep`` reporter (the built-in one is what
``megafc-compare`` runs) on the sweep folder once every job has
returned, so an experiment that is a sweep (e.g. ``experiment=girn2026``: four denoising
pipelines x two aggregation levels) ends with its comparison report, as one command. Hydra
calls it in the launching process after the launcher (basic, joblib or submitit) has gathered
every job; a failing comparison is logged, never turned into a failed sweep.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback

log = logging.getLogger("megafc")


class MarkSweepLauncher(Callback):
    """Tell megafc that this process launches a sweep, however the sweep was asked for
    (``--multirun``, or ``hydra.mode=MULTIRUN`` in an experiment config): a SIGTERM to it is
    then handed on to the jobs its launcher runs in worker processes."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from megafc.cli import app

        app.sweeping = True


class CompareWhenSweepEnds(Callback):
    """Call the sweep reporters (the built-in writes ``<sweep dir>/comparison/``, as
    ``megafc-compare``) at the end of a multirun."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from pathlib import Path

        from megafc.core.outputs import write_reports
        from megafc.core.registry import default_registry

        sweep_dir = config.hydra.sweep.dir
        if str(config.get("stage", "all")) == "extract":  # extraction jobs have no effects to compare
            return
        for out in write_reports(default_registry(), "sweep", Path(sweep_dir)):  # failures are logged there
            log.info("the sweep's comparison written to %s", out)
