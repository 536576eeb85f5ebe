"""The run directory: staged in a temporary folder, moved into place only when complete."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import InputError

log = logging.getLogger("megafc")

#: Written last: its presence means the run directory is complete.
COMPLETION_MARKER = "provenance.json"

#: Distributions whose versions every run records (its plugins add theirs: ``Plugin.packages``).
CORE_PACKAGES = (
    "megafc", "numpy", "scipy", "pandas", "nilearn", "nibabel", "scikit-learn", "arviz", "xarray", "hydra-core",
    "omegaconf", "pluggy", "matplotlib", "jinja2",
)


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


def package_versions(extra: list[str] | None = None) -> dict[str, str]:
    versions = {}
    for name in list(CORE_PACKAGES) + list(extra or []):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def fingerprint_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return "sha256:" + h.hexdigest()


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


def remembered_fingerprint(path: str | os.PathLike[str], memo_dir: str | os.PathLike[str] | None) -> str:
    """sha256 of a file, remembered in ``memo_dir`` by (path, size, modification time, inode).

    Hashing every BOLD image of a real study reads ~100 GB on each run; a file whose size and
    modification time have not changed since it was hashed is not read again. One small JSON
    per file, written atomically, so parallel extraction jobs never corrupt each other's entries.
    """
    if memo_dir is None:
        return fingerprint_file(path)
    real = os.path.realpath(path)
    st = os.stat(real)
    stamp = {"path": real, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
    memo = Path(memo_dir) / (hashlib.sha1(real.encode()).hexdigest() + ".json")
    try:
        saved = json.loads(memo.read_text())
        if {k: saved.get(k) for k in stamp} == stamp and str(saved.get("sha256", "")).startswith("sha256:"):
            return saved["sha256"]
    except (OSError, ValueError):
        pass
    digest = fingerprint_file(real)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(memo, json.dumps({**stamp, "sha256": digest}))
    except OSError:  # a read-only shared cache: the hash is still right, only not remembered
        pass
    return digest


def fingerprint_value(value: Any) -> str:
    """sha256 of a JSON-serialisable value (e.g. a generator's parameters)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def changed_inputs(run_dir: str | os.PathLike[str], metadata: str | None = None) -> list[str]:
    """Why the finished run in ``run_dir`` may no longer match its inputs: one sentence per input
    file that is gone or differs from what the run read (empty: all the same).

    A rerun of the same config skips a finished run, which must not hide new data behind old
    results (e.g. fMRIPrep rerun, a metadata row fixed). Every fingerprinted file (the metadata
    table is recorded as ``metadata``) is hashed again; BOLD images, which are not hashed, count
    as changed when modified after the run started (extraction.tsv lists them)."""
    run_dir = Path(run_dir)
    try:
        prov = json.loads((run_dir / COMPLETION_MARKER).read_text())
        started = datetime.fromisoformat(prov["started"]).timestamp()
    except (OSError, ValueError, KeyError, TypeError):
        return [f"{run_dir / COMPLETION_MARKER} cannot be read"]
    out = []
    for key, digest in (prov.get("input_fingerprints") or {}).items():
        path = metadata if key == "metadata" else key
        if key != "metadata" and not (os.sep in key or Path(key).exists()):
            continue  # not a file (e.g. the synthetic generator's parameters: part of the config)
        file = Path(path).expanduser() if path else None
        if file is None or file.is_dir():
            continue  # nothing to compare (a folder's fingerprint is its plugin's business)
        if not file.is_file():
            out.append(f"{path} is gone")
        elif fingerprint_file(file) != digest:
            out.append(f"{path} has changed")
    extraction = run_dir / "extraction.tsv"
    if extraction.exists():
        try:
            bolds = pd.read_csv(extraction, sep="\t", usecols=["bold"])["bold"].dropna()
        except (OSError, ValueError) as exc:
            return out + [f"{extraction} cannot be read ({exc})"]
        for path in bolds:
            try:
                if Path(path).stat().st_mtime > started:
                    out.append(f"{path} was modified after the run")
            except OSError:
                out.append(f"{path} is gone")
    return out


def provenance(
    *,
    config: dict[str, Any],
    seed: int,
    plugins: dict[str, dict[str, str]],
    fingerprints: dict[str, str],
    started: datetime,
    extra_packages: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "megafc_version": package_versions().get("megafc", "unknown"),
        "started": started.isoformat(),
        "finished": datetime.now(timezone.utc).isoformat(),
        "seed": seed,
        "command": sys.argv,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": platform.node(),
        "run_id": uuid.uuid4().hex,
        "plugins": plugins,
        "packages": package_versions(extra_packages),
        "input_fingerprints": fingerprints,
        # 'rerun' only says whether to redo a finished run; it does not change the results
        "config_fingerprint": fingerprint_value({k: v for k, v in config.items() if k != "rerun"}),
    }


def write_run(staged: StagedRun, results: Any, registry: Any) -> None:
    """The one writer: every file of a run, from its ``RunResults``, into the staging folder."""
    from omegaconf import OmegaConf

    from .dictionary import data_dictionary
    from .figures import figure_formats, save_formats

    cfg = results.config
    extracted = results.extracted
    staged.write_table("scans.tsv", results.scans)
    if extracted is not None and extracted.extraction is not None:
        staged.write_table("extraction.tsv", extracted.extraction)
    staged.write_text("config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    if results.result is None:  # stage=extract: what was extracted, and the scans left out before it
        write_warnings(staged, results)
        staged.write_json(COMPLETION_MARKER, run_provenance(results, registry))
        return
    result, aggregated = results.result, results.aggregated
    for name in ("exclusions", "motion", "qc_fc"):
        if name in results.tables:
            staged.write_table(f"{name}.tsv", results.tables[name])
    derivatives = str(cfg.derivatives)
    images = results.inputs.images
    if derivatives == "all" or (derivatives == "auto" and images is not None):
        from .derivatives import write_derivatives

        write_derivatives(staged, extracted.timeseries if extracted else None, results.connectomes, results.scans,
                          results.atlas, images, results.plugins)
    if aggregated.summary_pairs is not None:
        staged.write_table("summary_pairs.tsv", aggregated.summary_pairs)
    staged.write_table("atlas_regions.tsv", region_table(results.atlas))
    staged.write_table("network_pairs.tsv", aggregated.pairs)
    who = f"pooling '{results.plugins['pooling'].name}'"
    staged.write_table("effects.tsv", result.effects)
    staged.write_json("effects.json", data_dictionary(result.effects, who, result.interval))
    staged.write_table("diagnostics.tsv", result.diagnostics)
    if results.inputs.truth is not None:
        staged.write_table("truth.tsv", results.inputs.truth)
    if result.idata is not None and cfg.get("posterior_nc", True):
        from .progress import Heartbeat

        log.info("writing posterior.nc ...")
        started = time.perf_counter()
        with Heartbeat("writing posterior.nc"):
            result.idata.to_netcdf(str(staged.path("posterior.nc")))
        log.info("posterior.nc: %.1f s", time.perf_counter() - started)
    for name, table in result.tables.items():
        # large tables (e.g. one row per edge) ask to be gzipped
        staged.write_table(f"{name}.tsv.gz" if table.attrs.get("compress") else f"{name}.tsv", table)
        if name == "summaries":
            staged.write_json("summaries.json", data_dictionary(table, who, result.interval))
    formats = figure_formats(cfg.get("figures"))
    for name, fig in result.figures.items():  # the model's own figures (predictive checks): always a PNG
        save_formats(fig, staged.path(f"figures/{name}.png"), formats or ["png"])
    staged.write_text("methods.md", results.methods)
    from .references import to_bibtex

    staged.write_text("references.bib", to_bibtex(results.references))
    # the reporters read these two (the folder moves into place as a whole, so the completion
    # marker being written before the reports does not make an incomplete run look complete)
    write_warnings(staged, results)
    staged.write_json(COMPLETION_MARKER, run_provenance(results, registry))
    if cfg.report or formats:
        write_reports(registry, "run", staged.staging, staged.run_dir, results.report_sections, staging=True)
        write_warnings(staged, results)  # again, with the reporters' own


def write_warnings(staged: StagedRun, results: Any) -> None:
    staged.write_table("warnings.tsv", pd.DataFrame(results.warnings, columns=["stage", "level", "message"]))


def region_table(atlas: Any) -> pd.DataFrame:
    """The atlas's regions with their networks and, when known, MNI centres (x, y, z in mm)."""
    import numpy as np

    table = atlas.regions[["label", "network", "subnetwork", "system"]].copy()
    centres = atlas.centroids()
    if centres is not None:
        table[["x", "y", "z"]] = np.round(centres, 2)
    return table


def run_provenance(results: Any, registry: Any) -> dict[str, Any]:
    """provenance.json: config, seed, versions, input fingerprints, and which distribution gave
    each plugin (and each module that only implements hooks)."""
    from omegaconf import OmegaConf

    plugin_info = {
        kind: {
            "name": p.name,
            "class": f"{type(p).__module__}:{type(p).__qualname__}",
            "distribution": registry.get(kind, p.name).distribution,
            "version": registry.get(kind, p.name).version,
        }
        for kind, p in results.plugins.items()
    }
    hook_plugins = registry.hook_plugins()
    dists = sorted({v["distribution"] for v in [*plugin_info.values(), *hook_plugins]} - {"(registered in code)"})
    dists += list(dict.fromkeys(name for p in results.plugins.values() for name in getattr(p, "packages", ())))
    return {**provenance(config=OmegaConf.to_container(results.config, resolve=True), seed=results.seed,
                         plugins=plugin_info, fingerprints=results.inputs.fingerprints, started=results.started,
                         extra_packages=dists),
            "stage_seconds": {k: round(v, 2) for k, v in results.timings.items()},
            "references": list(results.references),
            **({"pooling_interval": {"label": results.result.interval, "kind": results.result.interval_kind}}
               if results.result is not None else {}),
            "hook_plugins": hook_plugins}


def plugin_report_sections(registry: Any, config: Any = None) -> list:
    """The report sections every installed plugin adds to a run of ``config`` (hook
    ``megafc_report_sections``); a plugin whose hook fails is logged and skipped, so one broken
    plugin never costs the report."""
    out = []
    for impl in registry.manager.hook.megafc_report_sections.get_hookimpls():
        try:
            out += list(impl.function(*[{"config": config}[a] for a in impl.argnames]) or [])
        except Exception as exc:
            log.warning("report: plugin '%s' could not give its sections (%s: %s)", impl.plugin_name,
                        type(exc).__name__, exc)
    return out


def write_reports(registry: Any, scope: str, folder: Path, shown_as: Path | None = None,
                  sections: list | None = None, staging: bool = False) -> list[Path]:
    """Call every installed reporter of ``scope``; a reporter's failure is logged loudly and the
    results it would have described stay complete. In a ``staging`` folder (a run's own, which
    nothing else writes) a failed reporter's partial files are removed, and a disk error fails
    the run as it would fail its commit."""
    from .progress import Heartbeat

    written = []
    folder = Path(folder)
    for reporter in registry.reporters(scope):
        who = f"reporter '{reporter.name}'"
        before = _entries(folder) if staging else set()
        started = time.perf_counter()
        try:
            with Heartbeat(who):
                out = reporter.write(folder, shown_as=shown_as, sections=list(sections or []))
        except Exception as exc:  # the tables and posterior are the results; a report summarises them
            if staging:
                _remove_new(folder, before)
                if isinstance(exc, OSError):  # a full disk or a permission problem: the run cannot land either
                    raise
            log.error("%s could not write its report (%s: %s); the results are complete%s", who,
                      type(exc).__name__, exc, " and its partial files were removed" if staging else "")
            continue
        log.info("%s: %.1f s", who, time.perf_counter() - started)
        if out is not None:
            written.append(Path(out))
    return written


def _entries(folder: Path) -> set[Path]:
    return set(folder.rglob("*")) if folder.is_dir() else set()


def _remove_new(folder: Path, before: set[Path]) -> None:
    """Remove what a failed reporter added, so no half-written report lands."""
    for path in sorted(_entries(folder) - before, key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
