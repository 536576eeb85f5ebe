"""The ``timeseries`` and ``connectomes`` datasets: outputs of xcp_d or another tool.

``timeseries``: region timeseries TSVs (header = region labels), e.g.
``sub-01_ses-drug_task-rest_space-MNI152NLin2009cAsym_seg-Schaefer417_stat-mean_timeseries.tsv``.
``connectomes``: region x region matrices (header row and first column = region labels), e.g.
``..._stat-pearsoncorrelation_relmat.tsv``; the estimator step is skipped.
Regions are matched to the chosen atlas by label (``atlas=from_labels`` parses Schaefer-style
labels directly, so no atlas files are needed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from megafc.core import FISHER_Z_MAX_ABS_R as MAX_ABS_R
from megafc.core import Atlas, ConfigError, DatasetInputs, DatasetLoader, InputError
from megafc.core import fingerprint_file

from .metadata import (check_distinct_contents, check_distinct_files, find_bids_file, read_metadata,
                       session_order_from_acq_times)

log = logging.getLogger("megafc")


@dataclass
class PrecomputedConfig:
    #: TSV with one row per scan (dataset, subject, session, drug, condition, ..., optional path).
    metadata: str = "???"
    #: Dataset name -> folder holding the files (searched by BIDS entities when no 'path' column).
    roots: dict[str, str] = field(default_factory=dict)
    task: str = "rest"
    #: Only files with this seg- entity (e.g. Schaefer417); null: any.
    seg: Optional[str] = None
    #: Dataset name -> its raw BIDS folder, whose sessions.tsv / scans.tsv acquisition times give
    #: each scan's session_order where the metadata table has none.
    bids_roots: dict[str, str] = field(default_factory=dict)


class _Precomputed(DatasetLoader):
    suffix = ""
    what = ""

    def files(self) -> tuple[pd.DataFrame, dict[str, Path]]:
        c = self.config
        scans = read_metadata(c.metadata, roots=c.roots)
        paths = {}
        for row in scans.itertuples(index=False):
            p = getattr(row, "path", None)
            if isinstance(p, str):
                paths[row.scan_id] = Path(p)
                continue
            run = getattr(row, "run", None)
            run = None if pd.isna(run) else str(run)
            req = {"task": c.task, "seg": c.seg or ""}
            paths[row.scan_id] = find_bids_file(c.roots[row.dataset], row.subject, row.session, self.suffix,
                                                req, run=run, what=self.what)
        check_distinct_files(paths, self.config.metadata, self.what)
        return scans, paths

    def region_labels(self) -> list[str]:
        """Region labels from the first file's header, for ``atlas=from_labels``."""
        _, paths = self.files()
        first = next(iter(paths.values()))
        return [str(c) for c in self.read(first).columns]

    def read(self, path: Path) -> pd.DataFrame:
        raise NotImplementedError

    def reorder(self, table: pd.DataFrame, atlas: Atlas, path: Path) -> pd.DataFrame:
        labels = [str(c) for c in table.columns]
        missing = [lab for lab in atlas.labels if lab not in labels]
        if missing:
            raise InputError(
                f"{path}: region label(s) {missing[:5]} of atlas '{atlas.name}' are not in the file's header "
                f"(it has {len(labels)} columns, e.g. {labels[:3]})"
            )
        table.columns = labels
        return table[atlas.labels]

    def load(self, atlas: Atlas, seed: int) -> DatasetInputs:
        scans, paths = self.files()
        scans, ordered_by, order_note = session_order_from_acq_times(scans, self.config.bids_roots)
        data, fingerprints = {}, {"metadata": fingerprint_file(self.config.metadata), **ordered_by}
        nvols, digests = [], {}
        for scan_id, path in paths.items():
            # a cell that is not a number becomes NaN, which the checks below refuse naming the file
            table = self.reorder(self.read(path), atlas, path).apply(pd.to_numeric, errors="coerce")
            arr = table.to_numpy(dtype=float)
            if self.what == "connectome":
                arr = self.to_matrix(table, atlas, path)
                nvols.append(np.nan)
            else:
                self.check_series(arr, path, atlas)
                nvols.append(arr.shape[0])
            data[scan_id] = arr
            fingerprints[str(path)] = digests[scan_id] = fingerprint_file(path)
        check_distinct_contents(digests, self.config.metadata, self.what)
        if scans["n_volumes"].isna().all():
            scans["n_volumes"] = nvols
        kind = "timeseries" if self.what != "connectome" else "connectomes"
        return DatasetInputs(scans=scans, fingerprints=fingerprints, description=f"Precomputed {kind}. {order_note}".strip(),
                             **{kind: data})

    @staticmethod
    def check_series(arr: np.ndarray, path: Path, atlas: Atlas) -> None:
        if arr.shape[0] < 2:
            raise InputError(f"{path}: {arr.shape[0]} row(s) of timeseries below the header; expected one row "
                             "per volume")
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=0))
        if len(bad):
            raise InputError(f"{path}: NaN or non-numeric values in region(s) {[atlas.labels[i] for i in bad[:5]]}")
        flat = np.flatnonzero(np.ptp(arr, axis=0) == 0)
        if len(flat):
            raise InputError(f"{path}: constant timeseries in region(s) {[atlas.labels[i] for i in flat[:5]]}")


