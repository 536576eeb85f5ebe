"""megafc-calibrate: interval coverage over simulated replicates."""

import re

import numpy as np
import pandas as pd
import pytest

from conftest import TINY, compose, megafc_cli
from megafc.plugins.reports.calibration import score_replicate


def test_scoring_counts_coverage_and_signs():
    effects = pd.DataFrame({
        "network_a": ["A", "A", "B", "A"], "network_b": ["A", "B", "B", "A"],
        "effect": ["overall"] * 3 + ["contrast:x-y"], "effect_type": ["overall"] * 3 + ["contrast"],
        "mean": [0.1, -0.05, 0.01, 0.03], "sd": [0.02] * 4,
        "hdi_low": [0.05, -0.1, 0.005, 0.01], "hdi_high": [0.15, -0.01, 0.02, 0.05],
        "hdi50_low": [0.08, -0.07, 0.008, 0.02], "hdi50_high": [0.12, -0.03, 0.012, 0.04],
    })
    truth = pd.DataFrame({"aggregation": "network", "network_a": ["A", "A", "B", "A", "A"],
                          "network_b": ["A", "B", "B", "A", "A"], "effect": ["overall"] * 3 + ["drug:x", "drug:y"],
                          "truth": [0.2, -0.05, 0.0, 0.05, 0.01]})
    s = score_replicate(effects, truth, "network", min_effect=0.02).set_index(["effect_type", "stratum"])
    o = s.loc[("overall", "all")]
    assert o["coverage_95"] == pytest.approx(1 / 3)  # 0.2 lies outside [0.05, 0.15], 0 outside [0.005, 0.02]
    assert o["coverage_50"] == pytest.approx(1 / 3)
    # three credible intervals; the one on a null truth is a false sign
    assert o["n_credible"] == 3 and o["false_sign_rate"] == pytest.approx(1 / 3)
    assert s.loc[("overall", "large"), "sign_recovery"] == 1.0
    assert s.loc[("overall", "zero"), "n"] == 1
    c = s.loc[("contrast", "all")]  # contrast truth = drug x - drug y = 0.04
    assert c["coverage_95"] == 1.0 and c["bias"] == pytest.approx(-0.01)


def test_the_svalue_selected_list_is_scored_against_its_claim():
    """selected = svalue <= 0.05; a selected effect on a zero truth or with the wrong sign is a
    false one; the claim is the sum of the selected effects' lfsr; summed over replicates."""
    from megafc.plugins.reports.calibration import summarise_scores

    effects = pd.DataFrame({
        "network_a": ["A", "A", "B", "C"], "network_b": ["A", "B", "B", "C"], "effect": "overall",
        "effect_type": "overall", "mean": [0.1, -0.05, 0.01, 0.01], "sd": [0.02] * 4, "hdi_low": [0.05, -0.1, 0.005, 0.005],
        "hdi_high": [0.15, -0.01, 0.02, 0.02], "lfsr": [0.001, 0.03, 0.06, 0.001], "svalue": [0.001, 0.0155, 0.0303, 0.001],
    })
    truth = pd.DataFrame({"aggregation": "network", "network_a": ["A", "A", "B", "C"], "network_b": ["A", "B", "B", "C"],
                          "effect": "overall", "truth": [0.2, 0.05, 0.0, 0.001]})
    s = score_replicate(effects, truth, "network", min_effect=0.02)
    o = s[(s.effect_type == "overall") & (s.stratum == "all")].iloc[0]
    # B-B's truth is 0, A-B's sign is wrong, C-C's truth (0.001) is in the zero stratum but has the right sign
    assert o["n_selected"] == 4 and o["false_selected"] == 3
    assert o["wrong_sign_selected"] == 2  # what lfsr claims to count: a wrong sign or a truth of 0
    assert o["expected_false_selected"] == pytest.approx(0.092)
    both = pd.concat([s.assign(replicate=0), s.assign(replicate=1)]).assign(scenario="x", table="effects")
    pooled = summarise_scores(both)
    row = pooled[(pooled.effect_type == "overall") & (pooled.stratum == "all")].iloc[0]
    assert (row["n_selected"], row["false_selected"], row["wrong_sign_selected"]) == (8, 6, 4)
    assert row["expected_false_selected"] == pytest.approx(0.184)
    strict = score_replicate(effects.assign(svalue=[0.001, 0.2, 0.3, 0.4]), truth, "network", min_effect=0.02)
    assert strict[(strict.effect_type == "overall") & (strict.stratum == "all")].iloc[0]["n_selected"] == 1


