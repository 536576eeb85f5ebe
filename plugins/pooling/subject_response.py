"""How much subjects differ in the strength of their response, and what that leaves uncertain
about a dataset's effects.

People respond to a drug with different strength: a subject's FC change is roughly their own
multiple of their dataset's pattern (the synthetic study plants multiples with sd 0.3). The
scan-level model has subject intercepts but no subject-specific effects, so each network pair's
residual absorbs this spread, as if it were independent from pair to pair. It is not: a
dataset's 20 subjects are, on average, a common multiple of its population's pattern, stronger or
weaker on every pair at once. Where a dataset's scale is learned from all pairs together
(datasets of a drug with two or more datasets), that scale reflects its subjects' mean multiple
and its interval missed it: on 20 simulated studies the dataset scales' errors were 2.5x their
posterior sds and large dataset effects covered 0.86-0.89.

``response_spread`` estimates the sd psi of subjects' multiples from within-subject changes
(each subject's drug-minus-control FC regressed on their dataset's estimated pattern, less the
regression's own noise, pooled over datasets by a DerSimonian-Laird style weighting). A dataset
of n subjects then lies a factor exp(psi xi / sqrt(n)), xi ~ Normal(0, 1), from its population,
which ``add_effects`` draws into the dataset effects and scales of datasets with learned scales.
"""

from __future__ import annotations

import numpy as np

#: Fewer subjects with both a drug and a control scan than this: the dataset does not inform psi.
MIN_SUBJECTS = 3


def subject_multiples(changes: np.ndarray, pattern: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each subject's multiple of ``pattern`` (P,) in their FC changes ``changes`` (J, P), and
    its sampling variance (least squares through the origin, residual variance per subject)."""
    norm = float(pattern @ pattern)
    if norm <= 0 or changes.shape[1] < 2:
        return np.full(len(changes), np.nan), np.full(len(changes), np.nan)
    multiple = changes @ pattern / norm
    residual = changes - multiple[:, None] * pattern[None, :]
    return multiple, (residual ** 2).sum(axis=1) / (changes.shape[1] - 1) / norm


def pooled_spread(groups: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """sd of the true multiples from per-dataset (multiples, their sampling variances): each
    dataset's variance of multiples less their mean sampling variance, pooled with weights
    (n - 1) / (sampling variance + psi^2)^2 (twice iterated from psi = 0), floored at 0."""
    parts = []
    for multiple, noise in groups:
        ok = np.isfinite(multiple) & np.isfinite(noise)
        if ok.sum() >= MIN_SUBJECTS:
            parts.append((float(np.var(multiple[ok], ddof=1)), float(noise[ok].mean()), int(ok.sum())))
    if not parts:
        return 0.0
    psi2 = 0.0
    for _ in range(3):
        weights = np.array([(n - 1) / (noise + psi2) ** 2 for _, noise, n in parts])
        psi2 = max(float(np.sum(weights * np.array([v - noise for v, noise, _ in parts])) / weights.sum()), 0.0)
    return float(np.sqrt(psi2))


def response_spread(y: np.ndarray, design, unit_patterns: np.ndarray) -> tuple[float, np.ndarray]:
    """(psi, subjects per unit) from scan-level FC ``y`` (S, P) with covariate effects removed and
    each dataset unit's estimated effect pattern ``unit_patterns`` (U, P). A subject's change is
    the mean of their scans of the unit less the mean of their control scans; subjects of
    parallel-group datasets (no control scan of their own) do not inform psi but count in n."""
    groups, counts = [], np.zeros(len(design.units), dtype=int)
    control = ~design.is_drug
    for u in range(len(design.units)):
        mine = design.unit_idx == u
        subjects = np.unique(design.subject_idx[mine])
        counts[u] = len(subjects)
        changes = []
        for j in subjects:
            base = control & (design.subject_idx == j)
            if base.any():
                changes.append(y[mine & (design.subject_idx == j)].mean(axis=0) - y[base].mean(axis=0))
        if changes:
            groups.append(subject_multiples(np.asarray(changes), unit_patterns[u]))
    return pooled_spread(groups), counts


def population_factors(psi: float, counts: np.ndarray, learned: np.ndarray, n_draws: int,
                       rng: np.random.Generator) -> np.ndarray:
    """(N, U) factors from each unit's sample of subjects to its population: exp(psi xi / sqrt(n))
    where the unit's scale is learned (``learned``), 1 elsewhere."""
    xi = rng.standard_normal((n_draws, len(counts)))
    return np.where(learned[None, :], np.exp(psi * xi / np.sqrt(np.maximum(counts, 1))[None, :]), 1.0)


def sample_dataset_effects(post) -> np.ndarray:
    """(chain, draw, dataset, pair) dataset effects of the datasets' samples of subjects, what
    their scans were drawn from (the posterior's ``dataset_effect`` are their populations'):
    for the scans' likelihood and predictive checks."""
    theta = post["dataset_effect"].to_numpy()
    if "dataset_population_factor" in post:
        theta = theta / post["dataset_population_factor"].to_numpy()[..., None]
    return theta
