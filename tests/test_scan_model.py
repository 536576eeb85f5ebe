"""The scan-level model is exact: kernel = dense reference = multivariate normal of all scans."""

import numpy as np
import pandas as pd
import pytensor
import pytensor.tensor as pt
import pytest
from scipy.stats import multivariate_normal

from megafc.core import InputError
from megafc.plugins.pooling.scan_design import scan_design
from megafc.plugins.pooling.scan_kernel import conditional_draws, kernel_arrays, loglik_and_grad, scan_marginal_loglik
from megafc.plugins.pooling.scan_model import scan_statistics
from scan_reference import marginal_loglik

EFFECT_SD = 0.2
FLAT = 300.0  # sd standing in for the flat prior on dataset intercepts in the brute-force check

# Every design at once: (dataset, [units of each subject's scans, -1 = control scan])
DESIGNS = [
    (0, [[-1, 0, 0], [-1, 0], [0, -1, 0], [-1]]),  # crossover, 2 drug scans, a single-scan subject
    (1, [[1], [1], [-1], [-1], [1]]),  # parallel groups
    (2, [[-1, 2, 3], [-1, 2, 3], [2, -1], [-1, 3, -1]]),  # two drugs in one dataset, 2 control scans
    (3, [[-1, 4], [-1, 4], [-1, 4]]),  # pre/post
]
UNIT_DATASET = np.array([0, 1, 2, 2, 3])
UNIT_DRUG = np.array([0, 0, 1, 2, 1])


@pytest.fixture(scope="module")
def mixed():
    rows, sid = [], 0
    for ds, subjects in DESIGNS:
        for units in subjects:
            rows += [(ds, sid, u) for u in units]
            sid += 1
    ds, sub, unit = (np.array(c) for c in zip(*rows))
    rng = np.random.default_rng(0)
    y = rng.normal(0.3, 0.1, (len(rows), 2))
    w = rng.normal(size=(len(rows), 1))
    st = scan_statistics(y, ds, sub, unit, UNIT_DATASET, UNIT_DRUG, 3, w)
    params = [(rng.uniform(0.05, 0.2, (4, 2)), rng.uniform(0.02, 0.2, (4, 2)), rng.normal(0, 0.1, (1, 2)),
               rng.uniform(0, 0.2, 2), rng.uniform(0, 0.2, 2)) for _ in range(4)]
    prior = [(rng.normal(0, 0.1, 2), rng.uniform(0.05, 0.3, 2)) for _ in range(4)]
    return dict(y=y, w=w, ds=ds, sub=sub, unit=unit, st=st, params=params, prior=prior)


FIXED_PRIOR = (np.zeros(2), np.full(2, EFFECT_SD))


def scan_covariance(m, sigma, omega, tau_d, tau_k, p, effect_sd=EFFECT_SD, lam=np.ones(3), kappa=np.ones(5)):
    """Covariance of all scans of outcome p with every effect and intercept integrated out by hand
    (drug d's effects centred on lam[d] x the overall effect, unit u's on kappa[u] x its drug's)."""
    ds, sub, unit = m["ds"], m["sub"], m["unit"]
    n, n_units = len(ds), len(UNIT_DRUG)
    intercepts = np.eye(ds.max() + 1)[ds]
    subjects = np.eye(sub.max() + 1)[sub]
    x = np.zeros((n, n_units))
    x[np.flatnonzero(unit >= 0), unit[unit >= 0]] = 1.0
    drug = np.eye(UNIT_DRUG.max() + 1)[UNIT_DRUG]
    load = kappa * lam[UNIT_DRUG]
    theta_cov = (effect_sd ** 2 * np.outer(load, load) + tau_d[p] ** 2 * np.outer(kappa, kappa) * (drug @ drug.T)
                 + tau_k[p] ** 2 * np.eye(n_units))
    sub_sd = omega[ds[np.unique(sub, return_index=True)[1]], p]
    return (np.diag(sigma[ds, p] ** 2) + FLAT ** 2 * intercepts @ intercepts.T
            + subjects @ np.diag(sub_sd ** 2) @ subjects.T + x @ theta_cov @ x.T)


