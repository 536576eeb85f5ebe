"""megafc-calibrate's spawned workers die with it, also when it is killed."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

PARENT = textwrap.dedent("""
    import logging, multiprocessing, os, sys, time
    from concurrent.futures import ProcessPoolExecutor

    def work():
        with open("child.pid", "w") as f:  # written once the initializer has run
            f.write(str(os.getpid()))
        time.sleep(60)

    if __name__ == "__main__":
        from megafc.plugins.reports.calibration import _worker_start
        protect = sys.argv[1] == "1"
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_start if protect else None,
                                   initargs=(logging.WARNING, os.getpid()) if protect else ())
        pool.submit(work)
        deadline = time.monotonic() + 60
        while not os.path.exists("child.pid") and time.monotonic() < deadline:
            time.sleep(0.05)
        os._exit(0)  # as if killed: no clean-up of the pool
""")


def alive(pid: int) -> bool:
    """Running or sleeping (a killed orphan may stay a zombie until init reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
@pytest.mark.parametrize("protect", [True, False])
def test_a_calibration_worker_dies_with_its_parent(tmp_path, protect):
    """With the workers' initializer (_worker_start -> die_with_parent) a worker ends when its
    parent dies mid-replicate; without it, it lives on (so the test can fail)."""
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    # no pipes: the orphan would hold them open, and run() would wait for it
    subprocess.run([sys.executable, str(script), "1" if protect else "0"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120, cwd=tmp_path, check=True)
    pid = int((tmp_path / "child.pid").read_text())
    try:
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert alive(pid) is not protect
    finally:
        if alive(pid):
            os.kill(pid, 9)
