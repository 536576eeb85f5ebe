"""The pipeline in-process, on small data: outputs, atomicity, plugin errors."""

import json
import os
import sys
import types
from typing import Optional

import numpy as np
import pandas as pd
import pytest

from conftest import TINY, assert_no_results, compose
from megafc.core import ConfigError, ConnectivityEstimator, PluginError, hookimpl
from megafc.core.pipeline import run_experiment
from megafc.core.registry import build_registry

#: The fast deterministic model, for tests about the stages rather than the posterior.
META = [o for o in TINY if not o.startswith("pooling.")] + ["pooling=meta"]


@pytest.fixture(scope="module")
def tiny_run(tiny_pymc_run):
    return tiny_pymc_run


def test_run_writes_every_output(tiny_run):
    d = tiny_run.run_dir
    for f in ("config.yaml", "provenance.json", "scans.tsv", "network_pairs.tsv", "effects.tsv",
              "diagnostics.tsv", "posterior.nc", "truth.tsv", "methods.md", "figures/overall_effect.png",
              "report.html", "summaries.tsv", "exclusions.tsv", "qc_fc.tsv", "motion.tsv", "atlas_regions.tsv",
              "effects.json", "summaries.json"):
        assert (d / f).exists(), f
    # every column of effects.tsv, summaries.tsv and the derived tables is described by its JSON data dictionary
    derived = [n for n in ("drug_similarity", "dataset_scales", "drug_scales", "heterogeneity", "specificity")
               if (d / f"{n}.tsv").exists()]
    assert {"drug_similarity", "heterogeneity"} <= set(derived)
    similarity = pd.read_csv(d / "drug_similarity.tsv", sep="\t")
    ratios = similarity["measure"] == "rms_ratio"
    defined = ratios & similarity["mean"].notna()
    assert similarity.loc[ratios, "pd"].isna().all() and similarity.loc[defined, "p_above_1"].between(0, 1).all()
    assert similarity.loc[ratios & ~defined, "p_above_1"].isna().all()  # an undefined ratio says nothing
    het = pd.read_csv(d / "heterogeneity.tsv", sep="\t")
    assert het.loc[het.parameter == "tau_dataset", "pd"].isna().all()  # an sd has no sign
    for name in ("effects", "summaries", *derived):
        columns = pd.read_csv(d / f"{name}.tsv", sep="\t", nrows=1).columns
        described = json.loads((d / f"{name}.json").read_text())
        assert list(described) == list(columns)
        assert all("not described" not in v["Description"] for v in described.values()), name
    # heterogeneity's level is a dataset or a slope's unit, not effects.tsv's drug/dataset/contrast name
    assert "residual_sd" in json.loads((d / "heterogeneity.json").read_text())["level"]["Description"]
    qc = pd.read_csv(d / "qc_fc.tsv", sep="\t")
    assert "distance_mm" not in qc  # the synthetic atlas's positions are for drawing, not measuring
    dictionary = json.loads((d / "effects.json").read_text())
    assert dictionary["mean"]["Units"].startswith("Fisher z")
    assert dictionary["hdi_low"]["Description"] == "Lower end of this run's 95% HDI."
    assert not list(d.glob(".megafc-staging-*"))
    prov = json.loads((d / "provenance.json").read_text())
    assert prov["seed"] == 0 and "pymc" in prov["packages"] and "numpy" in prov["packages"]
    assert prov["plugins"]["estimator"]["name"] == "correlation"
    assert {"name": "reports", "module": "megafc.plugins.reports", "distribution": "megafc",
            "version": prov["megafc_version"], "hooks": "megafc_report_sections"} in prov["hook_plugins"]
    assert prov["input_fingerprints"]["synthetic_generator"].startswith("sha256:")
    assert prov["working_directory"] == os.getcwd() and prov["diagnostics_ok"] in (True, False)


def test_scans_table_keeps_exclusions(tiny_run):
    scans = pd.read_csv(tiny_run.run_dir / "scans.tsv", sep="\t", keep_default_na=False)
    assert {"dataset", "subject", "session", "drug", "condition", "dose", "mean_fd", "n_volumes",
            "excluded", "exclusion_reason"} <= set(scans.columns)
    pairs = pd.read_csv(tiny_run.run_dir / "network_pairs.tsv", sep="\t")
    included = set(scans.loc[scans["excluded"].astype(str) == "False", "scan_id"])
    assert set(pairs["scan_id"]) == included
    assert (pairs["network_a"] <= pairs["network_b"]).all()