def test_likelihood_equals_the_multivariate_normal_of_all_scans(mixed):
    """Differences between parameter values equal those of the full multivariate normal,
    including each pair's own prior mean and sd of the overall effect."""
    drug_scan = (mixed["unit"] >= 0).astype(float)

    def brute(sigma, omega, b, tau_d, tau_k, prior_mean, prior_sd):
        return sum(multivariate_normal(mixed["w"][:, 0] * b[0, p] + drug_scan * prior_mean[p],
                                       scan_covariance(mixed, sigma, omega, tau_d, tau_k, p, prior_sd[p])
                                       ).logpdf(mixed["y"][:, p])
                   for p in range(2))

    arrays = kernel_arrays(mixed["st"])
    fast = [loglik_and_grad(arrays, *prm, *pri)[0] for prm, pri in zip(mixed["params"], mixed["prior"])]
    want = [brute(*prm, *pri) for prm, pri in zip(mixed["params"], mixed["prior"])]
    np.testing.assert_allclose(np.diff(fast), np.diff(want), atol=1e-5)


LAMS = [np.array([0.6, 1.3, 1.0]), np.array([1.5, 0.4, 0.9]), np.array([1.0, 1.0, 2.0]), np.array([0.8, 1.1, 1.2])]


def test_drug_scales_equal_the_multivariate_normal_of_all_scans(mixed):
    """Drug d's effects centred on lam[d] x the overall effect: the kernel's differences between
    parameter values (drug scales included) equal the full multivariate normal's."""
    drug_scan = mixed["unit"] >= 0

    def brute(sigma, omega, b, tau_d, tau_k, prior_mean, prior_sd, lam):
        mean_load = np.where(drug_scan, lam[UNIT_DRUG[np.maximum(mixed["unit"], 0)]], 0.0)
        return sum(multivariate_normal(mixed["w"][:, 0] * b[0, p] + mean_load * prior_mean[p],
                                       scan_covariance(mixed, sigma, omega, tau_d, tau_k, p, prior_sd[p], lam)
                                       ).logpdf(mixed["y"][:, p])
                   for p in range(2))

    arrays = kernel_arrays(mixed["st"])
    cases = list(zip(mixed["params"], mixed["prior"], LAMS))
    fast = [loglik_and_grad(arrays, *prm, *pri, lam)[0] for prm, pri, lam in cases]
    want = [brute(*prm, *pri, lam) for prm, pri, lam in cases]
    np.testing.assert_allclose(np.diff(fast), np.diff(want), atol=1e-5)


def central_difference(f, x: np.ndarray, i: int, eps: float = 1e-6) -> float:
    """d f / d x[i] by central differences."""
    up, down = x.copy(), x.copy()
    up[i] += eps
    down[i] -= eps
    return (f(up) - f(down)) / (2 * eps)


KAPPAS = [np.array([0.7, 1.2, 1.0, 1.4, 0.9]), np.array([1.3, 0.8, 1.1, 0.6, 1.0]),
          np.array([1.0, 1.0, 1.0, 1.0, 2.0]), np.array([0.9, 1.1, 0.5, 1.2, 1.0])]


def test_unit_scales_equal_the_multivariate_normal_of_all_scans(mixed):
    """Unit u's effects centred on kappa[u] x its drug's effect (itself lam[d] x the overall
    effect): the kernel's differences between parameter values equal the full multivariate
    normal's, with drug and unit scales varying together."""
    drug_scan = mixed["unit"] >= 0

    def brute(sigma, omega, b, tau_d, tau_k, prior_mean, prior_sd, lam, kappa):
        u = np.maximum(mixed["unit"], 0)
        mean_load = np.where(drug_scan, kappa[u] * lam[UNIT_DRUG[u]], 0.0)
        return sum(multivariate_normal(mixed["w"][:, 0] * b[0, p] + mean_load * prior_mean[p],
                                       scan_covariance(mixed, sigma, omega, tau_d, tau_k, p, prior_sd[p], lam, kappa)
                                       ).logpdf(mixed["y"][:, p])
                   for p in range(2))

    arrays = kernel_arrays(mixed["st"])
    cases = list(zip(mixed["params"], mixed["prior"], LAMS, KAPPAS))
    fast = [loglik_and_grad(arrays, *prm, *pri, lam, kappa)[0] for prm, pri, lam, kappa in cases]
    want = [brute(*prm, *pri, lam, kappa) for prm, pri, lam, kappa in cases]
    np.testing.assert_allclose(np.diff(fast), np.diff(want), atol=1e-5)


