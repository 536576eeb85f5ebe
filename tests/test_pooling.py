"""Pooling models on simulated data: recovery, every design, agreement between implementations."""

import numpy as np
import pandas as pd
import pytest

from megafc.core import ConfigError
from megafc.plugins.reports.calibration import score_replicate
from megafc.plugins.datasets.synthetic import EffectSpec, SiteSpec
from megafc.plugins.pooling.bambi_per_pair import BambiPooling
from megafc.plugins.pooling.design import paired_design
from megafc.plugins.pooling.meta import MetaAnalysisPooling
from megafc.plugins.pooling.pymc_paired import PyMCPairedPooling
from megafc.plugins.pooling.pymc_scan_level import PyMCPooling
from simulation import SMALL_ATLAS, simulate_pairs

KEY_PAIRS = {("Default", "Vis"), ("SomMot", "SomMot"), ("DorsAttn", "SalVentAttn"), ("Caudate", "SomMot"),
             ("Cont", "SomMot"), ("Vis", "Vis")}
QUICK = dict(chains=2, cores=1, progressbar=False, sampler="pymc", predictive_checks=False, max_treedepth=6)


def key(pairs: pd.DataFrame, keep=KEY_PAIRS) -> pd.DataFrame:
    return pairs[[(a, b) in keep for a, b in zip(pairs.network_a, pairs.network_b)]]


@pytest.fixture(scope="module")
def simulated():
    """The default study at half size, only scans with a partner (what the paired model sees)."""
    return simulate_pairs(scale=0.5, n_volumes=150, atlas=SMALL_ATLAS)


@pytest.fixture(scope="module")
def default_fit():
    """The default model, fitted once and shared, on the default study at half size with every
    design in turn over the 11 sites (placebo crossover, pre/post with two drug scans, parallel
    groups, crossover with two drug scans) and one site 3x noisier: every scan enters."""
    pairs, truth = simulate_pairs(scale=0.5, n_volumes=150, atlas=SMALL_ATLAS, paired=False, seed=3, design="mixed",
                                  site_noise={"lsd_2": 3.0})
    result = PyMCPooling(PyMCPooling.Config(draws=300, tune=300, cores=2, progressbar=False)).fit(pairs, seed=3)
    return pairs, truth, result


@pytest.mark.slow
def test_default_model_recovers_planted_effects(default_fit):
    pairs, truth, result = default_fit
    eff = result.effects[result.effects.effect == "overall"]
    t = truth[(truth.aggregation == "network") & (truth.effect == "overall")]
    m = eff.merge(t, on=["network_a", "network_b"], validate="one_to_one")
    trans_uni = m[m.system_a.isin(["transmodal", "unimodal"]) & m.system_b.isin(["transmodal", "unimodal"])
                  & (m.system_a != m.system_b)]
    assert len(trans_uni) == 6
    assert (trans_uni.hdi_low > 0).mean() >= 5 / 6, trans_uni[["network_a", "network_b", "truth", "hdi_low"]]
    zero = m[m.truth.abs() < 0.005]
    assert len(zero) > 50 and ((zero.hdi_low <= 0) & (zero.hdi_high >= 0)).mean() >= 0.85
    drugs = result.effects[result.effects.effect_type == "drug"]
    assert set(drugs.level) == {"psilocybin", "LSD", "mescaline", "DMT", "ayahuasca"}
    # every scan is used, single-scan subjects included
    assert result.effects.loc[result.effects.effect == "overall", "n_obs"].iloc[0] == pairs.scan_id.nunique()


@pytest.mark.slow
def test_heterogeneity_and_predictive_checks(default_fit):
    pairs, _, result = default_fit
    het = result.tables["heterogeneity"]
    n_pairs = pairs[pairs.network_b != ""].groupby(["network_a", "network_b"]).ngroups  # not the summaries
    n_sites = pairs.dataset.nunique()
    counts = het.groupby("parameter").size()
    assert counts["tau_dataset"] == counts["slope:mean_fd"] == n_pairs
    # fixed drug effects: no between-drug sd, and the overall effect is the mean of the drugs'
    assert "tau_drug" not in counts and "fixed effects" in result.description
    # dataset scales by default (psilocybin and LSD have several datasets), each dataset once
    scales = result.tables["dataset_scales"]
    assert sorted(scales["dataset"]) == sorted(pairs.dataset.unique()) and (scales["mean"] > 0).all()
    assert "centred on its own scale x its drug's effect" in result.description
    post = result.idata.posterior
    np.testing.assert_allclose(post["overall"], post["drug_effect"].mean("drug"), atol=1e-6)  # stored as float32
    assert counts["residual_sd"] == counts["subject_sd"] == n_pairs * n_sites
    assert set(het.loc[het.parameter == "residual_sd", "level"]) == set(pairs.dataset)
    assert (het.loc[het.parameter.isin(["residual_sd", "subject_sd"]), "mean"] > 0).all()
    assert set(result.figures) == {"prior_predictive", "posterior_predictive"}
    fd = result.effects[result.effects.effect == "covariate:mean_fd"]
    assert len(fd) == n_pairs and "equal motion" in result.description
    # the methods give every prior and the widening after the fit, and count pairs apart from summaries
    n_summaries = int((pairs.drop_duplicates(["network_a", "network_b"]).network_b == "").sum())
    assert f"{n_pairs} network pairs and {n_summaries} summary outcomes" in result.description
    assert "pooled across pairs with m ~ Normal(0, 0.2) and s ~ HalfNormal(0.2)" in result.description
    assert "multiplied by exp(psi xi / sqrt(n subjects))" in result.description
    assert "contrast:A-B, drug A's effect minus drug B's" in result.description  # the derived quantities too
    assert ("The summary outcomes share what is learned across outcomes (the per-dataset shifts and the spreads of "
            "the residual and subject sds, the between-dataset sds' common scale, the covariate slopes'") in result.description
    assert "the datasets' scales and their spread) with the network pairs" in result.description
    ordered = (result.effects.effect == "covariate:session_order").any()
    assert result.adjusted_for == ["mean_fd"] + (["session_order"] if ordered else [])


@pytest.mark.slow
def test_every_design_recovers_the_truth(default_fit):
    """Every scan of every design enters and the 95% intervals cover the planted effects at every
    level (the calibration over replicates, design by design, is in docs/calibration.md)."""
    pairs, truth, result = default_fit
    scans = pairs.drop_duplicates("scan_id").assign(is_drug=lambda d: d.condition == "drug")
    per_subject = scans.groupby(["dataset", "subject"]).agg(n=("scan_id", "size"), drug=("is_drug", "sum"))
    assert {1, 2, 3} <= set(per_subject["n"]) and (per_subject.drug >= 2).any()  # single-scan and repeated-scan subjects
    assert result.effects.loc[result.effects.effect == "overall", "n_obs"].iloc[0] == pairs.scan_id.nunique()
    scores = score_replicate(result.effects, truth, "network", 0.02)
    scores = scores[(scores.table == "effects") & (scores.stratum == "all")].set_index("effect_type")
    assert (scores.loc[["overall", "drug", "dataset"], "coverage_95"] >= 0.85).all(), scores
    assert scores.loc["overall", "sign_recovery"] >= 0.7, scores
    het = result.tables["heterogeneity"]
    sd = het[het.parameter == "residual_sd"].groupby("level")["mean"].median()
    assert sd["lsd_2"] > 2 * sd.drop("lsd_2").max(), sd