def test_effects_table_has_diagnostics(tiny_run):
    eff = pd.read_csv(tiny_run.run_dir / "effects.tsv", sep="\t")
    for col in ("network_a", "network_b", "effect", "mean", "sd", "hdi_low", "hdi_high", "pd", "r_hat",
                "ess_bulk", "divergences", "ok"):
        assert col in eff.columns
    assert set(eff["effect_type"]) == {"overall", "drug", "dataset", "contrast", "covariate"}
    assert "contrast:LSD-psilocybin" in set(eff["effect"])
    # lfsr allowed for the errors the pairs of a dataset share: measured on this run's scans, per
    # dataset for dataset effects (what residual_correlation finds), pooled for the others
    from megafc.plugins.pooling.error_correlation import residual_correlation

    pairs = tiny_run.aggregated.pairs
    measured = residual_correlation(pairs[pairs["network_b"] != ""])  # the summaries are measured apart
    assert measured.pooled > 0.01 and measured.per_dataset == {}  # 2-4 subjects a dataset: too few for their own
    for etype in ("dataset", "drug", "overall", "contrast"):
        assert eff.loc[eff["effect_type"] == etype, "error_correlation"].to_numpy() == pytest.approx(measured.pooled)
    # the default model adjusts for motion and reports the FD slope of every pair as its own rows
    fd = eff[eff["effect"] == "covariate:mean_fd"]
    assert len(fd) == len(eff[eff["effect"] == "overall"]) and fd["p_rope"].isna().all()
    assert eff.loc[eff["effect_type"] != "covariate", "p_rope"].between(0, 1).all()
    assert (eff["hdi_low"] <= eff["mean"]).all() and (eff["mean"] <= eff["hdi_high"]).all()
    assert eff["pd"].between(0.5, 1).all()
    # 60 draws x 2 chains cannot reach ESS 200: every effect must be flagged, not silently ok
    assert not eff["ok"].any()
    assert tiny_run.diagnostics_ok is False
    # TINY caps the tree depth at 5: the draws that hit it are counted and warned about
    diag = pd.read_csv(tiny_run.run_dir / "diagnostics.tsv", sep="\t")
    assert (diag["treedepth_hits"] > 0).all()
    assert any("maximum tree depth (pooling.max_treedepth=5)" in w for w in tiny_run.result.warnings)
    # each variable counts its R-hats above pooling.rhat_max, next to what chance would put there
    rhat_max = float(tiny_run.config.pooling.rhat_max)
    # ... over every outcome fitted: the summary outcomes too (diagnostics once counted only the
    # pairs' rows, so a summary's R-hat of 1.7 reached neither the warning nor sampler_ok)
    rows = pd.concat([eff, pd.read_csv(tiny_run.run_dir / "summaries.tsv", sep="\t")])
    for variable, kind in (("dataset_effect", "dataset"), ("drug_effect", "drug"), ("overall", "overall")):
        row = diag.set_index("variable").loc[variable]
        assert row["size"] == (rows["effect_type"] == kind).sum()
        assert row["n_r_hat_over"] == (rows.loc[rows["effect_type"] == kind, "r_hat"] > rhat_max).sum()
    assert row["r_hat_over_by_chance"] >= 0 and row["draws_for_r_hat"] >= row["draws"]


def test_derived_tables(tiny_run):
    summaries = pd.read_csv(tiny_run.run_dir / "summaries.tsv", sep="\t")
    assert {"within_network", "transmodal-unimodal"} <= set(summaries["summary"])
    row = summaries[(summaries.summary == "transmodal-unimodal") & (summaries.effect == "overall")].iloc[0]
    assert row["n_pairs"] == 6 and row["hdi_low"] <= row["mean"] <= row["hdi_high"]
    sim = pd.read_csv(tiny_run.run_dir / "drug_similarity.tsv", sep="\t")
    assert sim.groupby("measure").size().to_dict() == {"pattern_r_corrected": 10, "pearson_r_across_pairs": 10,
                                                       "rms_ratio": 10, "rms_distance": 10}
    # the corrected correlation is NaN (undefined) where a map of this tiny study cannot be told
    # from twice its posterior variance; the raw one always has a value
    r = sim[sim.measure.str.contains("r_")].dropna(subset=["mean"])
    assert r["hdi_low"].between(-1, 1).all() and r["hdi_high"].between(-1, 1).all()
    assert (r.measure == "pearson_r_across_pairs").sum() == 10
    ratio = sim[sim.measure == "rms_ratio"].dropna(subset=["mean"])  # NaN: a map lost in posterior noise
    assert (ratio["hdi_low"] >= 0).all() and (ratio["hdi_low"] <= ratio["mean"]).all()