def test_gradient_in_the_unit_scales(mixed):
    arrays = kernel_arrays(mixed["st"])
    prm, pri, lam, kappa = mixed["params"][3], mixed["prior"][3], LAMS[1], KAPPAS[0]
    out = loglik_and_grad(arrays, *prm, *pri, lam, kappa)
    for u in range(len(kappa)):
        numeric = central_difference(lambda k: loglik_and_grad(arrays, *prm, *pri, lam, k)[0], kappa, u)
        assert out[9][u] == pytest.approx(numeric, rel=1e-5, abs=1e-6)
    for d in range(3):  # the drug scales' gradient still holds with unit scales in between
        numeric = central_difference(lambda x: loglik_and_grad(arrays, *prm, *pri, x, kappa)[0], lam, d)
        assert out[8][d] == pytest.approx(numeric, rel=1e-5, abs=1e-6)
    ins = [pt.matrix(), pt.matrix(), pt.matrix(), pt.vector(), pt.vector(), pt.vector(), pt.vector()]
    op = scan_marginal_loglik(mixed["st"], *ins[:5], *pri, drug_scale=ins[5], unit_scale=ins[6])
    numba_op = pytensor.function(ins, [op, pt.grad(op, ins[6])], mode="NUMBA")
    value, g = numba_op(*prm, lam, kappa)
    assert value == pytest.approx(out[0], rel=1e-10)
    np.testing.assert_allclose(g, out[9], rtol=1e-9)


def test_gradient_in_the_drug_scales(mixed):
    arrays = kernel_arrays(mixed["st"])
    prm, pri, lam = mixed["params"][1], mixed["prior"][1], LAMS[0]
    grad = loglik_and_grad(arrays, *prm, *pri, lam)[8]
    eps = 1e-6
    for d in range(3):
        up, down = lam.copy(), lam.copy()
        up[d] += eps
        down[d] -= eps
        numeric = (loglik_and_grad(arrays, *prm, *pri, up)[0] - loglik_and_grad(arrays, *prm, *pri, down)[0]) / (2 * eps)
        assert grad[d] == pytest.approx(numeric, rel=1e-5, abs=1e-6)
    # the path nutpie compiles (the Op in PyTensor's numba mode) gives the same gradient
    ins = [pt.matrix(), pt.matrix(), pt.matrix(), pt.vector(), pt.vector(), pt.vector()]
    op = scan_marginal_loglik(mixed["st"], *ins[:5], *pri, drug_scale=ins[5])
    numba_op = pytensor.function(ins, [op, pt.grad(op, ins[5])], mode="NUMBA")
    value, g = numba_op(*prm, lam)
    assert value == pytest.approx(loglik_and_grad(arrays, *prm, *pri, lam)[0], rel=1e-10)
    np.testing.assert_allclose(g, grad, rtol=1e-9)


def test_gradient_in_the_prior_of_the_overall_effect(mixed):
    """Finite differences of the kernel's value against its gradient in prior mean and sd."""
    arrays = kernel_arrays(mixed["st"])
    prm, (mean, sd) = mixed["params"][2], mixed["prior"][2]
    _, *grads = loglik_and_grad(arrays, *prm, mean, sd)
    eps = 1e-6
    for i, base in ((5, mean), (6, sd)):
        for p in range(2):
            up, down = base.copy(), base.copy()
            up[p] += eps
            down[p] -= eps
            args = [mean, sd]
            args[i - 5] = up
            hi = loglik_and_grad(arrays, *prm, *args)[0]
            args[i - 5] = down
            lo = loglik_and_grad(arrays, *prm, *args)[0]
            assert grads[i][p] == pytest.approx((hi - lo) / (2 * eps), rel=1e-5, abs=1e-6)


def test_kernel_value_and_gradient_equal_the_autodiff_reference(mixed):
    ins = [pt.matrix(), pt.matrix(), pt.matrix(), pt.vector(), pt.vector()]
    ref = marginal_loglik(mixed["st"], *ins, EFFECT_SD)
    reference = pytensor.function(ins, [ref] + pt.grad(ref, ins))
    op = scan_marginal_loglik(mixed["st"], *ins, *FIXED_PRIOR)
    numba_op = pytensor.function(ins, [op] + pt.grad(op, ins), mode="NUMBA")  # the path nutpie compiles
    arrays = kernel_arrays(mixed["st"])
    for prm in mixed["params"]:
        want = reference(*prm)
        for got in (loglik_and_grad(arrays, *prm, *FIXED_PRIOR)[:6], numba_op(*prm)):
            for a, b in zip(got, want):
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case, p, lam, m, kappa", [(1, 0, None, 0.07, None), (2, 1, LAMS[1], 0.05, None),
                                                    (3, 0, LAMS[2], 0.06, KAPPAS[1])])
