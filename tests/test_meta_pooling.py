"""The ``meta`` pooling model: the DerSimonian-Laird estimator, BH, edge cases, and agreement
with the Bayesian mega-analysis (``pymc``) and a frequentist mixed model (statsmodels)."""

import numpy as np
import pandas as pd
import pytest

from megafc.core import EFFECT_COLUMNS, ConfigError, paired_differences
from megafc.plugins.pooling.design import HierarchicalPriors
from megafc.plugins.pooling.meta import (
    META_COLUMNS,
    MetaAnalysisPooling,
    _bh_numpy,
    benjamini_hochberg,
    dersimonian_laird,
)
from megafc.plugins.pooling.pymc_paired import PyMCPairedPooling
from simulation import SMALL_ATLAS, simulate_pairs

TRANS_UNI = {"transmodal", "unimodal"}


@pytest.fixture(scope="module")
def simulated():
    return simulate_pairs(scale=0.5, n_volumes=150, atlas=SMALL_ATLAS)


@pytest.fixture(scope="module")
def meta_result(simulated):
    return MetaAnalysisPooling().fit(simulated[0], seed=0)


def toy_pairs(datasets: dict[str, tuple[str, list[list[float]]]]) -> pd.DataFrame:
    """A network-pair table from drug-minus-control differences given directly.

    ``datasets``: name -> (drug, one [diff for pair 1, diff for pair 2] per subject); each
    subject has a placebo scan (fc 0.1) and a drug scan (fc 0.1 + diff).
    """
    rows = []
    for ds, (drug, subjects) in datasets.items():
        for s, diffs in enumerate(subjects):
            for cond, fcs in (("placebo", [0.1, 0.1]), ("drug", [0.1 + d for d in diffs])):
                for (a, b, sa, sb), fc in zip([("A", "A", "unimodal", "unimodal"), ("A", "B", "unimodal", "transmodal")], fcs):
                    rows.append(dict(scan_id=f"{ds}_{s}_{cond}", dataset=ds, subject=str(s), session=cond, drug=drug,
                                     condition=cond, dose=np.nan, mean_fd=0.1, network_a=a, network_b=b,
                                     system_a=sa, system_b=sb, n_edges=1, fc=fc))
    return pd.DataFrame(rows)


# -- the estimator on its own ---------------------------------------------------------------


def direct_dl(y, v):
    """DerSimonian & Laird (1986) by the textbook formulas, one meta-analysis, plain Python."""
    k = len(y)
    w = [1 / vi for vi in v]
    fixed = sum(wi * yi for wi, yi in zip(w, y)) / sum(w)
    q = sum(wi * (yi - fixed) ** 2 for wi, yi in zip(w, y))
    c = sum(w) - sum(wi**2 for wi in w) / sum(w)
    tau2 = max(0.0, (q - (k - 1)) / c)
    ws = [1 / (vi + tau2) for vi in v]
    est = sum(wi * yi for wi, yi in zip(ws, y)) / sum(ws)
    i2 = max(0.0, (q - (k - 1)) / q) * 100 if q > 0 else 0.0
    return dict(estimate=est, se=(1 / sum(ws)) ** 0.5, tau2=tau2, q=q, i2=i2, fixed=fixed)


def test_dersimonian_laird_matches_direct_formulas_and_is_vectorised():
    heterogeneous = ([0.10, 0.30, 0.35, 0.65, 0.45], [0.03, 0.02, 0.05, 0.01, 0.04])
    homogeneous = ([0.20, 0.22, 0.19, 0.21, 0.20], [0.03, 0.02, 0.05, 0.01, 0.04])  # Q < df: tau^2 truncated
    res = dersimonian_laird(np.column_stack([heterogeneous[0], homogeneous[0]]),
                            np.column_stack([heterogeneous[1], homogeneous[1]]))
    for col, (y, v) in enumerate((heterogeneous, homogeneous)):
        want = direct_dl(y, v)
        for key, value in want.items():
            assert res[key][col] == pytest.approx(value, rel=1e-10, abs=1e-14), key
        assert res["k"][col] == 5
    assert res["tau2"][0] > 0 and res["i2"][0] > 0
    # truncation: tau^2 = 0, the random-effects estimate is the fixed-effect one, I^2 = 0
    assert res["q"][1] < 4 and res["tau2"][1] == 0 and res["i2"][1] == 0
    assert res["estimate"][1] == pytest.approx(res["fixed"][1]) and res["se"][1] == pytest.approx(res["fixed_se"][1])


