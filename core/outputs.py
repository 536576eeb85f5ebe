"""The run directory: staged in a temporary folder, moved into place only when complete."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

#: Written last: its presence means the run directory is complete.
COMPLETION_MARKER = "provenance.json"

#: Distributions whose versions every run records.
CORE_PACKAGES = (
    "megafc", "numpy", "scipy", "pandas", "nilearn", "nibabel", "scikit-learn", "pymc",
    "pytensor", "bambi", "formulae", "arviz", "hydra-core", "omegaconf", "pluggy",
    "matplotlib", "nutpie", "numpyro", "jax",
)


class StagedRun:
    """Collect outputs in ``<run_dir>/.megafc-staging-*`` and move them in on ``commit``.

    Used as a context manager: on an exception the staging folder is removed, so a failed
    run leaves no result files behind (only Hydra's own config and log).
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.run_dir.glob(".megafc-staging-*"):  # left by a killed run: never counts
            shutil.rmtree(stale, ignore_errors=True)
        self.staging = Path(tempfile.mkdtemp(prefix=".megafc-staging-", dir=self.run_dir))
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
        """Move every staged file into the run directory; the completion marker goes last."""
        entries = sorted(self.staging.iterdir(), key=lambda p: p.name == COMPLETION_MARKER)
        for entry in entries:
            target = self.run_dir / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)
        self.staging.rmdir()
        self.committed = True
        return self.run_dir

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> StagedRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.committed:
            self.discard()


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


def fingerprint_value(value: Any) -> str:
    """sha256 of a JSON-serialisable value (e.g. a generator's parameters)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


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
