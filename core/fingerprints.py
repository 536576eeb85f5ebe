"""What identifies a run's inputs and software: content hashes of files (remembered, so a
study's images are not read again on every run), of values, and the installed versions; and
which of a finished run's inputs have changed since (a rerun must not hide new data)."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from .run_folder import COMPLETION_MARKER, write_text_atomic

#: Distributions whose versions every run records (its plugins add theirs: ``Plugin.packages``).
CORE_PACKAGES = (
    "megafc", "numpy", "scipy", "pandas", "nilearn", "nibabel", "scikit-learn", "arviz", "xarray", "hydra-core",
    "omegaconf", "pluggy", "matplotlib", "jinja2",
)


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


def config_files(config: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Every config value naming an existing file (relative to the working folder), by its key,
    with the file's path and content hash: an atlas's image and label table, a metadata table. A
    file edited since, or the same relative path typed in another folder, is another input."""
    out: dict[str, dict[str, str]] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]")
        elif isinstance(value, str) and 0 < len(value) < 4096:
            path = Path(value).expanduser()
            try:
                found = path.is_file()
            except OSError:  # not a path at all (a name too long for the file system)
                found = False
            if found:
                out[key] = {"path": str(path.resolve()), "sha256": fingerprint_file(path)}

    walk(config, "")
    return out


def changed_config_files(recorded: dict[str, dict[str, str]], config: dict[str, Any]) -> list[str]:
    """One sentence per file the config names that differs from the one a finished run read."""
    now = config_files(config)
    out = []
    for key in sorted(set(recorded) | set(now)):
        before, after = recorded.get(key), now.get(key)
        if after is None:
            out.append(f"{key}: {before['path']} is gone")
        elif before is None:
            out.append(f"{key}: {after['path']} is a file now")
        elif after["sha256"] != before["sha256"]:
            out.append(f"{key}: {after['path']} has changed" if after["path"] == before["path"] else
                       f"{key} now names {after['path']}, not the {before['path']} the run read")
    return out


def changed_inputs(run_dir: str | os.PathLike[str], metadata: str | None = None,
                   config: dict[str, Any] | None = None) -> list[str]:
    """Why the finished run in ``run_dir`` may no longer match its inputs: one sentence per input
    file that is gone or differs from what the run read (empty: all the same).

    A rerun of the same config skips a finished run, which must not hide new data behind old
    results (e.g. fMRIPrep rerun, a metadata row fixed). Every fingerprinted file (the metadata
    table is recorded as ``metadata``) is hashed again, and so is every file ``config`` (the rerun's
    resolved config) names (``config_files``); BOLD images, which are not hashed, count as
    changed when modified after the run started (extraction.tsv lists them)."""
    run_dir = Path(run_dir)
    try:
        prov = json.loads((run_dir / COMPLETION_MARKER).read_text())
        started = datetime.fromisoformat(prov["started"]).timestamp()
    except (OSError, ValueError, KeyError, TypeError):
        return [f"{run_dir / COMPLETION_MARKER} cannot be read"]
    out = []
    compared: set[str] = set()  # files the config names, compared there (a metadata table is both)
    if config is not None and isinstance(prov.get("config_files"), dict):  # (earlier versions kept none)
        out += changed_config_files(prov["config_files"], config)
        compared = {str(entry.get("path")) for entry in prov["config_files"].values() if isinstance(entry, dict)}
    for key, digest in (prov.get("input_fingerprints") or {}).items():
        path = metadata if key == "metadata" else key
        if key != "metadata" and not (os.sep in key or Path(key).exists()):
            continue  # not a file (e.g. the synthetic generator's parameters: part of the config)
        file = Path(path).expanduser() if path else None
        if file is None or file.is_dir() or str(file.resolve()) in compared:
            continue  # nothing to compare (a folder's fingerprint is its plugin's business), or compared above
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