def test_similarity_truth_of_proportional_maps():
    """Drugs that are the overall pattern at scales 2 and 0.5 (plus DMT's own deviation):
    their planted correlation, magnitude and scale ratios are what the measures mean."""
    from megafc.plugins.reports.calibration import similarity_truth

    pattern = np.array([0.1, -0.05, 0.0, 0.02])
    rows = [("overall", pattern), ("drug:DMT", 2 * pattern), ("drug:ayahuasca", 0.5 * pattern)]
    truth = pd.DataFrame([{"aggregation": "network", "network_a": f"N{i}", "network_b": "X", "effect": e,
                           "truth": v} for e, values in rows for i, v in enumerate(values)])
    t = similarity_truth(truth, "network").set_index(["drug_a", "drug_b", "measure"])["truth"]
    assert ("DMT", "ayahuasca", "pearson_r_across_pairs") not in t  # the raw correlation estimates nothing planted
    assert t[("DMT", "ayahuasca", "pattern_r_corrected")] == pytest.approx(1.0)
    assert t[("DMT", "ayahuasca", "scale_ratio")] == pytest.approx(4.0)
    assert t[("ayahuasca", "DMT", "rms_ratio")] == pytest.approx(0.25)
    assert t[("DMT", "ayahuasca", "rms_distance")] == pytest.approx(1.5 * np.sqrt(np.mean(pattern ** 2)))


def test_similarity_truth_of_a_drug_with_no_effect():
    """A planted map of zeros next to a non-zero overall one (a null drug): no ratio with it in
    the denominator is a truth (it used to end a whole calibration with ZeroDivisionError)."""
    from megafc.plugins.reports.calibration import similarity_truth

    pattern = np.array([0.1, -0.05, 0.0, 0.02])
    rows = [("overall", pattern), ("drug:DMT", pattern), ("drug:LSD", 0 * pattern)]
    truth = pd.DataFrame([{"aggregation": "network", "network_a": f"N{i}", "network_b": "X", "effect": e,
                           "truth": v} for e, values in rows for i, v in enumerate(values)])
    t = similarity_truth(truth, "network").set_index(["drug_a", "drug_b", "measure"])["truth"]
    assert t[("LSD", "DMT", "scale_ratio")] == 0.0 and t[("LSD", "DMT", "rms_ratio")] == 0.0
    assert ("DMT", "LSD", "scale_ratio") not in t and ("DMT", "LSD", "rms_ratio") not in t
    assert np.isfinite(t).all()


def test_summary_truth_is_the_mean_of_its_pairs():
    summaries = pd.DataFrame({"summary": ["s"], "effect": ["overall"], "effect_type": ["overall"], "mean": [0.1],
                              "sd": [0.02], "hdi_low": [0.06], "hdi_high": [0.14]})
    members = pd.DataFrame({"summary": ["s", "s"], "network_a": ["A", "A"], "network_b": ["A", "B"]})
    truth = pd.DataFrame({"aggregation": "network", "network_a": ["A", "A"], "network_b": ["A", "B"],
                          "effect": "overall", "truth": [0.05, 0.15]})
    s = score_replicate(summaries.iloc[:0].assign(network_a=[], network_b=[]), truth, "network", 0.02,
                        summaries, members)
    row = s[(s.table == "summaries") & (s.stratum == "all")].iloc[0]
    assert row["coverage_95"] == 1.0 and row["bias"] == pytest.approx(0.0)


