"""Build small fMRIPrep-like derivative trees for tests (no real data, no network)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from megafc.core import mark_unpaired, validate_scans
from megafc.plugins.atlases.synthetic import SyntheticAtlas
from megafc.plugins.datasets.synthetic import SiteSpec, SyntheticDataset

SPACE = "MNI152NLin2009cAsym"
BLOCK = 2  # each region is a BLOCK^3 cube of voxels


@dataclass
class Tree:
    metadata: Path
    roots: dict[str, Path]
    atlas_image: Path
    atlas_labels: Path
    bold: dict[str, Path]  # scan_id -> BOLD path

    def overrides(self, denoiser: str = "simple") -> list[str]:
        roots = ",".join(f"{k}:'{v}'" for k, v in self.roots.items())
        return [
            "dataset=fmriprep", f"dataset.metadata={self.metadata}", f"dataset.roots={{{roots}}}",
            "atlas=custom", f"atlas.image={self.atlas_image}", f"atlas.labels={self.atlas_labels}",
            f"denoiser={denoiser}",
        ]


def confounds_table(rng: np.random.Generator, n: int, fd_level: float) -> pd.DataFrame:
    cols = {}
    for axis in ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"):
        base = np.cumsum(rng.normal(0, 0.02, n))
        deriv = np.r_[np.nan, np.diff(base)]
        cols[axis] = base
        cols[f"{axis}_derivative1"] = deriv
        cols[f"{axis}_power2"] = base**2
        cols[f"{axis}_derivative1_power2"] = deriv**2
    for name in ("white_matter", "csf", "global_signal"):
        sig = rng.normal(0, 1, n)
        cols[name] = sig
        cols[f"{name}_derivative1"] = np.r_[np.nan, np.diff(sig)]
        cols[f"{name}_power2"] = sig**2
        cols[f"{name}_derivative1_power2"] = cols[f"{name}_derivative1"] ** 2
    cols["framewise_displacement"] = np.r_[np.nan, np.abs(rng.normal(fd_level, fd_level / 3, n - 1))]
    cols["std_dvars"] = np.r_[np.nan, np.abs(rng.normal(1.0, 0.2, n - 1))]
    cols["dvars"] = cols["std_dvars"] * 20
    for i in range(6):
        cols[f"a_comp_cor_{i:02d}"] = rng.normal(0, 0.1, n)
    t = np.arange(n)
    for i in range(2):
        cols[f"cosine{i:02d}"] = np.sqrt(2 / n) * np.cos(np.pi * (2 * t + 1) * (i + 1) / (2 * n))
    return pd.DataFrame(cols)


def confounds_json() -> dict:
    return {f"a_comp_cor_{i:02d}": {"Method": "aCompCor", "Mask": "combined", "Retained": True,
                                    "SingularValue": 10.0 - i, "VarianceExplained": 0.1,
                                    "CumulativeVarianceExplained": 0.1 * (i + 1)} for i in range(6)}


def make_tree(root: Path, n_subjects: int = 4, n_volumes: int = 100, seed: int = 0) -> Tree:
    """Two datasets (psilocybin crossover, ayahuasca pre/post) with synthetic FC in their images."""
    atlas = SyntheticAtlas(SyntheticAtlas.Config(n_cortical=34, subcortical=False, n_cerebellar=0)).load()
    sites = [SiteSpec("siteA", "psilocybin", n_subjects), SiteSpec("siteB", "ayahuasca", n_subjects, design="prepost")]
    sim = SyntheticDataset(SyntheticDataset.Config(sites=sites, n_volumes=n_volumes, missing_scan_fraction=0.0)).load(atlas, seed)
    scans = mark_unpaired(validate_scans(sim.scans))
    rng = np.random.default_rng(seed)

    n_reg = atlas.n_regions
    side = int(np.ceil(np.sqrt(n_reg)))
    shape = (side * BLOCK, side * BLOCK, BLOCK)
    labels_img = np.zeros(shape, dtype=np.int16)
    for r in range(n_reg):
        x, y = divmod(r, side)
        labels_img[x * BLOCK:(x + 1) * BLOCK, y * BLOCK:(y + 1) * BLOCK, :] = r + 1
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    root.mkdir(parents=True, exist_ok=True)
    atlas_image = root / "atlas_dseg.nii.gz"
    nib.Nifti1Image(labels_img, affine).to_filename(atlas_image)
    atlas_labels = root / "atlas_dseg.tsv"
    pd.DataFrame({"index": np.arange(1, n_reg + 1), "label": atlas.labels}).to_csv(atlas_labels, sep="\t", index=False)

    roots, bold_paths, rows = {}, {}, []
    for scan in scans.itertuples(index=False):
        ds_root = root / "derivatives" / scan.dataset / "fmriprep"
        roots[scan.dataset] = ds_root
        func = ds_root / f"sub-{scan.subject}" / f"ses-{scan.session}" / "func"
        func.mkdir(parents=True, exist_ok=True)
        stem = f"sub-{scan.subject}_ses-{scan.session}_task-rest"
        ts = sim.timeseries[scan.scan_id]
        data = 100 + rng.normal(0, 0.3, shape + (n_volumes,))
        for r in range(n_reg):
            data[labels_img == r + 1] += 5 * ts[:, r]
        bold = func / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz"
        nib.Nifti1Image(data.astype(np.float32), affine).to_filename(bold)
        (func / f"{stem}_space-{SPACE}_desc-preproc_bold.json").write_text(json.dumps({"RepetitionTime": 2.0, "TaskName": "rest"}))
        nib.Nifti1Image(np.ones(shape, dtype=np.uint8), affine).to_filename(func / f"{stem}_space-{SPACE}_desc-brain_mask.nii.gz")
        conf = confounds_table(rng, n_volumes, fd_level=scan.mean_fd)
        conf.to_csv(func / f"{stem}_desc-confounds_timeseries.tsv", sep="\t", index=False, na_rep="n/a")
        (func / f"{stem}_desc-confounds_timeseries.json").write_text(json.dumps(confounds_json()))
        bold_paths[scan.scan_id] = bold
        rows.append({"dataset": scan.dataset, "subject": scan.subject, "session": scan.session, "drug": scan.drug,
                     "condition": scan.condition, "dose": scan.dose})
    metadata = root / "metadata.tsv"
    pd.DataFrame(rows).to_csv(metadata, sep="\t", index=False, na_rep="n/a")
    return Tree(metadata, roots, atlas_image, atlas_labels, bold_paths)
