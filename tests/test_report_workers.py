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
    assert [r.getMessage() for r in drawn] == [f"section {i} drawn" for i in range(5)]
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


def test_concurrent_calls_keep_their_own_tasks():
    """Two threads drawing two reports at once: each gets its own sections back."""
    from concurrent.futures import ThreadPoolExecutor

    def tasks(tag):
        return [(lambda i=i: (tag, i)) for i in range(4)]

    with ThreadPoolExecutor(2) as threads:
        for _ in range(5):
            a, b = threads.submit(run_in_workers, tasks("A"), 2), threads.submit(run_in_workers, tasks("B"), 2)
            assert a.result() == [("A", i) for i in range(4)] and b.result() == [("B", i) for i in range(4)]


def test_a_hung_section_is_drawn_here_after_the_timeout(caplog):
    import time

    def hangs_in_a_worker():
        if os.getpid() != PARENT:
            time.sleep(60)
        return "drawn here", os.getpid()

    started = time.perf_counter()
    out = run_in_workers([hangs_in_a_worker, make_task(1)], workers=2, timeout=2.0)
    assert out[0] == ("drawn here", PARENT) and out[1][0] == 10
    assert time.perf_counter() - started < 30
    assert any("took over 2 s in a worker" in r.getMessage() for r in caplog.records)


def test_records_are_replayed_in_the_sections_order(caplog):
    caplog.set_level(logging.INFO, logger="megafc")
    run_in_workers([make_task(i) for i in range(4)], workers=2, order=[3, 2, 1, 0])
    drawn = [r.getMessage() for r in caplog.records if r.getMessage().startswith("section ")]
    assert drawn == [f"section {i} drawn" for i in range(4)]


def test_an_interrupted_report_leaves_no_worker_drawing(tmp_path, monkeypatch):
    """Ctrl-C while the workers draw: they are stopped before the run removes its staging
    folder, so none goes on writing into it (they once drew 11 figures into a deleted folder)."""
    import time
    from concurrent.futures import Future

    def draws_late(i):
        def task():
            time.sleep(1.5)
            (tmp_path / f"figure-{i}.png").write_text("drawn")
            return i
        return task

    def interrupted(self, timeout=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(Future, "result", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_in_workers([draws_late(i) for i in range(4)], workers=2)
    time.sleep(2.5)
    assert not list(tmp_path.iterdir()), "a worker went on drawing after the run was interrupted"