class TimeseriesDataset(_Precomputed):
    """Precomputed region timeseries TSVs (xcp_d's stat-mean_timeseries) + metadata table."""

    name = "timeseries"
    suffix = "stat-mean_timeseries.tsv"
    what = "timeseries file"

    @dataclass
    class Config(PrecomputedConfig):
        pass

    def read(self, path: Path) -> pd.DataFrame:
        try:
            return pd.read_csv(path, sep="\t", na_values=["n/a", "NaN", ""])
        except Exception as exc:
            raise InputError(f"{path}: not a readable timeseries TSV ({exc})") from exc


class ConnectomesDataset(_Precomputed):
    """Precomputed region x region matrices (xcp_d's relmat TSVs) + metadata table."""

    name = "connectomes"
    suffix = "relmat.tsv"
    what = "connectome"

    @dataclass
    class Config(PrecomputedConfig):
        #: The files hold correlations (r): Fisher z-transform them. False if already z.
        fisher_z: bool = True
        #: An off-diagonal |r| = 1 (duplicated regions, a broken export) has no finite z:
        #: ``error`` refuses the file, ``warn`` clips it to |r| = 1 - 1e-7 (z ~ 8.4) and says where.
        perfect_correlation: str = "error"

    def __init__(self, config=None):
        super().__init__(config)
        if self.config.perfect_correlation not in ("error", "warn"):
            raise ConfigError(f"config key 'dataset.perfect_correlation' is '{self.config.perfect_correlation}'; "
                              "expected error or warn")

    def read(self, path: Path) -> pd.DataFrame:
        try:
            return pd.read_csv(path, sep="\t", index_col=0, na_values=["n/a", "NaN", ""])
        except Exception as exc:
            raise InputError(f"{path}: not a readable connectivity matrix TSV ({exc})") from exc

    def to_matrix(self, table: pd.DataFrame, atlas: Atlas, path: Path) -> np.ndarray:
        table.index = [str(i) for i in table.index]
        if list(table.index) != list(table.columns) and set(atlas.labels) - set(table.index):
            raise InputError(f"{path}: row labels (first column) do not match the header's region labels")
        mat = table.loc[atlas.labels, atlas.labels].to_numpy(dtype=float)
        off = ~np.eye(len(mat), dtype=bool)
        if not np.isfinite(mat[off]).all():
            raise InputError(f"{path}: NaN or non-numeric values off the diagonal")
        if not np.allclose(mat, mat.T, atol=1e-6):
            raise InputError(f"{path}: matrix is not symmetric")
        if self.config.fisher_z:
            if np.abs(mat[off]).max() > 1:
                raise InputError(f"{path}: values outside [-1, 1] cannot be correlations; set dataset.fisher_z=false if they are z")
            self.check_perfect(mat, atlas, path)
            mat = np.arctanh(np.clip(mat, -MAX_ABS_R, MAX_ABS_R))
        np.fill_diagonal(mat, 0.0)
        return mat

    def check_perfect(self, mat: np.ndarray, atlas: Atlas, path: Path) -> None:
        rows, cols = np.nonzero(np.triu(np.abs(mat) >= MAX_ABS_R, k=1))
        if not len(rows):
            return
        where = ", ".join(f"{atlas.labels[i]}-{atlas.labels[j]} (r={mat[i, j]:g})" for i, j in zip(rows[:5], cols[:5]))
        more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        if self.config.perfect_correlation == "error":
            raise InputError(
                f"{path}: off-diagonal correlation(s) of magnitude 1 between {where}{more}; Fisher z is infinite "
                "there. Check for duplicated regions, or set dataset.perfect_correlation=warn to clip them to "
                f"|r| = {MAX_ABS_R} (z = {np.arctanh(MAX_ABS_R):.1f})"
            )
        log.warning("%s: %d off-diagonal correlation(s) of magnitude 1 clipped to |r| = %s (z = %.1f): %s%s",
                    path, len(rows), MAX_ABS_R, np.arctanh(MAX_ABS_R), where, more)
