"""Draw a report's sections in forked worker processes: the report's cost is matplotlib's
Python (axes, ticks, text), which threads cannot share out, and a run's report of ~13 figures
took 6-7 s in one process on 2 cores.

The workers are forked, so they see the run's tables and the sections' builders (closures of
third-party plugins included) without pickling them; only each section's HTML, the figure
files it made and its log records come back. The records are logged again in the calling
thread, in the sections' order, so the log and warnings.tsv hold them as if the sections had
run there. Where fork is not the platform's safe default (macOS, Windows), with one worker,
when a worker dies or when a section has not come back after ``timeout`` seconds, the
remaining sections are built in this process.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Sequence

log = logging.getLogger("megafc")

#: In a worker: the tasks of its pool (inherited through fork, never pickled) and the log
#: records of the task it runs.
_TASKS: Sequence[Callable[[], Any]] = ()
_RECORDS: list[dict[str, Any]] = []

#: Seconds to wait for one section before drawing the rest in this process.
TIMEOUT = 600.0


class _Keep(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _RECORDS.append({"name": record.name, "levelno": record.levelno, "levelname": record.levelname,
                         "msg": record.getMessage(), "args": None, "created": record.created, "msecs": record.msecs,
                         "exc_text": logging.Formatter().formatException(record.exc_info) if record.exc_info else None,
                         "stack_info": record.stack_info,
                         "pathname": record.pathname, "lineno": record.lineno, "funcName": record.funcName})


def _init_worker(tasks: Sequence[Callable[[], Any]], filters: list) -> None:
    """Keep this pool's tasks; log only into _RECORDS (the parent replays them into its own
    files and console); the warning filters the caller had."""
    global _TASKS
    _TASKS = tasks
    warnings.filters[:] = filters
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # terminate() ends a worker even inside C code
    keep = _Keep()
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for logger in loggers:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        if logger is loggers[0] or not logger.propagate:  # records that never reach the root
            logger.addHandler(keep)


def _run(index: int) -> tuple[Any, list[dict[str, Any]]]:
    _RECORDS.clear()
    result = _TASKS[index]()
    return result, list(_RECORDS)


def can_fork() -> bool:
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def run_in_workers(tasks: Sequence[Callable[[], Any]], workers: int, order: Sequence[int] | None = None,
                   timeout: float = TIMEOUT) -> list[Any]:
    """Each task's return value (picklable), in the tasks' order. ``order``: the order in which
    to start them (longest first keeps the workers evenly busy). Tasks must not raise."""
    if workers <= 1 or len(tasks) <= 1 or not can_fork():
        return [task() for task in tasks]
    order = list(order) if order is not None else list(range(len(tasks)))
    done: dict[int, tuple[Any, list[dict[str, Any]]]] = {}
    filters = list(warnings.filters)
    pool = None
    try:
        with warnings.catch_warnings():
            # Python >= 3.12 warns about fork in a process with threads (the heartbeat, idle
            # sampler pools); the workers only draw, log into a list and exit.
            warnings.simplefilter("ignore", DeprecationWarning)
            pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), initializer=_init_worker,
                                       initargs=(tasks, filters), mp_context=multiprocessing.get_context("fork"))
            futures = {i: pool.submit(_run, i) for i in order}
        for i in order:
            done[i] = futures[i].result(timeout=timeout)
    except BrokenProcessPool as exc:
        log.warning("report: a worker process died (%s); drawing the remaining sections in this process", exc)
    except FutureTimeout:
        log.warning("report: a section took over %.0f s in a worker process; drawing the remaining sections in "
                    "this process", timeout)
        _stop(pool)  # a hung worker would block the exit
    except BaseException:  # Ctrl-C, SIGTERM: the run's staging folder is removed next, so no
        _stop(pool)  # worker may go on drawing into it
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    results = []
    for i in range(len(tasks)):
        if i in done:
            result, records = done[i]
            for rec in records:
                logging.getLogger(rec["name"]).handle(logging.makeLogRecord(rec))
        else:
            result = tasks[i]()
        results.append(result)
    return results


def _stop(pool: ProcessPoolExecutor | None, wait: float = 5.0) -> None:
    """Terminate a pool's worker processes and wait (briefly) until they are gone."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(wait)
        if process.is_alive():  # stuck where even SIGTERM does not reach
            process.kill()
            process.join(wait)
