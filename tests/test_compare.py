"""megafc-compare: robustness of each network pair's effect across a sweep's pipelines."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import TINY, megafc_cli
from megafc.core import InputError
from megafc.plugins.reports.compare import collect_jobs, compare, robustness_long, robustness_table

PAIRS = [("Default", "Vis"), ("SomMot", "Vis"), ("Vis", "Vis")]
HALF = 0.1  # every fake interval is mean +/- HALF

#: Overall-effect means per full-data pipeline (atlas, pooling) for PAIRS, chosen so that:
#: Default-Vis is positive and credible everywhere; SomMot-Vis is negative everywhere but
#: credible in 3 of 4 pipelines; Vis-Vis changes sign.
FULL = {
    ("schaefer", "pymc"): [0.20, -0.20, 0.05],
    ("schaefer", "meta"): [0.15, -0.15, -0.02],
    ("synthetic", "pymc"): [0.25, -0.05, 0.30],
    ("synthetic", "meta"): [0.18, -0.30, 0.01],
}
#: Leave-one-dataset-out refits of atlas=schaefer pooling=pymc.
LOO = {"lsd_1": [0.12, -0.10, 0.04], "psilocybin_1": [0.22, 0.02, 0.06]}


def _effects(means: list[float]) -> pd.DataFrame:
    rows = []
    for (a, b), m in zip(PAIRS, means):
        for effect, value, half in (("overall", m, HALF), ("drug:LSD", m / 2, 5 * HALF)):
            rows.append({"network_a": a, "network_b": b, "system_a": "x", "system_b": "y", "effect": effect,
                         "effect_type": effect.split(":")[0], "level": effect.partition(":")[2],
                         "mean": value, "sd": half / 2, "hdi_low": value - half, "hdi_high": value + half,
                         "pd": 0.9, "ok": True})
    return pd.DataFrame(rows)


def write_job(job_dir, atlas, pooling, means, loo=None, seed=0, complete=True):
    """A job directory as `megafc --multirun` leaves it (provenance.json last, if complete)."""
    (job_dir / ".hydra").mkdir(parents=True)
    overrides = [f"atlas={atlas}", f"pooling={pooling}"] + ([f"loo_dataset={loo}"] if loo else [])
    (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    pooling_cfg = ({"name": pooling, "draws": 1000, "tune": 1000} if pooling == "pymc"
                   else {"name": pooling, "ci_level": 0.95})
    config = {"dataset": {"name": "synthetic", "scale": 0.15, "sites": [{"name": "lsd_1"}, {"name": "psilocybin_1"}]},
              "atlas": {"name": atlas}, "denoiser": {"name": "none"}, "estimator": {"name": "correlation"},
              "pooling": pooling_cfg, "seed": seed, "aggregate": {"level": "network"}, "figures": pooling == "pymc",
              "loo_dataset": loo}
    (job_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    _effects(means).to_csv(job_dir / "effects.tsv", sep="\t", index=False)
    if complete:
        plugins = {kind: {"name": config[kind]["name"], "class": "x:Y", "distribution": "megafc", "version": "0.1.0"}
                   for kind in ("dataset", "atlas", "denoiser", "estimator", "pooling")}
        (job_dir / "provenance.json").write_text(json.dumps({"plugins": plugins, "seed": seed}))


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multirun"
    num = 0
    for (atlas, pooling), means in FULL.items():
        write_job(root / f"{num}_atlas={atlas},pooling={pooling}", atlas, pooling, means)
        num += 1
    for loo, means in LOO.items():
        write_job(root / f"{num}_atlas=schaefer,loo_dataset={loo},pooling=pymc", "schaefer", "pymc", means, loo=loo)
        num += 1
    # killed before finishing: absurd numbers that must never show up
    write_job(root / f"{num}_atlas=synthetic,pooling=bambi", "synthetic", "bambi", [99.0, 99.0, 99.0], complete=False)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def label(atlas, pooling):
    return f"atlas={atlas} pooling={pooling}"


def test_collect_jobs_labels_loo_and_incomplete(sweep):
    jobs = collect_jobs(sweep)
    assert list(jobs["job"]) == [f"{i}_{s}" for i, s in enumerate(
        ["atlas=schaefer,pooling=pymc", "atlas=schaefer,pooling=meta", "atlas=synthetic,pooling=pymc",
         "atlas=synthetic,pooling=meta", "atlas=schaefer,loo_dataset=lsd_1,pooling=pymc",
         "atlas=schaefer,loo_dataset=psilocybin_1,pooling=pymc"])]
    # only what varies: atlas and pooling (not pooling.draws, which only pymc has, not figures, not loo)
    assert list(jobs["pipeline"]) == [label(*k) for k in FULL] + [label("schaefer", "pymc")] * 2
    assert list(jobs["loo_dataset"]) == [None] * 4 + ["lsd_1", "psilocybin_1"]
    assert set(jobs.columns) >= {"job", "pipeline", "loo_dataset", "dataset", "atlas", "denoiser", "estimator",
                                 "pooling"}
    assert jobs.attrs["incomplete"] == ["6_atlas=synthetic,pooling=bambi"]
    assert "bambi" not in set(jobs["pooling"])


def test_planned_jobs_that_never_started_are_named(tmp_path):
    """A sweep stopped early (or a launcher that lost jobs) leaves jobs with no folder at all: the
    comparison counted only what it found and said nothing of the jobs it lacks."""
    root = tmp_path / "multirun"
    write_job(root / "0_atlas=schaefer,pooling=meta", "schaefer", "meta", FULL[("schaefer", "meta")])
    write_job(root / "1_atlas=schaefer,pooling=pymc", "schaefer", "pymc", FULL[("schaefer", "pymc")], complete=False)
    basic = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    plan = {"hydra": {"sweeper": {"_target_": basic, "params": {"atlas": "schaefer,synthetic"}},
                      "overrides": {"task": ["pooling=meta,pymc"]}}}
    (root / "multirun.yaml").write_text(yaml.safe_dump(plan))
    jobs = collect_jobs(root)
    assert jobs.attrs["incomplete"] == ["1_atlas=schaefer,pooling=pymc"]
    assert sorted(jobs.attrs["never_started"]) == ["atlas=synthetic pooling=meta", "atlas=synthetic pooling=pymc"]
    out = compare(root)
    listed = pd.read_csv(out / "jobs.tsv", sep="\t")
    assert sorted(listed.loc[listed["status"].str.startswith("never started"), "overrides"]) == [
        "atlas=synthetic pooling=meta", "atlas=synthetic pooling=pymc"]
    assert "2 of the sweep's planned jobs never started" in (out / "report.html").read_text()
    # jobs that keep no Hydra record (hydra.output_subdir=null) cannot be matched to the plan: no claim
    (root / "1_atlas=schaefer,pooling=pymc" / ".hydra" / "overrides.yaml").unlink()
    (root / "1_atlas=schaefer,pooling=pymc" / ".hydra").rmdir()
    assert collect_jobs(root).attrs["never_started"] == []
    # a sweeper that plans as it goes (e.g. optuna) has no plan to hold the folders to
    plan["hydra"]["sweeper"]["_target_"] = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    (root / "multirun.yaml").write_text(yaml.safe_dump(plan))
    assert collect_jobs(root).attrs["never_started"] == []


def test_a_config_run_again_in_another_job_folder_counts_once(tmp_path):
    """A sweep rerun with one more value renumbers its job folders: the same config ran again in
    a new folder, and the old one counted as a second pipeline (labelled by its directory)."""
    root = tmp_path / "multirun"
    jobs = {"0_atlas=schaefer": ("schaefer", "f1", "2026-12-01T10:00"), "1_atlas=synthetic": ("synthetic", "f2", "2026-12-01T10:01"),
            "2_atlas=schaefer": ("schaefer", "f1", "2026-12-01T11:00")}  # job 0's config, run again later
    for job, (atlas, fingerprint, finished) in jobs.items():
        write_job(root / job, atlas, "meta", FULL[(atlas, "meta")])
        provenance = json.loads((root / job / "provenance.json").read_text())
        (root / job / "provenance.json").write_text(json.dumps({**provenance, "config_fingerprint": fingerprint,
                                                                "finished": finished}))
    found = collect_jobs(root)
    assert sorted(found["job"]) == ["1_atlas=synthetic", "2_atlas=schaefer"]
    assert found.attrs["superseded"] == {"0_atlas=schaefer": "2_atlas=schaefer"}
    assert sorted(found["pipeline"]) == ["atlas=schaefer", "atlas=synthetic"]  # no "[0_atlas=...]" twin
    out = compare(root)
    listed = pd.read_csv(out / "jobs.tsv", sep="\t").set_index("job")
    assert listed.loc["0_atlas=schaefer", "status"].startswith("superseded (the same config as 2_atlas=schaefer")
    assert "1 job(s) ran the same config as a later job" in (out / "report.html").read_text()


def test_an_effect_a_leave_one_out_refit_lacks_is_not_called_stable(tmp_path):
    """Leaving out a drug's only dataset leaves that refit without the drug's effect (NaN): the
    comparison took the other refit alone and called the effect stable under leave-one-out."""
    root = tmp_path / "multirun"
    write_job(root / "0_full", "schaefer", "meta", FULL[("schaefer", "meta")])
    write_job(root / "1_loo_a", "schaefer", "meta", [0.12, -0.10, 0.04], loo="lsd_1")
    write_job(root / "2_loo_b", "schaefer", "meta", [0.2, -0.2, 0.04], loo="psilocybin_1")
    lacking = pd.read_csv(root / "2_loo_b" / "effects.tsv", sep="\t")
    lacking.loc[lacking["effect"] == "drug:LSD", ["mean", "hdi_low", "hdi_high"]] = np.nan
    lacking.to_csv(root / "2_loo_b" / "effects.tsv", sep="\t", index=False)
    long = robustness_long(collect_jobs(root)).set_index(["network_a", "network_b", "effect"])
    row = long.loc[("Default", "Vis", "drug:LSD")]
    assert (row["n_loo"], row["loo_missing"]) == (1, 1) and row["loo_sign_stable"] == False  # noqa: E712
    full = long.loc[("Default", "Vis", "overall")]  # present in both refits, same sign: stable
    assert (full["n_loo"], full["loo_missing"]) == (2, 0) and full["loo_sign_stable"] == True  # noqa: E712


def test_labels_name_varying_settings_and_nested_layout(tmp_path):
    root = tmp_path / "multirun"
    for seed in (0, 1):
        write_job(root / "2026-01-01" / f"12-00-0{seed}" / "0", "schaefer", "meta", FULL[("schaefer", "meta")],
                  seed=seed)
    # jobs are found at any depth (older megafc versions nested path-valued overrides)
    assert list(collect_jobs(root)["job"]) == ["2026-01-01/12-00-00/0", "2026-01-01/12-00-01/0"]
    jobs = collect_jobs(root / "2026-01-01")
    assert list(jobs["pipeline"]) == ["seed=0", "seed=1"]
    assert list(jobs["job"]) == ["12-00-00/0", "12-00-01/0"]


def test_labels_ignore_notes_and_run_mechanics(tmp_path):
    """Keys that say how a job ran (notes naming its atlas, the stage, shards) are not pipeline
    choices: labels stay the plugin names, so the figures' tick labels stay short."""
    root = tmp_path / "multirun"
    for i, atlas in enumerate(("schaefer", "synthetic")):
        job = root / str(i)
        write_job(job, atlas, "pymc", FULL[(atlas, "pymc")])
        config = yaml.safe_load((job / "config.yaml").read_text())
        config.update(notes=[f"atlas '{atlas}': a sentence"], stage="all", report_svg=bool(i))
        config["dataset"]["confounds_dir"] = f"/tmp/c{i}"
        (job / "config.yaml").write_text(yaml.safe_dump(config))
    assert list(collect_jobs(root)["pipeline"]) == ["atlas=schaefer", "atlas=synthetic"]