def test_conditional_draws_have_the_exact_posterior(mixed, case, p, lam, m, kappa):
    """Draws of (overall, drug, unit effects) for fixed sds match the Gaussian posterior, with
    every drug centred on the overall effect or on its own scale x it (beta[d] ~ Normal(lam[d] mu,
    tau_drug), and units on their own scale x their drug's); the overall effect's prior mean m is
    inherited below it."""
    sigma, omega, b, tau_d, tau_k = mixed["params"][case]
    ds, unit = mixed["ds"], mixed["unit"]
    n_units, n_drugs = len(UNIT_DRUG), 3
    load = np.ones(n_drugs) if lam is None else lam
    unit_load = np.ones(n_units) if kappa is None else kappa
    # effects e = (mu, beta, theta) = mean + L z, z ~ N(0, I); scans = X theta + the other noise
    L = np.zeros((1 + n_drugs + n_units,) * 2)
    L[0, 0] = EFFECT_SD
    L[1:1 + n_drugs, 0] = EFFECT_SD * load
    L[1:1 + n_drugs, 1:1 + n_drugs] = tau_d[p] * np.eye(n_drugs)
    L[1 + n_drugs:] = unit_load[:, None] * L[1 + UNIT_DRUG]
    L[1 + n_drugs:, 1 + n_drugs:] = tau_k[p] * np.eye(n_units)
    x = np.zeros((len(ds), n_units))
    x[np.flatnonzero(unit >= 0), unit[unit >= 0]] = 1.0
    z = np.hstack([np.zeros((len(ds), 1 + n_drugs)), x])
    noise = scan_covariance(mixed, sigma, omega, np.zeros(2), np.zeros(2), p, 0.0)
    prior = L @ L.T
    prior_mean = m * np.r_[1.0, load, unit_load * load[UNIT_DRUG]]
    gain = prior @ z.T @ np.linalg.inv(z @ prior @ z.T + noise)
    post_mean = prior_mean + gain @ (mixed["y"][:, p] - mixed["w"][:, 0] * b[0, p] - z @ prior_mean)
    post_cov = prior - gain @ z @ prior

    n = 40_000
    rep = [np.broadcast_to(a, (n, *a.shape)) for a in (sigma, omega, b, tau_d, tau_k, np.full(2, m),
                                                        np.full(2, EFFECT_SD))]
    scales = None if lam is None else np.broadcast_to(lam, (n, n_drugs))
    unit_scales = None if kappa is None else np.broadcast_to(kappa, (n, n_units))
    mu, beta, theta = conditional_draws(kernel_arrays(mixed["st"]), *rep, np.random.default_rng(case), lam_d=scales,
                                        lam_u=unit_scales)
    e = np.column_stack([mu[:, p], beta[:, :, p], theta[:, :, p]])
    sd = np.sqrt(np.diag(post_cov))
    np.testing.assert_array_less(np.abs(e.mean(axis=0) - post_mean) / (sd / np.sqrt(n)), 4.5)
    np.testing.assert_allclose(e.std(axis=0), sd, rtol=0.03)
    np.testing.assert_allclose(np.cov(e.T), post_cov, atol=0.03 * sd.max() ** 2)


def test_fixed_drug_effects_are_independent_normals(mixed):
    """Fixed drug effects (pymc's default) are the tree with the overall effect's prior sd 0 and
    tau_drug = effect_sd: the likelihood is the multivariate normal of all scans with each drug
    an independent Normal(0, effect_sd), and no drug borrows from another: raising the drug scans
    of drug 0's datasets moves drug 0 and leaves the draws of drugs 1 and 2 as they were (with
    random drug effects it moves them too, through the overall effect)."""
    drug_scan = (mixed["unit"] >= 0).astype(float)
    fixed_tau, zero = np.full(2, EFFECT_SD), np.zeros(2)

    def brute(sigma, omega, b, tau_d, tau_k):
        return sum(multivariate_normal(mixed["w"][:, 0] * b[0, p], scan_covariance(
            mixed, sigma, omega, fixed_tau, tau_k, p, 0.0)).logpdf(mixed["y"][:, p]) for p in range(2))

    arrays = kernel_arrays(mixed["st"])
    fast = [loglik_and_grad(arrays, s, o, b, fixed_tau, k, zero, zero)[0] for s, o, b, _, k in mixed["params"]]
    want = [brute(*prm) for prm in mixed["params"]]
    np.testing.assert_allclose(np.diff(fast), np.diff(want), atol=1e-5)

    raised = mixed["y"] + 0.5 * (drug_scan * np.isin(mixed["unit"], np.flatnonzero(UNIT_DRUG == 0)))[:, None]
    moved = scan_statistics(raised, mixed["ds"], mixed["sub"], mixed["unit"], UNIT_DATASET, UNIT_DRUG, 3, mixed["w"])
    sigma, omega, b, tau_d, tau_k = mixed["params"][0]
    for tau, prior_sd, others_move in ((fixed_tau, zero, False), (tau_d, np.full(2, EFFECT_SD), True)):
        rep = [np.broadcast_to(a, (50, *a.shape)) for a in (sigma, omega, b, tau, tau_k, zero, prior_sd)]
        before = conditional_draws(kernel_arrays(mixed["st"]), *rep, np.random.default_rng(0))[1]
        after = conditional_draws(kernel_arrays(moved), *rep, np.random.default_rng(0))[1]
        assert after[:, 0].mean() > before[:, 0].mean() + 0.1
        assert np.allclose(after[:, 1:], before[:, 1:]) != others_move


