"""The ``fmriprep`` dataset: fMRIPrep derivatives (one folder per dataset) plus a metadata table.

For each scan it finds the preprocessed BOLD for the configured task and space, its brain mask,
its confounds TSV (+JSON) and the TR from the BOLD's JSON sidecar; the pipeline then extracts
region timeseries with nilearn maskers and the chosen denoiser.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from megafc.core import Atlas, DatasetInputs, DatasetLoader, InputError, ScanImages
from megafc.core import fingerprint_file

from .metadata import check_distinct_files, find_bids_file, read_metadata, session_order_from_acq_times


def confounds_path(bold: Path) -> Path:
    """fMRIPrep's confounds file for a BOLD file (space/res/desc entities dropped)."""
    keep = [p for p in bold.name.split("_") if not p.startswith(("space-", "res-", "desc-", "bold"))]
    return bold.with_name("_".join(keep) + "_desc-confounds_timeseries.tsv")


def mask_path(bold: Path) -> Path:
    return bold.with_name(bold.name.replace("desc-preproc_bold", "desc-brain_mask"))


def repetition_time(bold: Path) -> float:
    sidecar = Path(str(bold).removesuffix(".gz").removesuffix(".nii") + ".json")
    if not sidecar.exists():
        raise InputError(f"{bold}: BOLD JSON sidecar not found ({sidecar.name}), needed for RepetitionTime")
    try:
        tr = json.loads(sidecar.read_text())["RepetitionTime"]
    except (KeyError, ValueError) as exc:
        raise InputError(f"{sidecar}: no valid 'RepetitionTime' field ({exc})") from exc
    if not isinstance(tr, (int, float)) or tr <= 0:
        raise InputError(f"{sidecar}: RepetitionTime must be a positive number of seconds, got {tr!r}")
    return float(tr)


def mean_fd(confounds: Path) -> float:
    if not confounds.exists():
        raise InputError(f"confounds file not found: {confounds} (fMRIPrep's desc-confounds_timeseries.tsv)")
    table = pd.read_csv(confounds, sep="\t", usecols=lambda c: c == "framewise_displacement")
    if "framewise_displacement" not in table:
        raise InputError(f"{confounds}: no 'framewise_displacement' column (needed for motion QC)")
    return float(np.nanmean(pd.to_numeric(table["framewise_displacement"], errors="coerce")))


class FmriprepDataset(DatasetLoader):
    """fMRIPrep derivative folders + a metadata table (BOLD, mask, confounds, TR)."""

    name = "fmriprep"
    references = [
        "Esteban O, Markiewicz CJ, Blair RW, Moodie CA, Isik AI, Erramuzpe A, Kent JD, Goncalves M, DuPre E, "
        "Snyder M, Oya H, Ghosh SS, Wright J, Durnez J, Poldrack RA, Gorgolewski KJ (2019) fMRIPrep: a robust "
        "preprocessing pipeline for functional MRI. Nat Methods 16:111-116",
    ]

    @dataclass
    class Config:
        #: TSV with one row per scan (dataset, subject, session, drug, condition, ...).
        metadata: str = "???"
        #: Dataset name -> its fMRIPrep derivatives folder.
        roots: dict[str, str] = field(default_factory=dict)
        task: str = "rest"
        space: str = "MNI152NLin2009cAsym"
        #: Dataset name -> its raw BIDS folder, whose sessions.tsv / scans.tsv acquisition times
        #: give each scan's session_order where the metadata table has none.
        bids_roots: dict[str, str] = field(default_factory=dict)

    def load(self, atlas: Atlas, seed: int) -> DatasetInputs:
        import nibabel as nib

        c = self.config
        scans, ordered_by, order_note = session_order_from_acq_times(read_metadata(c.metadata, roots=c.roots),
                                                                     c.bids_roots)
        images, fingerprints, fds, nvols = {}, {"metadata": fingerprint_file(c.metadata), **ordered_by}, [], []
        for row in scans.itertuples(index=False):
            run = getattr(row, "run", None)
            run = None if pd.isna(run) else str(run)
            if "path" in scans.columns and isinstance(getattr(row, "path"), str):
                bold = Path(row.path)
                named = next((p[len("space-"):] for p in bold.name.split("_") if p.startswith("space-")), None)
                if named is not None and named != c.space:  # the file is named by space, not checked by it
                    raise InputError(f"{c.metadata}: the 'path' of scan {row.scan_id} is a BOLD in space {named} "
                                     f"({bold.name}), but config key 'dataset.space' is {c.space}; point it to "
                                     f"the space-{c.space} file or set dataset.space")
            else:
                bold = find_bids_file(c.roots[row.dataset], row.subject, row.session, "desc-preproc_bold.nii.gz",
                                      {"task": c.task, "space": c.space}, run=run, what="preprocessed BOLD")
            conf = confounds_path(bold)
            mask = mask_path(bold)
            shape = nib.load(bold).shape
            if len(shape) != 4:
                raise InputError(f"{bold}: expected a 4D BOLD image, got {len(shape)}D with shape {shape}")
            nvols.append(int(shape[3]))
            fds.append(mean_fd(conf) if pd.isna(row.mean_fd) else float(row.mean_fd))
            entities = {"sub": row.subject, "ses": row.session, "task": c.task, "run": run or "", "space": c.space}
            images[row.scan_id] = ScanImages(
                bold=str(bold), t_r=repetition_time(bold), mask=str(mask) if mask.exists() else None,
                confounds=str(conf), entities=entities,
            )
            fingerprints[str(conf)] = fingerprint_file(conf)
        check_distinct_files({k: Path(v.bold) for k, v in images.items()}, c.metadata, "BOLD file")
        scans["mean_fd"] = fds
        scans["n_volumes"] = nvols
        return DatasetInputs(
            scans=scans, images=images, fingerprints=fingerprints,
            description=f"fMRIPrep derivatives of {scans['dataset'].nunique()} datasets (task {c.task}, space "
                        f"{c.space}). {order_note}".strip(),
        )