def test_unknown_drug_in_contrasts(tmp_path, tiny_overrides):
    cfg = compose(tiny_overrides + ["pooling.contrasts=[psilocybin-ketamine]"])
    with pytest.raises(ConfigError, match=r"pooling.contrasts.*psilocybin-ketamine"):
        run_experiment(cfg, build_registry(), tmp_path / "run")
    assert_no_results(tmp_path / "run")


def _registry_with(*estimators):
    mod = types.ModuleType("test_estimators")
    mod.megafc_estimators = hookimpl(lambda: list(estimators))
    return build_registry(extra_plugins=[mod])


class WrongShape(ConnectivityEstimator):
    name = "wrong_shape_inproc"

    def estimate(self, timeseries):
        return np.zeros((3, 3))


class Crashes(ConnectivityEstimator):
    name = "crashes_inproc"

    def estimate(self, timeseries):
        raise RuntimeError("boom")


@pytest.mark.parametrize("cls, message", [
    (WrongShape, r"estimator 'wrong_shape_inproc' returned a matrix of shape \(3, 3\)"),
    (Crashes, r"estimator 'crashes_inproc' failed on scan 'ds-.*': RuntimeError: boom"),
])
def test_misbehaving_estimator_leaves_no_results(tmp_path, tiny_overrides, cls, message):
    reg = _registry_with(cls)
    cfg = compose(tiny_overrides + [f"estimator={cls.name}"], registry=reg)
    with pytest.raises(PluginError, match=message):
        run_experiment(cfg, reg, tmp_path / "run")
    assert_no_results(tmp_path / "run")


@pytest.mark.parametrize("override, choices", [
    ("aggregate.level=voxel", "[network, subnetwork]"),
    ("derivatives=sometimes", "[auto, all, none]"),
    ("stage=pool", "[all, extract]"),
    ("extraction.space_mismatch=ignore", "[error, warn]"),
    # plugins' own choices, declared as megafc.core.Choice in their Config
    ("pooling.heterogeneity=bogus", "[learned, pooled, per_pair, shared]"),
    ("pooling.sampler=stan", "[auto, pymc, nutpie, numpyro, blackjax]"),
    ("dataset.design=randomised", "[crossover, prepost, parallel, mixed]"),
])
def test_choice_valued_keys_are_refused_when_composed(override, choices):
    """Choice-valued keys are Enums in the schema: OmegaConf refuses another value before any
    run starts, naming the key and the choices."""
    with pytest.raises(ConfigError) as info:  # compose() names the user's bad override as a config error
        compose(TINY + [override])
    cause = str(info.value)
    assert f"expected one of {choices}" in cause and f"full_key: {override.split('=')[0]}" in cause


def test_a_plugin_built_in_python_gets_its_choices_checked_too():
    """Hydra checks choices as it composes; a plugin built in Python with a choice's text gets
    the member, and anything else is the same error, naming the key (also inside a list)."""
    from megafc.plugins.datasets.synthetic import SiteSpec, SyntheticDataset
    from megafc.plugins.pooling.pymc_scan_level import PyMCPooling

    model = PyMCPooling(PyMCPooling.Config(heterogeneity="per_pair", pair_prior="horseshoe"))
    assert type(model.config.heterogeneity).__name__ == "Heterogeneity" and model.config.heterogeneity == "per_pair"
    assert model.params()["pair_prior"] == "horseshoe" and type(model.params()["pair_prior"]) is str
    with pytest.raises(ConfigError, match=r"'pooling.pair_prior' is 'lasso'; expected one of \['independent', "):
        PyMCPooling(PyMCPooling.Config(pair_prior="lasso"))
    sites = [SiteSpec("a", "LSD", 4), SiteSpec("b", "LSD", 4, design="stepped")]
    with pytest.raises(ConfigError, match=r"'dataset.sites\[1\].design' is 'stepped'"):
        SyntheticDataset(SyntheticDataset.Config(sites=sites))
    # a list of choices is a list, each element checked (not one choice that a list cannot be)
    from dataclasses import dataclass, field

    from megafc.core import Choice, Denoiser
    from megafc.plugins.pooling.design import Sampler

    class Both(Denoiser):
        name = "both"

        @dataclass
        class Config:
            samplers: list[Sampler] = field(default_factory=lambda: [Sampler.pymc])

    assert Both(Both.Config(samplers=["nutpie", "pymc"])).config.samplers == [Sampler.nutpie, Sampler.pymc]
    assert Both().config.samplers == ["pymc"] and issubclass(Sampler, Choice)
    with pytest.raises(ConfigError, match=r"'denoiser.samplers\[1\]' is 'stan'"):
        Both(Both.Config(samplers=["pymc", "stan"]))

    class Maybe(Denoiser):  # Optional[list[...]]: the list inside is checked too
        name = "maybe"

        @dataclass
        class Config:
            samplers: Optional[list[Sampler]] = None

    assert Maybe().config.samplers is None
    from megafc.core.plugin import config_fields  # megafc-plugins --show: the choices of each element

    assert config_fields(Maybe.Config)[0]["type"] == "list of auto | pymc | nutpie | numpyro | blackjax, or null"
    with pytest.raises(ConfigError, match=r"'denoiser.samplers\[0\]' is 'stan'"):
        Maybe(Maybe.Config(samplers=["stan"]))