def test_dataset_scales_are_on_by_default_where_a_drug_has_several_datasets():
    from types import SimpleNamespace

    from megafc.plugins.pooling.pymc_scan_level import uses_dataset_scales

    several, one_each = SimpleNamespace(unit_drug=[0, 0, 1]), SimpleNamespace(unit_drug=[0, 1, 2])
    assert PyMCPooling.Config().dataset_scale is None
    for setting, expected in ((None, (True, False)), (True, (True, False)), (False, (False, False))):
        c = PyMCPooling.Config(dataset_scale=setting)
        assert (uses_dataset_scales(c, several), uses_dataset_scales(c, one_each)) == expected, setting


@pytest.mark.slow
def test_motion_confound_is_adjusted_at_zero():
    """All effects 0, drug scans move 3x as much: unadjusted (meta without FD), the null pairs sit
    ~3.5 sds above 0; the default model brings them back to within the one-replicate scatter of the
    mean z over pairs (sd ~0.35 over replicates; the 20-replicate figure is in
    docs/calibration.md) and no more than a few summaries are credible."""
    null = EffectSpec(0.0, 0.0, 0.0, 0.0, 0.0, drug_deviation_sd=0.0)
    sim = dict(scale=0.5, n_volumes=150, atlas=SMALL_ATLAS, seed=5, effects=null, motion_confound=2.0)
    cfg = dict(draws=300, tune=300, cores=2, progressbar=False, predictive_checks=False)
    pairs = simulate_pairs(paired=False, **sim)[0]
    result = PyMCPooling(PyMCPooling.Config(**cfg)).fit(pairs, seed=5)
    overall = result.effects[result.effects.effect == "overall"]
    adjusted = (overall["mean"] / overall["sd"]).mean()
    summaries = result.tables["summaries"]
    assert ((summaries.hdi_low <= 0) & (summaries.hdi_high >= 0)).mean() >= 0.85
    biased = MetaAnalysisPooling(MetaAnalysisPooling.Config(motion=False)).fit(pairs, 0)
    o = biased.effects[biased.effects.effect == "overall"]
    unadjusted = (o["mean"] / o["sd"]).mean()
    assert unadjusted > 2.0 and abs(adjusted) < 1.0 and abs(adjusted) < unadjusted / 3, (adjusted, unadjusted)


@pytest.mark.slow
def test_drug_scales_recover_which_drug_is_strongest():
    """Drugs planted at 2x and 0.5x the shared pattern: pooling.drug_scale=true orders them
    (DMT strongest, ayahuasca weakest), its scale ratio excludes 1, and the scale-blind pattern
    correlation does not see the difference the magnitude measures see."""
    scales = {"psilocybin": 1.0, "LSD": 1.0, "mescaline": 1.0, "DMT": 2.0, "ayahuasca": 0.5}
    pairs, _ = simulate_pairs(scale=0.5, n_volumes=150, atlas=SMALL_ATLAS, seed=4, drug_scale=scales)
    # drug scales alone: dataset scales would add a new dataset's unknown strength (ayahuasca has one)
    cfg = PyMCPooling.Config(drug_scale=True, dataset_scale=False, draws=300, tune=300, cores=2, progressbar=False,
                             predictive_checks=False)
    result = PyMCPooling(cfg).fit(pairs, seed=4)
    fitted = result.tables["drug_scales"].set_index("drug")
    assert fitted["mean"].idxmax() == "DMT" and fitted["mean"].idxmin() == "ayahuasca", fitted
    draws = result.idata.posterior["drug_scale"]
    np.testing.assert_allclose(np.exp(np.log(draws).mean("drug")), 1.0, rtol=1e-5)  # geometric mean 1, draw by draw
    assert (fitted["r_hat"] < 1.05).all()
    sim = result.tables["drug_similarity"].set_index(["drug_a", "drug_b", "measure"])
    assert sim.loc[("DMT", "ayahuasca", "scale_ratio"), "hdi_low"] > 1.3
    assert sim.loc[("DMT", "ayahuasca", "rms_ratio"), "hdi_low"] > 1.3
    assert sim.loc[("LSD", "psilocybin", "rms_ratio"), "hdi_low"] < 1 < sim.loc[("LSD", "psilocybin", "rms_ratio"),
                                                                               "hdi_high"]
    assert "scale x the overall effect" in result.description


def test_dataset_scales_are_centred_within_drugs_with_several_datasets():
    from megafc.plugins.pooling.pymc_scan_level import dataset_scale_centring

    unit_drug = np.array([0, 0, 1, 2, 2, 2])
    c = dataset_scale_centring(unit_drug)
    z = np.random.default_rng(0).normal(size=6)
    log_scale = c @ z
    assert log_scale[2] == 0.0  # a drug's only dataset: scale 1
    assert log_scale[:2].sum() == pytest.approx(0.0) and log_scale[3:].sum() == pytest.approx(0.0)
    assert np.all(log_scale[[0, 1, 3, 4, 5]] != 0.0)


def test_population_drug_scales_widen_by_the_dataset_spread_over_root_n():
    from megafc.plugins.pooling.pymc_scan_level import population_drug_effects

    rng = np.random.default_rng(1)
    n, pairs = 40_000, 3
    unit_drug = np.array([0, 1, 1, 1, 1])  # drug 0 in one dataset, drug 1 in four
    lam = np.tile([1.2, 0.8], (n, 1))
    mu = rng.normal(0.05, 0.01, (n, pairs))
    beta = lam[:, :, None] * mu[:, None, :] + rng.normal(0, 0.01, (n, 2, pairs))
    spread = np.full(n, 0.3)
    new_beta, population, factor = population_drug_effects(beta, lam, spread, unit_drug, rng)
    log_ratio = np.log(population / lam)
    assert log_ratio[:, 0].std() == pytest.approx(0.3, rel=0.03)
    assert log_ratio[:, 1].std() == pytest.approx(0.3 / 2, rel=0.03)
    # a dataset's scale multiplies its drug's whole effect (pattern and own deviation): so does f
    np.testing.assert_allclose(new_beta, beta * (population / lam)[:, :, None])
    np.testing.assert_allclose(factor, population / lam)
    same, unchanged, _ = population_drug_effects(beta, lam, np.zeros(n), unit_drug, rng)
    np.testing.assert_array_equal(same, beta)
    np.testing.assert_array_equal(unchanged, lam)


@pytest.mark.slow
def test_dataset_scales_recover_planted_dataset_strengths():
    """Datasets planted at their drug's effect x (1 + Normal(0, 0.4)): pooling.dataset_scale
    recovers the datasets' strengths within each drug with several datasets, and a drug seen in
    one dataset gets the between-dataset spread in its population scale's interval."""
    pairs, truth = simulate_pairs(scale=0.5, n_volumes=150, atlas=SMALL_ATLAS, seed=4,
                                  effects=EffectSpec(dataset_scale_sd=0.4))
    cfg = PyMCPooling.Config(drug_scale=True, dataset_scale=True, draws=300, tune=300, cores=2, progressbar=False,
                             predictive_checks=False)
    result = PyMCPooling(cfg).fit(pairs, seed=4)
    t = truth[truth.aggregation == "network"].pivot_table(index=["network_a", "network_b"], columns="effect",
                                                          values="truth")
    fitted = result.tables["dataset_scales"].set_index("dataset")
    several = fitted[fitted["drug"].map(fitted["drug"].value_counts()) > 1]
    planted = pd.Series({ds: float(np.polyfit(t[f"drug:{drug}"], t[f"dataset:{ds}"], 1)[0])
                         for ds, drug in several["drug"].items()})
    relative = np.log(planted) - np.log(planted).groupby(several["drug"]).transform("mean")
    assert np.corrcoef(relative, np.log(several["mean"]))[0, 1] > 0.9, (relative, several["mean"])
    singles = fitted.index.difference(several.index)
    assert (fitted.loc[singles, "mean"] == 1.0).all()
    population = result.tables["drug_scales"].set_index("drug")
    width = np.log(population["hdi_high"]) - np.log(population["hdi_low"])
    assert width[["ayahuasca", "mescaline"]].min() > 1.5 * width["psilocybin"], width
    datasets_strength = result.idata.posterior["drug_scale"].sel(drug="ayahuasca")
    assert float(np.log(datasets_strength).std()) < float(width["ayahuasca"]) / 4
    assert "population of datasets" in result.description