def test_robustness_flags(sweep):
    jobs = collect_jobs(sweep)
    table = robustness_table(jobs).set_index(["network_a", "network_b", "effect"])
    assert len(table) == len(PAIRS) * 2

    def row(pair):
        return table.loc[(*pair, "overall")]

    p1, p2, p3 = (row(p) for p in PAIRS)
    assert (p1["n_pipelines"], p1["sign_agree"], p1["all_credible"], p1["credible_in"]) == (4, True, True, 4)
    assert (p2["sign_agree"], p2["all_credible"], p2["credible_in"]) == (True, False, 3)
    assert (p3["sign_agree"], p3["all_credible"], p3["credible_in"]) == (False, False, 1)
    assert p1["min_mean"] == pytest.approx(0.15) and p1["max_mean"] == pytest.approx(0.25)
    assert p2["min_mean"] == pytest.approx(-0.30) and p2["max_mean"] == pytest.approx(-0.05)

    ref = label("schaefer", "pymc")
    assert p1[f"mean[{ref}]"] == pytest.approx(0.20)
    assert p1[f"hdi_low[{ref}]"] == pytest.approx(0.10) and p1[f"hdi_high[{ref}]"] == pytest.approx(0.30)
    assert p2[f"mean[{label('synthetic', 'meta')}]"] == pytest.approx(-0.30)
    # LOO: range of the refits' means and whether they all keep the full-data sign
    assert p1[f"n_loo[{ref}]"] == 2
    assert (p1[f"loo_min[{ref}]"], p1[f"loo_max[{ref}]"]) == (pytest.approx(0.12), pytest.approx(0.22))
    assert p1[f"loo_sign_stable[{ref}]"] and p1["loo_sign_stable"]
    assert (p2[f"loo_min[{ref}]"], p2[f"loo_max[{ref}]"]) == (pytest.approx(-0.10), pytest.approx(0.02))
    assert not p2[f"loo_sign_stable[{ref}]"] and not p2["loo_sign_stable"]
    assert p3[f"loo_sign_stable[{ref}]"]  # 0.05 -> 0.04, 0.06
    # only pipelines with LOO jobs get LOO columns
    assert not any(c.startswith("loo_min[") and "synthetic" in c for c in table.columns)

    # drug:LSD intervals are wide: nothing credible, signs as for overall
    lsd = table.xs("drug:LSD", level="effect")
    assert (lsd["credible_in"] == 0).all() and not lsd["all_credible"].any()
    assert list(lsd["sign_agree"]) == [True, True, False]

    long = robustness_long(jobs)
    assert len(long) == len(PAIRS) * 2 * 4  # pair x effect x full-data pipeline
    assert (long["mean"].abs() < 1).all()  # the incomplete job's 99s are never used
    one = long[(long.network_a == "SomMot") & (long.effect == "overall")
               & (long.pipeline == label("synthetic", "pymc"))]
    assert one["credible"].item() == 0 and one["n_loo"].item() == 0 and pd.isna(one["loo_sign_stable"].item())


