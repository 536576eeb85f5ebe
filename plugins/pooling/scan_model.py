"""The scan-level hierarchical model with every mean integrated out (the ``pymc`` default).

Per network pair p (dropped below), scan s of subject j in dataset k::

    fc[s] = alpha[k] + a[j] + x[s] . theta[k] + w[s] . b + e[s]
    a[j] ~ Normal(0, omega[k])          (subject intercepts, compound symmetry)
    e[s] ~ Normal(0, sigma[k])          (each dataset its own residual sd)
    theta[u] ~ Normal(beta[drug(u)], tau_dataset),  beta[d] ~ Normal(mu, tau_drug),
    mu ~ Normal(0, effect_sd),  alpha[k] flat

Fixed drug effects (the ``pymc`` default) are the same tree with mu pinned at 0 (prior sd 0)
and tau_drug = effect_sd: beta[d] ~ Normal(0, effect_sd) independently.

``x[s]`` is the one-hot drug indicator of the scan's dataset unit (zero on control scans;
a dataset with several drugs has one unit per drug), ``w[s]`` the scan's covariates (FD, dose,
time since dose) with slopes ``b`` that NUTS samples. Every design enters the same way:
crossover, pre/post, several drug or control scans per subject, parallel groups and subjects
with a single scan.

Given the sds and slopes everything else is Gaussian, so it is integrated out exactly:

1. Within dataset k, a subject's scans have covariance sigma^2 I + omega^2 11', whose inverse
   splits into a within-subject part (weight 1/sigma^2) and a between-subject part (weight
   1/(sigma^2 + n omega^2) for a subject with n scans). The generalised least-squares
   normal equations of (alpha, theta) are therefore weighted sums of cross-products that are
   computed once (:func:`scan_statistics`): one "component" for the within part and one per
   distinct number of scans per subject.
2. alpha[k] (flat) is profiled out exactly by a Schur complement, leaving each dataset's
   likelihood as a Gaussian in its units' theta (precision H_k, score g_k).
3. The units' effects, the drug effects and the overall effect are integrated out by passing
   Gaussian messages up the tree, and drawn afterwards top-down from their exact
   conditionals (:mod:`.scan_kernel`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ScanStatistics:
    """Weighted cross-products per dataset k and component c (within, then each subject size).

    R = 1 + m local columns (alpha, then the dataset's unit slots, padded to the largest
    number of units in one dataset); Q covariates; P outcomes (network pairs).
    """

    sizes: np.ndarray  # (C-1,) distinct numbers of scans per subject
    n_subjects: np.ndarray  # (K, C-1) subjects of each size per dataset
    sxx: np.ndarray  # (K, C, R, R)
    sxw: np.ndarray  # (K, C, R, Q)
    sww: np.ndarray  # (K, C, Q, Q)
    sxy: np.ndarray  # (K, C, R, P)
    swy: np.ndarray  # (K, C, Q, P)
    syy: np.ndarray  # (K, C, P)
    unit_dataset: np.ndarray  # (U,) dataset of each unit
    unit_slot: np.ndarray  # (U,) its column (1-based after alpha) within the dataset
    unit_drug: np.ndarray  # (U,) drug index of each unit
    n_drugs: int

    @property
    def n_units(self) -> int:
        return len(self.unit_dataset)


def scan_statistics(y: np.ndarray, dataset_idx: np.ndarray, subject_idx: np.ndarray, unit_idx: np.ndarray,
                    unit_dataset: np.ndarray, unit_drug: np.ndarray, n_drugs: int,
                    covariates: np.ndarray) -> ScanStatistics:
    """Sufficient statistics of scan-level outcomes ``y`` (S, P).

    ``unit_idx`` is the unit of each drug scan and -1 for control scans; ``subject_idx``
    numbers subjects across datasets (a subject belongs to one dataset); ``covariates`` is
    (S, Q), Q may be 0.
    """
    n_scans, n_out = y.shape
    n_ds = int(dataset_idx.max()) + 1
    slots = np.zeros(len(unit_dataset), dtype=int)
    for k in range(n_ds):
        mine = np.flatnonzero(unit_dataset == k)
        slots[mine] = np.arange(1, len(mine) + 1)
    r = 1 + (int(np.bincount(unit_dataset, minlength=n_ds).max()) if len(unit_dataset) else 0)
    x = np.zeros((n_scans, r))
    x[:, 0] = 1.0
    drug = unit_idx >= 0
    x[np.flatnonzero(drug), slots[unit_idx[drug]]] = 1.0
    z = np.hstack([x, covariates, y])  # every cross-product at once, split afterwards
    n_sub = int(subject_idx.max()) + 1
    size = np.bincount(subject_idx, minlength=n_sub)
    mean = np.zeros((n_sub, z.shape[1]))
    np.add.at(mean, subject_idx, z)
    mean /= np.maximum(size, 1)[:, None]
    dev = z - mean[subject_idx]
    sizes = np.unique(size[size > 0])
    sub_ds = np.zeros(n_sub, dtype=int)
    sub_ds[subject_idx] = dataset_idx
    n_comp = 1 + len(sizes)
    cross = np.zeros((n_ds, n_comp, z.shape[1], z.shape[1]))
    for k in range(n_ds):
        d = dev[dataset_idx == k]
        cross[k, 0] = d.T @ d
        for g, n in enumerate(sizes):
            m = mean[(sub_ds == k) & (size == n)]
            cross[k, 1 + g] = n * (m.T @ m)
    n_subjects = np.array([[np.sum((sub_ds == k) & (size == n) & (size > 0)) for n in sizes] for k in range(n_ds)])
    q = covariates.shape[1]
    xs, ws, ys = slice(0, r), slice(r, r + q), slice(r + q, None)
    diag = np.arange(n_out)
    return ScanStatistics(
        sizes=sizes.astype(float), n_subjects=n_subjects.astype(float),
        sxx=cross[:, :, xs, xs], sxw=cross[:, :, xs, ws], sww=cross[:, :, ws, ws],
        sxy=cross[:, :, xs, ys], swy=cross[:, :, ws, ys],
        syy=cross[:, :, r + q + diag, r + q + diag],
        unit_dataset=np.asarray(unit_dataset), unit_slot=slots, unit_drug=np.asarray(unit_drug), n_drugs=n_drugs,
    )