def test_dersimonian_laird_bcg_trials():
    """The BCG vaccine trials (Colditz et al. 1994; metafor's dat.bcg), log risk ratios.

    metafor's rma(yi, vi, data = dat.bcg, method = "DL") reports estimate -0.7141 (se 0.1787),
    tau^2 = 0.3088, I^2 = 92.12%, Q(df = 12) = 152.2330.
    """
    tpos, tneg, cpos, cneg = np.array([
        [4, 119, 11, 128], [6, 300, 29, 274], [3, 228, 11, 209], [62, 13536, 248, 12619],
        [33, 5036, 47, 5761], [180, 1361, 372, 1079], [8, 2537, 10, 619], [505, 87886, 499, 87892],
        [29, 7470, 45, 7232], [17, 1699, 65, 1600], [186, 50448, 141, 27197], [5, 2493, 3, 2338],
        [27, 16886, 29, 17825],
    ], dtype=float).T
    yi = np.log(tpos / (tpos + tneg)) - np.log(cpos / (cpos + cneg))
    vi = 1 / tpos - 1 / (tpos + tneg) + 1 / cpos - 1 / (cpos + cneg)
    r = dersimonian_laird(yi, vi)
    assert round(float(r["estimate"]), 4) == -0.7141
    assert round(float(r["se"]), 4) == 0.1787
    assert round(float(r["tau2"]), 4) == 0.3088
    assert round(float(r["i2"]), 2) == 92.12
    assert round(float(r["q"]), 4) == 152.2330
    assert r["k"] == 13 and r["df"] == 12


def test_dersimonian_laird_one_study_missing_values_and_bad_variances():
    y = np.array([[0.3, 0.1, np.nan], [np.nan, 0.5, np.nan], [0.2, 0.4, np.nan]])
    v = np.array([[0.01, 0.02, 0.01], [0.02, 0.02, 0.01], [0.03, 0.01, 0.01]])
    r = dersimonian_laird(y, v)
    sub = dersimonian_laird(y[[0, 2], 0], v[[0, 2], 0])  # NaN study left out of column 0
    assert r["estimate"][0] == pytest.approx(sub["estimate"]) and r["k"][0] == 2
    assert r["k"][2] == 0 and np.isnan(r["estimate"][2]) and np.isnan(r["se"][2])
    one = dersimonian_laird(np.array([[0.3]]), np.array([[0.04]]))
    assert one["estimate"][0] == 0.3 and one["se"][0] == pytest.approx(0.2) and one["tau2"][0] == 0 and one["q"][0] == 0
    with pytest.raises(ValueError, match="positive"):
        dersimonian_laird([0.1, 0.2], [0.01, 0.0])


def test_benjamini_hochberg_toy_vector():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5, np.nan])
    # sorted: 0.005, 0.01, 0.03, 0.04, 0.5 (m = 5): p * m / rank = 0.025, 0.025, 0.05, 0.05, 0.5,
    # then the running minimum from the largest p downwards (already monotone here)
    want = np.array([0.025, 0.05, 0.05, 0.025, 0.5, np.nan])
    np.testing.assert_allclose(benjamini_hochberg(p), want, equal_nan=True)
    np.testing.assert_allclose(_bh_numpy(p[:5]), want[:5])
    # monotonicity step: p*m/rank = 0.04, 0.025 -> both adjusted to 0.025
    np.testing.assert_allclose(_bh_numpy(np.array([0.02, 0.025])), [0.025, 0.025])
    rng = np.random.default_rng(0)
    q = rng.uniform(size=200) ** 3
    from scipy.stats import false_discovery_control

    np.testing.assert_allclose(_bh_numpy(q), false_discovery_control(q, method="bh"))
    assert np.isnan(benjamini_hochberg([np.nan, np.nan])).all()