def test_an_effect_only_some_pipelines_estimate_is_never_robust(tmp_path):
    """A contrast only the pymc job has (meta has none), credible there: it once counted as
    'credible in all pipelines' and topped the robust list on that one pipeline alone."""
    from megafc.plugins.reports.compare import robust_pairs, summary_counts

    root = tmp_path / "multirun"
    for num, pooling in enumerate(("pymc", "meta")):
        write_job(root / f"{num}_atlas=schaefer,pooling={pooling}", "schaefer", pooling, FULL[("schaefer", "pymc")])
    pymc_effects = root / "0_atlas=schaefer,pooling=pymc" / "effects.tsv"
    effects = pd.read_csv(pymc_effects, sep="\t")
    extra = effects[effects.effect == "overall"].assign(effect="contrast:a-b", effect_type="contrast")
    pd.concat([effects, extra]).to_csv(pymc_effects, sep="\t", index=False)
    table = robustness_table(collect_jobs(root))
    contrast = table[table.effect == "contrast:a-b"].set_index(["network_a", "network_b"])
    assert (contrast["n_pipelines"] == 1).all() and not contrast["all_credible"].any()
    assert not contrast["sign_agree"].any() and contrast["credible_in"].tolist() == [1, 1, 0]
    assert summary_counts(table, "contrast:a-b")["partial"] == len(PAIRS)
    assert robust_pairs(table, "contrast:a-b").empty
    overall = table[table.effect == "overall"].set_index(["network_a", "network_b"])
    assert overall.loc[("Default", "Vis"), "all_credible"]  # both pipelines: still robust
    # a pipeline at another aggregation level has other pairs: it does not count against these
    sub = root / "2_aggregate.level=subnetwork,atlas=schaefer,pooling=pymc"
    write_job(sub, "schaefer", "pymc", FULL[("schaefer", "pymc")])
    (sub / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["aggregate.level=subnetwork", "atlas=schaefer",
                                                                   "pooling=pymc"]))
    config = yaml.safe_load((sub / "config.yaml").read_text())
    (sub / "config.yaml").write_text(yaml.safe_dump({**config, "aggregate": {"level": "subnetwork"}}))
    effects = pd.read_csv(sub / "effects.tsv", sep="\t")
    effects[["network_a", "network_b"]] = effects[["network_a", "network_b"]] + "_1"
    effects.to_csv(sub / "effects.tsv", sep="\t", index=False)
    table = robustness_table(collect_jobs(root))
    overall = table[table.effect == "overall"].set_index(["network_a", "network_b"])
    assert overall.loc[("Default", "Vis"), "all_credible"]
    assert overall.loc[("Default", "Vis"), "n_pipelines_with_pair"] == 2
    # ... and a pair only it has agrees with nothing: neither robust nor sign-consistent on its own
    assert overall.loc[("Default_1", "Vis_1"), "n_pipelines_with_pair"] == 1
    assert not overall.loc[("Default_1", "Vis_1"), "all_credible"] and not overall.loc[("Default_1", "Vis_1"), "sign_agree"]
    assert summary_counts(table)["single"] == len(PAIRS)
    assert sorted(robust_pairs(table)["network_a"]) == ["Default", "SomMot"]  # both pipelines' credible pairs only


