"""Child processes that die with their parent.

PyMC samples chains in forked processes; if megafc is killed (SIGKILL, a SLURM time limit, an
out-of-memory kill) they would keep sampling as orphans. Inside ``children_die_with_parent()``
every process forked from this one asks the kernel (Linux ``prctl(PR_SET_PDEATHSIG)``) to be
killed when its parent dies. Elsewhere it does nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator

_active = False
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
    global _active, _registered
    if not sys.platform.startswith("linux"):
        yield
        return
    if not _registered:
        os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
        _registered = True
    _active = True
    try:
        yield
    finally:
        _active = False
