"""The vectorised diagnostics must be ArviZ's, number for number."""

import arviz as az
import numpy as np
import pytest

from megafc.stats import convergence


def _draws(n_chains: int, n_draws: int, seed: int = 0) -> np.ndarray:
    """A mix of the cases diagnostics differ on: white noise, slow and alternating AR(1)
    chains, chains with shifted means, ties, a constant and a NaN quantity."""
    rng = np.random.default_rng(seed)
    n = 12
    e = rng.standard_normal((n_chains, n_draws, n))
    white = e.copy()
    slow = np.zeros_like(e)
    alternating = np.zeros_like(e)
    phi = rng.uniform(0.0, 0.99, n)
    for t in range(1, n_draws):
        slow[:, t] = phi * slow[:, t - 1] + e[:, t]
        alternating[:, t] = -0.9 * alternating[:, t - 1] + e[:, t]
    shifted = white + np.arange(n_chains)[:, None, None] * rng.uniform(0.0, 1.0, n)
    x = np.concatenate([white, slow, alternating, shifted, np.round(white[..., :4]),
                        np.ones((n_chains, n_draws, 1)), np.ones((n_chains, n_draws, 1))], axis=2)
    x[:, 0, -1] = np.nan
    return x


@pytest.mark.parametrize("n_chains, n_draws", [(2, 1000), (4, 101), (1, 50), (3, 5), (2, 3)])
def test_rhat_and_ess_equal_arviz(n_chains, n_draws):
    x = _draws(n_chains, n_draws)
    ds = az.convert_to_dataset({"x": x})
    expected = {
        "r_hat": az.rhat(ds)["x"].to_numpy(),
        "ess_bulk": az.ess(ds, method="bulk")["x"].to_numpy(),
        "ess_tail": az.ess(ds, method="tail")["x"].to_numpy(),
    }
    got = dict(zip(expected, convergence.diagnose(x, chunk=7)))  # small chunks: the threaded path
    got_single = {"r_hat": convergence.rhat(x), "ess_bulk": convergence.ess_bulk(x), "ess_tail": convergence.ess_tail(x)}
    np.testing.assert_allclose(convergence.ess_folded(x), az.ess(ds, method="folded")["x"].to_numpy(),
                               rtol=1e-10, equal_nan=True)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-10, equal_nan=True, err_msg=key)
        np.testing.assert_allclose(got_single[key], expected[key], rtol=1e-10, equal_nan=True, err_msg=key)
    if n_chains >= 2 and n_draws >= 4:
        assert np.isfinite(got["r_hat"][:-2]).all() and np.isnan(got["r_hat"][-2:]).all()  # constant, NaN
        assert got["r_hat"][36:48].max() > 1.05  # shifted chains are caught


@pytest.mark.parametrize("prob", [0.95, 0.5])
def test_hdi_equals_arviz(prob):
    x = _draws(2, 400)[..., :-1]
    expected = az.hdi(az.convert_to_dataset({"x": x}), hdi_prob=prob)["x"].to_numpy()
    np.testing.assert_array_equal(convergence.hdi(x, prob), expected)


def test_average_ranks_equal_scipy():
    from scipy.stats import rankdata

    x = np.round(np.random.default_rng(3).standard_normal((5, 300)), 1)
    np.testing.assert_array_equal(convergence._average_ranks(x), rankdata(x, axis=1))


