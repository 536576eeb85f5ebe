"""Worker processes die with the process that started them, also when it is killed."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

PARENT = textwrap.dedent("""
    import multiprocessing, os, sys, time
    from megafc.core.processes import die_with_parent

    def worker(parent, protect):
        if protect:
            die_with_parent(parent)
        time.sleep(60)

    if __name__ == "__main__":
        child = multiprocessing.get_context("spawn").Process(target=worker, args=(os.getpid(), sys.argv[1] == "1"))
        child.start()
        with open("child.pid", "w") as f:
            f.write(str(child.pid))
        time.sleep(3)  # the child is up and has run die_with_parent
        os._exit(0)  # as if killed: no clean-up of children
""")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
@pytest.mark.parametrize("protect", [True, False])
def test_a_spawned_worker_dies_with_its_parent(tmp_path, protect):
    """With die_with_parent (megafc-calibrate's worker initializer) the worker ends when its
    parent dies; without it, it lives on (so the test can fail)."""
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    # no pipes: the orphan would hold them open, and run() would wait for it
    subprocess.run([sys.executable, str(script), "1" if protect else "0"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60, cwd=tmp_path, check=True)
    pid = int((tmp_path / "child.pid").read_text())
    try:
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert alive(pid) is not protect
    finally:
        if alive(pid):
            os.kill(pid, 9)