def test_a_choice_not_named_as_its_values_is_refused_at_registration():
    """OmegaConf reads a choice by its member's name, Python by its value: `two_sided = "two-sided"`
    was refused on the command line, accepted from Python and written to config.yaml as the name."""
    from dataclasses import dataclass

    from megafc.core import Choice

    class Tail(Choice):
        two_sided = "two-sided"
        greater = "greater"

    class Tailed(ConnectivityEstimator):
        name = "tailed"

        @dataclass
        class Config:
            tail: Tail = Tail.greater

        def estimate(self, timeseries):
            return np.corrcoef(timeseries.T)

    with pytest.raises(PluginError, match=r"Config.tail is a Tail whose member\(s\) \[\"two_sided = 'two-sided'\"\]"):
        _registry_with(Tailed)


def test_choice_values_read_as_their_text(tiny_overrides):
    cfg = compose(tiny_overrides + ["derivatives=none", "aggregate.level=subnetwork"])
    assert cfg.derivatives == "none" and f"{cfg.aggregate.level}" == "subnetwork" and str(cfg.stage) == "all"


def test_invalid_prior_is_named(tmp_path, tiny_overrides):
    cfg = compose(tiny_overrides + ["pooling.priors.drug_sd=-1"])
    with pytest.raises(ConfigError, match="pooling.priors.drug_sd"):
        run_experiment(cfg, build_registry(), tmp_path / "run")


def test_a_drug_that_drops_out_is_said_in_log_and_methods(tmp_path, caplog):
    """Leaving out the only mescaline dataset removes a drug: the log and methods.md say so."""
    small = [o for o in TINY if o.startswith(("dataset.", "atlas."))]
    with caplog.at_level("WARNING", logger="megafc"):
        out = run_experiment(compose(small + ["pooling=meta", "figures=false", "report=false", "loo_dataset=mescaline_1",
                                              "pooling.contrasts=[LSD-mescaline,LSD-psilocybin]"]),
                             build_registry(), tmp_path / "run")
    warned = [r.getMessage() for r in caplog.records]
    # a contrast of the left-out drug (a leave-one-dataset-out sweep's job) is not estimated, and
    # said so once, while the others are; a drug the data never had is still refused (elsewhere)
    said = pd.read_csv(out.run_dir / "warnings.tsv", sep="\t")["message"]
    assert said.str.startswith("pooling.contrasts: 'LSD-mescaline' is not estimated: drug(s) ['mescaline']").sum() == 1
    assert set(out.result.effects.query("effect_type == 'contrast'")["effect"]) == {"contrast:LSD-psilocybin"}
    assert any(w.startswith("dataset mescaline_1: all") and "not part of any estimate" in w for w in warned)
    assert any("drug mescaline: every scan" in w for w in warned)
    methods = (out.run_dir / "methods.md").read_text()
    assert "Note: Dataset mescaline_1: all" in methods and "no mescaline effect" in methods
    assert not (out.result.effects["effect"] == "drug:mescaline").any()


