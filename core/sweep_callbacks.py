"""Hydra callbacks: what happens when a whole sweep has finished.

``CompareWhenSweepEnds`` runs ``megafc-compare`` on the sweep folder once every job has
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


class CompareWhenSweepEnds(Callback):
    """Write ``<sweep dir>/comparison/`` (megafc-compare) at the end of a multirun."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from .compare import compare

        sweep_dir = config.hydra.sweep.dir
        if str(config.get("stage", "all")) == "extract":  # extraction jobs have no effects to compare
            return
        try:
            out = compare(sweep_dir)
        except Exception as exc:  # the jobs' results stand on their own
            log.error("the comparison of %s could not be written (%s: %s); run megafc-compare %s",
                      sweep_dir, type(exc).__name__, exc, sweep_dir)
            return
        log.info("comparison of the sweep written to %s (report.html)", out)