def test_replicates_skip_unread_outputs_and_cap_their_draws():
    """A replicate keeps 2 x CALIBRATION_DRAWS after CALIBRATION_TUNE tuning steps at most, without
    predictive checks or the pointwise log-likelihood (never scored); a quick preset's fewer draws
    and steps and what the command line sets stay."""
    from megafc.plugins.reports.calibration import CALIBRATION_DRAWS, CALIBRATION_TUNE, lighten_pooling

    cfg = compose(["pooling=pymc"])
    assert cfg.pooling.draws > CALIBRATION_DRAWS and cfg.pooling.tune > CALIBRATION_TUNE
    assert cfg.pooling.predictive_checks
    lighten_pooling(cfg, [])
    assert (cfg.pooling.draws, cfg.pooling.tune, cfg.pooling.predictive_checks, cfg.pooling.log_likelihood) == (
        CALIBRATION_DRAWS, CALIBRATION_TUNE, False, "none")
    given = ["pooling=pymc", "pooling.draws=3000", "pooling.tune=1000", "pooling.log_likelihood=subject",
             "++pooling.predictive_checks=true"]
    cfg = compose(given)
    lighten_pooling(cfg, given)  # a key given with Hydra's "++" prefix is given too
    assert (cfg.pooling.draws, cfg.pooling.tune, cfg.pooling.log_likelihood, cfg.pooling.predictive_checks) == (
        3000, 1000, "subject", True)
    cfg = compose(["pooling=pymc_quick"])
    lighten_pooling(cfg, [])
    assert cfg.pooling.draws == 200 and cfg.pooling.tune < CALIBRATION_TUNE
    cfg = compose(["pooling=meta"])
    lighten_pooling(cfg, [])  # a model without these keys is left as it is
    assert "draws" not in cfg.pooling


@pytest.mark.slow
def test_small_calibration_lands_in_a_sensible_band(tmp_path):
    small = [o for o in TINY if not o.startswith(("pooling.", "dataset.scale"))]
    out = tmp_path / "calib"
    # two worker processes: the sampler, the kernel's symbol and the disk-cached model in each
    # (nutpie: its compile and 400 draws took 22 s a replicate, PyMC's sampler 58 s)
    proc = megafc_cli(["--replicates", "2", "--jobs", "2", "--out", str(out), "dataset.scale=0.3", "pooling=pymc_quick",
                       "pooling.sampler=nutpie", "pooling.max_treedepth=7", *small],
                      cwd=tmp_path, script="megafc-calibrate")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = pd.read_csv(out / "calibration.tsv", sep="\t")
    assert (out / "calibration.png").exists() and (out / "default" / "replicate-01" / "effects.tsv").exists()
    # only the effect tables are scored, so the replicates keep no posterior draws and no per-scan
    # pair table (config records it)
    assert not (out / "default" / "replicate-01" / "posterior.nc").exists()
    assert not (out / "default" / "replicate-01" / "network_pairs.tsv").exists()
    recorded = (out / "default" / "replicate-01" / "config.yaml").read_text()
    assert "posterior_nc: false" in recorded and "network_pairs_tsv: false" in recorded
    assert "log_likelihood: none" in recorded  # lighten_pooling ran
    assert set(summary["table"]) == {"effects", "summaries", "drug_similarity", "heterogeneity"}
    assert set(summary["scenario"]) == {"default"}
    # each replicate's sampling diagnostics, as its own diagnostics.tsv has them, and in the report
    diagnostics = pd.read_csv(out / "calibration_diagnostics.tsv", sep="\t")
    assert diagnostics["replicate"].tolist() == [0, 1] and diagnostics["converged"].dtype == bool
    own = pd.read_csv(out / "default" / "replicate-01" / "diagnostics.tsv", sep="\t")
    assert diagnostics["r_hat_max"].iloc[1] == pytest.approx(own["r_hat_max"].max(), rel=1e-5)
    assert 'id="diagnostics"' in (out / "report.html").read_text()
    tau = summary[(summary.table == "heterogeneity") & (summary.stratum == "all")]
    # fixed drug effects (the default) have no tau_drug
    assert set(tau["effect_type"]) == {"tau_dataset"} and (tau["n_credible"] == 0).all()
    assert tau["coverage_50"].isna().all()  # tau has no 50% interval
    similarity = summary[summary.table == "drug_similarity"]
    assert set(similarity["effect_type"]) == {"pattern_r_corrected", "rms_ratio", "rms_distance"}
    assert (similarity.loc[similarity.effect_type == "rms_ratio", "n_credible"] == 0).all()  # no sign to get
    # 10 drug pairs in each of 2 replicates; in a study this small some maps cannot be told from
    # their noise, and their correlations and ratios are undefined (not scored), never the distance
    n = similarity.set_index("effect_type")["n"]
    assert n["rms_distance"] == 2 * 10 and 0 < n["pattern_r_corrected"] <= 2 * 10 and 0 < n["rms_ratio"] <= 2 * 10
    effects = summary[summary.table == "effects"]
    summary = effects[effects.stratum == "all"].set_index("effect_type")
    assert set(summary.index) == {"overall", "drug", "dataset", "contrast"}
    # 95% intervals: at least 85% coverage; 50% intervals neither far too narrow nor far too
    # wide
    assert (summary["coverage_95"] >= 0.85).all()
    assert (summary["coverage_50"] >= 0.35).all()
    assert (summary.drop("contrast")["coverage_50"] <= 0.85).all()
    assert summary.loc["overall", "sign_recovery"] >= 0.5
    # per effect, few intervals exclude a zero truth; none on a large effect has the wrong sign
    zero = effects[effects.stratum == "zero"].set_index("effect_type")
    assert (zero.loc[["overall", "drug", "dataset"], "coverage_95"] >= 0.9).all(), zero
    large = effects[effects.stratum == "large"].set_index("effect_type")
    assert (large.loc[["overall", "drug", "dataset"], "false_sign_rate"] <= 0.05).all(), large