def test_single_subject_dataset_is_flagged():
    from megafc.core.pipeline import dropped_out

    # dataset a names its study's drug on its placebo scans, dataset b names them "placebo": the
    # control scans' drug column is not a drug of the analysis
    scans = pd.DataFrame({
        "dataset": ["a", "a", "a", "a", "b", "b"], "subject": ["1", "1", "2", "2", "1", "1"],
        "drug": ["LSD"] * 4 + ["DMT", "placebo"], "condition": ["drug", "placebo"] * 3,
        "excluded": [False, False, False, False, False, True], "exclusion_reason": [None] * 5 + ["mean FD > 0.5"],
    })
    lines = dropped_out(scans)
    assert lines == ["dataset b: a single subject left; its dataset effect rests on that one person and says "
                     "nothing of how its subjects vary"]
    scans.loc[4, ["excluded", "exclusion_reason"]] = [True, "mean FD > 0.5"]
    lines = dropped_out(scans)
    assert lines[0] == "dataset b: all 2 scans excluded (2 x mean FD > 0.5); it is not part of any estimate"
    assert lines[1].startswith("drug DMT: every scan") and len(lines) == 2  # not "drug placebo"
    from megafc.core.pipeline import control_drug_mismatches

    (said,) = control_drug_mismatches(scans)  # dataset b's "placebo" is said; a's study drug is right
    assert said.startswith("dataset b: its placebo/baseline scans name drug(s) ['placebo']") and "['DMT']" in said


def test_methods_say_which_pairs_which_summaries_and_which_exclusion_rules(tmp_path, monkeypatch):
    """A focused analysis reads as one: the pairs aggregate.pairs chose are named and counted
    apart from the summary outcomes (the pooling sentence too), and the motion limit is stated."""
    from megafc.core.pipeline import RunContext, run_stages

    monkeypatch.chdir(tmp_path)
    reg = build_registry()
    chosen = ["aggregate.pairs=[[Default,Vis],[Thalamus,SomMot]]", "qc.max_mean_fd=0.21"]
    results = run_stages(RunContext.create(compose(META + chosen, registry=reg), reg))
    methods = results.methods
    n_summaries = results.aggregated.summary_pairs["summary"].nunique()
    assert n_summaries > 0
    # named as the tables name them (network_a, network_b in atlas order)
    assert "Outcomes: 2 network pairs chosen by aggregate.pairs (Default-Vis, SomMot-Thalamus)" in methods
    assert f"and {n_summaries} summary outcomes (within_network, between_network" in methods
    assert f"2 network pairs and {n_summaries} summary outcomes, an ordinary" in methods  # meta's own sentence
    assert "Quality control: scans with mean framewise displacement above 0.21 mm excluded" in methods
    assert "Denoising:" not in methods  # simulated timeseries: no denoiser acted
    whole = run_stages(RunContext.create(compose(META, registry=reg), reg)).methods
    n_pairs = results.aggregated.pairs.attrs["networks"]
    assert f"Outcomes: every network pair with an edge ({len(n_pairs) * (len(n_pairs) + 1) // 2} pairs of {len(n_pairs)} networks)" in whole
    assert "Quality control: scans with mean framewise displacement above 0.5 mm excluded" in whole


def test_the_diagnostics_verdict_counts_summaries_and_the_samplers_own_checks(caplog):
    """diagnostics_ok (provenance.json, fail_on_bad_diagnostics) is false when any effect, any
    row of another table that flags rows (summaries), or the sampler as a whole failed."""
    from megafc.core import PoolingResult
    from megafc.core.pipeline import report_diagnostics

    effects = pd.DataFrame({"effect": ["overall"] * 2, "ok": [True, True], "r_hat": [1.0, 1.0],
                            "ess_bulk": [900.0, 800.0], "divergences": [0, 0]})
    summaries = effects.assign(ok=[True, False], r_hat=[1.0, 1.08])
    assert report_diagnostics(PoolingResult(effects=effects, diagnostics=pd.DataFrame()))
    with caplog.at_level("WARNING", logger="megafc"):
        assert not report_diagnostics(PoolingResult(effects=effects, diagnostics=pd.DataFrame(),
                                                    tables={"summaries": summaries}))
    assert "1 of 2 rows of summaries are flagged not ok (max R-hat 1.080; min bulk ESS 800; see" in caplog.text
    assert "divergences" not in caplog.text  # none: nothing to say
    assert not report_diagnostics(PoolingResult(effects=effects, diagnostics=pd.DataFrame(), sampler_ok=False))
    assert "the sampler's own checks failed" in caplog.text


