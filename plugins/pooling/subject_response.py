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

``response_spread`` estimates the sd psi of subjects' multiples (relative to their dataset's
mean) from within-subject changes: each subject's drug-minus-control FC projected on their
dataset's estimated pattern, less what noise alone spreads such projections by (measured on
shuffled copies of the pattern), pooled over datasets by a DerSimonian-Laird style weighting. A dataset
of n subjects then lies a factor exp(psi xi / sqrt(n)), xi ~ Normal(0, 1), from its population,
which ``add_effects`` draws into the dataset effects and scales of datasets with learned scales.
"""

from __future__ import annotations

import numpy as np

from .loo import subject_differences

#: Fewer subjects with both a drug and a control scan than this: the dataset does not inform psi.
MIN_SUBJECTS = 3

#: Fewer outcomes (network pairs and summaries) than this: psi is not estimated.
MIN_PAIRS = 2

#: Shuffled copies of a pattern that measure what noise alone spreads the multiples by.
PERMUTATIONS = 50


def unit_spread(changes: np.ndarray, pattern: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    """(variance of the subjects' multiples of ``pattern`` (P,) in their FC changes ``changes``
    (J, P), the part of it noise alone gives, the part of psi^2 the shuffles pick up), all
    relative to the mean multiple, so that a pattern shrunk towards 0 gives the same psi.

    The noise part is the variance of the changes' projections on shuffled copies of the pattern
    (same norm and sum, no alignment with the response): noise shared by all pairs (a global shift
    of a scan's FC) projects onto a same-sign pattern and its shuffles alike, which a residual
    variance would miss (it gave psi 0.34 where none was planted)."""
    norm = float(pattern @ pattern)
    multiple = changes @ pattern / norm
    centre = float(multiple.mean())
    shuffled = np.stack([rng.permutation(pattern) for _ in range(PERMUTATIONS)], axis=1)  # (P, K)
    noise = float(np.var(changes @ shuffled / norm, axis=0, ddof=1).mean())
    leak = float(np.mean((pattern @ shuffled / norm) ** 2))  # a multiple's share in a shuffle's projection
    return float(np.var(multiple, ddof=1)) / centre ** 2, noise / centre ** 2, leak


def pooled_spread(parts: list[tuple[float, float, float, int]]) -> float:
    """sd of the true relative multiples from per-dataset (variance, noise part, leak, subjects):
    each dataset's (variance - noise) / (1 - leak), pooled with weights (n - 1) / (noise + psi^2)^2
    (iterated from psi = 0, as DerSimonian and Laird's), floored at 0."""
    psi2 = 0.0
    for _ in range(3):
        weights = np.array([(n - 1) / max(noise + psi2, 1e-12) ** 2 for _, noise, _, n in parts])
        own = np.array([(total - noise) / (1 - leak) for total, noise, leak, _ in parts])
        psi2 = max(float(np.sum(weights * own) / weights.sum()), 0.0)
    return float(np.sqrt(psi2))


def response_spread(y: np.ndarray, design, unit_patterns: np.ndarray, seed: int = 0) -> tuple[float, np.ndarray]:
    """(psi, subjects per unit) from scan-level FC ``y`` (S, P) with covariate effects removed and
    each dataset unit's estimated effect pattern ``unit_patterns`` (U, P). A subject's change is
    the mean of their scans of the unit less the mean of their control scans; subjects of
    parallel-group datasets (no control scan of their own) do not inform psi but count in n.
    psi is NaN when no unit has MIN_SUBJECTS subjects with a change and a pattern whose
    subjects show it on average (mean multiple > 0), and with fewer than MIN_PAIRS outcomes (a
    one-pair pattern and its shuffles are the same: noise and response cannot be told apart)."""
    rng = np.random.default_rng(seed)
    counts = np.array([len(np.unique(design.subject_idx[design.unit_idx == u])) for u in range(len(design.units))])
    diffs = subject_differences(design.obs, y, np.zeros((len(y), 0)))
    if diffs is None or y.shape[1] < MIN_PAIRS:
        return float("nan"), counts
    parts = []
    for u in range(len(design.units)):
        mine = design.unit_idx[diffs["row"]] == u
        subjects, which = np.unique(diffs["subject"][mine], return_inverse=True)
        changes = np.zeros((len(subjects), y.shape[1]))  # each subject's mean over their scans of the unit
        np.add.at(changes, which, diffs["d"][mine])
        changes /= np.bincount(which, minlength=len(subjects))[:, None]
        pattern = unit_patterns[u]
        if len(changes) < MIN_SUBJECTS or not np.isfinite(pattern).all() or pattern @ pattern <= 0:
            continue
        if float((changes @ pattern).mean()) <= 0:
            continue
        parts.append((*unit_spread(changes, pattern, rng), len(changes)))
    return (pooled_spread(parts) if parts else float("nan")), counts


def population_factors(psi: float, counts: np.ndarray, learned: np.ndarray, n_draws: int,
                       rng: np.random.Generator) -> np.ndarray:
    """(N, U) factors from each unit's sample of subjects to its population: exp(psi xi / sqrt(n))
    where the unit's scale is learned (``learned``), 1 elsewhere (and everywhere for psi NaN)."""
    xi = rng.standard_normal((n_draws, len(counts)))
    if not np.isfinite(psi):
        return np.ones((n_draws, len(counts)))
    return np.where(learned[None, :], np.exp(psi * xi / np.sqrt(np.maximum(counts, 1))[None, :]), 1.0)

