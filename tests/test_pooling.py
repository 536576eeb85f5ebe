"""Pooling models on simulated data: recovery of planted effects, bambi/PyMC agreement."""

import numpy as np
import pytest

from megafc.plugins.datasets.synthetic import SiteSpec
from megafc.plugins.pooling.bambi_per_pair import BambiPooling
from megafc.plugins.pooling.design import paired_design
from megafc.plugins.pooling.pymc_scan_level import PyMCPooling
from simulation import SMALL_ATLAS, simulate_pairs


@pytest.fixture(scope="module")
def simulated():
    return simulate_pairs(scale=0.5, n_volumes=150, atlas=SMALL_ATLAS)


@pytest.mark.slow
def test_joint_model_recovers_planted_effects(simulated):
    pairs, truth = simulated
    result = PyMCPooling(PyMCPooling.Config(draws=400, tune=400, chains=2, progressbar=False)).fit(pairs, seed=1)
    eff = result.effects[result.effects.effect == "overall"]
    t = truth[(truth.aggregation == "network") & (truth.effect == "overall")]
    m = eff.merge(t, on=["network_a", "network_b"], validate="one_to_one")
    trans_uni = m[m.system_a.isin(["transmodal", "unimodal"]) & m.system_b.isin(["transmodal", "unimodal"])
                  & (m.system_a != m.system_b)]
    assert len(trans_uni) == 6
    recovered = (trans_uni.hdi_low > 0).mean()
    assert recovered >= 5 / 6, trans_uni[["network_a", "network_b", "truth", "hdi_low", "hdi_high"]]
    zero = m[m.truth.abs() < 0.005]
    assert len(zero) > 50
    includes_zero = ((zero.hdi_low <= 0) & (zero.hdi_high >= 0)).mean()
    assert includes_zero >= 0.85
    # drug-level effects exist for every drug and are reported with diagnostics
    drugs = result.effects[result.effects.effect_type == "drug"]
    assert set(drugs.level) == {"psilocybin", "LSD", "mescaline", "DMT", "ayahuasca"}
    assert drugs["r_hat"].notna().all()


@pytest.mark.slow
def test_bambi_and_pymc_agree(simulated):
    """Same model, two implementations: posterior means within 0.1 posterior sd.

    With ~4000 draws per fit the Monte Carlo error of a mean is ~0.02 sd per fit, so 0.1 sd
    leaves room for ~3 standard errors of the difference over the compared effects.
    """
    pairs, _ = simulated
    sub = pairs[[(a, b) in KEY_PAIRS for a, b in zip(pairs.network_a, pairs.network_b)]]
    cfg = dict(draws=2000, tune=1000, chains=2, cores=2, progressbar=False, sampler="pymc", predictive_checks=False)
    joint = PyMCPooling(PyMCPooling.Config(**cfg)).fit(sub, seed=3).effects
    cfg.pop("predictive_checks")
    per_pair = BambiPooling(BambiPooling.Config(**cfg)).fit(sub, seed=3).effects
    m = joint.merge(per_pair, on=["network_a", "network_b", "effect"], suffixes=("_pymc", "_bambi"))
    assert len(m) == len(joint) == len(per_pair)
    gap = (m.mean_pymc - m.mean_bambi).abs() / np.maximum(m.sd_pymc, m.sd_bambi)
    main = m.effect_type_pymc.isin(["overall", "drug"])
    assert gap[main].max() < 0.1, m.loc[main, ["network_a", "network_b", "effect", "mean_pymc", "mean_bambi"]]
    assert gap.max() < 0.2  # dataset-level effects mix more slowly
    assert np.corrcoef(m.mean_pymc, m.mean_bambi)[0, 1] > 0.98