@pytest.mark.slow
def test_every_scenario_runs_once(tmp_path):
    """Each stress scenario, once, tiny, with the fast deterministic model: every design enters
    and is scored (the pymc figures over many replicates are in docs/calibration.md)."""
    from megafc.plugins.reports.calibration import SCENARIOS

    small = [o for o in TINY if not o.startswith(("pooling.", "dataset.scale"))]
    out = tmp_path / "calib"
    proc = megafc_cli(["--replicates", "1", "--scenario", "all", "--out", str(out), "dataset.scale=0.2",
                       "pooling=meta", *small], cwd=tmp_path, script="megafc-calibrate")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = pd.read_csv(out / "calibration.tsv", sep="\t")
    assert set(summary["scenario"]) == set(SCENARIOS)
    for scenario in SCENARIOS:
        assert (out / scenario / "replicate-00" / "effects.tsv").exists()
    # the calibration reporter's page: one section per scenario, its title the output folder
    report = (out / "report.html").read_text()
    assert "<title>megafc calibration: calib</title>" in report
    assert all(f'id="scenario-{s}"' in report for s in SCENARIOS)
    assert not (out / "calibration_diagnostics.tsv").exists() and 'id="diagnostics"' not in report  # meta: no R-hat
    summary = summary[(summary.stratum == "all") & (summary.table == "effects")]
    assert (summary.groupby("scenario")["coverage_95"].min() >= 0.6).all(), summary


