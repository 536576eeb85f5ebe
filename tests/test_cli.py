"""The installed console scripts, as a user runs them."""

import os
import signal

import numpy as np
import pandas as pd
import pytest

from conftest import TINY, assert_no_results, megafc_cli
from conftest import alive_process as _alive
from conftest import child_processes as _children


def _pythonpath(site):
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("args, expected", [
    (["estimator=nope"], "Could not find 'estimator/nope'"),
    (["pooling.nonsense=1"], "nonsense"),
    (["pooling.draws=many"], "pooling.draws"),
    (["seed=abc"], "seed"),
    (["extraction.n_jobs=0"], "config key 'extraction.n_jobs' is 0"),
    (["report_workers=0"], "config key 'report_workers' is 0"),
    # Hydra's own error for a misspelt key suggests '+key=value', which adds any key
    (["+qc.max_fd=0.1"], "config key 'qc.max_fd' is not a megafc setting; did you mean 'qc.max_mean_fd'?"),
    (["+seeed=5"], "config key 'seeed' is not a megafc setting; did you mean 'seed'?"),
])
def test_config_errors_are_clear(tmp_path, args, expected):
    run_dir = tmp_path / "run"
    proc = megafc_cli(args + [f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 2  # bad config, whether Hydra or megafc finds it
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert_no_results(run_dir)


def test_value_error_inside_plugin_config_names_the_key(tmp_path):
    run_dir = tmp_path / "run"
    proc = megafc_cli(TINY + ["pooling.target_accept=1.5", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "megafc: error: config key 'pooling.target_accept' is 1.5" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert_no_results(run_dir)


def test_megafc_plugins_lists_builtins_and_third_party(tmp_path, plugin_site):
    proc = megafc_cli([], cwd=tmp_path, script="megafc-plugins", env_extra=_pythonpath(plugin_site))
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    found = {(r[0], r[1], r[2]) for r in rows}
    assert ("estimator", "correlation", "megafc") in found
    assert ("pooling", "pymc", "megafc") in found
    assert ("estimator", "shrunk_partial_correlation", "megafc-example-plugin") in found
    assert ("pooling", "pymc_quick", "megafc") in found  # a shipped config preset, not a class
    assert ("hooks", "reports", "megafc") in found  # a plugin that registers no class, only report sections


def test_megafc_plugins_json_kinds_and_show(tmp_path, plugin_site):
    import json

    env = _pythonpath(plugin_site)
    proc = megafc_cli(["--json"], cwd=tmp_path, script="megafc-plugins", env_extra=env)
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    found = {(p["kind"], p["name"], p["distribution"]) for p in listing["plugins"]}
    assert ("estimator", "shrunk_partial_correlation", "megafc-example-plugin") in found
    assert ("pooling", "pymc", "megafc") in found
    assert ("estimator", "malformed", "megafc-broken-plugin") in found and listing["broken"] == []
    assert any(h["hooks"] == "megafc_report_sections" for h in listing["hook_plugins"])
    # one kind only
    proc = megafc_cli(["estimator"], cwd=tmp_path, script="megafc-plugins", env_extra=env)
    kinds = {line.split()[0] for line in proc.stdout.splitlines()[1:]}
    assert proc.returncode == 0 and kinds == {"estimator"}
    # one plugin's config keys with their documentation
    proc = megafc_cli(["--show", "pooling/pymc"], cwd=tmp_path, script="megafc-plugins", env_extra=env)
    assert proc.returncode == 0, proc.stderr
    assert "pooling.draws: int = 2000" in proc.stdout and "pooling.priors.effect_sd: float = 0.2" in proc.stdout
    assert "Adjust for each scan's mean FD" in proc.stdout
    # a choice-valued key shows its choices, not its Enum's name
    assert "pooling.heterogeneity: learned | pooled | per_pair | shared | null = None" in proc.stdout
    assert "pooling.pair_prior: independent | horseshoe | by_class = 'independent'" in proc.stdout
    shown = json.loads(megafc_cli(["--show", "pooling/pymc", "--json"], cwd=tmp_path, script="megafc-plugins").stdout)
    assert shown["class"] == "megafc.plugins.pooling.pymc_scan_level:PyMCPooling"
    assert {"key": "tune", "type": "int", "default": 500}.items() <= next(
        f for f in shown["config"] if f["key"] == "tune").items()
    assert any(r.startswith("Abril-Pla O") for r in shown["references"]) and "pymc" in shown["packages"]
    # a reporter: no config keys, said as such
    proc = megafc_cli(["--show", "reporter/run_report"], cwd=tmp_path, script="megafc-plugins")
    assert proc.returncode == 0 and "no config keys" in proc.stdout and "RunReport" in proc.stdout
    # a preset megafc ships: its plugin's keys with the preset's values
    shown = json.loads(megafc_cli(["--show", "pooling/pymc_quick", "--json"], cwd=tmp_path,
                                  script="megafc-plugins").stdout)
    assert shown["preset_of"] == "pymc" and shown["preset_file"].endswith("pooling/pymc_quick.yaml")
    values = {f["key"]: f["default"] for f in shown["config"]}
    assert values["draws"] == 200 and values["sampler"] == "pymc" and values["priors.effect_sd"] == 0.2
    shown = megafc_cli(["--show", "pooling/pymc_quick"], cwd=tmp_path, script="megafc-plugins").stdout
    assert "pooling.sampler: auto | pymc | nutpie | numpyro | blackjax = 'pymc'" in shown  # not <Sampler.pymc: ...>
    for args, expected in ((["nope"], "unknown kind(s) ['nope']"), (["--show", "pooling/nope"], "no pooling plugin named 'nope'")):
        proc = megafc_cli(args, cwd=tmp_path, script="megafc-plugins")
        assert proc.returncode == 2 and expected in proc.stderr
        assert proc.stderr.count(expected) == 1 and "no results were written" not in proc.stderr
    # its warnings reach the terminal (a misspelt plugin switch once went unsaid)
    proc = megafc_cli([], cwd=tmp_path, script="megafc-plugins", env_extra={"MEGAFC_LOAD_PLUGINS": "megafc,nope"})
    assert proc.returncode == 0 and "MEGAFC_LOAD_PLUGINS names nope" in proc.stderr


def test_version_names_megafc(tmp_path):
    from megafc.core.fingerprints import package_versions

    proc = megafc_cli(["--version"], cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith(f"megafc {package_versions()['megafc']} ")


@pytest.mark.slow
def test_third_party_estimator_runs_end_to_end(tmp_path, plugin_site):
    run_dir = tmp_path / "run"
    meta = [o for o in TINY if not o.startswith("pooling.")] + ["pooling=meta"]  # the estimator is under test
    proc = megafc_cli(meta + ["estimator=shrunk_partial_correlation", "estimator.shrinkage=0.2", f"hydra.run.dir={run_dir}"],
                      cwd=tmp_path, env_extra=_pythonpath(plugin_site))
    assert proc.returncode == 0, proc.stderr[-3000:]
    eff = pd.read_csv(run_dir / "effects.tsv", sep="\t")
    assert len(eff) > 0
    prov = (run_dir / "provenance.json").read_text()
    assert "megafc-example-plugin" in prov and "shrunk_partial_correlation" in prov
    assert "shrinkage: 0.2" in (run_dir / "config.yaml").read_text()


def test_third_party_report_section_and_citations_reach_every_output(tmp_path, plugin_site):
    """The example package's report section (hook megafc_report_sections) and its citations (the
    section's and the estimator's declared references) appear in report.html, methods.md,
    references.bib and provenance.json; a run without the estimator gets neither."""
    import json

    meta = [o for o in TINY if not o.startswith(("pooling.", "report"))] + ["pooling=meta", "report=true"]
    env = _pythonpath(plugin_site)
    run_dir = tmp_path / "run"
    proc = megafc_cli(meta + ["estimator=shrunk_partial_correlation", f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                      env_extra=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (run_dir / "report.html").read_text()
    assert '<section id="partial-correlation"><h2>Partial correlation</h2>' in report
    assert "<code>0.1</code> (<code>estimator.shrinkage</code>)" in report
    citations = report.split('<ol class="citations">')[1].split("</ol>")[0]  # the report's own list
    for surname, key in (("Marrelec G", "Marrelec2006"), ("Smith SM", "Smith2011")):
        assert surname in citations and surname in (run_dir / "methods.md").read_text()
        assert f"@article{{{key}," in (run_dir / "references.bib").read_text()
        assert any(r.startswith(surname) for r in json.loads((run_dir / "provenance.json").read_text())["references"])
    plain = tmp_path / "plain"
    proc = megafc_cli(meta + [f"hydra.run.dir={plain}"], cwd=tmp_path, env_extra=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'id="partial-correlation"' not in (plain / "report.html").read_text()
    assert "Marrelec" not in (plain / "references.bib").read_text()


@pytest.mark.parametrize("estimator, message", [
    ("malformed", "returned a matrix of shape"),
    ("asymmetric", "returned a non-symmetric matrix"),
])
def test_malformed_estimator_fails_cleanly(tmp_path, plugin_site, estimator, message):
    run_dir = tmp_path / "run"
    proc = megafc_cli(TINY + [f"estimator={estimator}", f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                      env_extra=_pythonpath(plugin_site))
    assert proc.returncode == 2
    assert f"megafc: error: estimator '{estimator}' {message}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert_no_results(run_dir)


@pytest.mark.slow
def test_multirun_pymc_and_bambi(tmp_path):
    sweep = tmp_path / "sweep"
    small = [o for o in TINY if not o.startswith(("pooling.draws", "pooling.tune", "atlas."))]
    small += ["atlas.subcortical=false", "atlas.n_cerebellar=0", "atlas.n_cortical=34",
              "pooling.draws=30", "pooling.tune=30", "dataset.n_volumes=60", "summaries_builtin=false",
              "aggregate.pairs=[[Vis,Default],[SomMot,SomMot]]"]  # bambi fits one pair at a time
    proc = megafc_cli(["--multirun", "pooling=pymc,bambi", *small, f"hydra.sweep.dir={sweep}",
                       "hydra.sweep.subdir=${hydra.job.num}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, name in (("0", "pymc"), ("1", "bambi")):
        eff = pd.read_csv(sweep / job / "effects.tsv", sep="\t")
        assert set(zip(eff.network_a, eff.network_b)) == {("Default", "Vis"), ("SomMot", "SomMot")}
        assert f"name: {name}" in (sweep / job / "config.yaml").read_text()
        # both take the session-order effect out of the synthetic study's pre/post dataset, and say so
        assert "covariate:session_order" in set(eff["effect"])
        assert "taken at equal session order" in (sweep / job / "warnings.tsv").read_text()
    # both write the subjects' pointwise log-likelihood (subject intercepts integrated out) over
    # the same subjects and pairs, so az.compare can rank them
    import arviz as az

    idata = {name: az.from_netcdf(sweep / job / "posterior.nc") for job, name in (("0", "pymc"), ("1", "bambi"))}
    loglik = {name: d.log_likelihood["subject_differences"] for name, d in idata.items()}
    assert loglik["pymc"].dims == loglik["bambi"].dims and loglik["pymc"].shape[2:] == loglik["bambi"].shape[2:]
    for dim in loglik["pymc"].dims[2:]:
        assert list(loglik["pymc"][dim].values) == list(loglik["bambi"][dim].values)
    assert np.isfinite(loglik["bambi"]).all()
    assert set(az.compare(idata, ic="loo").index) == {"pymc", "bambi"}


def test_example_plugin_passes_its_own_tests(tmp_path, plugin_site):
    """The example package's tests, run against the installed example as its author would."""
    import subprocess
    import sys

    from conftest import EXAMPLE_PLUGIN

    env = dict(os.environ, **_pythonpath(plugin_site))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           str(EXAMPLE_PLUGIN / "tests")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "2 passed" in proc.stdout


def test_help_explains_megafc_and_lists_plugin_groups(tmp_path):
    proc = megafc_cli(["--help"], cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith("megafc: Bayesian mega-analysis")
    assert "estimator: correlation, ledoit_wolf, partial_correlation, tangent" in proc.stdout
    assert "megafc-compare" in proc.stdout and "Hydra" in proc.stdout
    calibrate = megafc_cli(["--help"], cwd=tmp_path, script="megafc-calibrate")
    assert calibrate.returncode == 0 and "``" not in calibrate.stdout and "['" not in calibrate.stdout


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux /proc")
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_run_leaves_no_sampler_processes(tmp_path, signum):
    """SIGKILL during 2-process sampling: the chains die with megafc instead of sampling on.
    SIGTERM (a time limit, ``timeout``): megafc also removes its staging folder and lock and
    says it was terminated (exit 128 + 15)."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    exe = Path(sys.executable).parent / "megafc"
    args = [o for o in TINY if not o.startswith("pooling.")] + [
        "pooling.sampler=pymc", "pooling.chains=2", "pooling.cores=2", "pooling.draws=20000", "pooling.tune=1000",
        f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.Popen([str(exe), *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    children: list[int] = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(children) < 2 and proc.poll() is None:
            time.sleep(1)
            children = _children(proc.pid)
        assert len(children) >= 2, "the chains never started in their own processes"
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
        if signum == signal.SIGTERM:
            assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
            assert "terminated by signal 15; no results were written" in stderr
            run_dir = tmp_path / "run"
            left = sorted(p.name for p in run_dir.iterdir())
            assert not [n for n in left if n.startswith(".megafc")], f"left behind: {left}"
        for _ in range(20):
            alive = [c for c in children if _alive(c)]
            if not alive:
                break
            time.sleep(0.5)
        assert not alive, f"orphaned sampler processes {alive}"
    finally:
        for c in children:
            try:
                os.kill(c, signal.SIGKILL)
            except OSError:
                pass


def test_a_failing_reporter_leaves_no_partial_files_and_is_in_warnings(tmp_path):
    """A reporter that writes a file and then fails: the run still lands, without that file,
    and warnings.tsv says which reporter failed."""
    import types

    from conftest import compose
    from megafc.core import Reporter, hookimpl
    from megafc.core.pipeline import run_experiment
    from megafc.core.registry import build_registry

    class Broken(Reporter):
        """Writes half a report, then fails."""

        name = "broken_report"

        def write(self, folder, shown_as=None, sections=()):
            (folder / "half.pdf").write_text("%PDF-")
            (folder / "figures").mkdir(exist_ok=True)
            (folder / "figures" / "half.png").write_bytes(b"\x89PNG")
            raise RuntimeError("ran out of ideas")

    module = types.ModuleType("broken_reporter")
    module.megafc_reporters = hookimpl(lambda: [Broken])
    registry = build_registry(extra_plugins=[module])
    meta = [o for o in TINY if not o.startswith(("pooling.", "report"))] + ["pooling=meta", "report=true"]
    out = run_experiment(compose(meta, registry=registry), registry, tmp_path / "run")
    assert (out.run_dir / "report.html").is_file() and (out.run_dir / "effects.tsv").is_file()
    assert not (out.run_dir / "half.pdf").exists() and not (out.run_dir / "figures" / "half.png").exists()
    warnings = pd.read_csv(out.run_dir / "warnings.tsv", sep="\t")
    failed = warnings[warnings["message"].str.contains("reporter 'broken_report' could not write its report")]
    assert list(failed["stage"]) == ["write"] and list(failed["level"]) == ["error"]


def test_bad_diagnostics_fail_the_run_and_its_skipped_rerun(tmp_path):
    """fail_on_bad_diagnostics=true: exit 4 after writing the outputs, and again when a rerun of
    the same config skips the finished run (a resumed sweep or a CI retry must not turn it green)."""
    import json

    args = TINY + ["fail_on_bad_diagnostics=true", f"hydra.run.dir={tmp_path / 'run'}"]  # 60 draws: ESS too low
    first = megafc_cli(args, cwd=tmp_path)
    assert first.returncode == 4, first.stderr[-2000:]
    assert "diagnostics failed (rows flagged in effects.tsv or summaries.tsv" in first.stderr
    assert json.loads((tmp_path / "run" / "provenance.json").read_text())["diagnostics_ok"] is False
    again = megafc_cli(args, cwd=tmp_path)
    assert "already holds a complete run of this config; skipping" in again.stderr + again.stdout
    assert again.returncode == 4 and "diagnostics failed (rows flagged" in again.stderr