def test_the_qc_sentence_says_which_rules_could_not_be_checked():
    """Precomputed connectomes have no volume count and metadata may lack mean FD: a rule that
    compared NaN excluded nothing, and the methods must not claim it was applied to those scans."""
    from megafc.core.pipeline import qc_text
    from megafc.core.qc import QCConfig

    scans = pd.DataFrame({"mean_fd": [0.1, np.nan, 0.2, 0.9], "n_volumes": [np.nan] * 4,
                          "excluded": [False, False, False, True]})
    text = qc_text(QCConfig(max_mean_fd=0.3), scans)
    assert "above 0.3 mm excluded (not checked for 1 of the 3 scans analysed, which have no mean FD)" in text
    assert "fewer than 50 volumes excluded (not checked for 3 of the 3 scans analysed, which have no volume count)" in text
    assert "censored" not in text  # no denoiser censored anything
    censored = scans.assign(n_volumes=200, censored_fraction=0.0, mean_fd=0.1)
    text = qc_text(QCConfig(max_mean_fd=None, max_censored_fraction=0.125), censored)
    assert text.startswith("no limit on mean framewise displacement") and "not checked" not in text
    assert "more than 12.5% of their volumes censored" in text


def test_a_result_with_misshapen_declarations_is_refused_before_anything_is_written():
    from megafc.core import PluginError, PoolingResult
    from megafc.core.checks import check_result

    rows = pd.DataFrame({c: [] for c in __import__("megafc.core", fromlist=["EFFECT_COLUMNS"]).EFFECT_COLUMNS})
    with pytest.raises(PluginError, match="adjusted_for is 'mean_fd'"):
        check_result(PoolingResult(effects=rows, diagnostics=pd.DataFrame(), adjusted_for="mean_fd"), "pooling 'x'")
    with pytest.raises(PluginError, match="keyed by table name first"):
        check_result(PoolingResult(effects=rows, diagnostics=pd.DataFrame(), columns={"tau2": ("x", None)}), "p")
    ok = PoolingResult(effects=rows, diagnostics=pd.DataFrame(), columns={"effects": {"tau2": ("x", None)}})
    assert check_result(ok, "p") is ok


def test_motion_warning_says_whether_the_effects_are_adjusted():
    from megafc.core import PoolingResult
    from megafc.core.pipeline import adjusted_for
    from megafc.core.qc import motion_advice

    rows = pd.DataFrame({"effect": ["overall", "covariate:mean_fd"]})
    assert adjusted_for(PoolingResult(effects=rows, diagnostics=pd.DataFrame())) == ["mean_fd"]
    declared = PoolingResult(effects=rows.iloc[:1], diagnostics=pd.DataFrame(), adjusted_for=[])
    assert adjusted_for(declared) == [] and "NOT adjusted for motion" in motion_advice([])
    assert "adjusted for each scan's mean FD" in motion_advice(["mean_fd", "session_order"])
    assert adjusted_for(PoolingResult(effects=rows.iloc[:1], diagnostics=pd.DataFrame())) is None
    assert "check whether the pooling model adjusts" in motion_advice(None)


def test_atlas_from_data_labels_needs_a_dataset_with_labels(tmp_path):
    """from_labels declares needs_data_labels; a dataset without region labels (the synthetic
    study: DatasetLoader.region_labels returns None) is refused before anything is written."""
    from megafc.core.pipeline import load_atlas
    from megafc.plugins.atlases.from_labels import FromLabelsAtlas
    from megafc.plugins.datasets.synthetic import SyntheticDataset

    with pytest.raises(ConfigError, match="reads region labels from the data, but dataset 'synthetic' provides none"):
        run_experiment(compose([o for o in TINY if not o.startswith("atlas.")] + ["atlas=from_labels"]),
                       build_registry(), tmp_path / "run")
    assert_no_results(tmp_path / "run")

    class Labelled(SyntheticDataset):
        def region_labels(self):
            return ["17Networks_LH_DefaultA_pCunPCC_1", "17Networks_RH_VisCent_ExStr_1", "CAU-lh"]

    atlas = load_atlas(FromLabelsAtlas(), Labelled())
    assert atlas.labels == Labelled().region_labels()
    assert list(atlas.regions["network"]) == ["Default", "Vis", "Caudate"]