@pytest.mark.slow
def test_replicates_run_side_by_side_score_the_same(tmp_path):
    """--jobs 2 runs replicates in two spawned processes; the scores are those of one process."""
    small = [o for o in TINY if not o.startswith(("pooling.", "dataset.scale"))]
    args = ["--replicates", "1", "--scenario", "default", "--scenario", "noisy_site", "dataset.scale=0.2",
            "pooling=meta", *small]
    tables = []
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        proc = megafc_cli(["--jobs", jobs, "--out", str(out), *args], cwd=tmp_path, script="megafc-calibrate")
        assert proc.returncode == 0, proc.stderr[-3000:]
        tables.append(pd.read_csv(out / "calibration_replicates.tsv", sep="\t"))
        assert (out / "noisy_site" / "replicate-00" / "effects.tsv").exists()
    assert list(tables[1]["scenario"].unique()) == ["default", "noisy_site"]
    assert set(tables[1]["replicate"]) == {0}
    pd.testing.assert_frame_equal(tables[0], tables[1])


def test_bad_jobs_and_a_failing_replicate_are_refused(tmp_path):
    proc = megafc_cli(["--jobs", "0", "--out", str(tmp_path / "c")], cwd=tmp_path, script="megafc-calibrate")
    assert proc.returncode != 0 and "--jobs is 0" in proc.stderr and "Traceback" not in proc.stderr
    # an error inside a spawned replicate reaches the caller as the same one-paragraph error
    out = tmp_path / "c2"
    proc = megafc_cli(["--jobs", "2", "--replicates", "2", "--out", str(out), "dataset=fmriprep"], cwd=tmp_path,
                      script="megafc-calibrate")
    assert proc.returncode != 0 and "megafc: error:" in proc.stderr and "Traceback" not in proc.stderr
    assert re.search(r"calibration: default/replicate-0\d \(seed \d+\) failed: \w+Error", proc.stderr)  # which one
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize("args, words", [
    (["pooling=meta", "dataset.bogus=1"], "dataset.bogus"),  # was exit 3, "internal error: ConfigCompositionException"
    (["pooling=bogus"], "pooling"),
    (["--out", "notes.txt", "pooling=meta"], "notes.txt"),  # a file where the folder would go (was FileExistsError)
])
def test_a_researchers_mistakes_are_user_errors(tmp_path, args, words):
    (tmp_path / "notes.txt").write_text("mine\n")
    out = [] if "--out" in args else ["--out", str(tmp_path / "c")]
    proc = megafc_cli(["--replicates", "1", *out, *args], cwd=tmp_path, script="megafc-calibrate")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert words in proc.stderr and "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


def test_keep_going_scores_the_other_replicates_and_lists_the_failed_one(tmp_path, monkeypatch, capsys, caplog):
    """--keep-going: a replicate that crashes (here the second of three) is listed with its
    error in calibration_failures.tsv and the report; the others are scored; the run still
    exits non-zero, saying how many failed and where the others are (not "no results")."""
    import megafc.plugins.reports.calibration as calibration

    scored, calls = calibration.score_replicate, []

    def second_crashes(*args, **kwargs):  # in scoring, as the motion_null zero-map bug did
        calls.append(1)
        if len(calls) == 2:
            raise ZeroDivisionError("planted map of zeros")
        return scored(*args, **kwargs)

    monkeypatch.setattr(calibration, "score_replicate", second_crashes)
    small = [o for o in TINY if not o.startswith(("pooling.", "dataset.scale"))]
    args = ["dataset.scale=0.2", "pooling=meta", *small]
    out = tmp_path / "calib"
    with pytest.raises(SystemExit) as exit_:
        calibration.main(["--keep-going", "--replicates", "3", "--out", str(out), *args])
    err = capsys.readouterr().err
    assert exit_.value.code != 0 and "no results were written" not in err
    assert re.search(r"megafc: error: 1 of 3 replicates failed .*the other 2 are scored in .*calib", err), err
    assert re.search(r"calibration: default/replicate-01 \(seed \d+\) failed: ZeroDivisionError", caplog.text)
    failures = pd.read_csv(out / "calibration_failures.tsv", sep="\t")
    assert failures[["scenario", "replicate"]].values.tolist() == [["default", 1]]
    assert failures["error"].iloc[0] == "ZeroDivisionError: planted map of zeros"
    # its analysis finished before the scoring failed: kept for a look
    assert failures["folder"].tolist() == ["default/replicate-01"]
    assert (out / "default" / "replicate-01" / "effects.tsv").exists()
    assert set(pd.read_csv(out / "calibration_replicates.tsv", sep="\t")["replicate"]) == {0, 2}
    assert (pd.read_csv(out / "calibration.tsv", sep="\t")["replicates"] == 2).all()
    report = (out / "report.html").read_text()
    assert 'id="failures"' in report and "planted map of zeros" in report
    # without it, the first failure ends the run and nothing is written
    calls.clear()
    with pytest.raises(ZeroDivisionError):
        calibration.calibrate(args, 3, tmp_path / "strict")
    assert not (tmp_path / "strict").exists()