# -- the plugin on simulated data -----------------------------------------------------------


def test_meta_effects_table_layout(meta_result, simulated):
    eff = meta_result.effects
    assert set(EFFECT_COLUMNS) | set(META_COLUMNS) | {"system_a", "system_b", "n_obs", "lfsr", "svalue", "null_share",
                                                            "error_correlation"} == set(
        eff.columns)
    pairs = simulated[0]
    n_pairs = pairs[pairs.network_b != ""].groupby(["network_a", "network_b"]).ngroups
    assert len(eff) == n_pairs * (1 + 5 + 10 + 11)  # overall, drugs, contrasts of every two drugs, datasets
    summaries = meta_result.tables["summaries"]  # the built-in summaries, fitted as outcomes
    assert set(summaries.summary) == set(pairs.attrs["summaries"].summary)
    assert len(summaries) == summaries.summary.nunique() * (1 + 5 + 10 + 11)
    assert set(eff.effect_type) == {"overall", "drug", "contrast", "dataset"}
    assert eff[["r_hat", "ess_bulk", "ess_tail"]].isna().all().all()
    assert (eff.divergences == 0).all() and eff.ok.all() and meta_result.idata is None
    assert not meta_result.warnings
    assert ((eff.hdi_low < eff["mean"]) & (eff["mean"] < eff.hdi_high)).all()
    # pd is 1 - p/2 (the one-sided normal probability of the estimate's sign)
    np.testing.assert_allclose(eff.pd, 1 - eff.p / 2)
    assert (eff.p_fdr >= eff.p - 1e-15).all()
    overall = eff[eff.effect == "overall"]
    assert (overall.k == 11).all() and overall.i2.between(0, 100).all() and (overall.tau2 >= 0).all()
    # a drug with one dataset takes that dataset's estimate and se, tau^2 = 0
    mesc = eff[eff.effect == "drug:mescaline"].reset_index(drop=True)
    ds = eff[eff.effect == "dataset:mescaline_1"].reset_index(drop=True)
    np.testing.assert_allclose(mesc[["mean", "sd"]], ds[["mean", "sd"]])
    assert (mesc.tau2 == 0).all() and (mesc.k == 1).all()
    assert (mesc.q == 0).all() and (mesc.i2 == 0).all()  # one study: no spread (was I^2 = 100% from rounding)
    # dataset rows: the drug coefficient of a regression on subject dummies, drug and FD
    pairs = simulated[0]
    one = pairs[(pairs.dataset == "lsd_2") & (pairs.network_a == "Default") & (pairs.network_b == "Vis")]
    x = pd.get_dummies(one.subject).astype(float).assign(drug=(one.condition == "drug").astype(float), fd=one.mean_fd)
    coef, rss, *_ = np.linalg.lstsq(x.to_numpy(), one.fc.to_numpy(), rcond=None)
    se = np.sqrt(rss[0] / (len(one) - x.shape[1]) * np.linalg.inv(x.T @ x)[-2, -2])
    row = eff[(eff.effect == "dataset:lsd_2") & (eff.network_a == "Default") & (eff.network_b == "Vis")].iloc[0]
    assert row["mean"] == pytest.approx(coef[-2]) and row["sd"] == pytest.approx(se)
    assert row["n_obs"] == (one.condition == "drug").sum()
    diag = meta_result.diagnostics
    assert len(diag) == 27 and {"effect", "k", "tau2_median", "i2_median"} <= set(diag.columns)
    # the medians are over the network pairs, as effects.tsv holds them (not the summaries too)
    row = diag.set_index("effect").loc["overall"]
    assert row["i2_median"] == pytest.approx(eff.loc[eff.effect == "overall", "i2"].median())
    assert row["tau2_median"] == pytest.approx(eff.loc[eff.effect == "overall", "tau2"].median())
    assert "DerSimonian" in meta_result.description and "Benjamini" in meta_result.description