def test_failed_diagnostics_and_presets_are_named(tmp_path):
    """A job whose diagnostics failed is named in a banner and in jobs.tsv (its intervals still
    enter the counts), and a preset chosen on the command line (pooling=pymc_quick, whose config
    says pymc) labels its pipeline, so a quick pilot does not pass for the full model."""
    root = tmp_path / "multirun"
    write_job(root / "0_pooling=pymc", "schaefer", "pymc", FULL[("schaefer", "pymc")])
    quick = root / "1_pooling=pymc_quick"
    write_job(quick, "schaefer", "pymc", FULL[("schaefer", "meta")])
    (quick / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["pooling=pymc_quick"]))
    prov = json.loads((quick / "provenance.json").read_text())
    (quick / "provenance.json").write_text(json.dumps({**prov, "diagnostics_ok": False, "sampler_ok": False}))
    out = compare(root)
    jobs = pd.read_csv(out / "jobs.tsv", sep="\t")
    assert jobs.set_index("job").loc["1_pooling=pymc_quick", "pooling"] == "pymc_quick"
    assert sorted(jobs["pipeline"]) == ["pooling=pymc", "pooling=pymc_quick"]
    assert jobs["diagnostics_ok"].isna().tolist() == [True, False] and not jobs["diagnostics_ok"].iloc[1]
    report = (out / "report.html").read_text()
    assert "1 job(s) failed their diagnostics" in report and "1_pooling=pymc_quick</code> (the sampler" in report
    assert "pooling models" not in report  # a preset of the same model: the same quantities
    assert "Without the jobs whose diagnostics failed" not in report  # one pipeline would be left: no comparison
    write_job(root / "2_pooling=meta", "schaefer", "meta", FULL[("schaefer", "meta")])
    report = (compare(root) / "report.html").read_text()
    assert "The jobs use 2 pooling models (meta, pymc)" in report
    # the counts without the failed job, beside those with it
    assert re.search(r"Without the jobs whose diagnostics failed \(2 pipelines\): credible in every pipeline that "
                     r"has the pair <b>\d+</b>, robust <b>\d+</b>", report)