def test_keep_going_with_every_replicate_failing_writes_nothing(tmp_path):
    out = tmp_path / "c"
    proc = megafc_cli(["--keep-going", "--jobs", "2", "--replicates", "2", "--out", str(out), "dataset=fmriprep"],
                      cwd=tmp_path, script="megafc-calibrate")
    assert proc.returncode != 0 and "all 2 replicates failed" in proc.stderr and "Traceback" not in proc.stderr
    assert "no results were written" in proc.stderr and "1 distinct error(s): " in proc.stderr
    assert not out.exists()


def test_unknown_scenario_is_refused(tmp_path):
    proc = megafc_cli(["--scenario", "sunny", "--out", str(tmp_path / "c")], cwd=tmp_path, script="megafc-calibrate")
    assert proc.returncode != 0 and "sunny" in proc.stderr and "Traceback" not in proc.stderr
    proc = megafc_cli(["--scenario", "heavy_tail", "--out", str(tmp_path / "c")], cwd=tmp_path,
                      script="megafc-calibrate")
    assert proc.returncode == 2 and "(did you mean ['heavy_tails']?)" in proc.stderr


def test_calibration_needs_planted_effects(tmp_path):
    proc = megafc_cli(["--replicates", "1", "--out", str(tmp_path / "c"), "dataset=fmriprep"], cwd=tmp_path,
                      script="megafc-calibrate")
    assert proc.returncode != 0 and "megafc: error:" in proc.stderr and "Traceback" not in proc.stderr