@pytest.mark.slow
def test_paired_special_case_agrees_with_pymc_paired(simulated):
    """One drug and one control scan per subject, no motion term: the scan-level model and the
    paired-difference model (random drug effects, no dataset scales, per-pair sds) are the same
    model up to per-dataset residual sds; posterior means of every overall and drug effect agree
    within 0.1 posterior sd."""
    pairs = key(simulated[0])
    cfg = dict(draws=3000, tune=1000, chains=2, cores=2, progressbar=False, predictive_checks=False)
    scan = PyMCPooling(PyMCPooling.Config(motion=False, drug_effects="random", dataset_scale=False,
                                          heterogeneity="per_pair", session_order=False, **cfg))
    scan = scan.fit(pairs, seed=1).effects
    paired = PyMCPairedPooling(PyMCPairedPooling.Config(session_order=False, **cfg)).fit(pairs, seed=2).effects
    m = scan.merge(paired, on=["network_a", "network_b", "effect"], suffixes=("_scan", "_paired"))
    main = m[m.effect_type_scan.isin(["overall", "drug"])]
    gap = (main.mean_scan - main.mean_paired).abs() / np.maximum(main.sd_scan, main.sd_paired)
    assert len(main) == 6 * 6 and gap.max() < 0.1, main.assign(gap=gap).sort_values("gap").tail()


@pytest.mark.slow
def test_bambi_and_pymc_agree_on_a_mixed_design():
    """Same model (random drug effects, no dataset scales, per-pair sds), two implementations
    (every effect sampled by bambi, integrated out by pymc):
    posterior means of the overall and drug effects agree within 0.1 posterior sd beyond Monte
    Carlo error (2 standard errors of the difference; bambi mixes the overall effect slowly,
    ESS ~ 5% of its draws). bambi pools the per-dataset sds within a pair only."""
    pairs, _ = simulate_pairs(scale=0.4, n_volumes=100, atlas=SMALL_ATLAS, paired=False, seed=4, design="mixed")
    pairs = key(pairs, {("Default", "Vis")})
    cfg = dict(draws=2000, tune=1000, chains=2, cores=2, progressbar=False)
    joint = PyMCPooling(PyMCPooling.Config(predictive_checks=False, drug_effects="random", dataset_scale=False,
                                           heterogeneity="per_pair", session_order=False, **cfg)).fit(pairs, seed=3).effects
    per_pair = BambiPooling(BambiPooling.Config(sampler="nutpie", session_order=False, **cfg)).fit(pairs, seed=3).effects
    m = joint.merge(per_pair, on=["network_a", "network_b", "effect"], suffixes=("_pymc", "_bambi"))
    assert len(m) == len(joint) == len(per_pair)
    mcse = np.sqrt(m.sd_pymc ** 2 / m.ess_bulk_pymc + m.sd_bambi ** 2 / m.ess_bulk_bambi)
    scale = np.maximum(m.sd_pymc, m.sd_bambi)
    excess = ((m.mean_pymc - m.mean_bambi).abs() - 2 * mcse) / scale
    main = m.effect_type_pymc.isin(["overall", "drug"])
    assert excess[main].max() < 0.1, m.loc[main].assign(excess=excess[main]).sort_values("excess").tail()
    assert excess.max() < 0.25
    assert (m.sd_pymc / m.sd_bambi)[main].between(0.8, 1.25).all()


@pytest.mark.slow
def test_meta_agrees_in_sign_on_every_credible_overall_effect(default_fit):
    pairs, _, result = default_fit
    bayes = result.effects
    meta = MetaAnalysisPooling().fit(pairs, 0).effects
    m = bayes.merge(meta, on=["network_a", "network_b", "effect"], suffixes=("_pymc", "_meta"))
    credible = m[(m.effect == "overall") & ((m.hdi_low_pymc > 0) | (m.hdi_high_pymc < 0))]
    assert len(credible) >= 5
    assert (np.sign(credible.mean_pymc) == np.sign(credible.mean_meta)).all()


def test_single_dataset_falls_back_to_one_level():
    pairs, _ = simulate_pairs(scale=1.0, n_volumes=60, sites=[SiteSpec("only", "LSD", 12)], paired=False)
    result = PyMCPooling(PyMCPooling.Config(draws=50, tune=50, **QUICK)).fit(key(pairs), 0)
    assert any("only one drug" in w for w in result.warnings)
    eff = result.effects
    overall = eff[eff.effect == "overall"].set_index(["network_a", "network_b"])["mean"]
    drug = eff[eff.effect == "drug:LSD"].set_index(["network_a", "network_b"])["mean"]
    assert np.allclose(overall, drug)


def test_one_drug_in_two_datasets_reports_one_population_effect():
    """With dataset scales (on: the drug has two datasets) the drug's effect is its population's,
    and with one drug that is the overall effect too, draw by draw."""
    sites = [SiteSpec("lsd_a", "LSD", 10), SiteSpec("lsd_b", "LSD", 10)]
    pairs, _ = simulate_pairs(scale=1.0, n_volumes=60, sites=sites, paired=False)
    result = PyMCPooling(PyMCPooling.Config(draws=50, tune=50, **QUICK)).fit(key(pairs), 0)
    assert "dataset_scales" in result.tables and any("only one drug" in w for w in result.warnings)
    post = result.idata.posterior
    assert float(post["drug_population_factor"].std()) > 0  # the factor is there ...
    np.testing.assert_allclose(post["overall"], post["drug_effect"].sel(drug="LSD"), atol=1e-6)  # ... in both


@pytest.mark.slow
def test_default_learns_the_between_dataset_sds_across_pairs(default_fit):
    """The default's tau_dataset is a common learned scale times a heavy-tailed factor per pair:
    where the planted datasets agree (as here, around their scaled drug maps) the pairs teach
    each other a small scale instead of each sitting in its own HalfNormal prior's bulk."""
    from megafc.plugins.pooling.pymc_scan_level import heterogeneity_kinds

    _, _, result = default_fit
    post = result.idata.posterior
    assert {"tau_dataset_scale", "tau_dataset_local"} <= set(post.data_vars)
    np.testing.assert_allclose(post["tau_dataset"], post["tau_dataset_scale"] * post["tau_dataset_local"], rtol=1e-5)
    tau = post["tau_dataset"].mean(("chain", "draw"))
    prior_median = PyMCPooling.Config().priors.dataset_sd * 0.674  # of HalfNormal(dataset_sd), the per_pair prior
    # median posterior mean over pairs: 0.0007 here; 0.017 with heterogeneity=per_pair
    assert float(tau.median()) < prior_median / 20, float(tau.median())
    assert "HalfCauchy(1)" in result.description
    assert heterogeneity_kinds(PyMCPooling.Config()) == ("per_pair", "learned")
    assert heterogeneity_kinds(PyMCPooling.Config(heterogeneity="pooled")) == ("pooled", "pooled")
    with pytest.raises(ConfigError, match="pooling.heterogeneity"):
        PyMCPooling(PyMCPooling.Config(heterogeneity="hierarchical"))


def test_paired_model_falls_back_to_one_level():
    pairs, _ = simulate_pairs(scale=1.0, n_volumes=60, sites=[SiteSpec("only", "LSD", 12)])
    design = paired_design(pairs)
    assert not design.use_drug_level and not design.use_dataset_level


