"""Progress lines that reach megafc.log, redirected output and batch logs, not only a terminal.

Samplers draw their progress bars on a terminal; a SLURM log or a redirected run sees nothing
for minutes. ``Heartbeat`` logs a line every few seconds from a background thread while a long
step runs, with the share done and the time left when the step can count its work. Code deep
inside a step names what it is doing with ``stage(...)``; the running heartbeat reports it.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

log = logging.getLogger("megafc")

#: Seconds between heartbeat lines (megafc.log promises a line at least every 15 s).
EVERY = 10.0

_active: list[Heartbeat] = []


class Heartbeat:
    """Context manager: ``with Heartbeat("pooling model") as hb: ...``; ``hb.advance()`` counts work."""

    def __init__(self, what: str, *, every: float | None = None, total: int | None = None,
                 logger: logging.Logger = log) -> None:
        self.what, self.total, self.log = what, total, logger
        self.every = EVERY if every is None else every
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"megafc-heartbeat-{what}", daemon=True)
        self.started = self.stage_started = 0.0

    def advance(self, n: int = 1) -> None:
        """Count ``n`` units of work done (e.g. draws); safe from any thread."""
        self.done += n

    def set_stage(self, what: str, total: int | None = None, announce: bool = True) -> None:
        """Say what the step does now (its counter restarts)."""
        self.what, self.total, self.done = what, total, 0
        self.stage_started = time.perf_counter()
        if announce:
            self.log.info("%s ...", what)

    def line(self) -> str:
        now = time.perf_counter()
        text = f"{self.what}: {now - self.stage_started:.0f} s elapsed"
        if self.total and self.done:
            frac = min(self.done / self.total, 1.0)
            left = (now - self.stage_started) * (1 - frac) / frac
            text += f", {self.done}/{self.total} ({frac:.0%}), about {left:.0f} s left"
        return text

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.log.info(self.line())

    def __enter__(self) -> Heartbeat:
        self.started = self.stage_started = time.perf_counter()
        _active.append(self)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        _active.remove(self)


def running() -> bool:
    """Whether a heartbeat is running (inside a run's stage: a plugin need not start its own)."""
    return bool(_active)


def stage(what: str, total: int | None = None, announce: bool = True) -> Heartbeat | None:
    """Name the current stage of the running heartbeat (logged at once unless ``announce`` is
    False); None when none runs."""
    if not _active:
        if announce:
            log.info("%s ...", what)
        return None
    beat = _active[-1]
    beat.set_stage(what, total, announce)
    return beat