def test_meta_contrasts_are_differences_of_the_drugs_estimates(meta_result, simulated):
    """contrast:a-b is drug a's pooled estimate minus drug b's, with their standard errors
    added in quadrature (distinct datasets) and the same Wald interval and test as every row;
    pooling.contrasts picks them, naming an unknown drug's key."""
    eff = meta_result.effects.set_index(["network_a", "network_b", "effect"])
    for a, b in (("LSD", "psilocybin"), ("DMT", "ayahuasca")):
        c, da, db = (eff.xs(e, level="effect") for e in (f"contrast:{a}-{b}", f"drug:{a}", f"drug:{b}"))
        np.testing.assert_allclose(c["mean"], da["mean"] - db["mean"])
        np.testing.assert_allclose(c["sd"], np.hypot(da["sd"], db["sd"]))
        np.testing.assert_allclose(c["hdi_high"] - c["hdi_low"], 2 * 1.959964 * c["sd"], rtol=1e-5)
        np.testing.assert_allclose(c["p"], 2 * (1 - c["pd"]), atol=1e-12)
        assert (c["k"] == da["k"] + db["k"]).all() and (c["level"] == f"{a}-{b}").all()
    chosen = MetaAnalysisPooling(MetaAnalysisPooling.Config(contrasts=["LSD-psilocybin"])).fit(simulated[0], 0)
    assert set(chosen.effects.query("effect_type == 'contrast'")["effect"]) == {"contrast:LSD-psilocybin"}
    with pytest.raises(ConfigError, match=r"pooling.contrasts.*LSD-ketamine"):
        MetaAnalysisPooling(MetaAnalysisPooling.Config(contrasts=["LSD-ketamine"])).fit(simulated[0], 0)


def test_methods_name_the_pairs_level(simulated):
    """An aggregate.level=subnetwork run's methods count subnetwork pairs, not "network pairs"."""
    pairs = simulated[0].copy()
    pairs.attrs = {**simulated[0].attrs, "level": "subnetwork"}
    assert "120 subnetwork pairs and 21 summary outcomes" in MetaAnalysisPooling().fit(pairs, 0).description
    assert "120 network pairs and 21 summary outcomes" in MetaAnalysisPooling().fit(simulated[0], 0).description


def test_meta_recovers_planted_increases(meta_result, simulated):
    _, truth = simulated
    eff = meta_result.effects
    t = truth[(truth.aggregation == "network") & (truth.effect == "overall")]
    m = eff[eff.effect == "overall"].merge(t, on=["network_a", "network_b"], validate="one_to_one")
    tu = m[m.system_a.isin(TRANS_UNI) & m.system_b.isin(TRANS_UNI) & (m.system_a != m.system_b)]
    assert len(tu) == 6
    assert (tu["mean"] > 0).all(), tu[["network_a", "network_b", "truth", "mean"]]
    assert (tu.hdi_low > 0).mean() >= 5 / 6 and (tu.p_fdr < 0.05).mean() >= 5 / 6
    assert np.corrcoef(m["mean"], m["truth"])[0, 1] > 0.8


def test_ci_level_config():
    with pytest.raises(ConfigError, match="ci_level"):
        MetaAnalysisPooling(MetaAnalysisPooling.Config(ci_level=1.5))


def test_ci_level_sets_interval_width(simulated, meta_result):
    narrow_result = MetaAnalysisPooling(MetaAnalysisPooling.Config(ci_level=0.5)).fit(simulated[0], 0)
    narrow = narrow_result.effects
    wide = meta_result.effects
    assert (narrow_result.interval, meta_result.interval) == ("50% CI", "95% CI")  # figure legends say so
    ratio = (narrow.hdi_high - narrow.hdi_low) / (wide.hdi_high - wide.hdi_low)
    np.testing.assert_allclose(ratio, 0.6744897501960817 / 1.959963984540054)
    odd = MetaAnalysisPooling(MetaAnalysisPooling.Config(ci_level=0.975)).fit(simulated[0], 0)
    assert odd.interval == "97.5% CI" and "97.5% Wald confidence intervals" in odd.description  # not "98%"


