"""The edge-level pooling model (pooling=pymc_edges): likelihood, recovery, outputs, config."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import multivariate_normal

from conftest import TINY, compose
from megafc.core import ConfigError, PoolingInputs, mark_unpaired, network_pair_table, validate_scans
from megafc.core.pipeline import estimate_connectomes, run_experiment
from megafc.core.registry import build_registry
from megafc.plugins.atlases.synthetic import SyntheticAtlas
from megafc.plugins.datasets.synthetic import SyntheticDataset
from megafc.plugins.estimators.correlation import FisherZCorrelation
from megafc.plugins.pooling.pymc_edges import EdgeStats, PyMCEdgePooling, marginal_loglik
from megafc.plugins.pooling.pymc_paired import PyMCPairedPooling


@pytest.fixture(scope="module")
def small_study():
    atlas = SyntheticAtlas(SyntheticAtlas.Config(n_cortical=34, subcortical=False, n_cerebellar=0)).load()
    inputs = SyntheticDataset(SyntheticDataset.Config(scale=0.3, n_volumes=120)).load(atlas, 0)
    scans = mark_unpaired(validate_scans(inputs.scans))
    included = list(scans.loc[~scans.excluded, "scan_id"])
    conn = estimate_connectomes(FisherZCorrelation(), inputs.timeseries, included, atlas)
    return conn, atlas, scans, network_pair_table(conn, atlas, scans)


@pytest.fixture(scope="module")
def edge_fit(small_study):
    conn, atlas, scans, pairs = small_study
    model = PyMCEdgePooling(PyMCEdgePooling.Config(draws=300, tune=300, conditional_draws=200,
                                                   progressbar=False, sampler="pymc"))
    return model.pool(PoolingInputs(pairs=pairs, seed=1, scans=scans, connectomes=conn, atlas=atlas))


@pytest.mark.parametrize("unit_drug", [[0, 0, 0, 1, 1, 2], [0, 0, 0], [0, 1, 2]])
def test_marginal_likelihood_and_gradient(unit_drug):
    """Collapsed likelihood equals the dense multivariate normal; gradients match differences."""
    rng = np.random.default_rng(0)
    ud = np.array(unit_drug)
    k, e, d = len(ud), 7, ud.max() + 1
    st = EdgeStats(rng.normal(0, 0.1, (k, e)), rng.uniform(0.001, 0.01, (k, e)), np.full(k, 5),
                   [str(i) for i in range(k)], ud, [str(i) for i in range(d)], None, None)
    group = np.array([0, 1, 1, 0, 2, 2, 1])
    tk, td = np.array([0.05, 0.1, 0.08]), np.array([0.07, 0.03, 0.12])
    ll, gk, gd = marginal_loglik(st, group, tk, td, 0.2, grad=True)
    A = (ud[:, None] == np.arange(d)[None]).astype(float)
    ref = 0.0
    for j in range(e):
        cov = np.diag(st.s2[:, j] + (tk[group[j]] ** 2 if st.use_dataset_level else 0.0)) + 0.04
        if st.use_drug_level:
            cov = cov + td[group[j]] ** 2 * A @ A.T
        ref += multivariate_normal(np.zeros(k), cov).logpdf(st.ybar[:, j])
    assert ll - ref == pytest.approx(0.5 * np.log(2 * np.pi) * k * e, abs=1e-8)  # 2 pi terms dropped
    h = 1e-6
    for g in range(3):
        up = tk.copy(); up[g] += h
        assert gk[g] == pytest.approx((marginal_loglik(st, group, up, td, 0.2) - ll) / h, rel=1e-3, abs=1e-3)
        up = td.copy(); up[g] += h
        assert gd[g] == pytest.approx((marginal_loglik(st, group, tk, up, 0.2) - ll) / h, rel=1e-3, abs=1e-3)


def test_edge_table_shapes(edge_fit, small_study):
    conn = small_study[0]
    n_regions = len(conn.labels)
    n_edges = n_regions * (n_regions - 1) // 2
    edges = edge_fit.tables["edge_effects"]
    assert edges.attrs["compress"] is True
    assert list(edges.columns) == ["region_a", "region_b", "network_a", "network_b", "effect", "mean", "sd",
                                   "hdi_low", "hdi_high", "pd"]
    counts = edges["effect"].value_counts()
    assert set(counts.index) == {"overall", "drug:psilocybin", "drug:LSD", "drug:mescaline", "drug:DMT", "drug:ayahuasca"}
    assert (counts == n_edges).all()
    assert ((edges.hdi_low <= edges["mean"]) & (edges["mean"] <= edges.hdi_high)).all()
    assert edges["pd"].between(0.5, 1).all()
    eff = edge_fit.effects
    assert (eff.network_a <= eff.network_b).all()
    assert len(eff) == (6 + 10) * eff.groupby(["network_a", "network_b"]).ngroups  # with every drug contrast
    # a contrast is the difference of the two drugs' network-pair means, draw by draw (edge_effects has none)
    by = eff.set_index(["network_a", "network_b", "effect"])
    contrast = by.xs("contrast:LSD-psilocybin", level="effect")
    lsd, psilo = by.xs("drug:LSD", level="effect"), by.xs("drug:psilocybin", level="effect")
    np.testing.assert_allclose(contrast["mean"], lsd["mean"] - psilo["mean"], atol=1e-9)
    assert (contrast["sd"] < np.hypot(lsd["sd"], psilo["sd"]) * 1.5).all() and (contrast["level"] == "LSD-psilocybin").all()
    assert (contrast["n_obs"] == lsd["n_obs"] + psilo["n_obs"]).all()
    assert set(edge_fit.diagnostics["variable"]) == {"tau_drug", "tau_dataset"}
    assert edge_fit.idata is not None and set(edge_fit.idata.posterior.data_vars) == {"tau_drug", "tau_dataset"}
    assert "edge-level" in edge_fit.description


def test_recovers_planted_signs(edge_fit):
    edges = edge_fit.tables["edge_effects"]
    overall = edges[edges.effect == "overall"]
    dv = overall[[{a, b} == {"Default", "Vis"} for a, b in zip(overall.network_a, overall.network_b)]]
    assert len(dv) > 0 and dv["mean"].mean() > 0 and (dv["mean"] > 0).mean() > 0.8
    eff = edge_fit.effects.set_index(["network_a", "network_b", "effect"])
    row = eff.loc[("Default", "Vis", "overall")]
    assert row["hdi_low"] > 0
    # network summary = mean of the pair's edge posterior means (mean of means)
    assert row["mean"] == pytest.approx(dv["mean"].mean(), abs=1e-3)
    sm = eff.loc[("SomMot", "SomMot", "overall")]
    assert sm["hdi_high"] < 0  # planted decrease of within-SomMot coupling


def test_agrees_with_network_model(edge_fit, small_study):
    pairs = small_study[3]
    net = PyMCPairedPooling(PyMCPairedPooling.Config(draws=200, tune=200, chains=2, cores=1, progressbar=False,
                                         sampler="pymc", predictive_checks=False, session_order=False)
                           ).fit(pairs, seed=2).effects  # the edge model has no session-order slope
    key = ["network_a", "network_b", "effect"]
    m = edge_fit.effects.merge(net, on=key, suffixes=("_edge", "_net"))
    overall = m[m.effect == "overall"]
    assert len(overall) == len(edge_fit.effects[edge_fit.effects.effect == "overall"])
    assert np.corrcoef(overall.mean_edge, overall.mean_net)[0, 1] > 0.8


@pytest.mark.parametrize("key, value, match", [
    ("heterogeneity", "per_edge", "pooling.heterogeneity"),
    ("conditional_draws", 1, "pooling.conditional_draws"),
    ("conditional_draws", 10_000, "pooling.conditional_draws"),
    ("draws", 0, "pooling.draws"),
    ("hdi_prob", 1.5, "pooling.hdi_prob"),
    ("sampler", "stan", "pooling.sampler"),
    ("rhat_max", 0.9, "pooling.rhat_max"),
    ("ess_min", -5.0, "pooling.ess_min"),
])
def test_bad_config(key, value, match):
    with pytest.raises(ConfigError, match=match):
        PyMCEdgePooling(PyMCEdgePooling.Config(**{key: value}))


def test_pipeline_writes_gzipped_edge_table(tmp_path):
    cfg = compose(TINY + ["pooling=pymc_edges", "pooling.conditional_draws=40"])
    outcome = run_experiment(cfg, build_registry(), tmp_path / "run")
    path = outcome.run_dir / "edge_effects.tsv.gz"
    assert path.exists() and not (outcome.run_dir / "edge_effects.tsv").exists()
    with gzip.open(path, "rt") as fh:
        edges = pd.read_csv(fh, sep="\t")
    n = outcome.pairs["n_edges"].groupby([outcome.pairs.network_a, outcome.pairs.network_b]).first().sum()
    assert len(edges) == n * edges["effect"].nunique()
    eff = pd.read_csv(outcome.run_dir / "effects.tsv", sep="\t")
    assert set(eff["effect_type"]) == {"overall", "drug", "contrast"}
    # its data dictionary says what the edge intervals are (equal-tailed, not the run's HDI)
    described = json.loads((outcome.run_dir / "edge_effects.json").read_text())
    assert "equal-tailed" in described["hdi_low"]["Description"] and "atlas label" in described["region_a"]["Description"]


def test_edge_model_refuses_a_choice_of_pairs_and_says_summaries_are_not_fitted(caplog):
    """pooling=pymc_edges modelled every edge whatever aggregate.pairs chose (methods.md said the
    choice was applied), and dropped user summaries, even invalid ones, without a word."""
    from megafc.core.pipeline import RunContext, run_stages

    base = [o for o in TINY if not o.startswith("pooling.")] + ["pooling=pymc_edges"]
    with pytest.raises(ConfigError, match=r"'aggregate.pairs' chose 1 of the 120 network pairs, but pooling=pymc_edges models every edge"):
        run_stages(RunContext.create(compose(base + ["aggregate.pairs=[[Default,Vis]]"])), until="pool")
    with pytest.raises(ConfigError, match=r"summaries.dv.*unknown network.*Visual"):
        run_stages(RunContext.create(compose(base + ["+summaries={dv: {pairs: [[Default, Visual]]}}"])), until="aggregate")
    with caplog.at_level("WARNING", logger="megafc"):
        run_stages(RunContext.create(compose(base + ["+summaries={dv: {pairs: [[Default, Vis]]}}"])), until="aggregate")
    assert "summaries ['dv']: pooling 'pymc_edges' fits no summary outcomes" in caplog.text
