"""Quality control: exclusions with reasons, per-dataset counts, motion by condition, QC-FC,
designs that confound the drug with session order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from .data import Connectomes, exclude
from .errors import ConfigError


@dataclass
class QCConfig:
    #: Exclude scans whose mean framewise displacement (mm) exceeds this (null: no limit).
    max_mean_fd: Optional[float] = 0.5
    #: Exclude scans with more than this fraction of volumes censored by the denoiser.
    max_censored_fraction: float = 0.5
    #: Exclude scans with fewer volumes than this left after censoring.
    min_volumes: int = 50


def validate_qc(qc: QCConfig) -> None:
    if qc.max_mean_fd is not None and qc.max_mean_fd <= 0:
        raise ConfigError(f"config key 'qc.max_mean_fd' is {qc.max_mean_fd}; expected a positive number or null")
    if not 0 <= qc.max_censored_fraction <= 1:
        raise ConfigError(f"config key 'qc.max_censored_fraction' is {qc.max_censored_fraction}; expected in [0, 1]")
    if qc.min_volumes < 2:
        raise ConfigError(f"config key 'qc.min_volumes' is {qc.min_volumes}; expected >= 2")


def exclude_by_motion(scans: pd.DataFrame, qc: QCConfig) -> pd.DataFrame:
    """Exclusions knowable before extraction: mean FD and total volumes."""
    out = scans
    if qc.max_mean_fd is not None:
        fd = pd.to_numeric(out["mean_fd"], errors="coerce")
        out = exclude(out, fd > qc.max_mean_fd, f"mean FD > {qc.max_mean_fd} mm")
    nvol = pd.to_numeric(out["n_volumes"], errors="coerce")
    return exclude(out, nvol < qc.min_volumes, f"fewer than {qc.min_volumes} volumes")


def exclude_by_censoring(scans: pd.DataFrame, kept: dict[str, int], qc: QCConfig) -> pd.DataFrame:
    """Exclusions after extraction: too many censored volumes, too few left."""
    out = scans.copy()
    out["n_volumes_kept"] = [kept.get(s, np.nan) for s in out["scan_id"]]
    frac = 1 - out["n_volumes_kept"] / pd.to_numeric(out["n_volumes"], errors="coerce")
    out["censored_fraction"] = frac
    out = exclude(out, frac > qc.max_censored_fraction, f"more than {qc.max_censored_fraction:.0%} of volumes censored")
    return exclude(out, out["n_volumes_kept"] < qc.min_volumes, f"fewer than {qc.min_volumes} volumes left after censoring")


def motion_advice(covariates: list[str] | None) -> str:
    """What to read into a drug's motion change, given the covariates the effects are adjusted
    for (``PoolingResult.adjusted_for``; None: the model does not say)."""
    if covariates is None:
        return "check whether the pooling model adjusts for mean FD (its methods text says)"
    if "mean_fd" in covariates:
        return "the effects are adjusted for each scan's mean FD (effects at equal motion)"
    return ("the effects are NOT adjusted for motion; use a pooling model that adjusts for mean FD "
            "(e.g. pooling.motion=true where the model has that key)")


def baseline_only_datasets(scans: pd.DataFrame) -> list[str]:
    """Datasets whose included drug scans are compared only with baselines (pre/post designs,
    no placebo): their drug effects include whatever changes with session order (habituation,
    expectancy, scanner drift), which no model of these scans can separate from the drug. On
    simulated studies an order effect of +0.02 Fisher z made such a dataset's null pairs into
    selected effects (docs/calibration.md, scenario order_effect)."""
    kept = scans[~scans["excluded"]] if "excluded" in scans else scans
    controls = kept[kept["condition"] != "drug"].groupby("dataset")["condition"].agg(set)
    with_drug = set(kept.loc[kept["condition"] == "drug", "dataset"])
    return sorted(ds for ds, kinds in controls.items() if ds in with_drug and kinds == {"baseline"})


def motion_change(scans: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Drug-minus-control mean FD per drug (and over all drugs): the first QC question.

    Per subject with both kinds of included scans, the mean FD of its drug scans minus that of
    its control scans; per drug, the mean change over subjects with a t interval. A change whose
    interval excludes 0 means motion differs by condition and can look like an FC effect.
    """
    from scipy import stats

    inc = scans[~scans["excluded"].astype(bool)].assign(fd=lambda t: pd.to_numeric(t["mean_fd"], errors="coerce"))
    inc = inc[np.isfinite(inc["fd"])]
    is_drug = inc["condition"] == "drug"
    keys = ["dataset", "subject"]
    # per subject and drug (a crossover of two drugs gives one row per drug), against the controls
    drug = inc[is_drug].groupby(keys + ["drug"])["fd"].mean().rename("fd_drug").reset_index()
    ctrl = inc[~is_drug].groupby(keys)["fd"].mean().rename("fd_control").reset_index()
    both = drug.merge(ctrl, on=keys, how="inner")
    both["change"] = both["fd_drug"] - both["fd_control"]
    rows = []
    everyone = both.groupby(keys, as_index=False)[["fd_drug", "fd_control", "change"]].mean()  # a subject once
    for name, g in [(d, both[both["drug"] == d]) for d in sorted(both["drug"].unique(), key=str.lower)] + [("all", everyone)]:
        n = len(g)
        mean = float(g["change"].mean()) if n else np.nan
        if n > 1:
            half = stats.t.ppf(0.5 + level / 2, n - 1) * g["change"].std(ddof=1) / np.sqrt(n)
        else:
            half = np.nan
        rows.append({"drug": name, "n_subjects": n, "fd_control_median": float(g["fd_control"].median()) if n else np.nan,
                     "fd_drug_median": float(g["fd_drug"].median()) if n else np.nan, "fd_change_mean": mean,
                     "ci_low": mean - half, "ci_high": mean + half,
                     "differs": bool(n > 1 and (mean - half > 0 or mean + half < 0))})
    return pd.DataFrame(rows)