def test_tau_is_scored_against_the_planted_spreads():
    """tau_drug's planted value is the sd (n - 1) of the drugs' planted effects, tau_dataset's the
    root-mean-square of each dataset's planted effect around its drug's; both scored as
    unsigned quantities in a 'heterogeneity' table, with no 50% coverage where none is given."""
    from megafc.plugins.reports.calibration import summarise_scores, tau_truth

    drug = {"A": [0.10, 0.0], "B": [0.06, 0.0], "C": [0.02, 0.0]}
    site = {"a1": ("A", [0.12, 0.01]), "a2": ("A", [0.08, -0.01]), "b1": ("B", [0.06, 0.0])}
    rows = [("drug:" + d, v) for d, v in drug.items()] + [("dataset:" + s, v) for s, (_, v) in site.items()]
    truth = pd.DataFrame([{"aggregation": "network", "network_a": "N", "network_b": ["X", "Y"][i], "effect": e,
                           "truth": vals[i]} for e, vals in rows for i in range(2)])
    t = tau_truth(truth, "network", {s: d for s, (d, _) in site.items()}).set_index(["network_b", "parameter"])["truth"]
    assert t[("X", "tau_drug")] == pytest.approx(0.04)
    assert t[("X", "tau_dataset")] == pytest.approx(np.sqrt((0.02 ** 2 + 0.02 ** 2 + 0) / 3))
    assert t[("Y", "tau_drug")] == 0.0
    # with scales, tau is what a multiple of the centre leaves: a1 = 1.2 x A, a2 = 0.8 x A and
    # b1 = B lie on their drugs' patterns, and the drugs (0.10, 0), (0.06, 0), (0.02, 0) on
    # their mean's: no spread at all, where the unscaled spreads are not 0
    exact = {"a1": ("A", [0.12, 0.0]), "a2": ("A", [0.08, 0.0]), "b1": ("B", [0.06, 0.0])}
    rows = [("drug:" + d, v) for d, v in drug.items()] + [("dataset:" + s, v) for s, (_, v) in exact.items()]
    flat = pd.DataFrame([{"aggregation": "network", "network_a": "N", "network_b": ["X", "Y"][i], "effect": e,
                          "truth": vals[i]} for e, vals in rows for i in range(2)])
    dd = {s: d for s, (d, _) in exact.items()}
    unscaled = tau_truth(flat, "network", dd).set_index(["network_b", "parameter"])["truth"]
    scaled = tau_truth(flat, "network", dd, True, True).set_index(["network_b", "parameter"])["truth"]
    assert unscaled[("X", "tau_dataset")] == pytest.approx(np.sqrt(0.02 ** 2 * 2 / 3))
    assert scaled[("X", "tau_dataset")] == pytest.approx(0.0) and scaled[("X", "tau_drug")] == pytest.approx(0.0)
    # a deviation off the pattern stays: a1 = 1.2 x A + (0, 0.01) leaves its 0.01 on Y
    off = tau_truth(truth, "network", {s: d for s, (d, _) in site.items()}, False, True)
    assert off.set_index(["network_b", "parameter"])["truth"][("Y", "tau_dataset")] == \
        pytest.approx(np.sqrt((0.01 ** 2 + 0.01 ** 2) / 3))
    het = pd.DataFrame({"network_a": "N", "network_b": ["X", "X", "Y", "Y"],
                        "parameter": ["tau_drug", "tau_dataset"] * 2, "level": "",
                        "mean": [0.05, 0.02, 0.004, 0.003], "sd": 0.01,
                        "hdi_low": [0.03, 0.001, 0.001, 0.0], "hdi_high": [0.08, 0.01, 0.02, 0.01]})
    truth = pd.concat([truth, pd.DataFrame([{"aggregation": "network", "network_a": "N", "network_b": b,
                                             "effect": "overall", "truth": 0.06} for b in "XY"])])
    effects = pd.DataFrame({"network_a": "N", "network_b": ["X", "Y"], "effect": "overall", "effect_type": "overall",
                            "mean": 0.06, "sd": 0.01, "hdi_low": 0.04, "hdi_high": 0.08,
                            "hdi50_low": 0.055, "hdi50_high": 0.065})
    s = score_replicate(effects, truth, "network", 0.02, heterogeneity=het,
                        dataset_drug={s: d for s, (d, _) in site.items()})
    tau = s[(s.table == "heterogeneity") & (s.stratum == "all")].set_index("effect_type")
    assert tau.loc["tau_drug", "coverage_95"] == 0.5  # Y's zero spread lies below [0.001, 0.02]
    assert tau.loc["tau_dataset", "coverage_95"] == 0.5  # X's 0.0163 lies above [0.001, 0.01]; Y's 0.0082 inside
    # only the analysed pairs are scored (and, with scales, fitted)
    only_x = score_replicate(effects.iloc[:1], truth, "network", 0.02, heterogeneity=het,
                             dataset_drug={s: d for s, (d, _) in site.items()})
    assert (only_x.loc[(only_x.table == "heterogeneity") & (only_x.stratum == "all"), "n"] == 1).all()
    assert (tau["n_credible"] == 0).all()
    pooled = summarise_scores(s.assign(scenario="x", replicate=0))
    assert pooled.loc[pooled.table == "heterogeneity", "coverage_50"].isna().all()


