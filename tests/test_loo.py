"""Pointwise log-likelihoods: exact against a direct multivariate normal, and usable by ArviZ."""

from __future__ import annotations

import types

import arviz as az
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from conftest import TINY, compose
from megafc.core.pipeline import run_experiment
from megafc.core.registry import build_registry
from megafc.plugins.pooling.loo import log_likelihood_group, paired_model_loglik, scan_model_loglik, thinned


def fake_design():
    """Two datasets; subjects with 1 drug + 2 controls, 2 drugs + 1 control, 1 + 1, and a drug-only one."""
    rows = [("a", "1", "drug"), ("a", "1", "placebo"), ("a", "1", "placebo"),
            ("a", "2", "drug"), ("a", "2", "drug"), ("a", "2", "placebo"),
            ("b", "1", "drug"), ("b", "1", "baseline"), ("b", "3", "drug")]
    obs = pd.DataFrame(rows, columns=["dataset", "subject", "condition"])
    rng = np.random.default_rng(0)
    y = rng.normal(size=(len(obs), 2))
    unit_idx = np.array([0 if c == "drug" and d == "a" else 1 if c == "drug" else -1 for d, _, c in rows])
    dataset_idx = np.array([0 if d == "a" else 1 for d, _, _ in rows])
    return types.SimpleNamespace(obs=obs, y=y, unit_idx=unit_idx, dataset_idx=dataset_idx)


def fake_posterior(n=3, seed=1):
    rng = np.random.default_rng(seed)
    return xr.Dataset({
        "dataset_effect": (("chain", "draw", "dataset", "pair"), rng.normal(size=(1, n, 2, 2))),
        "sigma": (("chain", "draw", "site", "pair"), rng.uniform(0.5, 1.5, size=(1, n, 2, 2))),
        "slope:mean_fd": (("chain", "draw", "pair"), rng.normal(size=(1, n, 2))),
    }, coords={"chain": [0], "draw": np.arange(n)})


def test_scan_model_loglik_is_the_multivariate_normal_of_the_differences():
    design, post = fake_design(), fake_posterior()
    fd = np.linspace(0.1, 0.5, len(design.obs))[:, None]
    ll = scan_model_loglik(design, post, fd, ["mean_fd"], {"mean_fd": 2.0}, np.array([True, True]), ["p0", "p1"])
    assert list(ll["subject"].values) == ["a/1", "a/2", "b/1"]  # b/3 has no control: not scored
    key = design.obs["dataset"] + "/" + design.obs["subject"]
    is_drug = (design.obs["condition"] == "drug").to_numpy()
    for s in range(3):
        for j, subject in enumerate(ll["subject"].values):
            m = (key == subject).to_numpy()
            drugs, ctrls = np.flatnonzero(m & is_drug), np.flatnonzero(m & ~is_drug)
            site = design.dataset_idx[drugs[0]]
            for p in range(2):
                d = design.y[drugs, p] - design.y[ctrls, p].mean()
                dx = fd[drugs, 0] - fd[ctrls, 0].mean()
                mean = post["dataset_effect"].values[0, s, design.unit_idx[drugs], p] + dx * 2.0 * post["slope:mean_fd"].values[0, s, p]
                sig2 = post["sigma"].values[0, s, site, p] ** 2
                cov = sig2 * (np.eye(len(drugs)) + np.ones((len(drugs), len(drugs))) / len(ctrls))
                expected = stats.multivariate_normal(mean, cov).logpdf(d)
                assert ll.values[0, s, j, p] == pytest.approx(expected, rel=1e-5)


def test_no_within_subject_difference_gives_no_log_likelihood():
    design, post = fake_design(), fake_posterior()
    design.obs = design.obs.assign(condition="drug")  # parallel groups only: nothing to score
    assert scan_model_loglik(design, post, np.zeros((len(design.obs), 0)), [], {}, np.array([True, True]),
                             ["p0", "p1"]) is None


def test_paired_and_scan_models_score_the_same_data():
    """A subject with one drug and one control scan: d ~ N(theta, 2 sigma_scan^2) in both models."""
    design, post = fake_design(), fake_posterior()
    pair = np.array([True, True])
    scan = scan_model_loglik(design, post, np.zeros((len(design.obs), 0)), [], {}, pair, ["p0", "p1"])
    b1 = (design.obs["dataset"] == "b") & (design.obs["subject"] == "1")
    d = design.y[np.flatnonzero(b1)[0]] - design.y[np.flatnonzero(b1)[1]]
    paired_design = types.SimpleNamespace(obs=pd.DataFrame({"dataset": ["b"], "subject": ["1"]}), y=d[None, :],
                                          unit_idx=np.array([1]))
    paired_post = post.assign(sigma=post["sigma"].isel(site=1) * np.sqrt(2)).drop_vars("slope:mean_fd")
    paired = paired_model_loglik(paired_design, paired_post, {}, pair, ["p0", "p1"])
    assert np.allclose(paired.sel(subject="b/1").values, scan.sel(subject="b/1").values, rtol=1e-5)
    per_subject = log_likelihood_group(scan, "subject")
    assert per_subject.dims == ("chain", "draw", "subject")
    assert np.allclose(per_subject.values, scan.values.sum(-1), rtol=1e-5)
    assert log_likelihood_group(scan, "subject_pair") is scan and log_likelihood_group(scan, "none") is None
    assert thinned(post, 2).sizes["draw"] == 2 and thinned(post, 10).sizes["draw"] == 3


@pytest.mark.slow
def test_az_loo_and_compare_rank_pymc_and_pymc_paired(tmp_path, tiny_pymc_run):
    small = [o for o in TINY if not o.startswith("pooling.")]
    quick = [o for o in TINY if o.startswith("pooling.")]
    paired = run_experiment(compose(small + ["pooling=pymc_paired"] + quick), build_registry(), tmp_path / "paired")
    runs = {}
    for name, run_dir in (("pymc", tiny_pymc_run.run_dir), ("pymc_paired", paired.run_dir)):
        idata = az.from_netcdf(run_dir / "posterior.nc")
        assert {"posterior", "log_likelihood", "observed_data", "sample_stats"} <= set(idata.groups())
        assert not [g for g in idata.groups() if g.startswith("warmup")]
        assert not [v for v in idata.posterior.data_vars if v.endswith("__")]
        loo = az.loo(idata)
        assert np.isfinite(loo.elpd_loo)
        runs[name] = idata
    # the replicates behind pymc's predictive-check figures are kept with the observed differences
    ppc = runs["pymc"].posterior_predictive["within_subject_differences"]
    observed = runs["pymc"].observed_data["within_subject_differences"]
    assert ppc.shape[2:] == observed.shape and "prior_predictive" in runs["pymc"].groups()
    table = az.compare(runs)
    assert set(table.index) == {"pymc", "pymc_paired"} and sorted(table["rank"]) == [0, 1]
    # both models score the same subjects and pairs
    a, b = (runs[k].log_likelihood["subject_differences"] for k in ("pymc", "pymc_paired"))
    assert list(a["subject"].values) == list(b["subject"].values) and list(a["pair"].values) == list(b["pair"].values)