def test_conditional_draws_with_a_level_omitted(mixed):
    """tau = 0 means the level is omitted: drug effects equal the overall effect exactly."""
    sigma, omega, b, _, tau_k = mixed["params"][0]
    rep = [np.broadcast_to(a, (50, *a.shape)) for a in (sigma, omega, b, np.zeros(2), tau_k, *FIXED_PRIOR)]
    mu, beta, theta = conditional_draws(kernel_arrays(mixed["st"]), *rep, np.random.default_rng(0))
    np.testing.assert_array_equal(beta, np.repeat(mu[:, None, :], 3, axis=1))
    assert not np.allclose(theta[:, 0], beta[:, 0])


def design_pairs(rows) -> pd.DataFrame:
    """A two-pair network-pair table from (dataset, subject, condition, drug) rows."""
    out = []
    for i, (ds, sub, cond, drug) in enumerate(rows):
        for a, b in (("A", "A"), ("A", "B")):
            out.append(dict(scan_id=f"s{i}", dataset=ds, subject=sub, session=str(i), drug=drug, condition=cond,
                            dose=np.nan, mean_fd=0.1, network_a=a, network_b=b, system_a="unimodal",
                            system_b="transmodal", n_edges=1, fc=0.1 * i))
    return pd.DataFrame(out)


def test_design_units_subjects_and_refusals():
    rows = [("x", "1", "placebo", "LSD"), ("x", "1", "drug", "LSD"), ("x", "1", "drug", "DMT"),
            ("y", "1", "drug", "LSD"), ("y", "2", "placebo", "LSD")]
    design = scan_design(design_pairs(rows))
    assert design.units == ["x[DMT]", "x[LSD]", "y"]
    assert list(design.subject_idx) == [0, 0, 0, 1, 2]  # subjects are numbered within their dataset
    assert list(design.unit_idx) == [-1, 1, 0, 2, -1]
    assert "x" in " ".join(design.notes())
    with pytest.raises(InputError, match="dataset 'y' has 1 drug scan.* but no included control"):
        scan_design(design_pairs(rows[:4]))
    with pytest.raises(InputError, match="dataset 'z' has 1 control scan.* but no included drug scan"):
        scan_design(design_pairs(rows + [("z", "1", "baseline", "LSD")]))


def test_the_compiled_model_is_the_same_for_every_dataset(mixed):
    """The statistics enter the Op as data (two shared arrays), so the numba graph nutpie
    compiles has one disk-cache key whatever the data: compiled once, then loaded (not
    recompiled) by every later run. Its Python path gives the numba path's values."""
    from pytensor.link.numba.dispatch.basic import numba_funcify_and_cache_key

    ins = [pt.matrix(), pt.matrix(), pt.matrix(), pt.vector(), pt.vector()]
    other = mixed["y"][:-3] * 2.0  # other values and one fewer scan
    st = scan_statistics(other, mixed["ds"][:-3], mixed["sub"][:-3], mixed["unit"][:-3], UNIT_DATASET, UNIT_DRUG,
                         3, mixed["w"][:-3])
    keys = []
    for stats in (mixed["st"], st):
        op = scan_marginal_loglik(stats, *ins, *FIXED_PRIOR)
        outputs = [op] + pt.grad(op, ins)
        python_path = pytensor.function(ins, outputs, mode="FAST_COMPILE")
        numba_path = pytensor.function(ins, outputs, mode="NUMBA")
        keys.append(numba_funcify_and_cache_key(numba_path.maker.fgraph)[1])
        arrays = kernel_arrays(stats)
        for prm in mixed["params"][:2]:
            want = loglik_and_grad(arrays, *prm, *FIXED_PRIOR)[:6]
            for got in (python_path(*prm), numba_path(*prm)):
                for a, b in zip(got, want):
                    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    assert keys[0] is not None and keys[0] == keys[1]