def test_single_dataset_falls_back_to_one_level():
    pairs, _ = simulate_pairs(scale=1.0, n_volumes=60, sites=[SiteSpec("only", "LSD", 12)])
    design = paired_design(pairs)
    assert not design.use_drug_level and not design.use_dataset_level
    result = PyMCPooling(PyMCPooling.Config(draws=50, tune=50, chains=1, progressbar=False, sampler="pymc")).fit(pairs, 0)
    assert any("only one drug" in w for w in result.warnings)
    eff = result.effects
    overall = eff[eff.effect == "overall"].set_index(["network_a", "network_b"])["mean"]
    drug = eff[eff.effect == "drug:LSD"].set_index(["network_a", "network_b"])["mean"]
    assert np.allclose(overall, drug)


KEY_PAIRS = {("Default", "Vis"), ("SomMot", "SomMot"), ("DorsAttn", "SalVentAttn"), ("Caudate", "SomMot"),
             ("Cont", "SomMot"), ("Vis", "Vis")}


@pytest.fixture(scope="module")
def key_pairs(simulated):
    pairs, truth = simulated
    return pairs[[(a, b) in KEY_PAIRS for a, b in zip(pairs.network_a, pairs.network_b)]], truth


@pytest.mark.slow
@pytest.mark.parametrize("options", [
    dict(likelihood="student_t"), dict(motion=True), dict(heterogeneity="shared"),
    dict(parametrization="non_centered", motion=True),
])
def test_model_options_sample_and_recover_sign(key_pairs, options):
    pairs, truth = key_pairs
    c = PyMCPooling.Config(draws=150, tune=150, chains=2, cores=1, progressbar=False, sampler="pymc",
                           predictive_checks=False, **options)
    result = PyMCPooling(c).fit(pairs, seed=2)
    eff = result.effects
    o = eff[eff.effect == "overall"].set_index(["network_a", "network_b"])["mean"]
    assert o[("Default", "Vis")] > 0.02 and o[("Caudate", "SomMot")] < -0.02
    sampled_effects = "z_drug" in result.idata.posterior
    assert sampled_effects == (options.get("likelihood") == "student_t" or "parametrization" in options)
    if options.get("likelihood") == "student_t":
        assert "no closed-form marginal" in result.description
    if options.get("motion"):
        assert "beta_motion" in set(result.diagnostics["variable"])


@pytest.mark.slow
def test_hard_model_is_flagged_not_silently_reported():
    """Centred parametrisation on tiny data with a short chain: the funnel must show up as 'not ok'."""
    pairs, _ = simulate_pairs(scale=0.15, n_volumes=60)
    pairs = pairs[[(a, b) in KEY_PAIRS for a, b in zip(pairs.network_a, pairs.network_b)]]
    c = PyMCPooling.Config(draws=60, tune=30, chains=2, cores=1, progressbar=False, sampler="pymc",
                           parametrization="centered", target_accept=0.6, predictive_checks=False)
    result = PyMCPooling(c).fit(pairs, seed=0)
    assert not result.effects["ok"].all()
    assert not result.diagnostics["ok"].all()
    assert result.warnings


def test_predictive_check_figures(key_pairs):
    sub, _ = key_pairs
    c = PyMCPooling.Config(draws=40, tune=40, chains=2, cores=1, progressbar=False, sampler="pymc")
    result = PyMCPooling(c).fit(sub, seed=0)
    assert set(result.figures) == {"prior_predictive", "posterior_predictive"}


def test_missing_dose_is_a_config_error(key_pairs):
    from megafc.core import ConfigError

    pairs, _ = key_pairs
    pairs = pairs.assign(dose=np.where(pairs.drug == "ayahuasca", np.nan, pairs.dose))
    with pytest.raises(ConfigError, match="pooling.dose"):
        PyMCPooling(PyMCPooling.Config(dose=True, sampler="pymc")).fit(pairs, seed=0)


@pytest.mark.parametrize("key, value", [("parametrization", "funnel"), ("likelihood", "cauchy"),
                                        ("heterogeneity", "per_edge"), ("rhat_max", 0.99), ("ess_min", 0.0)])
def test_bad_model_option_names_its_config_key(key, value):
    from megafc.core import ConfigError

    with pytest.raises(ConfigError, match=f"pooling.{key}"):
        PyMCPooling(PyMCPooling.Config(**{key: value}))