class StageRecorder:
    """A lifecycle-hook plugin that records the stage hooks it sees."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def megafc_before_stage(self, stage, config):
        self.calls.append(("before", stage))

    @hookimpl
    def megafc_after_stage(self, stage, seconds):
        assert seconds >= 0
        self.calls.append(("after", stage))

    @hookimpl
    def megafc_on_stage_error(self, stage, error):
        self.calls.append(("error", stage, type(error).__name__))


def test_stages_return_values_in_order_and_write_nothing(tmp_path, monkeypatch):
    """run_stages gives every stage's value (what benchmarks call) and touches no folder."""
    from megafc.core.pipeline import STAGE_NAMES, RunContext, run_stages

    monkeypatch.chdir(tmp_path)
    recorder = StageRecorder()
    reg = build_registry(extra_plugins=[recorder])
    ctx = RunContext.create(compose(META + ["qc.max_mean_fd=0.2"], registry=reg), reg)
    partial = run_stages(ctx, until="aggregate")
    assert partial.result is None and partial.aggregated is not None
    assert set(partial.aggregated.pairs["scan_id"]) == set(partial.connectomes.scan_ids)
    results = run_stages(ctx)
    assert list(results.timings) == list(STAGE_NAMES)
    assert recorder.calls[-2 * len(STAGE_NAMES):] == [(w, s) for s in STAGE_NAMES for w in ("before", "after")]
    assert results.result.interval_kind == "CI"  # meta declares its Wald intervals
    assert {"exclusions", "motion", "qc_fc"} <= set(results.tables) and "Pooling:" in results.methods
    # the motion exclusions were logged as warnings of the stage that made them
    assert any(w["stage"] == "extract" and "scans excluded" in w["message"] for w in results.warnings)
    assert any("scans excluded" in w["message"] for w in results.warnings)
    assert list(tmp_path.iterdir()) == []


def test_an_unexpected_error_reaches_the_stage_hook_and_leaves_no_results(tmp_path, monkeypatch):
    from megafc.core import pipeline

    def broken(*args, **kwargs):
        raise KeyError("no such column")

    monkeypatch.setattr(pipeline, "network_pair_table", broken)
    recorder = StageRecorder()
    reg = build_registry(extra_plugins=[recorder])
    with pytest.raises(KeyError, match="no such column"):  # megafc's own bug: not blamed on a plugin
        run_experiment(compose(META, registry=reg), reg, tmp_path / "run")
    assert ("error", "aggregate", "KeyError") in recorder.calls
    assert_no_results(tmp_path / "run")


def _death_signal(queue) -> None:
    """In a forked child: the signal the kernel sends it when its parent dies (0: none)."""
    import ctypes

    value = ctypes.c_int(-1)
    ctypes.CDLL(None, use_errno=True).prctl(2, ctypes.byref(value))  # PR_GET_PDEATHSIG
    queue.put(value.value)