def test_without_motion_a_complete_crossover_is_the_mean_paired_difference(simulated):
    """Subject fixed effects and one drug and one control scan per subject: the estimate and its
    standard error are those of the paired differences (mean, sd / sqrt(n))."""
    eff = MetaAnalysisPooling(MetaAnalysisPooling.Config(motion=False)).fit(simulated[0], 0).effects
    d = paired_differences(simulated[0])
    g = d[(d.dataset == "lsd_2") & (d.network_a == "Default") & (d.network_b == "Vis")]["fc_diff"]
    row = eff[(eff.effect == "dataset:lsd_2") & (eff.network_a == "Default") & (eff.network_b == "Vis")].iloc[0]
    assert row["mean"] == pytest.approx(g.mean()) and row["sd"] == pytest.approx(g.std(ddof=1) / np.sqrt(len(g)))


def test_scans_without_mean_fd_are_named_when_motion_is_dropped_or_asked_for(simulated):
    """pooling=meta dropped the motion adjustment without saying why, and pooling.motion=true
    said only "some scans have no mean_fd": both now name the scans, as pooling=pymc counts them."""
    pairs = simulated[0].copy()
    gone = sorted(pairs["scan_id"].unique())[:2]
    pairs.loc[pairs["scan_id"].isin(gone), "mean_fd"] = np.nan
    result = MetaAnalysisPooling().fit(pairs, 0)
    (said,) = [w for w in result.warnings if "mean_fd" in w]
    assert f"2 included scan(s) have no mean_fd ({gone[0]}, {gone[1]})" in said and "not adjusted for motion" in said
    with pytest.raises(ConfigError, match=rf"'pooling.motion' is true but 2 included scan.*{gone[0]}"):
        MetaAnalysisPooling(MetaAnalysisPooling.Config(motion=True)).fit(pairs, 0)


def test_parallel_groups_are_a_group_difference():
    pairs = toy_pairs({"a": ("LSD", [[0.1, 0.2], [0.3, 0.0], [0.2, 0.1]])})
    # keep the drug scans of subjects 0 and 1 and the placebo scans of subjects 1 and 2: no subject has both
    keep = ((pairs.condition == "drug") & pairs.subject.isin(["0"])) | ((pairs.condition == "placebo") & pairs.subject.isin(["2"]))
    keep |= (pairs.subject == "1") & (pairs.condition == "drug")
    pairs = pd.concat([pairs[keep], toy_pairs({"a": ("LSD", [[0.0, 0.0]])}).query("condition == 'placebo'").assign(subject="3")])
    eff = MetaAnalysisPooling().fit(pairs, 0).effects
    row = eff[(eff.effect == "dataset:a") & (eff.network_b == "A")].iloc[0]
    drug = pairs[(pairs.condition == "drug") & (pairs.network_b == "A")].fc
    ctrl = pairs[(pairs.condition == "placebo") & (pairs.network_b == "A")].fc
    assert row["mean"] == pytest.approx(drug.mean() - ctrl.mean())
    assert "group difference" in MetaAnalysisPooling().fit(pairs, 0).description


def test_single_subject_dataset_is_left_out_with_a_warning(simulated):
    pairs, _ = simulated
    first = pairs.loc[pairs.dataset == "dmt_1", "subject"].iloc[0]
    sub = pairs[(pairs.dataset != "dmt_1") | (pairs.subject == first)]
    result = MetaAnalysisPooling().fit(sub, 0)
    assert any("dmt_1" in w and "no residual degrees of freedom" in w for w in result.warnings)
    eff = result.effects
    one = eff[eff.effect == "dataset:dmt_1"]
    assert one["mean"].notna().all() and one["sd"].isna().all() and not one.ok.any()
    assert (eff.loc[eff.effect == "overall", "k"] == 10).all() and eff.loc[eff.effect == "overall", "ok"].all()
    dmt = eff[eff.effect == "drug:DMT"].reset_index(drop=True)
    other = eff[eff.effect == "dataset:dmt_2"].reset_index(drop=True)
    np.testing.assert_allclose(dmt["mean"], other["mean"])
    assert (dmt.k == 1).all() and (dmt.tau2 == 0).all() and dmt.ok.all()


