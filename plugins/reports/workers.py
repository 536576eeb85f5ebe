"""Draw a report's sections in forked worker processes: the report's cost is matplotlib's
Python (axes, ticks, text), which threads cannot share out, and a run's report of ~13 figures
took 6-7 s in one process on 2 cores.

The workers are forked, so they see the run's tables and the sections' builders (closures of
third-party plugins included) without pickling them; only each section's HTML, the figure
files it made and its log records come back. The records are logged again in the calling
thread, so the log and warnings.tsv hold them as if the sections had run there. Where fork is
not the platform's safe default (macOS, Windows), with one worker, or when a worker dies, the
sections are built in this process.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Sequence

log = logging.getLogger("megafc")

#: The tasks of the pool being run, set before the workers are forked (they inherit it).
_TASKS: Sequence[Callable[[], Any]] = ()
#: Log records of the task running in this worker.
_RECORDS: list[dict[str, Any]] = []


class _Keep(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _RECORDS.append({"name": record.name, "levelno": record.levelno, "levelname": record.levelname,
                         "msg": record.getMessage(), "args": None,
                         "exc_text": logging.Formatter().formatException(record.exc_info) if record.exc_info else None,
                         "pathname": record.pathname, "lineno": record.lineno, "funcName": record.funcName})


def _init_worker() -> None:
    """Log only into _RECORDS (not into the parent's files and console, which it replays)."""
    for logger in [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                           if isinstance(lg, logging.Logger)]:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
    logging.getLogger().addHandler(_Keep())


def _run(index: int) -> tuple[Any, list[dict[str, Any]]]:
    _RECORDS.clear()
    result = _TASKS[index]()
    return result, list(_RECORDS)


def can_fork() -> bool:
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def run_in_workers(tasks: Sequence[Callable[[], Any]], workers: int, order: Sequence[int] | None = None) -> list[Any]:
    """Each task's return value (picklable), in the tasks' order. ``order``: the order in which
    to start them (longest first keeps the workers evenly busy). Tasks must not raise."""
    global _TASKS
    if workers <= 1 or len(tasks) <= 1 or not can_fork():
        return [task() for task in tasks]
    order = list(order) if order is not None else list(range(len(tasks)))
    results: dict[int, Any] = {}
    _TASKS = tasks
    try:
        with warnings.catch_warnings():
            # Python >= 3.12 warns about fork in a process with threads (sampler pools that
            # are idle by now); the workers only draw and exit.
            warnings.simplefilter("ignore", DeprecationWarning)
            with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), initializer=_init_worker,
                                     mp_context=multiprocessing.get_context("fork")) as pool:
                futures = {i: pool.submit(_run, i) for i in order}
                for i in order:
                    result, records = futures[i].result()
                    for rec in records:
                        logging.getLogger(rec["name"]).handle(logging.makeLogRecord(rec))
                    results[i] = result
    except BrokenProcessPool as exc:
        log.warning("report: a worker process died (%s); drawing the remaining sections in this process", exc)
    finally:
        _TASKS = ()
    return [results[i] if i in results else tasks[i]() for i in range(len(tasks))]