@pytest.mark.parametrize("shape", [(2, 1000, 30), (4, 301, 12), (1, 200, 8), (2, 3, 5)])
def test_one_sort_summary_equals_the_separate_estimators(shape):
    """summarise() reuses one sort for ranks, quantiles and HDIs; it must give what the
    estimators above give one by one (odd draws, ties, a NaN quantity, one chain, too few draws)."""
    from megafc.stats.convergence import ess_bulk, ess_tail, hdi, rhat, summarise

    rng = np.random.default_rng(3)
    x = rng.standard_t(3, size=shape).cumsum(axis=1) * 0.05 + rng.standard_normal(shape)
    x[..., 0] = np.round(x[..., 0])  # ties
    x[0, 0, 1] = np.nan
    x[..., 2] = rng.standard_normal(shape[:2]).cumsum(axis=1)  # autocorrelated beyond the first lags
    out = summarise(x, (0.9, 0.5))
    np.testing.assert_allclose(out["r_hat"], rhat(x), rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(out["ess_bulk"], ess_bulk(x), rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(out["ess_tail"], ess_tail(x), rtol=1e-10, equal_nan=True)
    ok = ~np.isnan(x).any(axis=(0, 1))
    assert np.isnan(out["mean"][~ok]).all()
    for q in (0.9, 0.5):
        np.testing.assert_array_equal(np.column_stack([out[f"hdi_low:{q}"], out[f"hdi_high:{q}"]])[ok],
                                      hdi(x[..., ok], q))
    flat = x[..., ok].reshape(-1, ok.sum())
    np.testing.assert_allclose(out["mean"][ok], flat.mean(axis=0))
    np.testing.assert_allclose(out["sd"][ok], flat.std(axis=0, ddof=1))


def test_an_sd_whose_density_is_highest_at_zero_has_an_interval_from_zero():
    """A between-drug sd of exactly 0 must be able to lie inside its interval: where the
    narrowest interval starts at the smallest draw, it starts at the bound (0), elsewhere the
    bound changes nothing."""
    from megafc.stats import summarise_draws

    rng = np.random.default_rng(0)
    draws = np.stack([np.abs(rng.normal(0, 0.01, (2, 1000))),  # half-normal: densest at 0
                      rng.normal(0.05, 0.005, (2, 1000)),  # far from 0
                      rng.normal(0.0, 0.01, (2, 1000))], axis=-1)  # unbounded
    free = summarise_draws(draws, hdi_prob=0.95)
    bounded = summarise_draws(draws, hdi_prob=0.95, lower_bound=np.array([0.0, 0.0, -np.inf]))
    assert free.loc[0, "hdi_low"] > 0 and bounded.loc[0, "hdi_low"] == 0.0
    assert bounded.loc[0, "hdi50_low"] == 0.0
    pd_cols = ["hdi_low", "hdi_high", "hdi50_low", "hdi50_high", "mean", "r_hat"]
    assert bounded.loc[1:, pd_cols].equals(free.loc[1:, pd_cols])
    assert bounded.loc[0, "hdi_high"] == pytest.approx(free.loc[0, "hdi_high"], rel=0.02)
    # the exact 95% HDI of a half-normal is [0, its 95% quantile]
    assert bounded.loc[0, "hdi_high"] == pytest.approx(0.01 * 1.96, rel=0.05)
    # a density that is 0 at the bound (mode above it) keeps its own interval
    gamma = rng.gamma(3.0, 0.01, (2, 1000, 1))
    assert summarise_draws(gamma, lower_bound=0.0).equals(summarise_draws(gamma))


def test_helpers_that_moved_to_stats_still_import_from_core():
    """Third-party pooling models written against ``megafc.core.summarise_draws`` (and the other
    two) keep working; they are told where the helper lives now."""
    import megafc.core
    import megafc.stats

    for name in ("summarise_draws", "sampler_diagnostics", "flag_ok"):
        with pytest.warns(DeprecationWarning, match=f"megafc.stats.{name}"):
            assert getattr(megafc.core, name) is getattr(megafc.stats, name)
    with pytest.raises(AttributeError, match="no attribute 'summarise'"):
        megafc.core.summarise  # noqa: B018 (not a helper that moved)


def _ar1(rng, n_chains: int, n_draws: int, n: int, rho: float) -> np.ndarray:
    """Converged chains: stationary AR(1) draws of the same distribution in every chain."""
    e = rng.standard_normal((n_chains, n_draws, n))
    x = np.empty_like(e)
    x[:, 0] = e[:, 0]
    for t in range(1, n_draws):
        x[:, t] = rho * x[:, t - 1] + np.sqrt(1 - rho ** 2) * e[:, t]
    return x


def _diagnostics_row(x: np.ndarray, threshold: float = 1.01):
    import pandas as pd

    from megafc.stats.rhat_chance import rhat_chance_columns

    r_hat, bulk, _ = convergence.diagnose(x)
    cols = rhat_chance_columns(r_hat, bulk, convergence.ess_folded(x), x.shape[0], x.shape[1], threshold)
    return pd.DataFrame([{"variable": "sigma", "size": x.shape[2], "r_hat_max": np.nanmax(r_hat),
                          "chains": x.shape[0], "draws": x.shape[1], **cols}]), r_hat


@pytest.mark.parametrize("n_chains, n_draws, rho", [(2, 750, 0.4), (4, 400, 0.5)])
def test_rhat_by_chance_counts_what_converged_chains_exceed(n_chains, n_draws, rho):
    """Converged chains of this length put many of 3,000 quantities above 1.01 (every full-size
    calibration fit warned "not converged" for this); the chance count must be close to it."""
    x = _ar1(np.random.default_rng(5), n_chains, n_draws, 3000, rho)
    row, r_hat = _diagnostics_row(x)
    observed = int((r_hat > 1.01).sum())
    assert observed >= 10
    assert 0.5 * observed <= row.loc[0, "r_hat_over_by_chance"] <= 2 * observed
    assert row.loc[0, "n_r_hat_over"] == observed


def test_rhat_warning_tells_short_chains_from_chains_that_disagree():
    from megafc.stats import rhat_warning

    rng = np.random.default_rng(6)
    x = _ar1(rng, 2, 750, 3000, 0.4)
    row, _ = _diagnostics_row(x)
    said = rhat_warning(row, 1.01)
    assert "shows no failure to converge" in said and "not converged" not in said
    draws = int(row.loc[0, "draws_for_r_hat"])
    assert draws > 750
    # at the advised length converged chains rarely exceed 1.01 at all
    longer, r_hat = _diagnostics_row(_ar1(rng, 2, draws, 3000, 0.4))
    assert (r_hat > 1.01).sum() <= 4 and longer.loc[0, "r_hat_over_by_chance"] < 1
    # chains already that long with one R-hat over by chance: not asked to be as long as they are
    if (r_hat > 1.01).any():
        said = rhat_warning(longer, 1.01)
        assert "shows no failure to converge" in said and f"about {draws} draws" not in said
    # the default run's case: 1 of 6,397 over at 2,000 draws, where 2,000 are enough
    one = longer.assign(n_r_hat_over=1, r_hat_max=1.011, draws_for_r_hat=draws)
    said = rhat_warning(one, 1.01)
    assert "shows no failure to converge" in said and "draws per chain would (" not in said
    assert f"2 chains x {draws} draws put" in said
    # three quantities whose second chain sits half an sd away: not chance, whatever their ESS
    x[1, :, :3] += 0.5
    bad, _ = _diagnostics_row(x)
    assert "chains have not converged (sigma" in rhat_warning(bad, 1.01)
    # nothing over the threshold: nothing to say
    assert rhat_warning(_diagnostics_row(x, 1.2)[0], 1.2) is None


def test_the_sampler_verdict_fails_on_chains_that_disagree_and_on_low_bfmi():
    """sampler_healthy is the run's verdict beyond each row's ok: R-hats beyond chance on any
    sampled variable, or an energy BFMI below 0.3 (which also gets its own warning)."""
    from megafc.stats import bfmi_warning, sampler_healthy

    rng = np.random.default_rng(6)
    x = _ar1(rng, 2, 750, 3000, 0.4)
    fine, _ = _diagnostics_row(x)
    assert sampler_healthy(fine.assign(bfmi_min=0.9)) and bfmi_warning(fine.assign(bfmi_min=0.9)) is None
    assert sampler_healthy(fine)  # chance-level R-hats above 1.01 are not a failure
    low = fine.assign(bfmi_min=0.11)
    assert not sampler_healthy(low) and "energy BFMI 0.11 (below 0.3)" in bfmi_warning(low)
    x[1, :, :3] += 0.5
    assert not sampler_healthy(_diagnostics_row(x)[0].assign(bfmi_min=0.9))