def test_specificity_is_scored_against_the_planted_spread_of_subnetwork_pairs():
    from megafc.plugins.reports.calibration import specificity_truth

    parents = {"A1": "A", "A2": "A", "B1": "B"}
    rows = [("A1", "B1", 0.05), ("A2", "B1", 0.01), ("A1", "A1", 0.02), ("A1", "A2", 0.02), ("A2", "A2", 0.02),
            ("B1", "B1", 0.0)]
    truth = pd.DataFrame([{"aggregation": "subnetwork", "network_a": a, "network_b": b, "effect": "overall",
                           "truth": v} for a, b, v in rows])
    t = specificity_truth(truth, parents).set_index(["network_a", "network_b", "effect"])["truth"]
    assert t[("A", "B", "overall")] == pytest.approx(np.std([0.05, 0.01], ddof=1))
    assert t[("A", "A", "overall")] == pytest.approx(0.0)
    assert ("B", "B", "overall") not in t  # one subnetwork pair: no spread
    spec = pd.DataFrame({"network_a": ["A", "A"], "network_b": ["B", "A"], "effect": "overall", "n_pairs": [2, 3],
                         "mean": [0.02, 0.004], "sd": [0.01, 0.003], "hdi_low": [0.0, 0.0], "hdi_high": [0.04, 0.01]})
    effects = pd.DataFrame(columns=["network_a", "network_b", "effect", "effect_type", "mean", "sd", "hdi_low",
                                    "hdi_high"])
    s = score_replicate(effects, truth, "subnetwork", 0.02, specificity=spec, parents=parents)
    row = s[(s.table == "specificity") & (s.stratum == "all")].iloc[0]
    assert row["effect_type"] == "overall" and row["n"] == 2 and row["coverage_95"] == 1.0 and row["n_credible"] == 0


@pytest.mark.parametrize("argv, said", [
    (["--scenario", "default", "heavy_tails"], "'heavy_tails' is a scenario, not a config override"),
    (["--replicates", "2", "pooling"], "argument 'pooling' is not a megafc-calibrate option or a config override"),
])
def test_a_stray_argument_is_named_before_anything_runs(tmp_path, capsys, argv, said):
    """``--scenario a b`` used to end in Hydra's "internal error: OverrideParseException"."""
    import megafc.plugins.reports.calibration as calibration

    out = tmp_path / "calib"
    with pytest.raises(SystemExit) as exit_:
        calibration.main([*argv, "--out", str(out)])
    assert exit_.value.code != 0 and said in capsys.readouterr().err
    assert not out.exists()


def test_a_replicate_whose_chains_disagree_is_counted_as_not_converged(tmp_path):
    """A chain stuck in another mode (R-hat 2.1: never chance) is named; R-hats above 1.01 no more
    often than chance puts them there are not; a model without R-hats gives no row."""
    from megafc.plugins.reports.calibration import diagnostics_by_scenario, replicate_diagnostics

    row = {"size": 141, "ess_bulk_min": 900.0, "divergences": 0, "n_r_hat_over": 1, "r_hat_over_by_chance": 2.0,
           "p_r_hat_max": 0.5, "sampling_seconds": 11.0}
    rows = [{**row, "variable": "tau_dataset", "r_hat_max": 1.012},
            {**row, "variable": "slope:session_order", "r_hat_max": 2.13, "ess_bulk_min": 2.6, "p_r_hat_max": 0.0}]
    for name, table in (("stuck", rows), ("fine", rows[:1])):
        (tmp_path / name).mkdir()
        pd.DataFrame(table).to_csv(tmp_path / name / "diagnostics.tsv", sep="\t", index=False)
    stuck, fine = replicate_diagnostics(tmp_path / "stuck"), replicate_diagnostics(tmp_path / "fine")
    assert not stuck["converged"] and stuck["not_converged"] == "slope:session_order"
    assert stuck["r_hat_max_variable"] == "slope:session_order" and stuck["ess_bulk_min"] == 2.6
    assert fine["converged"] and fine["not_converged"] == ""
    assert replicate_diagnostics(tmp_path) == {}  # no diagnostics.tsv (e.g. meta)
    table = pd.DataFrame([{"scenario": "a", **stuck}, {"scenario": "a", **fine}, {"scenario": "b", **fine}])
    by = diagnostics_by_scenario(table).set_index("scenario")
    assert by.loc["a", ["replicates", "not_converged"]].tolist() == [2, 1] and by.loc["b", "not_converged"] == 0
