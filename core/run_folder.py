"""The run directory: staged in a hidden folder inside it, locked while a run writes it, and
moved into place only when complete, so a folder never holds half a run or two runs' files."""

from __future__ import annotations

import contextlib
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

#: Hydra's record of a run (``.hydra/``: config, overrides) goes in with the run's results, so a
#: failed, refused or skipped rerun never leaves its own record beside an earlier run's results.
HYDRA_RECORD = ".hydra"
_INCOMING_HYDRA = ".megafc-hydra-"


def incoming_hydra_record(pid: int | None = None) -> str:
    """Where Hydra writes a starting run's record (``hydra.output_subdir``): one folder per
    process, so two runs started into the same folder never write over each other's."""
    return f"{_INCOMING_HYDRA}{os.getpid() if pid is None else pid}"


def settle_hydra_record(run_dir: str | os.PathLike[str]) -> None:
    """After a command-line run, whatever its end: its incoming Hydra record is dropped where the
    folder holds a committed run (the run's own went in with its results; a failed or skipped
    rerun's must not replace the record of the results there), and becomes ``.hydra`` where the
    folder holds no results (a failed first run says how it was started, as Hydra's would)."""
    run_dir = Path(run_dir)
    incoming = run_dir / incoming_hydra_record()
    if not incoming.is_dir():
        return
    try:
        lock = _lock_folder(run_dir)
    except FolderBusyError:  # a run is writing the folder (this one was refused): its record is the one
        shutil.rmtree(incoming, ignore_errors=True)
        return
    try:
        if read_manifest(run_dir)[0]:
            shutil.rmtree(incoming, ignore_errors=True)
            return
        shutil.rmtree(run_dir / HYDRA_RECORD, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.replace(incoming, run_dir / HYDRA_RECORD)
    finally:
        _unlock(lock)


def hydra_records(run_dir: Path) -> list[Path]:
    """A job folder's Hydra records, the settled one first: a job killed before it ended (no
    ``.hydra`` yet) still has the one Hydra wrote as it started."""
    return [p for p in [run_dir / HYDRA_RECORD, *sorted(run_dir.glob(f"{_INCOMING_HYDRA}*"))] if p.is_dir()]


def _dead_incoming(run_dir: Path) -> list[Path]:
    """Incoming Hydra records of processes that no longer run (a killed run's)."""
    out = []
    for path in run_dir.glob(f"{_INCOMING_HYDRA}*"):
        pid = path.name[len(_INCOMING_HYDRA):]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            out.append(path)
        except OSError:  # alive, someone else's
            pass
    return out


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

    def __init__(self, run_dir: str | os.PathLike[str], kind: str = "run") -> None:
        self.run_dir = Path(run_dir)
        #: What the folder holds (``run``, ``comparison``, ``calibration``): a folder holding
        #: one kind is never replaced by another (a calibration's --out pointed at a run).
        self.kind = kind
        self._created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_folder(self.run_dir)
        try:
            held = manifest_kind(self.run_dir)
            if held is not None and held != kind:
                raise InputError(
                    f"{self.run_dir} holds a megafc {held}'s results ({self.run_dir / MANIFEST_FILE}); writing a "
                    f"{kind} there would replace them. Choose another folder")
            for stale in [*self.run_dir.glob(".megafc-staging-*"), *self.run_dir.glob(".megafc-previous-*"),
                          *_dead_incoming(self.run_dir)]:
                shutil.rmtree(stale, ignore_errors=True)  # left by a killed run: never counts
            self.staging = Path(tempfile.mkdtemp(prefix=".megafc-staging-", dir=self.run_dir))
            incoming = self.run_dir / incoming_hydra_record()
            hydra_dir = incoming if incoming.is_dir() else self.run_dir / HYDRA_RECORD
            if hydra_dir.is_dir():  # this run's composed config, kept with its results
                shutil.copytree(hydra_dir, self.staging / HYDRA_RECORD)
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

    def check_room(self, names: list[str]) -> None:
        """Refuse an entry in the way of ``names`` that an earlier megafc run here did not write (a
        user's file, an older version's results): ``commit`` checks every entry, and a run checks
        the ones it will surely write as it starts, not after an hour of sampling."""
        owned = set(read_manifest(self.run_dir)[0]) | {HYDRA_RECORD}  # Hydra's record goes into every run
        for name in names:
            target = self.run_dir / name
            if (target.exists() or target.is_symlink()) and name not in owned:
                raise InputError(
                    f"{target} is in the way of this run's results: it was not written by an earlier megafc "
                    f"run here (it is not listed in {self.run_dir / MANIFEST_FILE}), so megafc will not replace "
                    "it. Move it away or choose another output folder (hydra.run.dir=...)")

    def commit(self) -> Path:
        """Move every staged entry into the run directory; the completion marker goes last.

        Nothing is moved before every entry is known to fit: a name in the way that an earlier
        run did not write (a user's file or link) is an error naming it. The earlier run's
        entries are renamed aside first (its marker first, so an interrupted commit leaves a
        folder that is visibly incomplete); if a move fails, what was moved is moved back and the
        earlier run is as it was. Once the new entries are in, the files a user put inside the
        earlier run's folders (e.g. ``figures/``; files that run did not write) are moved into
        the new ones, and only then is the earlier run removed. Ctrl-C and SIGTERM wait until the
        moves are done.
        """
        entries = sorted(self.staging.iterdir(), key=lambda p: p.name == COMPLETION_MARKER)
        names = [e.name for e in entries]
        previous, previous_files = read_manifest(self.run_dir)
        self.check_room(names)
        written = _files_under(self.staging)
        ours = set(previous_files or ())
        users = [] if previous_files is None else [
            f for name in previous for f in _files_under(self.run_dir / name, prefix=name) if f not in ours]
        kept_in = sorted({Path(f).parts[0] for f in users} - set(names))  # folders kept for a user's files
        replaced = [n for n in dict.fromkeys([COMPLETION_MARKER, *sorted(set(previous) - set(names)), *names])
                    if (self.run_dir / n).exists() or (self.run_dir / n).is_symlink()]
        manifest = self.run_dir / MANIFEST_FILE
        old_manifest = manifest.read_text() if manifest.exists() else None
        aside = Path(tempfile.mkdtemp(prefix=".megafc-previous-", dir=self.run_dir))
        moved_aside: list[str] = []
        moved_in: list[str] = []
        with _signals_held():
            try:
                for name in replaced:
                    os.replace(self.run_dir / name, aside / name)
                    moved_aside.append(name)
                write_text_atomic(manifest, json.dumps({"kind": self.kind, "entries": sorted({*names, *kept_in}),
                                                        "files": written}, indent=1) + "\n")
                for entry in entries:
                    os.replace(entry, self.run_dir / entry.name)
                    moved_in.append(entry.name)
            except BaseException:
                for name in reversed(moved_in):  # undo: the new entries back to staging, the old ones back
                    os.replace(self.run_dir / name, self.staging / name)
                for name in reversed(moved_aside):
                    os.replace(aside / name, self.run_dir / name)
                if old_manifest is None:
                    manifest.unlink(missing_ok=True)
                else:
                    write_text_atomic(manifest, old_manifest)
                if not any(aside.iterdir()):
                    aside.rmdir()
                raise
            self._return_user_files(users, aside)
        gone = sorted(set(previous) - set(names) - set(kept_in))
        if previous:
            logging.getLogger("megafc").info(
                "%s: the earlier run's results were replaced%s%s", self.run_dir,
                f"; not written by this run and removed: {', '.join(gone)}" if gone else "",
                f"; {len(users)} file(s) of your own in its folders kept" if users else "")
        self.staging.rmdir()
        self.committed = True
        self._release()
        return self.run_dir

    def _return_user_files(self, users: list[str], aside: Path) -> None:
        """Move a user's files from the earlier run's folders (now aside) into the new ones, then
        remove what is left of the earlier run. A file that cannot be moved stays, with the
        others, in a visible folder the log names (never in a hidden one a later run removes)."""
        try:
            for relative in users:
                target = self.run_dir / relative
                if target.exists() or target.is_symlink():  # this run wrote a file of that name
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(aside / relative, target)
        except OSError as exc:
            kept = aside.with_name(f"megafc-kept-files-{aside.name.rsplit('-', 1)[-1]}")
            os.replace(aside, kept)
            logging.getLogger("megafc").warning(
                "%s: could not move your own files back into the new results (%s); the earlier run's folders, "
                "with them, are in %s", self.run_dir, exc, kept)
            return
        shutil.rmtree(aside, ignore_errors=True)

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
        _unlock(self._lock)
        self._lock = None

    def __enter__(self) -> StagedRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.committed:
            self.discard()


def read_manifest(run_dir: Path) -> tuple[list[str], list[str] | None]:
    """(top-level entries, every file) the last committed run in ``run_dir`` wrote; the files
    are None where the manifest predates their listing, entries empty where there is none."""
    try:
        data = json.loads((run_dir / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return [], None
    files = None
    if isinstance(data, dict):
        files = [f for f in data.get("files") or [] if isinstance(f, str)]
        data = data.get("entries") or []
    if not isinstance(data, list):
        return [], None
    return [n for n in data if isinstance(n, str) and n and "/" not in n and n not in (".", "..")], files


def manifest_kind(run_dir: Path) -> str | None:
    """What the last committed megafc output in ``run_dir`` was (None: none). Manifests of
    earlier versions do not say: their entries tell (a calibration's table, a comparison's)."""
    try:
        data = json.loads((run_dir / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict):
        return data.get("kind")
    entries = set(data) if isinstance(data, list) else set()
    if "calibration.tsv" in entries:
        return "calibration"
    if "robustness.tsv" in entries:
        return "comparison"
    return "run" if COMPLETION_MARKER in entries else None


def _files_under(path: Path, prefix: str = "") -> list[str]:
    """Every file and link under ``path`` as paths relative to it (``prefix`` put before them);
    links are not followed. ``path`` itself when it is a file or link."""
    if path.is_symlink() or path.is_file():
        return [prefix] if prefix else []
    out = []
    for root, dirs, files in os.walk(path, followlinks=False):
        here = Path(root).relative_to(path)
        out += [str(Path(prefix) / here / name) if prefix else str(here / name)
                for name in [*files, *(d for d in dirs if (Path(root) / d).is_symlink())]]
    return sorted(os.path.normpath(f) for f in out)


@contextlib.contextmanager
def _signals_held():
    """Ctrl-C and SIGTERM delivered only after the block (main thread, POSIX): a move half done
    could otherwise not be undone."""
    import signal
    import threading

    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _lock_folder(run_dir: Path):
    """An exclusive, non-blocking lock on ``run_dir``; released by the OS if the process dies."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks; runs are still staged and atomic
        return None
    while True:
        fh = open(run_dir / LOCK_FILE, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            error = exc
        else:
            error = None
            try:
                held, named = os.fstat(fh.fileno()), os.stat(run_dir / LOCK_FILE)
                same = (held.st_ino, held.st_dev) == (named.st_ino, named.st_dev)
            except FileNotFoundError:
                same = False
            if not same:  # the run that held it removed it as we opened it: lock the new one
                fh.close()
                continue
        break
    if error is not None:
        exc = error
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


def _unlock(lock) -> None:
    """Release a ``_lock_folder`` lock; its file is removed while still held (a run that opened it
    meanwhile finds it gone and retries), so a finished or failed run leaves no lock file behind."""
    if lock is None:
        return
    try:
        ours, mine = os.stat(lock.name), os.fstat(lock.fileno())
        if (ours.st_ino, ours.st_dev) == (mine.st_ino, mine.st_dev):  # not a later run's lock
            Path(lock.name).unlink()
    except FileNotFoundError:
        pass
    lock.close()  # closing the descriptor releases the flock


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