def test_zero_variance_and_too_few_datasets():
    # dataset "a": identical differences on pair A--A (zero variance); "b": one subject only
    pairs = toy_pairs({
        "a": ("LSD", [[0.1, 0.2], [0.1, 0.3], [0.1, 0.1]]),
        "b": ("LSD", [[0.5, 0.5]]),
        "c": ("DMT", [[0.2, 0.0], [0.3, 0.1], [0.4, 0.2]]),
    })
    result = MetaAnalysisPooling().fit(pairs, 0)
    eff = result.effects.set_index(["effect", "network_a", "network_b"])
    assert any("zero" in w for w in result.warnings) and any("'b'" in w for w in result.warnings)
    assert np.isfinite(eff.loc[("overall", "A", "A"), ["mean", "sd", "tau2"]].astype(float)).all()
    # the zero-variance dataset and the other disagree, so heterogeneity is large and the
    # pooled estimate lies between them
    assert 0.1 < eff.loc[("overall", "A", "A"), "mean"] < 0.3
    assert eff.loc[("dataset:b", "A", "B"), "mean"] == pytest.approx(0.5)
    only = toy_pairs({"a": ("LSD", [[0.1, 0.2], [0.2, 0.3]]), "b": ("LSD", [[0.5, 0.5]])})
    result = MetaAnalysisPooling().fit(only, 0)
    overall = result.effects[result.effects.effect == "overall"]
    assert (overall.k == 1).all() and not overall.ok.any()
    assert any("only 1 dataset" in w for w in result.warnings)


# -- agreement with the Bayesian mega-analysis and a frequentist mixed model ------------------


@pytest.mark.slow
def test_pymc_with_weak_priors_agrees_with_mixedlm(simulated):
    smf = pytest.importorskip("statsmodels.formula.api")
    import warnings

    pairs, _ = simulated
    keep = {("Default", "Vis"), ("SomMot", "SomMot"), ("DorsAttn", "SalVentAttn"), ("Caudate", "SomMot"),
            ("Cont", "SomMot"), ("Thalamus", "Vis")}
    sub = pairs[[(a, b) in keep for a, b in zip(pairs.network_a, pairs.network_b)]]
    # Weak priors: effect_sd 10 is flat over any Fisher-z difference; HalfNormal(0.5) on the
    # between-drug/dataset sds is ~20x the values REML finds (~0.02) yet still samples without
    # many divergences (HalfNormal(1) gives a few more with 5 drugs).
    priors = HierarchicalPriors(effect_sd=10.0, drug_sd=0.5, dataset_sd=0.5, sigma_sd=1.0)
    cfg = PyMCPairedPooling.Config(draws=600, tune=600, chains=2, progressbar=False, priors=priors,
                                   session_order=False)  # as meta, which has no session-order slope
    bayes = PyMCPairedPooling(cfg).fit(sub, seed=2).effects
    overall = bayes[bayes.effect == "overall"].set_index(["network_a", "network_b"])
    diffs = paired_differences(sub)
    for (a, b), g in diffs.groupby(["network_a", "network_b"]):
        g = g.reset_index(drop=True)
        # the same nesting as the Bayesian model: drug random intercepts, datasets within drug
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # boundary (sd ~ 0) convergence warnings are expected
            fit = smf.mixedlm("fc_diff ~ 1", g, groups=g["drug"], re_formula="1",
                              vc_formula={"dataset": "0 + C(dataset)"}).fit(reml=True)
        post_mean, post_sd = overall.loc[(a, b), "mean"], overall.loc[(a, b), "sd"]
        # Tolerance 0.5 posterior sd: the two estimators differ only by (i) the prior on the
        # overall effect (negligible at sd 10), (ii) the posterior averaging over the between-
        # drug sd where REML plugs in a point estimate, which moves the GLS weights a little,
        # and (iii) Monte Carlo error of the posterior mean (~sd/sqrt(ESS) ~ 0.05 sd). On this
        # simulation the gaps are <= ~0.25 sd; a wrong model (e.g. ignoring the dataset/drug
        # structure or a sign error) would be off by several sds.
        gap = abs(post_mean - fit.fe_params.iloc[0]) / post_sd
        assert gap < 0.5, (a, b, post_mean, post_sd, fit.fe_params.iloc[0])
