"""The run directory: staged in a hidden folder inside it, locked while a run writes it, and
moved into place only when complete, so a folder never holds half a run or two runs' files."""

from __future__ import annotations

import errno
import json
import logging
import os
import platform
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import InputError

#: Written last: its presence means the run directory is complete.
COMPLETION_MARKER = "provenance.json"


#: Held (flock) by the run writing a folder, so a second run into it refuses instead of mixing.
LOCK_FILE = ".megafc.lock"

#: Lists the entries the last committed run wrote, so a rerun removes the ones it does not rewrite.
MANIFEST_FILE = ".megafc-outputs.json"


class FolderBusyError(InputError):
    """Another megafc process is writing the same output folder."""


class StagedRun:
    """Collect outputs in ``<run_dir>/.megafc-staging-*`` and move them in on ``commit``.

    Used as a context manager: on an exception the staging folder is removed, so a failed
    run leaves no result files behind (only Hydra's own config and log). The folder is locked
    for the run's lifetime: a second run into it is refused rather than allowed to mix its files
    with the first one's. On commit, files of an earlier run that this one does not rewrite are
    removed, so a folder never holds two runs' results.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self._created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_folder(self.run_dir)
        try:
            for stale in self.run_dir.glob(".megafc-staging-*"):  # left by a killed run: never counts
                shutil.rmtree(stale, ignore_errors=True)
            self.staging = Path(tempfile.mkdtemp(prefix=".megafc-staging-", dir=self.run_dir))
            hydra_dir = self.run_dir / ".hydra"
            if hydra_dir.is_dir():  # this run's composed config, kept with its results
                shutil.copytree(hydra_dir, self.staging / ".hydra")
        except BaseException:
            self._release()
            raise
        self.committed = False

    def path(self, relative: str) -> Path:
        p = self.staging / relative
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write_table(self, relative: str, table: pd.DataFrame) -> Path:
        p = self.path(relative)
        table.to_csv(p, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
        return p

    def write_json(self, relative: str, data: Any) -> Path:
        p = self.path(relative)
        p.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
        return p

    def write_text(self, relative: str, text: str) -> Path:
        p = self.path(relative)
        p.write_text(text)
        return p

    def commit(self) -> Path:
        """Move every staged file into the run directory; the completion marker goes last.

        The old marker goes first and an earlier run's leftovers next, so an interrupted
        commit leaves a folder that is visibly incomplete, never one that looks complete.
        """
        entries = sorted(self.staging.iterdir(), key=lambda p: p.name == COMPLETION_MARKER)
        names = [e.name for e in entries]
        _remove(self.run_dir / COMPLETION_MARKER)
        for old in previous_outputs(self.run_dir):
            if old not in names:
                _remove(self.run_dir / old)
        (self.run_dir / MANIFEST_FILE).write_text(json.dumps(sorted(names), indent=1) + "\n")
        for entry in entries:
            target = self.run_dir / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)
        self.staging.rmdir()
        self.committed = True
        self._release()
        return self.run_dir

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        if self._created:  # a folder this run made and leaves empty goes too, while still locked
            try:
                if {p.name for p in self.run_dir.iterdir()} <= {LOCK_FILE}:
                    (self.run_dir / LOCK_FILE).unlink(missing_ok=True)
                    self.run_dir.rmdir()  # fails, harmlessly, if anything appeared meanwhile
            except OSError:
                pass
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None

    def __enter__(self) -> StagedRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.committed:
            self.discard()


def previous_outputs(run_dir: Path) -> list[str]:
    """Top-level entries the last committed run in ``run_dir`` wrote (empty if none recorded)."""
    try:
        names = json.loads((run_dir / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [n for n in names if isinstance(n, str) and n and "/" not in n and n not in (".", "..")]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _lock_folder(run_dir: Path):
    """An exclusive, non-blocking lock on ``run_dir``; released by the OS if the process dies."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks; runs are still staged and atomic
        return None
    fh = open(run_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            # a file system without locks (Lustre noflock, NFS without lockd): run unlocked
            logging.getLogger("megafc").warning("cannot lock %s (%s); concurrent runs into it are not detected",
                                                run_dir, exc.strerror)
            fh.close()
            return None
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        fh.close()
        raise FolderBusyError(
            f"output folder {run_dir} is being written by another megafc run ({holder}); two runs into one "
            "folder would mix their results. Wait for it to finish or choose another folder "
            "(hydra.run.dir=...)"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {platform.node()}, started {datetime.now(timezone.utc).isoformat(timespec='seconds')}\n")
    fh.flush()
    return fh


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename it
    into place: a concurrent reader (or a run writing the same file) never sees half a file,
    and a failed write leaves nothing behind."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
