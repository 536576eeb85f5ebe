"""The marginal parametrisation is exact: its likelihood and conditional draws against brute force."""

import numpy as np
import pytensor.tensor as pt
import pytest
from scipy.stats import multivariate_normal

from megafc.plugins.pooling.marginal import conditional_effects, marginal_loglik, unit_statistics

EFFECT_SD = 0.2

# (unit sizes, unit -> drug): the paper's shape in miniature, one drug, one dataset per drug, one unit
STRUCTURES = [
    ([3, 4, 2, 5, 3, 1], [0, 0, 0, 1, 1, 2]),
    ([3, 4, 2, 5], [0, 0, 0, 0]),
    ([4, 3, 5], [0, 1, 2]),
    ([6], [0]),
]


def _data(sizes, unit_drug, n_pairs=2, seed=0, loc=0.05):
    rng = np.random.default_rng(seed)
    unit_idx = np.repeat(np.arange(len(sizes)), sizes)
    y = rng.normal(loc, 0.1, (len(unit_idx), n_pairs))
    x = rng.normal(size=(len(unit_idx), 1))
    unit_drug = np.asarray(unit_drug)
    return y, x, unit_idx, unit_drug, unit_statistics(y, unit_idx, unit_drug, unit_drug.max() + 1, x)


def _design_matrices(unit_idx, unit_drug):
    units = np.eye(len(unit_drug))[unit_idx]
    drugs = np.eye(unit_drug.max() + 1)[unit_drug[unit_idx]]
    return units, drugs


@pytest.mark.parametrize("sizes, unit_drug", STRUCTURES)
def test_marginal_likelihood_equals_multivariate_normal(sizes, unit_drug):
    """Differences of log-likelihood between parameter values equal those of the full
    multivariate normal of the scans (every effect integrated out by hand)."""
    y, x, unit_idx, unit_drug, stats = _data(sizes, unit_drug)
    units, drugs = _design_matrices(unit_idx, unit_drug)
    n, n_pairs = y.shape
    rng = np.random.default_rng(1)
    use_drug = unit_drug.max() > 0
    use_dataset = len(unit_drug) > unit_drug.max() + 1

    def brute(td, tk, sigma, b):
        total = 0.0
        for p in range(n_pairs):
            cov = (sigma[p] ** 2 * np.eye(n) + tk[p] ** 2 * units @ units.T + td[p] ** 2 * drugs @ drugs.T
                   + EFFECT_SD ** 2)
            total += multivariate_normal(b[p] * x[:, 0], cov).logpdf(y[:, p])
        return total

    def marginal(td, tk, sigma, b):
        return float(marginal_loglik(stats, pt.as_tensor(td), pt.as_tensor(tk), pt.as_tensor(sigma),
                                     [pt.as_tensor(b)], EFFECT_SD).eval())

    params = [
        (rng.uniform(0.01, 0.3, n_pairs) * use_drug, rng.uniform(0.01, 0.3, n_pairs) * use_dataset,
         rng.uniform(0.05, 0.3, n_pairs), rng.normal(0, 0.1, n_pairs))
        for _ in range(4)
    ]
    np.testing.assert_allclose(np.diff([marginal(*p) for p in params]), np.diff([brute(*p) for p in params]),
                               rtol=1e-8, atol=1e-8)


def test_conditional_draws_match_the_exact_posterior_of_the_effects():
    """For fixed sds and slope, draws of (overall, drug, dataset effects) have the mean and
    covariance of the Gaussian posterior of the effects given the data."""
    sizes, unit_drug = STRUCTURES[0]
    y, x, unit_idx, unit_drug, stats = _data(sizes, unit_drug, n_pairs=1, loc=0.3)
    units, drugs = _design_matrices(unit_idx, unit_drug)
    td, tk, sigma, b = 0.08, 0.05, 0.12, 0.03
    n_drugs, n_units = drugs.shape[1], units.shape[1]
    # effects e = (mu, beta, theta) = L @ independent innovations
    L = np.zeros((1 + n_drugs + n_units,) * 2)
    L[0, 0] = EFFECT_SD
    L[1:1 + n_drugs, 0] = EFFECT_SD
    L[1:1 + n_drugs, 1:1 + n_drugs] = td * np.eye(n_drugs)
    L[1 + n_drugs:] = L[1 + unit_drug]
    L[1 + n_drugs:, 1 + n_drugs:] = tk * np.eye(n_units)
    prior_cov = L @ L.T
    Z = np.hstack([np.zeros((len(y), 1 + n_drugs)), units])
    post_cov = np.linalg.inv(np.linalg.inv(prior_cov) + Z.T @ Z / sigma ** 2)
    post_mean = post_cov @ Z.T @ (y[:, 0] - b * x[:, 0]) / sigma ** 2

    S = 40_000
    draws = {"tau_drug": np.full((1, S, 1), td), "tau_dataset": np.full((1, S, 1), tk),
             "sigma": np.full((1, S, 1), sigma), "beta_motion": np.full((1, S, 1), b)}
    out = conditional_effects(stats, draws, ["beta_motion"], EFFECT_SD, np.random.default_rng(0))
    e = np.concatenate([out["overall"][0], out["drug_effect"][0, :, :, 0], out["dataset_effect"][0, :, :, 0]], axis=1)
    sd = np.sqrt(np.diag(post_cov))
    np.testing.assert_array_less(np.abs(e.mean(axis=0) - post_mean) / (sd / np.sqrt(S)), 4.5)
    np.testing.assert_allclose(np.cov(e.T), post_cov, atol=0.03 * sd.max() ** 2)
    np.testing.assert_allclose(e.std(axis=0), sd, rtol=0.03)


def test_conditional_draws_with_omitted_levels_and_shared_sds():
    """A missing sd means the level is omitted (effects equal their parent); shared sds are
    (chain, draw) arrays broadcast over pairs."""
    sizes, unit_drug = STRUCTURES[1]  # one drug: no drug level
    y, x, unit_idx, unit_drug, stats = _data(sizes, unit_drug, n_pairs=3)
    draws = {"tau_dataset": np.full((2, 50), 0.05), "sigma": np.full((2, 50, 3), 0.1)}
    out = conditional_effects(stats, draws, [], EFFECT_SD, np.random.default_rng(0))
    np.testing.assert_array_equal(out["drug_effect"][:, :, 0], out["overall"])
    assert out["dataset_effect"].shape == (2, 50, 4, 3)
    assert not np.allclose(out["dataset_effect"][:, :, 0], out["overall"])
