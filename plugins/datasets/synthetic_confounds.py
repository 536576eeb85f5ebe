"""fMRIPrep-style confounds files for the synthetic study, so denoising strategies can be compared.

The simulator adds a motion artifact to every region: a global AR(1) signal scaled by the
scan's mean FD (``motion_coupling``). Real fMRIPrep confounds carry such artifacts in the
global, white-matter and CSF signals and the aCompCor components, and large artifacts coincide
with high framewise displacement. The files written here do the same, with fMRIPrep's column
names, so nilearn's ``load_confounds_strategy`` presets (simple, simple_gsr, scrubbing,
compcor) read them as they would read fMRIPrep's, and each removes the artifact to its own
degree. The BOLD names they sit next to do not exist: only the confounds are needed to denoise
region timeseries (``DatasetInputs.confounds``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from megafc.core import write_text_atomic

#: Bump when the files' content changes for the same simulation: it names their folder, so old
#: files in a shared cache are never taken for new ones.
CONFOUNDS_VERSION = 1
SPACE = "MNI152NLin2009cAsym"
N_COMPCOR = 6
HIGH_PASS_S = 128.0


def confounds_table(artifact: np.ndarray, timeseries: np.ndarray, mean_fd: float, t_r: float,
                    rng: np.random.Generator) -> pd.DataFrame:
    """fMRIPrep's confound columns for one scan whose regions carry ``artifact``."""
    n = len(artifact)
    spread = max(float(np.std(artifact)), 1e-3)
    cols: dict[str, np.ndarray] = {}

    def with_expansions(name: str, x: np.ndarray) -> None:
        d = np.r_[np.nan, np.diff(x)]
        cols[name], cols[f"{name}_derivative1"] = x, d
        cols[f"{name}_power2"], cols[f"{name}_derivative1_power2"] = x**2, d**2

    for axis in ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"):
        step = mean_fd / 3 if axis.startswith("trans") else mean_fd / 150  # rotations in radians
        with_expansions(axis, np.cumsum(rng.normal(0, step, n)))
    with_expansions("global_signal", timeseries.mean(axis=1))
    with_expansions("white_matter", artifact + rng.normal(0, 0.5 * spread, n))
    with_expansions("csf", artifact + rng.normal(0, 0.7 * spread, n))
    # volumes with large artifacts are the ones that move; FD is right-skewed (mostly small
    # movements, some jerks) with the scan's mean_fd as its mean
    size = np.abs(artifact) / (np.mean(np.abs(artifact)) + 1e-12)
    fd = np.sqrt(size) * rng.lognormal(0, 0.5, n)
    cols["framewise_displacement"] = np.r_[np.nan, fd[1:] * mean_fd / max(float(np.mean(fd[1:])), 1e-12)]
    cols["std_dvars"] = np.r_[np.nan, 0.8 + 0.25 * size[1:] + rng.normal(0, 0.05, n - 1)]
    cols["dvars"] = cols["std_dvars"] * 20
    for i in range(N_COMPCOR):
        cols[f"a_comp_cor_{i:02d}"] = (artifact if i == 0 else 0.0) + rng.normal(0, spread, n)
    t = np.arange(n)
    for i in range(int(np.floor(2 * n * t_r / HIGH_PASS_S))):
        cols[f"cosine{i:02d}"] = np.sqrt(2 / n) * np.cos(np.pi * (2 * t + 1) * (i + 1) / (2 * n))
    return pd.DataFrame(cols)


def compcor_sidecar() -> dict:
    """The .json fMRIPrep writes next to its confounds: what nilearn's compcor preset reads."""
    return {f"a_comp_cor_{i:02d}": {"Method": "aCompCor", "Mask": "combined", "Retained": True,
                                    "SingularValue": float(N_COMPCOR - i), "VarianceExplained": 0.1,
                                    "CumulativeVarianceExplained": 0.1 * (i + 1)} for i in range(N_COMPCOR)}


def bold_name(folder: Path, dataset: str, subject: str, session: str) -> Path:
    return folder / dataset / f"sub-{subject}_ses-{session}_task-rest_space-{SPACE}_desc-preproc_bold.nii.gz"


def write_confounds(bold: Path, table: pd.DataFrame) -> None:
    """The confounds TSV and JSON that nilearn finds for ``bold``, each written atomically and
    always (a concurrent run writing the same content never leaves a half-written file, and a
    file left by other code is never taken for this one)."""
    stem = bold.name.replace(f"_space-{SPACE}_desc-preproc_bold.nii.gz", "_desc-confounds_timeseries")
    bold.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".tsv", table.to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.8g")),
                         (".json", json.dumps(compcor_sidecar()))):
        write_text_atomic(bold.parent / f"{stem}{suffix}", text)