def _forked_child_death_signal() -> int:
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    child = fork.Process(target=_death_signal, args=(queue,))
    child.start()
    child.join(30)
    return queue.get(timeout=5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_processes_a_plugin_forks_inside_a_stage_die_with_megafc():
    """Any plugin's forked workers (not only the built-in sampler's) are killed with megafc:
    inside a stage a forked child has SIGKILL as its parent-death signal; outside none."""
    import signal

    from megafc.core.pipeline import stage

    ctx = types.SimpleNamespace(warnings=[], hook=build_registry().manager.hook, cfg=None)
    with stage(ctx, "pool"):
        inside = _forked_child_death_signal()
        with stage(ctx, "derive"):  # stages may nest (a plugin running stages of its own)
            pass
        still_inside = _forked_child_death_signal()
    assert inside == still_inside == signal.SIGKILL
    assert _forked_child_death_signal() == 0


def test_warnings_file_lists_the_runs_warnings(tmp_path):
    out = run_experiment(compose(META + ["qc.max_mean_fd=0.2", "notes=[checking notes]"]),
                         build_registry(), tmp_path / "run")
    table = pd.read_csv(out.run_dir / "warnings.tsv", sep="\t")
    assert list(table.columns) == ["stage", "level", "message"]
    assert "note: checking notes" in set(table["message"])
    excluded = out.scans.groupby("dataset")["excluded"].sum()
    for ds in excluded[excluded > 0].index:
        assert table["message"].str.startswith(f"dataset {ds}:").any(), ds
    # the synthetic study's one pre/post dataset: its drug effect is confounded with session order
    design = table.loc[table["message"].str.startswith("design: "), "message"]
    assert len(design) == 1 and design.iloc[0].startswith("design: dataset ayahuasca_1 compares"), list(design)
    assert "its effects include it" in design.iloc[0]  # the meta-analysis takes no session order out


class Warns(ConnectivityEstimator):
    """A third-party estimator that says what it noticed with warnings.warn, as libraries do."""

    name = "warns_inproc"
    calls = 0

    def estimate(self, timeseries):
        import warnings

        Warns.calls += 1  # a new text each time (Python shows one text once per line of code)
        warnings.warn(f"a region's timeseries is flat (call {Warns.calls})\nSee the docs.", UserWarning)
        warnings.warn("estimate() will take a mask", DeprecationWarning)
        return np.corrcoef(timeseries.T)


def test_warnings_a_plugin_raises_reach_warnings_tsv(tmp_path):
    """warnings.warn in a plugin is a warning of the run: it reaches warnings.tsv with its
    category and origin (three from one line of code, then a count), while a deprecation
    notice (about code, not data) does not, and Python's own warning display is back after."""
    import warnings

    shown = warnings.showwarning
    reg = _registry_with(Warns)
    out = run_experiment(compose(META + ["estimator=warns_inproc"], registry=reg), reg, tmp_path / "run")
    table = pd.read_csv(out.run_dir / "warnings.tsv", sep="\t")
    estimate = table[table["stage"] == "estimate"]["message"]
    flat = estimate[estimate.str.contains("flat")]
    assert len(flat) == 3 and flat.str.fullmatch(r"UserWarning at tests/test_pipeline.py:\d+: a region's "
                                                 r"timeseries is flat \(call \d\)").all()  # its first line
    n_scans = int((~out.scans["excluded"]).sum())
    assert estimate.str.fullmatch(rf"{n_scans - 3} more warnings at tests/test_pipeline.py:\d+ like the ones "
                                  r"above").sum() == 1
    assert not table["message"].str.contains("will take a mask").any()
    assert warnings.showwarning is shown


def test_stage_keeps_only_its_own_threads_warnings():
    """Runs in other threads of the process (a notebook, the tests) are not this stage's: their
    warnings go where they went before, and nested stages share one count."""
    import threading
    import warnings

    from megafc.core.pipeline import stage

    ctx = types.SimpleNamespace(warnings=[], hook=build_registry().manager.hook, cfg=None)
    with warnings.catch_warnings(record=True) as elsewhere:
        warnings.simplefilter("always")
        with stage(ctx, "pool"):
            warnings.warn("in the stage")
            other = threading.Thread(target=lambda: warnings.warn("in another thread"))
            other.start()
            other.join()
            with stage(ctx, "derive"):
                warnings.warn("in a nested stage", RuntimeWarning)
    assert [(w["stage"], w["message"].split(": ", 1)[1]) for w in ctx.warnings] == [
        ("pool", "in the stage"), ("derive", "in a nested stage")]
    assert ctx.warnings[1]["message"].startswith("RuntimeWarning at tests/test_pipeline.py:")
    assert [str(w.message) for w in elsewhere] == ["in another thread"]


def test_qcfc_alarm_is_a_warning_of_the_run(tiny_pymc_run):
    """QC-FC far above 5% of edges is warned about in warnings.tsv (and so in the report's list
    of the run's warnings), not only in a report banner."""
    qc = pd.read_csv(tiny_pymc_run.run_dir / "qc_fc.tsv", sep="\t")
    share = float((qc["p"] < 0.05).mean())
    assert share > 0.10  # the synthetic study's motion artefact
    said = pd.read_csv(tiny_pymc_run.run_dir / "warnings.tsv", sep="\t")
    alarm = said[said["message"].str.startswith("QC-FC: ")]
    assert len(alarm) == 1 and alarm["stage"].iloc[0] == "derive"
    assert alarm["message"].iloc[0].startswith(f"QC-FC: {100 * share:.0f}% of edges correlate with mean FD")


def test_prepost_warning_says_the_default_model_takes_the_order_out(tiny_run):
    """pooling=pymc adjusts for session order when counterbalanced datasets can teach it."""
    table = pd.read_csv(tiny_run.run_dir / "warnings.tsv", sep="\t")
    design = table.loc[table["message"].str.startswith("design: dataset ayahuasca_1"), "message"]
    assert len(design) == 1 and "taken at equal session order" in design.iloc[0]
    slopes = tiny_run.result.effects.query("effect == 'covariate:session_order'")
    assert len(slopes) == tiny_run.result.effects.query("effect == 'overall'").shape[0]


def test_baseline_only_datasets_are_the_pre_post_ones():
    """A dataset is flagged when every included control scan of its drug scans is a baseline;
    a placebo control, or an excluded baseline-only dataset, is not."""
    from megafc.core.qc import baseline_only_datasets

    rows = [("pp", "drug", False), ("pp", "baseline", False), ("cx", "drug", False), ("cx", "placebo", False),
            ("mixed", "drug", False), ("mixed", "baseline", False), ("mixed", "placebo", False),
            ("gone", "drug", True), ("gone", "baseline", True), ("ctrl_only", "baseline", False)]
    scans = pd.DataFrame(rows, columns=["dataset", "condition", "excluded"])
    assert baseline_only_datasets(scans) == ["pp"]
