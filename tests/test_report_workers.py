"""The report's sections drawn in forked workers: same page, logs and warnings come home."""

from __future__ import annotations

import logging
import os

import pytest

from megafc.plugins.reports.workers import can_fork, run_in_workers

pytestmark = pytest.mark.skipif(not can_fork(), reason="sections are drawn in forked workers on Linux only")

PARENT = os.getpid()


def make_task(i: int):
    def task():
        logging.getLogger("megafc").warning("section %d drawn", i)
        return i * 10, os.getpid()
    return task


def test_results_in_task_order_from_other_processes_and_logs_replayed_here(caplog):
    caplog.set_level(logging.INFO, logger="megafc")
    tasks = [make_task(i) for i in range(5)]
    out = run_in_workers(tasks, workers=2, order=[4, 3, 2, 1, 0])
    assert [r for r, _ in out] == [0, 10, 20, 30, 40]
    pids = {pid for _, pid in out}
    assert PARENT not in pids and 1 <= len(pids) <= 2
    drawn = [r for r in caplog.records if r.getMessage().startswith("section ")]
    assert sorted(r.getMessage() for r in drawn) == [f"section {i} drawn" for i in range(5)]
    # replayed in this thread, where a run's stage collects warnings for warnings.tsv
    assert all(r.thread == drawn[0].thread for r in drawn) and drawn[0].levelno == logging.WARNING


def test_one_worker_draws_here():
    out = run_in_workers([make_task(0), make_task(1)], workers=1)
    assert {pid for _, pid in out} == {PARENT}


def test_a_dead_worker_is_reported_and_its_sections_drawn_here(caplog):
    def dies_in_a_worker():
        if os.getpid() != PARENT:
            os._exit(3)
        return "drawn here", os.getpid()

    out = run_in_workers([make_task(0), dies_in_a_worker, make_task(2)], workers=2, order=[1, 0, 2])
    assert out[1] == ("drawn here", PARENT)
    assert [r for r, _ in (out[0], out[2])] == [0, 20]
    assert any("a worker process died" in r.getMessage() for r in caplog.records)