@pytest.fixture(scope="module")
def key_pairs(simulated):
    pairs, truth = simulated
    return key(pairs), truth


@pytest.mark.slow
@pytest.mark.parametrize("options", [
    dict(likelihood="student_t", heterogeneity="shared"), dict(parametrization="non_centered", motion=True),
])
def test_paired_model_options_sample_and_recover_sign(key_pairs, options):
    pairs, truth = key_pairs
    result = PyMCPairedPooling(PyMCPairedPooling.Config(draws=150, tune=150, **QUICK, **options)).fit(pairs, seed=2)
    o = result.effects[result.effects.effect == "overall"].set_index(["network_a", "network_b"])["mean"]
    assert o[("Default", "Vis")] > 0.02 and o[("Caudate", "SomMot")] < -0.02
    sampled_effects = "z_drug" in result.idata.posterior
    assert sampled_effects == (options.get("likelihood") == "student_t" or "parametrization" in options)
    if options.get("likelihood") == "student_t":
        assert "no closed-form marginal" in result.description
    if options.get("motion"):
        assert "beta_motion" in set(result.diagnostics["variable"])
        # the FD slope is reported, per mm of the FD change as the scan-level model does (it was
        # said to be adjusted for, with no slope rows)
        fd = result.effects[result.effects.effect == "covariate:mean_fd"]
        assert len(fd) == len(o) and "mean_fd" in result.adjusted_for and fd["mean"].notna().all()


@pytest.mark.slow
def test_hard_model_is_flagged_not_silently_reported():
    """Centred parametrisation on tiny data with a short chain: the funnel must show up as 'not ok'."""
    pairs, _ = simulate_pairs(scale=0.15, n_volumes=60)
    c = PyMCPairedPooling.Config(draws=60, tune=30, parametrization="centered", target_accept=0.6, **QUICK)
    result = PyMCPairedPooling(c).fit(key(pairs), seed=0)
    assert not result.effects["ok"].all()
    assert not result.diagnostics["ok"].all()
    assert result.warnings


def test_scan_level_options_dose_and_time(key_pairs):
    """Dose slopes per drug (at a reference dose) and a time-since-dose slope enter as rows."""
    pairs, _ = simulate_pairs(scale=0.3, n_volumes=60, atlas=SMALL_ATLAS, paired=False, design="prepost",
                              drug_scans=2)
    reference = {"psilocybin": 25, "LSD": 0.1, "mescaline": 500, "DMT": 20, "ayahuasca": 1}
    c = PyMCPooling.Config(draws=40, tune=40, dose=True, dose_reference=reference, time=True, **QUICK)
    result = PyMCPooling(c).fit(key(pairs), 0)
    covs = set(result.effects.loc[result.effects.effect_type == "covariate", "level"])
    # slopes only for drugs whose dose varies (psilocybin 0.2-25, LSD 0.075-0.1); DMT (20) and
    # mescaline (500) at one dose and ayahuasca without: no slope to learn, said so, not reported
    # as the other drugs' slope in their name
    assert covs == {"mean_fd", "minutes_since_dose", "dose:psilocybin", "dose:LSD"}
    said = " ".join(result.warnings)
    one = [w for w in result.warnings if "given at one dose each" in w]
    assert len(one) == 1 and "mescaline 500" in one[0] and "DMT 20" in one[0] and "no dose slope" in one[0]
    assert "['ayahuasca'] have no dose" in said
    assert "pooling.dose_reference for ['DMT', 'ayahuasca', 'mescaline'] is not used" in said
    assert "reference dose (psilocybin 25, LSD 0.1;" in result.description
    assert "minutes since dosing" in result.description
    # no drug whose dose varies: refused, naming the key
    flat = key(pairs).assign(dose=np.where(key(pairs)["condition"] == "drug", 1.0, np.nan))
    with pytest.raises(ConfigError, match="pooling.dose.*does not vary within any drug"):
        PyMCPooling(c).fit(flat, 0)


NULL_EFFECTS = EffectSpec(transmodal_unimodal=0, thalamus_sensory=0, striatum_sommot=0, cerebellum_sommot=0,
                          within_sensory_loading=0, drug_deviation_sd=0)


def test_session_order_takes_an_order_effect_out_of_a_prepost_dataset():
    """No drug effect, +0.2 latent FC per session after the first: the pre/post dataset's
    drug effect is the order effect unless the slope, learned from the counterbalanced
    crossovers, takes it out."""
    sites = [SiteSpec(f"psilocybin_{i}", "psilocybin", 16) for i in (1, 2, 3)] + [
        SiteSpec("lsd_1", "LSD", 16, design="prepost")]
    pairs, _ = simulate_pairs(scale=1.0, n_volumes=60, atlas=SMALL_ATLAS, paired=False, sites=sites,
                              effects=NULL_EFFECTS, order_effect=0.2)
    assert set(pairs["session_order"]) == {1, 2}
    prepost = key(pairs).query("dataset == 'lsd_1'")
    raw = prepost.groupby("condition")["fc"].mean()
    raw = raw["drug"] - raw["baseline"]  # what the dataset's effect is without the slope
    fit = PyMCPooling(PyMCPooling.Config(draws=100, tune=100, **QUICK)).fit(key(pairs), 0)  # null: on
    adjusted = fit.effects.loc[fit.effects.effect == "dataset:lsd_1", "mean"].mean()
    slope = fit.effects.query("effect == 'covariate:session_order'")
    assert len(slope) == len(KEY_PAIRS) and (slope["mean"] > 0).mean() >= 5 / 6
    assert raw > 0.04 and abs(adjusted) < raw / 3
    assert "place among its subject's sessions" in fit.description
    heterogeneity = fit.tables["heterogeneity"]
    assert set(heterogeneity.loc[heterogeneity["parameter"] == "slope:session_order", "level"]) == {"per session"}


def test_paired_model_takes_the_order_effect_out_too():
    """pymc_paired's slope is on each difference's order difference (+1 in the pre/post
    dataset, +-1 in the crossovers): the same study as above, fitted with it and without."""
    sites = [SiteSpec(f"psilocybin_{i}", "psilocybin", 16) for i in (1, 2, 3)] + [
        SiteSpec("lsd_1", "LSD", 16, design="prepost")]
    pairs, _ = simulate_pairs(scale=1.0, n_volumes=60, atlas=SMALL_ATLAS, sites=sites, effects=NULL_EFFECTS,
                              order_effect=0.2)  # paired: the drug scans with a control
    pairs = key(pairs)
    prepost = pairs.query("dataset == 'lsd_1'").groupby("condition")["fc"].mean()
    raw = prepost["drug"] - prepost["baseline"]
    fits = {on: PyMCPairedPooling(PyMCPairedPooling.Config(draws=150, tune=150, session_order=on, **QUICK)).fit(pairs, 0)
            for on in (None, False)}  # null: on (the crossovers are counterbalanced)
    effect = {on: f.effects.loc[f.effects.effect == "dataset:lsd_1", "mean"].mean() for on, f in fits.items()}
    slope = fits[None].effects.query("effect == 'covariate:session_order'")
    assert len(slope) == len(KEY_PAIRS) and (slope["mean"] > 0).mean() >= 5 / 6
    assert raw > 0.04 and abs(effect[None]) < raw / 3 and effect[False] > raw / 2
    assert "adjusted for session order" in fits[None].description
    assert fits[None].adjusted_for == ["session_order"] and fits[False].adjusted_for == []
    assert "not adjusted for motion (pooling.motion=false)" in fits[False].description
    assert "covariate:session_order" not in set(fits[False].effects["effect"])
    assert "dataset(s) ['lsd_1'] scan the drug only after its control" in fits[False].description
    with pytest.raises(ConfigError, match=r"pooling.session_order.*drug scan\(s\)"):
        PyMCPairedPooling(PyMCPairedPooling.Config(session_order=True, **QUICK)).fit(
            pairs.drop(columns="session_order"), 0)


