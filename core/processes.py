"""Child processes that die with their parent.

PyMC samples chains in forked processes; if megafc is killed (SIGKILL, a SLURM time limit, an
out-of-memory kill) they would keep sampling as orphans. Inside ``children_die_with_parent()``
every process forked from this one asks the kernel (Linux ``prctl(PR_SET_PDEATHSIG)``) to be
killed when its parent dies; elsewhere it does nothing. Every stage of a run
(``pipeline.stage``) runs inside it, so this holds for any plugin's forked processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

_active = 0  # how many children_die_with_parent() blocks are open (stages nest, runs share a process)
_lock = threading.Lock()
_registered = False
_parent = 0
PR_SET_PDEATHSIG = 1


def _before_fork() -> None:
    global _parent
    _parent = os.getpid()


def _after_fork_in_child() -> None:
    if _active:
        die_with_parent(_parent)


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when its parent (pid ``parent``) dies; for a worker that
    was spawned rather than forked, call it first thing in the worker (its initializer)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)
    except Exception:  # no prctl (not glibc): the child simply lives on, as before
        pass


@contextlib.contextmanager
def children_die_with_parent() -> Iterator[None]:
    """Every process forked while this is open dies with this one. Every stage of a run opens
    it, so a plugin's forked workers (sampler chains, joblib's fork backend) never outlive
    megafc; blocks may nest and overlap across threads."""
    global _active, _registered
    if not sys.platform.startswith("linux"):
        yield
        return
    with _lock:
        if not _registered:
            os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
            _registered = True
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