def exclusion_counts(scans: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset and reason (reason 'included' for kept scans)."""
    reason = scans["exclusion_reason"].where(scans["excluded"], "included")
    counts = scans.assign(reason=reason).groupby(["dataset", "reason"]).size().rename("n_scans").reset_index()
    totals = scans.groupby("dataset").size().rename("dataset_scans")
    return counts.join(totals, on="dataset")


#: Share of edges whose FC correlates with mean FD at p < 0.05 beyond which a run warns (about
#: 5% would by chance if motion did not drive FC).
QCFC_ALERT = 0.10


def qcfc_share(qc: pd.DataFrame) -> float:
    """Share of QC-FC edges at p < 0.05 (NaN without any)."""
    p = pd.to_numeric(qc["p"], errors="coerce").dropna() if "p" in qc else pd.Series(dtype=float)
    return float((p < 0.05).mean()) if len(p) else float("nan")


def qc_fc(connectomes: Connectomes, scans: pd.DataFrame) -> pd.DataFrame:
    """Correlation across scans between mean FD and each edge's FC (Power et al. 2014 QC-FC)."""
    from scipy import stats

    fd = scans.set_index("scan_id").loc[connectomes.scan_ids, "mean_fd"].to_numpy(dtype=float)
    ok = np.isfinite(fd)
    iu, ju = np.triu_indices(len(connectomes.labels), 1)
    if ok.sum() < 3 or np.ptp(fd[ok]) == 0:
        return pd.DataFrame(columns=["region_a", "region_b", "r", "p"])
    edges = connectomes.matrices[ok][:, iu, ju]
    x = (fd[ok] - fd[ok].mean()) / fd[ok].std()
    e = edges - edges.mean(axis=0)
    sd = e.std(axis=0)
    r = np.where(sd > 0, (x[:, None] * e).mean(axis=0) / np.where(sd > 0, sd, 1), 0.0)
    n = ok.sum()
    t = r * np.sqrt((n - 2) / np.clip(1 - r**2, 1e-12, None))
    p = 2 * stats.t.sf(np.abs(t), n - 2)
    labels = np.asarray(connectomes.labels, dtype=object)
    return pd.DataFrame({"region_a": labels[iu], "region_b": labels[ju], "r": r, "p": p})


def with_distances(qc: pd.DataFrame, labels: list[str], centres: np.ndarray | None) -> pd.DataFrame:
    # centres: the atlas's real region centres (Atlas.centroids(display=False)), never display positions
    """QC-FC rows with the Euclidean distance (mm) between the two regions' centres.

    Motion inflates short-range and deflates long-range FC (Power et al. 2012), so QC-FC that
    varies with distance is the artefact's signature.
    """
    if centres is None or qc.empty:
        return qc
    index = {lab: i for i, lab in enumerate(labels)}
    a = centres[[index[x] for x in qc["region_a"]]]
    b = centres[[index[x] for x in qc["region_b"]]]
    return qc.assign(distance_mm=np.round(np.linalg.norm(a - b, axis=1), 2))
