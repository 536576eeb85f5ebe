"""Python warnings raised during a run, kept as the run's own warnings.

A plugin or library that calls ``warnings.warn`` (nilearn about a region lost in resampling,
numpy about the mean of an empty slice, a third-party plugin about its input) would otherwise
only print to the terminal, which a sweep's or a batch job's user seldom reads. Inside a stage
they are logged under ``megafc``, so megafc.log, warnings.tsv and the report hold them.
Deprecation notices (DeprecationWarning, PendingDeprecationWarning, FutureWarning) are about
code, not about the data, and go to the terminal as before.
"""

from __future__ import annotations

import logging
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple

log = logging.getLogger("megafc")

NOT_ABOUT_DATA = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)

#: Warnings logged from one place (file and line) in one stage; further ones are counted.
MAX_FROM_ONE_PLACE = 3

_lock = threading.Lock()
_active: dict[int, dict[str, int]] = {}  # thread -> place -> warnings seen
_previous: Any = None
#: Python's own display (private in the warnings module; the one in place at import otherwise).
_PYTHONS = getattr(warnings, "_showwarning_orig", warnings.showwarning)


class Raised(NamedTuple):
    """One warning as a reader sees it: its category, the line that raised it (a library's
    warning often names the caller's line, by its ``stacklevel``) and its message's first line
    (a table's cell; libraries add advice on further lines)."""

    category: str
    place: str
    text: str

    @classmethod
    def of(cls, message: Any, category: type[Warning], filename: str, lineno: int) -> Raised:
        first = next((line.strip() for line in str(message).splitlines() if line.strip()), "(no message)")
        return cls(category.__name__, f"{where(filename)}:{lineno}", first)

    def __str__(self) -> str:
        return f"{self.category} at {self.place}: {self.text}"


def where(filename: str) -> str:
    """A warning's file as a reader finds it: relative to site-packages, or its last two parts."""
    parts = Path(filename).parts
    for anchor in ("site-packages", "dist-packages"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1:])
    return "/".join(parts[-2:])


def about_data(category: type[Warning]) -> bool:
    return not issubclass(category, NOT_ABOUT_DATA)


def more_like(n: int, place: str) -> str:
    return f"{n} more warning{'s' * (n != 1)} at {place} like the ones above"


def _show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
          line: Any = None) -> None:
    seen = _active.get(threading.get_ident())
    if seen is None or not about_data(category):
        return (_previous or _PYTHONS)(message, category, filename, lineno, file, line)
    raised = Raised.of(message, category, filename, lineno)
    seen[raised.place] = seen.get(raised.place, 0) + 1
    if seen[raised.place] <= MAX_FROM_ONE_PLACE:
        log.warning("%s", raised)


@contextmanager
def logged_in_this_thread() -> Iterator[None]:
    """Log the Python warnings this thread raises until the block ends (nested blocks share one
    count). Other threads' warnings pass to whatever showed them before."""
    global _previous
    me = threading.get_ident()
    with _lock:
        if warnings.showwarning is not _show:
            _previous, warnings.showwarning = warnings.showwarning, _show
        outermost = me not in _active
        if outermost:
            _active[me] = {}
    try:
        yield
    finally:
        if outermost:
            with _lock:
                seen = _active.pop(me)
                if not _active and warnings.showwarning is _show:
                    warnings.showwarning, _previous = _previous, None
            for place, n in seen.items():
                if n > MAX_FROM_ONE_PLACE:
                    log.warning("%s", more_like(n - MAX_FROM_ONE_PLACE, place))


@contextmanager
def recording() -> Iterator[list[Raised]]:
    """The warnings about data raised in the block, kept in the list it gives (filled as the
    block ends), not shown: for work in worker processes, whose warnings would otherwise reach
    only their own stderr, and for results cached with the warnings that came with them."""
    said: list[Raised] = []
    with warnings.catch_warnings(record=True) as caught:  # the filters stay the process's
        try:
            yield said
        finally:
            said.extend(Raised.of(w.message, w.category, w.filename, w.lineno) for w in caught
                        if about_data(w.category))
