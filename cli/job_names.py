"""Flat, short, filesystem-safe job folder names for ``megafc --multirun``.

Hydra names a sweep's job folders after their overrides; an override holding a path
(``dataset.metadata=/data/study/meta.tsv``) would nest the job several folders deep along the
path's slashes. ``job_dirname`` keeps each override readable where it is short and replaces
paths and long values by their last name and a hash, so every job is one folder.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

#: Values longer than this are shortened (kept readable, made unique by a hash).
MAX_VALUE = 24
#: Longest folder name produced; file systems allow 255 bytes, archives and humans less.
MAX_NAME = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+,-]")


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _value(value: str) -> str:
    if any(c in value for c in "/\\"):
        stem = re.split(r"[/\\]", value.rstrip("/\\"))[-1] or "root"
        return f"{_UNSAFE.sub('_', stem)[:MAX_VALUE]}-{_digest(value)}"
    if len(value) > MAX_VALUE or any(c in value for c in "{}[]'\" "):
        return f"{_UNSAFE.sub('_', value)[:MAX_VALUE // 2]}-{_digest(value)}"
    return _UNSAFE.sub("_", value)


def job_dirname(overrides: Iterable[str]) -> str:
    """``a=1,dataset.metadata=studies.tsv-1a2b3c4d`` from a job's overrides (one folder, no slashes)."""
    parts, shortened = [], []
    for override in overrides:
        key, sep, value = str(override).partition("=")
        short = _value(value) if sep else ""
        parts.append(_UNSAFE.sub("_", key) + (sep + short if sep else ""))
        shortened.append(bool(sep) and short != value)
    name = ",".join(parts)
    if len(name) > MAX_NAME:
        # what tells a sweep's jobs apart is usually a plain choice (denoiser=compcor), not a path
        # given to every job: plain values first, so the cut falls on the paths and long values
        order = [p for p, s in zip(parts, shortened) if not s] + [p for p, s in zip(parts, shortened) if s]
        name = f"{','.join(order)[:MAX_NAME - 9]}-{_digest(name)}"
    return name


def run_dirname(time: str, overrides: Iterable[str]) -> str:
    """A single run's default folder name: its start time, then its overrides (``14-02-11_atlas=yeo``).

    Two runs of different configs started in the same second (a shell loop sending each to the
    background) get different folders; with the time alone the later one found the earlier one's
    results and replaced them as a changed rerun.
    """
    overrides = [str(o) for o in overrides]
    name = job_dirname(overrides)
    if name != ",".join(overrides):  # characters replaced or values shortened: x=a@b and x=a_b must differ
        name = f"{name}-{_digest(','.join(overrides))}"
    return f"{time}_{name}" if name else str(time)


def register_resolver() -> None:
    """Make ``${megafc_jobdir:${hydra.overrides.task}}``, ``${megafc_rundir:<time>,<overrides>}``
    and ``${megafc_hydra_record:}`` (where Hydra writes a starting run's record) available to
    Hydra configs."""
    from omegaconf import OmegaConf

    from megafc.core.run_folder import incoming_hydra_record

    OmegaConf.register_new_resolver("megafc_jobdir", lambda overrides: job_dirname(list(overrides)), replace=True)
    OmegaConf.register_new_resolver("megafc_rundir", lambda time, overrides: run_dirname(str(time), list(overrides)),
                                    replace=True)
    # evaluated in the job's own process (a joblib worker's too): the record is that process's
    OmegaConf.register_new_resolver("megafc_hydra_record", lambda: incoming_hydra_record(), replace=True)