def test_compare_writes_everything(sweep):
    out = compare(sweep)
    assert out == sweep / "comparison"
    for name in ("robustness.tsv", "robustness_long.tsv", "jobs.tsv", "report.html",
                 "figures/robustness.png", "figures/robustness.svg"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not list(out.glob(".megafc-staging-*"))
    assert (out / "figures/robustness.png").read_bytes()[:4] == b"\x89PNG"

    table = pd.read_csv(out / "robustness.tsv", sep="\t")
    assert len(table) == 6 and table["all_credible"].sum() == 1
    jobs = pd.read_csv(out / "jobs.tsv", sep="\t")
    assert list(jobs["status"]).count("complete") == 6
    assert jobs["status"].iloc[-1].startswith("incomplete")
    assert jobs["job"].iloc[-1] == "6_atlas=synthetic,pooling=bambi"

    report = (out / "report.html").read_text()
    sources = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", report)
    assert sources and all(s.startswith(("data:", "#")) for s in sources), sources  # nothing outside the file
    assert "<link" not in report and "@import" not in report
    assert "data:image/png;base64," in report
    assert ("Credible in every pipeline that has the pair (at least two of the 4; interval excludes 0 on the same "
            "side): <b>1</b>") in report
    assert "Sign-consistent across pipelines: <b>2</b>" in report
    assert "sign-stable: <b>2</b> of 3" in report
    assert "6_atlas=synthetic,pooling=bambi" in report  # the ignored job is reported

    # rerunning replaces the comparison in place, again leaving no staging folder
    compare(sweep)
    assert not list(out.glob(".megafc-staging-*"))
    # the comparison folder is never taken for a job
    assert len(collect_jobs(sweep)) == 6


def test_cli_writes_to_out(sweep, tmp_path):
    out = tmp_path / "elsewhere"
    proc = megafc_cli([str(sweep), "--out", str(out)], cwd=tmp_path, script="megafc-compare", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out / "report.html").is_file() and not (sweep / "comparison").exists()
    assert "incomplete" in proc.stderr and "6_atlas=synthetic,pooling=bambi" in proc.stderr
    assert str(out) in proc.stdout


def _one_paragraph_error(proc, expected):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("megafc: error: "), proc.stderr
    assert expected in errors[0]
    assert "" not in proc.stderr.strip().splitlines()  # no blank line: one paragraph


def test_cli_bad_inputs(tmp_path, sweep):
    missing = tmp_path / "nope"
    _one_paragraph_error(megafc_cli([str(missing)], cwd=tmp_path, script="megafc-compare", timeout=120),
                         f"sweep directory {missing} does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_paragraph_error(megafc_cli([str(empty)], cwd=tmp_path, script="megafc-compare", timeout=120),
                         f"no completed megafc job in {empty}")
    assert list(empty.iterdir()) == []
    # one run's folder, not a sweep's (in-process: no CLI start-up needed for these two)
    one = sweep / "0_atlas=schaefer,pooling=pymc"
    with pytest.raises(InputError, match=f"{re.escape(str(one))} is one megafc run, not a sweep"):
        collect_jobs(one)
    extract_only = tmp_path / "extract_sweep"
    write_job(extract_only / "0_stage=extract", "schaefer", "pymc", FULL[("schaefer", "pymc")])
    job = extract_only / "0_stage=extract"
    (job / "effects.tsv").unlink()
    (job / "config.yaml").write_text(yaml.safe_dump({**yaml.safe_load((job / "config.yaml").read_text()),
                                                     "stage": "extract"}))
    with pytest.raises(InputError, match="only extracted timeseries .stage=extract.: an extraction sweep"):
        collect_jobs(extract_only)

    # a complete job whose effects.tsv is broken: named, nothing written
    effects = sweep / "0_atlas=schaefer,pooling=pymc" / "effects.tsv"
    pd.read_csv(effects, sep="\t").drop(columns="mean").to_csv(effects, sep="\t", index=False)
    _one_paragraph_error(megafc_cli([str(sweep)], cwd=tmp_path, script="megafc-compare", timeout=120),
                         f"{effects} lacks column(s) mean")
    assert not (sweep / "comparison").exists() or not any((sweep / "comparison").iterdir())


@pytest.mark.slow
def test_end_to_end_meta_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    meta = [o for o in TINY if not o.startswith("pooling.")] + ["pooling=meta"]
    proc = megafc_cli(["--multirun", "estimator=correlation,ledoit_wolf", *meta, f"hydra.sweep.dir={sweep}"],
                      cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = megafc_cli([str(sweep)], cwd=tmp_path, script="megafc-compare", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = sweep / "comparison"
    jobs = pd.read_csv(out / "jobs.tsv", sep="\t")
    assert list(jobs["pipeline"]) == ["estimator=correlation", "estimator=ledoit_wolf"]
    table = pd.read_csv(out / "robustness.tsv", sep="\t")
    overall = table[table["effect"] == "overall"]
    assert len(overall) > 0 and (overall["n_pipelines"] == 2).all()
    assert {"mean[estimator=correlation]", "hdi_low[estimator=ledoit_wolf]", "sign_agree",
            "all_credible"} <= set(table.columns)
    assert overall["all_credible"].any()  # the planted effects survive both estimators
    long = pd.read_csv(out / "robustness_long.tsv", sep="\t")
    assert len(long) == 2 * len(table)
    assert (out / "figures" / "robustness.svg").is_file()
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_sweep_end_callback_compares_analysis_sweeps_only(sweep, tmp_path, caplog):
    """The callback girn2026 uses: a comparison after an analysis sweep, nothing after an
    extraction sweep, and a logged error (never a failed sweep) when the comparison fails."""
    from omegaconf import OmegaConf

    from megafc.cli.sweep_callbacks import CompareWhenSweepEnds

    def ends(folder, stage):
        CompareWhenSweepEnds().on_multirun_end(OmegaConf.create({"stage": stage, "hydra": {"sweep": {"dir": str(folder)}}}))

    ends(sweep, "extract")
    assert not (sweep / "comparison").exists()
    ends(sweep, "all")
    assert (sweep / "comparison" / "report.html").is_file()
    with caplog.at_level("ERROR", logger="megafc"):
        ends(tmp_path / "no such sweep", "all")
    assert "reporter 'compare' could not write its report" in caplog.text and "does not exist" in caplog.text