def test_one_network_pair_is_fitted(key_pairs):
    """aggregate.pairs with one pair (a focused question, or bambi's comparison): the subjects'
    response spread cannot be told from noise on one outcome, and the run says so instead of
    failing (ZeroDivisionError in the spread's noise correction)."""
    pairs, _ = key_pairs
    one = key(pairs, {("Default", "Vis")})
    result = PyMCPooling(PyMCPooling.Config(draws=60, tune=60, **QUICK)).fit(one, 0)
    assert set(result.effects["network_b"]) == {"Vis"} and result.effects["mean"].notna().all()
    assert "could not be estimated (a single outcome" in result.description + " ".join(result.warnings)


@pytest.mark.parametrize("model", [PyMCPooling, PyMCPairedPooling])
def test_contrast_of_a_left_out_drug_is_skipped_not_fatal(key_pairs, model, caplog):
    """A leave-one-dataset-out job that leaves out a drug's only dataset: pooling.contrasts
    naming that drug skips that contrast with a warning (the sweep's other jobs estimate it);
    a drug the data never had is still refused."""
    pairs, _ = key_pairs
    kept = pairs[pairs["dataset"] != "mescaline_1"].copy()
    kept.attrs = {**pairs.attrs, "absent_drugs": ["mescaline"]}
    config = model.Config(draws=40, tune=40, contrasts=["LSD-mescaline", "LSD-psilocybin"], **QUICK)
    with caplog.at_level("WARNING", logger="megafc"):
        fit = model(config).fit(kept, 0)
    assert set(fit.effects.query("effect_type == 'contrast'")["effect"]) == {"contrast:LSD-psilocybin"}
    assert sum("'LSD-mescaline' is not estimated" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(ConfigError, match="pooling.contrasts.*LSD-ketamine"):
        model(model.Config(draws=40, tune=40, contrasts=["LSD-ketamine"], **QUICK)).fit(kept, 0)


def test_paired_dose_slope_is_reported(key_pairs):
    """pooling=pymc_paired with pooling.dose=true reports the slope it adjusts for, per sd of
    dose within drug (as covariate:dose rows), and recovers a planted one."""
    pairs, _ = key_pairs
    pairs = pairs[pairs["drug"] != "ayahuasca"].copy()  # the synthetic ayahuasca scans have no dose
    drug_scans = pairs["condition"] == "drug"
    rng = np.random.default_rng(3)
    dose = pd.Series(rng.uniform(10, 30, pairs["scan_id"].nunique()), index=pairs["scan_id"].unique())
    pairs["dose"] = np.where(drug_scans, pairs["scan_id"].map(dose), np.nan)
    z = pairs[drug_scans].groupby("drug")["dose"].transform(lambda d: (d - d.mean()) / d.std(ddof=0))
    pairs.loc[drug_scans, "fc"] += 0.08 * z  # +0.08 Fisher z per within-drug sd of dose
    fit = PyMCPairedPooling(PyMCPairedPooling.Config(draws=150, tune=150, dose=True, **QUICK)).fit(pairs, 0)
    slope = fit.effects.query("effect == 'covariate:dose'")
    assert len(slope) == len(KEY_PAIRS) and set(slope["level"]) == {"dose"}
    assert ((slope["hdi_low"] < 0.08) & (0.08 < slope["hdi_high"])).mean() >= 5 / 6
    assert (slope["hdi_low"] > 0).mean() >= 5 / 6
    assert "dose" in fit.adjusted_for and "covariate:dose rows, per within-drug sd of dose" in fit.description
    assert not any("pooling.dose" in w for w in fit.warnings)
    # one dose a drug: nothing tells the slope, which is refused, not reported as its prior
    flat = pairs.assign(dose=np.where(drug_scans, 25.0, np.nan))
    with pytest.raises(ConfigError, match=r"pooling.dose.*does not vary within any drug"):
        PyMCPairedPooling(PyMCPairedPooling.Config(dose=True, **QUICK)).fit(flat, 0)
    # one dose for LSD only: the slope is learned from the others, and the run says so
    lsd_flat = pairs.assign(dose=np.where(drug_scans & (pairs["drug"] == "LSD"), 0.1, pairs["dose"]))
    part = PyMCPairedPooling(PyMCPairedPooling.Config(draws=40, tune=40, dose=True, **QUICK)).fit(lsd_flat, 0)
    assert any("pooling.dose: each of ['LSD']'s scans have one dose" in w for w in part.warnings)
    assert "not ['LSD']" in part.description and len(part.effects.query("effect == 'covariate:dose'"))
    # and a missing dose names the datasets
    with pytest.raises(ConfigError, match=r"pooling.dose.*have no dose \(dataset: scans \{'lsd_1': \d+"):
        PyMCPairedPooling(PyMCPairedPooling.Config(dose=True, **QUICK)).fit(
            pairs.assign(dose=np.where(pairs["dataset"] == "lsd_1", np.nan, pairs["dose"])), 0)


def test_session_order_needs_its_column(key_pairs):
    pairs, _ = key_pairs
    for bad, what in ((pairs.drop(columns="session_order"), "no 'session_order' column"),
                      (pairs.assign(session_order=np.where(pairs.dataset == "lsd_1", np.nan, pairs.session_order)),
                       "ds-lsd_1")):
        for model in (PyMCPooling(PyMCPooling.Config(session_order=True, **QUICK)),
                      BambiPooling(BambiPooling.Config(session_order=True, sampler="pymc"))):
            with pytest.raises(ConfigError, match=f"pooling.session_order.*{what}"):
                model.fit(bad, seed=0)


def test_session_order_null_adjusts_only_where_the_scans_can_tell(key_pairs):
    """null: on with a complete column and counterbalanced subjects; off, and said, otherwise."""
    from megafc.plugins.pooling.scan_design import scan_design

    pairs, _ = key_pairs
    model = PyMCPooling(PyMCPooling.Config(**QUICK))
    assert model.order_on(scan_design(pairs)) == (True, "")
    assert model.order_on(scan_design(pairs.drop(columns="session_order"))) == (False, "")
    on, note = model.order_on(scan_design(pairs.assign(session_order=pairs.session_order.where(pairs.subject != "01"))))
    assert not on and "have no session_order" in note
    # drug always second: no subject tells the order from the drug
    ordered = pairs.assign(session_order=np.where(pairs.condition == "drug", 2, 1))
    assert model.order_on(scan_design(ordered)) == (False, "")
    off = PyMCPooling(PyMCPooling.Config(session_order=False, **QUICK))
    assert "pooling.session_order=true" in off.order_on(scan_design(pairs))[1]


def test_missing_dose_reference_names_the_key(key_pairs):
    pairs, _ = key_pairs
    with pytest.raises(ConfigError, match="pooling.dose_reference"):
        PyMCPooling(PyMCPooling.Config(dose=True, dose_reference={"LSD": 0.1}, **QUICK)).fit(pairs, seed=0)
    with pytest.raises(ConfigError, match="pooling.dose_reference"):
        PyMCPooling(PyMCPooling.Config(dose=True, **QUICK))


def test_time_without_minutes_names_the_column(key_pairs):
    pairs, _ = key_pairs
    with pytest.raises(ConfigError, match="minutes_since_dose"):
        PyMCPooling(PyMCPooling.Config(time=True, **QUICK)).fit(pairs.assign(minutes_since_dose=np.nan), seed=0)


def test_motion_true_without_fd_is_a_config_error(key_pairs):
    pairs, _ = key_pairs
    pairs = pairs.assign(mean_fd=np.where(pairs.drug == "ayahuasca", np.nan, pairs.mean_fd))
    with pytest.raises(ConfigError, match="pooling.motion"):
        PyMCPooling(PyMCPooling.Config(motion=True, **QUICK)).fit(pairs, seed=0)
    auto = PyMCPooling(PyMCPooling.Config(draws=20, tune=20, **QUICK)).fit(pairs, seed=0)
    assert any("not adjusted for motion" in w for w in auto.warnings)
    assert set(auto.effects.loc[auto.effects.effect_type == "covariate", "level"]) == {"session_order"}


@pytest.mark.parametrize("key_, value", [("likelihood", "student_t"), ("parametrization", "centered"), ("pair_prior", "lasso"),
                                         ("heterogeneity", "per_edge"), ("rhat_max", 0.99), ("ess_min", 0.0),
                                         ("max_treedepth", 0), ("drug_effects", "mixed")])
def test_bad_model_option_names_its_config_key(key_, value):
    with pytest.raises(ConfigError, match=f"pooling.{key_}"):
        PyMCPooling(PyMCPooling.Config(**{key_: value}))


def test_fixed_drug_effects_refuse_a_model_of_the_drugs_population():
    """Drug scales and the pair priors centre the drugs on the overall effect: asked for with
    fixed drug effects, the error names both keys; left at null, they get random drug effects."""
    from megafc.plugins.pooling.pymc_scan_level import centred_on_overall

    for other in ({"drug_scale": True}, {"pair_prior": "horseshoe"}):
        with pytest.raises(ConfigError, match=r"pooling.drug_effects.*pooling\.(drug_scale|pair_prior)"):
            PyMCPooling(PyMCPooling.Config(drug_effects="fixed", **other))
        assert centred_on_overall(PyMCPooling(PyMCPooling.Config(**other)).config)
    assert not centred_on_overall(PyMCPooling.Config())


@pytest.mark.parametrize("key_, value", [("parametrization", "funnel"), ("likelihood", "cauchy")])
def test_bad_paired_model_option_names_its_config_key(key_, value):
    with pytest.raises(ConfigError, match=f"pooling.{key_}"):
        PyMCPairedPooling(PyMCPairedPooling.Config(**{key_: value}))


def test_missing_dose_is_a_config_error_in_the_paired_model(key_pairs):
    pairs, _ = key_pairs
    pairs = pairs.assign(dose=np.where(pairs.drug == "ayahuasca", np.nan, pairs.dose))
    with pytest.raises(ConfigError, match="pooling.dose"):
        PyMCPairedPooling(PyMCPairedPooling.Config(dose=True, sampler="pymc")).fit(pairs, seed=0)


def test_by_class_pair_prior_centres_each_pair_on_its_class(simulated):
    """pair_prior=by_class: every pair's prior mean is its system-pair class's learned mean;
    summaries keep the fixed prior."""
    pairs = key(simulated[0], KEY_PAIRS | {("transmodal-unimodal", "")})
    result = PyMCPooling(PyMCPooling.Config(draws=30, tune=30, pair_prior="by_class", **QUICK)).fit(pairs, seed=0)
    post = result.idata.posterior
    classes = list(post["class_effect"].coords["pair_class"].values)
    assert "transmodal-unimodal" in classes and "subcortical-unimodal" in classes
    means = post["overall_prior_mean"]
    for name in ("Default--Vis", "Caudate--SomMot"):
        a, b = name.split("--")
        sys_a, sys_b = pairs.loc[(pairs.network_a == a) & (pairs.network_b == b), ["system_a", "system_b"]].iloc[0]
        cls = "-".join(sorted((sys_a, sys_b)))
        assert np.allclose(means.sel(pair=name), post["class_effect"].sel(pair_class=cls))
    summary = [p for p in means.coords["pair"].values if p.endswith("--")]
    assert summary and np.allclose(means.sel(pair=summary), 0.0)
    assert "system-pair class" in result.description


def test_horseshoe_pair_prior_learns_a_scale_per_pair(simulated):
    """pair_prior=horseshoe: each pair's prior sd is its own learned (bounded) scale, centred at
    0; summaries keep the fixed Normal(0, effect_sd)."""
    pairs = key(simulated[0], KEY_PAIRS | {("transmodal-unimodal", "")})
    c = PyMCPooling.Config(draws=30, tune=30, pair_prior="horseshoe", **QUICK)
    result = PyMCPooling(c).fit(pairs, seed=0)
    post = result.idata.posterior
    sd = post["overall_prior_sd"]
    real = [p for p in sd.coords["pair"].values if not p.endswith("--")]
    assert len(real) == 6 and "overall_prior_mean" not in post
    assert np.allclose(sd.sel(pair="transmodal-unimodal--"), c.priors.effect_sd)
    assert float(sd.sel(pair=real).max()) <= c.priors.effect_sd + 1e-9  # the slab bounds every scale
    assert float(sd.sel(pair=real).std("pair").mean()) > 0  # one scale per pair, not one for all
    assert "horseshoe" in result.description


def test_tree_depth_reaches_every_sampler():
    from megafc.plugins.pooling.design import nuts_kwargs

    c = PyMCPooling.Config(max_treedepth=7, target_accept=0.85)
    assert nuts_kwargs(c, "pymc") == {"nuts": {"target_accept": 0.85, "max_treedepth": 7}}
    assert nuts_kwargs(c, "nutpie")["nuts_sampler_kwargs"] == {"maxdepth": 7}
    assert nuts_kwargs(c, "numpyro")["nuts_sampler_kwargs"] == {"max_tree_depth": 7}
    with pytest.raises(ConfigError, match="pooling.max_treedepth"):
        PyMCPooling(PyMCPooling.Config(max_treedepth=16))


def test_drug_similarity_is_corrected_for_posterior_noise():
    """Known maps estimated with error, and posterior draws around those estimates with the
    error's own (co)variance: unequal per drug, a part shared by the drugs on each pair (as the
    overall effect's uncertainty is) and an offset shared by every pair. The raw correlation of
    draws misses the planted one; the corrected measures recover the planted correlation,
    magnitude ratio and distance; a map lost in the noise, or too few pairs, gives NaN."""
    from megafc.plugins.pooling.derived import drug_similarity

    rng = np.random.default_rng(0)
    n_pairs = 150
    base, other = rng.normal(0, 0.05, (2, n_pairs))
    maps = np.stack([base, 0.5 * base + np.sqrt(0.75) * other, 2 * base])  # a, b, c = 2a

    def errors(n_chain, n_draw):
        return (rng.normal(0, 1, (n_chain, n_draw, 3, n_pairs)) * np.array([0.01, 0.025, 0.015])[:, None]
                + rng.normal(0, 0.02, (n_chain, n_draw, 1, n_pairs)) + rng.normal(0, 0.03, (n_chain, n_draw, 1, 1)))

    noise = errors(1, 1) + errors(2, 400)  # the estimate's error, then the draws' spread around it
    sim = drug_similarity(["a", "b", "c"], maps[None, None] + noise, 0.95).set_index(["drug_a", "drug_b", "measure"])
    planted_r = np.corrcoef(maps[0], maps[1])[0, 1]
    raw, corrected = sim.loc[("a", "b", "pearson_r_across_pairs")], sim.loc[("a", "b", "pattern_r_corrected")]
    assert corrected["hdi_low"] < planted_r < corrected["hdi_high"] and abs(corrected["mean"] - planted_r) < 0.05
    assert abs(raw["mean"] - planted_r) > 2 * abs(corrected["mean"] - planted_r)  # shared noise biases the raw one
    rms = np.sqrt((maps ** 2).mean(axis=1))
    for (i, j), (x, y) in {(0, 1): ("a", "b"), (0, 2): ("a", "c"), (1, 2): ("b", "c")}.items():
        row = sim.loc[(x, y, "rms_ratio")]
        assert row["hdi_low"] < rms[i] / rms[j] < row["hdi_high"], (x, y, row["mean"], rms[i] / rms[j])
        distance = np.sqrt(np.mean((maps[i] - maps[j]) ** 2))
        row = sim.loc[(x, y, "rms_distance")]
        assert row["hdi_low"] < distance < row["hdi_high"], (x, y, row["mean"], distance)
    # dataset scales: each drug's population map is its fitted map times one factor per draw.
    # That factor is not per-pair noise: the correlations ignore it, the magnitudes carry it
    f = np.exp(0.3 * rng.normal(size=(2, 400, 3)))
    scaled = drug_similarity(["a", "b", "c"], maps[None, None] + noise, 0.95, factors=f)
    scaled = scaled.set_index(["drug_a", "drug_b", "measure"])
    r_rows = [k for k in sim.index if k[2].endswith("_r_across_pairs") or k[2] == "pattern_r_corrected"]
    pd.testing.assert_frame_equal(scaled.loc[r_rows], sim.loc[r_rows])
    for (i, j), (x, y) in {(0, 1): ("a", "b"), (0, 2): ("a", "c"), (1, 2): ("b", "c")}.items():
        row, narrow = scaled.loc[(x, y, "rms_ratio")], sim.loc[(x, y, "rms_ratio")]
        assert row["hdi_low"] < rms[i] / rms[j] < row["hdi_high"], (x, y, row["mean"], rms[i] / rms[j])
        assert row["hdi_high"] - row["hdi_low"] > 1.5 * (narrow["hdi_high"] - narrow["hdi_low"])
    # taken for per-pair noise, the factor's variance swamps every map: nothing is defined
    as_noise = drug_similarity(["a", "b", "c"], (maps[None, None] + noise) * f[..., None], 0.95)
    assert as_noise.set_index("measure").loc[["pattern_r_corrected", "rms_ratio"], "mean"].isna().all()
    # a drug with no effect at all, and a study of two pairs: undefined, not +-1 or 0
    lost = drug_similarity(["a", "none"], np.stack([maps[0], 0 * maps[0]])[None, None] + noise[:, :, :2], 0.95)
    assert lost.set_index("measure").loc[["pattern_r_corrected", "rms_ratio"], "mean"].isna().all()
    few = drug_similarity(["a", "b"], (maps[None, None] + noise)[:, :, :2, :2], 0.95).set_index("measure")
    assert few.loc[["pattern_r_corrected", "rms_ratio"], "mean"].isna().all()


def test_similarity_intervals_near_their_bounds_come_from_uncapped_draws():
    """Two maps planted almost alike (r 0.995): the corrected correlation overshoots 1 and the
    corrected squared distance falls below 0 in many draws. Capping the draws first made the
    HDI pile up at the cap and miss the planted values; the interval of the uncapped draws, cut
    to the measure's range, covers them (the draws themselves stay capped)."""
    from megafc.plugins.pooling.derived import bounded_interval, drug_similarity
    from megafc.stats import summarise_draws

    row = pd.Series({"mean": 1.0, "hdi_low": 1.0, "hdi_high": 1.0, "hdi50_low": 1.0, "hdi50_high": 1.0})
    uncapped = np.random.default_rng(0).normal(1.002, 0.004, (2, 2000))
    cut = bounded_interval(row, summarise_draws(uncapped[..., None], hdi_prob=0.95).iloc[0], -1.0, 1.0)
    assert cut["hdi_low"] == pytest.approx(1.002 - 1.96 * 0.004, abs=0.001) and cut["hdi_high"] == 1.0
    assert cut["hdi50_low"] == pytest.approx(1.002 - 0.674 * 0.004, abs=0.001) and cut["mean"] == 1.0

    rng = np.random.default_rng(23)
    n_pairs = 120
    base, other = rng.normal(0, 0.05, (2, n_pairs))
    maps = np.stack([base, 0.995 * base + np.sqrt(1 - 0.995 ** 2) * other])
    shared = rng.normal(0, 0.004, (1, 1, 1, n_pairs))  # the overall effect's error, common to the drugs
    noise = rng.normal(0, 0.006, (2, 400, 2, n_pairs)) + rng.normal(0, 0.006, (1, 1, 2, n_pairs)) + shared
    sim = drug_similarity(["a", "b"], maps[None, None] + noise, 0.95).set_index("measure")
    r, distance = sim.loc["pattern_r_corrected"], sim.loc["rms_distance"]
    planted_r, planted_distance = np.corrcoef(maps)[0, 1], np.sqrt(np.mean((maps[0] - maps[1]) ** 2))
    assert r["hdi_low"] <= planted_r <= r["hdi_high"] == 1.0 and r["mean"] <= 1.0
    assert distance["hdi_low"] == 0.0 and planted_distance <= distance["hdi_high"] and distance["mean"] >= 0.0


def test_subnetwork_specificity_sees_uneven_effects_through_posterior_noise():
    """Per network pair, the spread of its subnetwork pairs' effects, draw by draw with the
    posterior noise's share removed: an uneven planted effect is recovered, an even one comes
    out near 0 although independent and shared noise make its raw draws look uneven."""
    from megafc.plugins.pooling.derived import subnetwork_specificity

    parents = {"A1": "A", "A2": "A", "B1": "B", "B2": "B", "B3": "B"}
    subpairs = [("A1", "A1"), ("A1", "A2"), ("A2", "A2"), ("A1", "B1"), ("A1", "B2"), ("A1", "B3"),
                ("A2", "B1"), ("A2", "B2"), ("A2", "B3"), ("within", "")]
    meta = pd.DataFrame(subpairs, columns=["network_a", "network_b"])
    table = pd.DataFrame({"network_a": meta.network_a}).assign(network_b=meta.network_b)
    table.attrs["parents"] = parents
    truth = np.array([0.02, 0.02, 0.02, 0.05, 0.05, 0.05, -0.01, -0.01, -0.01, 0.03])
    rng = np.random.default_rng(3)
    draws = (truth + rng.normal(0, 0.01, (2, 2000, 10)) + rng.normal(0, 0.01, (2, 2000, 1)))
    out = subnetwork_specificity(meta, table, [("overall", "overall", "", draws)], 0.95)
    out = out.set_index(["network_a", "network_b"])
    assert list(out.index) == [("A", "A"), ("A", "B")] and out["n_pairs"].tolist() == [3, 6]
    uneven = out.loc[("A", "B")]
    assert uneven["hdi_low"] <= truth[3:9].std(ddof=1) <= uneven["hdi_high"]
    assert abs(uneven["mean"] - truth[3:9].std(ddof=1)) < 0.005
    even = out.loc[("A", "A")]
    raw = draws[..., :3].std(axis=-1, ddof=1).mean()
    assert even["hdi_low"] == 0.0 and even["mean"] < raw / 2, (even["mean"], raw)
    no_parents = table.copy()
    no_parents.attrs = {}
    assert subnetwork_specificity(meta, no_parents, [("overall", "overall", "", draws)], 0.95) is None


def _subjects_with_multiples(psi: float, seed: int, n_units: int = 6, n_subjects: int = 25, n_pairs: int = 60,
                             shift_sd: float = 0.0):
    """Scan-level FC of subjects with a control and a drug scan each, every subject's change
    their own multiple (1 + Normal(0, psi)) of their unit's pattern, plus scan noise and, with
    ``shift_sd``, a shift of each scan's FC on every pair at once."""
    from types import SimpleNamespace

    rng = np.random.default_rng(seed)
    patterns = np.where(rng.random((n_units, n_pairs)) < 0.5, np.abs(rng.normal(0.05, 0.05, (n_units, n_pairs))), 0.0)
    y, unit_idx, subject_idx = [], [], []
    for u in range(n_units):
        for j in range(n_subjects):
            base = rng.normal(0.3, 0.1, n_pairs)
            multiple = 1 + rng.normal(0, psi)
            shift = rng.normal(0, shift_sd, 2) if shift_sd else np.zeros(2)
            y += [base + shift[0] + rng.normal(0, 0.03, n_pairs),
                  base + shift[1] + multiple * patterns[u] + rng.normal(0, 0.03, n_pairs)]
            unit_idx += [-1, u]
            subject_idx += [u * n_subjects + j] * 2
    unit_idx = np.array(unit_idx)
    subject_idx = np.array(subject_idx)
    obs = pd.DataFrame({"dataset": [f"d{j // n_subjects}" for j in subject_idx], "subject": subject_idx.astype(str),
                        "condition": np.where(unit_idx >= 0, "drug", "control")})
    design = SimpleNamespace(units=[f"u{u}" for u in range(n_units)], unit_idx=unit_idx, subject_idx=subject_idx,
                             is_drug=unit_idx >= 0, obs=obs)
    return np.array(y), design, patterns


@pytest.mark.parametrize("psi, shift_sd, shrink", [(0.0, 0.0, 1.0), (0.3, 0.0, 1.0), (0.0, 0.02, 1.0),
                                                   (0.3, 0.02, 1.0), (0.3, 0.0, 0.7)])
def test_subjects_response_spread_is_recovered(psi, shift_sd, shrink):
    """The sd of subjects' multiples of their dataset's pattern, from within-subject changes,
    less what noise alone spreads them by: also when every pair of a scan shifts together (which
    a residual variance missed: 0.34 for none planted) and when the pattern handed in is shrunk
    towards 0 (multiples are relative to their mean). Parallel-group subjects count but do not
    inform: with none paired, psi is unknown (NaN)."""
    from types import SimpleNamespace

    from megafc.plugins.pooling.subject_response import response_spread

    y, design, patterns = _subjects_with_multiples(psi, seed=int(psi * 10 + shift_sd * 100), shift_sd=shift_sd)
    estimate, counts = response_spread(y, design, shrink * patterns)
    assert estimate == pytest.approx(psi, abs=0.06)
    assert counts.tolist() == [25] * 6
    paired = design.is_drug  # every subject's control scan dropped: nothing to pair with
    only_drug = SimpleNamespace(units=design.units, unit_idx=design.unit_idx[paired],
                                subject_idx=design.subject_idx[paired], is_drug=design.is_drug[paired],
                                obs=design.obs[paired].reset_index(drop=True))
    unknown, n = response_spread(y[paired], only_drug, patterns)
    assert np.isnan(unknown) and n.tolist() == counts.tolist()


def test_population_factors_spread_by_psi_over_root_n_where_scales_are_learned():
    from megafc.plugins.pooling.subject_response import population_factors

    factors = population_factors(0.3, np.array([9, 25, 4]), np.array([True, True, False]), 40_000,
                                 np.random.default_rng(0))
    assert np.log(factors[:, 0]).std() == pytest.approx(0.3 / 3, rel=0.03)
    assert np.log(factors[:, 1]).std() == pytest.approx(0.3 / 5, rel=0.03)
    assert (factors[:, 2] == 1.0).all()
    assert (population_factors(float("nan"), np.array([9, 25, 4]), np.array([True] * 3), 10,
                               np.random.default_rng(0)) == 1.0).all()


@pytest.mark.slow
def test_learned_dataset_scales_carry_their_subjects_sampling(default_fit):
    """Datasets with learned scales get the factor from their subjects to their population in
    their effects and scales (drawn after the fit); the likelihood of the scans divides it back out."""
    from megafc.plugins.pooling.loo import scan_model_loglik

    pairs, _, result = default_fit
    post = result.idata.posterior
    factor = post["dataset_population_factor"]
    several = pd.Series(result.tables["dataset_scales"]["drug"]).value_counts()
    learned = [ds for ds, drug in zip(result.tables["dataset_scales"]["dataset"], result.tables["dataset_scales"]["drug"])
               if several[drug] > 1]
    assert float(factor.sel(dataset=learned).std()) > 0.01
    others = [ds for ds in post["dataset"].values if ds not in learned]
    assert (factor.sel(dataset=others) == 1).all()
    np.testing.assert_allclose(post["dataset_scale_population"], post["dataset_scale"] * factor, rtol=1e-5)
    # the stored effects are the populations': wider than the samples' (with the factor divided out)
    from megafc.plugins.pooling.loo import sample_dataset_effects

    big = int(np.abs(post["dataset_effect"].mean(("chain", "draw"))).sum("dataset").argmax())
    population = post["dataset_effect"].sel(dataset=learned).isel(pair=big).std(("chain", "draw"))
    sample = np.std(sample_dataset_effects(post)[..., big], axis=(0, 1))[[list(post["dataset"].values).index(d)
                                                                          for d in learned]]
    assert (population.to_numpy() > 1.05 * sample).all(), (population.to_numpy(), sample)
    assert "response strength varies with sd" in result.description
    model = PyMCPooling(PyMCPooling.Config(draws=300, tune=300, cores=2, progressbar=False))
    design, x, names, scales, _, _, is_summary = model.prepare(pairs)
    labels = [f"{a}-{b}" for a, b, s in zip(design.pairs.network_a, design.pairs.network_b, is_summary) if not s]
    sample = post.assign(dataset_effect=post["dataset_effect"] / factor).drop_vars("dataset_population_factor")
    with_factor = scan_model_loglik(design, post, x, names, scales, ~is_summary, labels)
    without = scan_model_loglik(design, sample, x, names, scales, ~is_summary, labels)
    np.testing.assert_allclose(with_factor, without, rtol=1e-4)


def test_chains_split_over_a_slope_get_the_way_out_named():
    """A pooled covariate slope whose mean or spread the chains disagree on (R-hat 2.2: a second
    mode, never chance) gets a warning naming the slope, that more chains show which mode holds
    most of them and which key drops it; chance R-hats, other variables and unknown slopes do not."""
    from megafc.plugins.pooling.scan_results import slope_modes_warning

    row = {"size": 1, "ess_bulk_min": 900.0, "n_r_hat_over": 0, "r_hat_over_by_chance": 0.1, "p_r_hat_max": 0.5,
           "r_hat_max": 1.002}
    stuck = {"n_r_hat_over": 1, "r_hat_max": 2.2, "ess_bulk_min": 2.6, "p_r_hat_max": 0.0}
    names = ["mean_fd", "session_order"]
    table = pd.DataFrame([{**row, "variable": "mean_fd_slope_mean"},
                          {**row, **stuck, "variable": "session_order_slope_spread_log__"},
                          {**row, **stuck, "variable": "sigma"}])
    said = slope_modes_warning(table, names)
    assert "session_order slope varies across network pairs" in said and "two modes" in said
    assert "pooling.chains=4" in said and "pooling.session_order=false" in said and "mean_fd" not in said
    table.loc[0, list(stuck)] = list(stuck.values())
    both = slope_modes_warning(table, names)
    assert "mean_fd and session_order slopes vary" in both
    assert "pooling.motion=false or pooling.session_order=false" in both
    assert slope_modes_warning(table, []) is None  # no pooled slope in the model
    assert slope_modes_warning(table[table.variable == "sigma"], names) is None  # not a slope: rhat_warning says it
    chance = table.assign(r_hat_max=1.012, p_r_hat_max=0.5, n_r_hat_over=1, r_hat_over_by_chance=2.0)
    assert slope_modes_warning(chance, names) is None  # R-hats above 1.01 as often as chance puts them there
