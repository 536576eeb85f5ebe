"""One folder, one run: concurrent runs refuse, reruns leave no stale files, inputs are not confused.

Each case here once gave a silently wrong result folder (two runs' files mixed, a stale
posterior next to a new config, a scan compared with itself, an infinite z clipped quietly).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY, compose, megafc_cli
from megafc.core import InputError
from megafc.plugins.reports.compare import DEFAULT_OUT
from megafc.cli.app import check_output_folders, os_error_message
from megafc.core.errors import ConfigError
from megafc.cli.job_names import job_dirname
from megafc.core.run_folder import MANIFEST_FILE, FolderBusyError, StagedRun
from megafc.core.pipeline import run_experiment
from megafc.core.registry import build_registry

META = ["pooling=meta", "figures=false", "report=false"]
SMALL = [o for o in TINY if o.startswith(("dataset.", "atlas."))] + META


# -- concurrent runs ------------------------------------------------------------------------------


def test_second_run_into_a_busy_folder_is_refused(tmp_path):
    with StagedRun(tmp_path) as first:
        first.write_text("a.txt", "first run")
        with pytest.raises(FolderBusyError, match=str(tmp_path)) as info:
            StagedRun(tmp_path)
        assert f"pid {os.getpid()}" in str(info.value)
        assert first.staging.is_dir(), "the refused run removed the live run's staging folder"
        first.commit()
    # once the first run has finished, the folder is free again
    with StagedRun(tmp_path) as second:
        second.write_text("a.txt", "second run")
        second.commit()
    assert (tmp_path / "a.txt").read_text() == "second run"


def test_cli_run_into_a_folder_another_process_writes_exits_as_user_error(tmp_path):
    """A real second process: refused with exit 2, and the first run's files are its own."""
    run_dir = tmp_path / "same"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("first run's config\n")
    with StagedRun(run_dir) as first:
        first.write_text("scans.tsv", "first\n")
        second = megafc_cli(SMALL + ["seed=2", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
        assert second.returncode == 2, second.stderr[-2000:]
        assert "being written by another megafc run" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.staging.is_dir()
        first.commit()
    # Hydra rewrote .hydra/ for the refused run; the committed run restores its own
    assert (run_dir / ".hydra" / "config.yaml").read_text() == "first run's config\n"
    assert (run_dir / "scans.tsv").read_text() == "first\n"
    assert not list(run_dir.glob(".megafc-staging-*"))


# -- reruns into the same folder ------------------------------------------------------------------


def test_rerun_removes_files_the_new_run_does_not_write(tmp_path):
    (tmp_path / "my_notes.txt").write_text("not megafc's")
    with StagedRun(tmp_path) as first:
        first.write_text("posterior.nc", "old posterior")
        first.write_text("figures/a.png", "old figure")
        first.write_text("summaries.tsv", "old")
        first.write_json("provenance.json", {"run": 1})
        first.commit()
    with StagedRun(tmp_path) as second:
        second.write_text("summaries.tsv", "new")
        second.write_json("provenance.json", {"run": 2})
        second.commit()
    assert not (tmp_path / "posterior.nc").exists() and not (tmp_path / "figures").exists()
    assert (tmp_path / "summaries.tsv").read_text() == "new"
    assert json.loads((tmp_path / "provenance.json").read_text()) == {"run": 2}
    assert (tmp_path / "my_notes.txt").exists(), "a file megafc did not write was removed"
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert manifest == {"kind": "run", "entries": ["provenance.json", "summaries.tsv"],
                        "files": ["provenance.json", "summaries.tsv"]}


def test_rerun_keeps_files_a_user_put_in_megafcs_folders(tmp_path):
    with StagedRun(tmp_path) as first:
        first.write_text("figures/a.png", "old a")
        first.write_text("figures/b.png", "old b")
        first.write_json("provenance.json", {"run": 1})
        first.commit()
    (tmp_path / "figures" / "my_own_plot.png").write_text("the user's")
    (tmp_path / "figures" / "mine").mkdir()
    (tmp_path / "figures" / "mine" / "x.txt").write_text("also the user's")
    (tmp_path / "figures" / "link.png").symlink_to(tmp_path / "figures" / "my_own_plot.png")
    for run in (2, 3):  # kept by every later run, not only the next one
        with StagedRun(tmp_path) as rerun:
            rerun.write_text("figures/a.png", f"new a {run}")
            rerun.write_json("provenance.json", {"run": run})
            rerun.commit()
        figures = tmp_path / "figures"
        assert (figures / "a.png").read_text() == f"new a {run}"
        assert not (figures / "b.png").exists(), "the earlier run's figure this run did not draw was kept"
        assert (figures / "my_own_plot.png").read_text() == "the user's"
        assert (figures / "mine" / "x.txt").read_text() == "also the user's"
        assert (figures / "link.png").is_symlink(), "a link of the user's became a copy or went"
        assert not list(tmp_path.glob(".megafc-previous-*")) and not list(tmp_path.glob(".megafc-staging-*"))
    # a run that writes no figures/ at all: the folder stays, with the user's files only
    with StagedRun(tmp_path) as rerun:
        rerun.write_json("provenance.json", {"run": 4})
        rerun.commit()
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["link.png", "mine", "my_own_plot.png"]
    with StagedRun(tmp_path) as rerun:  # and the next run may write into it again
        rerun.write_text("figures/a.png", "new a 5")
        rerun.write_json("provenance.json", {"run": 5})
        rerun.commit()
    assert (tmp_path / "figures" / "a.png").read_text() == "new a 5"
    assert (tmp_path / "figures" / "my_own_plot.png").read_text() == "the user's"


@pytest.mark.parametrize("in_the_way", ["file", "symlink"])
def test_an_entry_megafc_did_not_write_in_the_way_is_refused_before_anything_moves(tmp_path, in_the_way):
    shared = tmp_path / "shared"
    shared.mkdir()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if in_the_way == "file":
        (run_dir / "figures").write_text("a file of the user's")
    else:
        (run_dir / "figures").symlink_to(shared)
    with pytest.raises(InputError, match=r"run/figures is in the way.*not written by an earlier megafc"):
        with StagedRun(run_dir) as staged:
            staged.write_text("effects.tsv", "new")
            staged.write_text("figures/a.png", "new")
            staged.write_json("provenance.json", {"run": 1})
            staged.commit()
    assert sorted(p.name for p in run_dir.iterdir()) == ["figures"], "something was moved in"
    assert not list(shared.iterdir())


def test_a_result_name_in_the_way_is_refused_before_the_run_starts(tmp_path, caplog):
    """A user's file (or an older version's results, which have no manifest) where a result goes
    was refused only at the commit, after the whole analysis had run (an hour of sampling lost)."""
    import logging

    (tmp_path / "effects.tsv").write_text("my own table\n")
    with caplog.at_level(logging.INFO, logger="megafc"), pytest.raises(InputError, match="effects.tsv"):
        run_experiment(compose(SMALL), build_registry(), tmp_path)
    assert "stage load" not in caplog.text, "the run did its work before refusing"
    assert (tmp_path / "effects.tsv").read_text() == "my own table\n"
    assert not list(tmp_path.glob(".megafc-*"))


def test_a_move_that_fails_halfway_puts_the_earlier_run_back(tmp_path, monkeypatch):
    import megafc.core.run_folder as run_folder

    with StagedRun(tmp_path) as first:
        first.write_text("effects.tsv", "run 1")
        first.write_text("scans.tsv", "run 1")
        first.write_text("figures/a.png", "run 1")
        first.write_json("provenance.json", {"run": 1})
        first.commit()
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    real_replace = os.replace

    failed = []

    def failing_replace(src, dst):
        if Path(dst) == tmp_path / "scans.tsv" and not failed:  # the second entry to move in, once
            failed.append(dst)
            raise OSError(28, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(run_folder.os, "replace", failing_replace)
    with pytest.raises(OSError):
        with StagedRun(tmp_path) as second:
            second.write_text("effects.tsv", "run 2")
            second.write_text("scans.tsv", "run 2")
            second.write_json("provenance.json", {"run": 2})
            second.commit()
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    after.pop(Path(".megafc.lock"), None), before.pop(Path(".megafc.lock"), None)
    assert after == before, "the earlier run's folder changed"
    assert not list(tmp_path.glob(".megafc-previous-*")) and not list(tmp_path.glob(".megafc-staging-*"))


def test_failed_rerun_keeps_the_previous_complete_run(tmp_path):
    with StagedRun(tmp_path) as first:
        first.write_text("effects.tsv", "complete")
        first.write_json("provenance.json", {"run": 1})
        first.commit()
    with pytest.raises(RuntimeError):
        with StagedRun(tmp_path) as second:
            second.write_text("effects.tsv", "half")
            raise RuntimeError("stage failed")
    assert (tmp_path / "effects.tsv").read_text() == "complete"
    assert (tmp_path / "provenance.json").exists()
    assert not (tmp_path / ".megafc.lock").exists(), "the failed run left its lock file"


def test_failed_run_into_a_new_folder_leaves_no_folder(tmp_path):
    new, existing = tmp_path / "new" / "run", tmp_path / "existing"
    existing.mkdir()
    for folder in (new, existing):
        with pytest.raises(RuntimeError):
            with StagedRun(folder) as staged:
                staged.write_text("effects.tsv", "half")
                raise RuntimeError("stage failed")
    assert not new.exists() and new.parent.exists()  # only the folder the run made itself
    assert existing.is_dir() and not (existing / "effects.tsv").exists()


def test_a_failed_or_skipped_rerun_leaves_the_record_of_the_results_in_the_folder(tmp_path):
    """Hydra writes a run's record (.hydra: config, overrides) before the run starts; it replaced
    the record of the results in the folder when a rerun failed, so megafc-compare labelled the
    earlier run's results with the failed run's overrides. It now goes in with the results."""
    run_dir = tmp_path / "run"
    first = megafc_cli(SMALL + [f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    record = (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert "pooling=meta" in record
    failed = megafc_cli(SMALL + ["qc.max_mean_fd=-3", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert failed.returncode == 2 and "qc.max_mean_fd" in failed.stderr
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == record
    skipped = megafc_cli(SMALL + ["seed=0", f"hydra.run.dir={run_dir}"], cwd=tmp_path)  # the same config
    assert skipped.returncode == 0 and "skipping" in (run_dir / "megafc.log").read_text()
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == record
    assert not list(run_dir.glob(".megafc-hydra-*")), "an incoming record was left behind"
    # a failed first run's folder says how it was started, as Hydra's would
    fresh = tmp_path / "fresh"
    assert megafc_cli(SMALL + ["qc.max_mean_fd=-3", f"hydra.run.dir={fresh}"], cwd=tmp_path).returncode == 2
    assert "qc.max_mean_fd=-3" in (fresh / ".hydra" / "overrides.yaml").read_text()
    assert not list(fresh.glob(".megafc-hydra-*"))


def test_a_killed_runs_incoming_record_is_cleared_and_still_names_its_job(tmp_path):
    from megafc.core.run_folder import hydra_records, incoming_hydra_record
    from megafc.plugins.reports.compare import _command_line

    dead = tmp_path / incoming_hydra_record(pid=2**22 + 12345)  # above Linux's pid limit: never running
    dead.mkdir()
    (dead / "overrides.yaml").write_text("- seed=7\n")
    assert hydra_records(tmp_path) == [dead]
    assert _command_line(tmp_path) == {"seed": "7"}  # a killed job still names its overrides
    live = tmp_path / incoming_hydra_record()
    live.mkdir()
    (live / "overrides.yaml").write_text("- seed=8\n")
    with StagedRun(tmp_path) as staged:
        assert not dead.exists() and live.is_dir()  # a dead process's record goes, a running one's stays
        staged.write_json("provenance.json", {})
        staged.commit()
    assert (tmp_path / ".hydra" / "overrides.yaml").read_text() == "- seed=8\n"


def test_pipeline_rerun_with_other_outputs_leaves_no_stale_files(tmp_path):
    run_dir = tmp_path / "x"
    run_experiment(compose(SMALL + ["figures=true", "derivatives=all"]), build_registry(), run_dir)
    assert (run_dir / "figures").is_dir() and (run_dir / "derivatives").is_dir()
    run_experiment(compose(SMALL + ["seed=3"]), build_registry(), run_dir)
    assert not (run_dir / "figures").exists() and not (run_dir / "derivatives").exists()
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["seed"] == 3
    assert "seed: 3" in (run_dir / "config.yaml").read_text()


# -- job folders of sweeps ------------------------------------------------------------------------


def test_job_folder_names_are_flat_short_and_distinct():
    a = job_dirname(["dataset.metadata=/data/study-a/meta.tsv", "pooling=meta"])
    b = job_dirname(["dataset.metadata=/data/study-b/meta.tsv", "pooling=meta"])
    assert "/" not in a and a != b
    assert a.startswith("dataset.metadata=meta.tsv-") and a.endswith(",pooling=meta")
    roots = job_dirname(["dataset.roots={a:/x/y,b:/z}", "atlas=schaefer"])
    assert "/" not in roots and "{" not in roots and ":" not in roots
    assert len(job_dirname([f"k{i}=/very/long/path/number/{i}" for i in range(30)])) <= 120
    assert job_dirname(["atlas=yeo"]) == "atlas=yeo"
    # the flagship real-data sweep: its swept choices stay readable when paths make the name too long
    real = ["experiment=girn2026", "atlas=girn2026", "dataset=fmriprep", "dataset.metadata=/data/metadata.tsv",
            "dataset.roots={psilo_1: /data/psilo_1/fmriprep, lsd_1: /data/lsd_1/fmriprep}"]
    names = {job_dirname([*real, f"denoiser={d}", f"aggregate.level={lv}"])
             for d in ("simple", "simple_gsr", "scrubbing", "compcor") for lv in ("network", "subnetwork")}
    assert len(names) == 8 and all(len(n) <= 120 for n in names)
    for d in ("simple", "simple_gsr", "scrubbing", "compcor"):
        assert sum(f",denoiser={d},aggregate.level=" in n for n in names) == 2


def test_runs_of_other_configs_started_in_the_same_second_get_their_own_folders(tmp_path):
    """The default run folder is the start time and the overrides: two configs launched together
    (a shell loop sending runs to the background) no longer meet in one folder, where the later run
    took the earlier one's results for a changed rerun and replaced them. Both run at once here."""
    from concurrent.futures import ThreadPoolExecutor

    from megafc.cli.job_names import run_dirname

    assert run_dirname("14-02-11", []) == "14-02-11"  # the plain `megafc` keeps its familiar name
    assert run_dirname("14-02-11", ["atlas=yeo", "dataset.metadata=/d/m.tsv"]).startswith("14-02-11_atlas=yeo,")
    assert run_dirname("t", ["x=a@b"]) != run_dirname("t", ["x=a_b"]) == "t_x=a_b"  # what a name loses, a hash keeps
    small = ["dataset.scale=0.15", "atlas.n_cortical=34", "pooling=meta", "report=false", "figures=false"]
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda extra: megafc_cli([*small, *extra], cwd=tmp_path), ([], ["qc.max_mean_fd=0.3"])))
    assert [d.returncode for d in done] == [0, 0], done[1].stderr[-3000:]
    folders = sorted(p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir())
    assert len(folders) == 2 and all((f / "provenance.json").exists() for f in folders)
    mine = [f for f in folders if f.name.endswith(",qc.max_mean_fd=0.3")]
    assert len(mine) == 1 and "max_mean_fd: 0.3" in (mine[0] / "config.yaml").read_text()


@pytest.mark.slow
def test_sweep_over_absolute_paths_gives_flat_jobs_that_compare_finds(tmp_path):
    sweep = tmp_path / "sweep"
    caches = [tmp_path / "site one" / "cache", tmp_path / "site-two" / "cache"]
    # the swept value is an absolute path: its slashes must not become folders
    out = megafc_cli(["--multirun", *SMALL, "extraction.cache_dir=" + ",".join(f"'{c}'" for c in caches),
                      f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 2 and all((j / "provenance.json").is_file() for j in jobs), [j.name for j in jobs]
    assert [j.name.split("_", 1)[0] for j in jobs] == ["0", "1"] and all(len(j.name) <= 125 for j in jobs)
    compare = megafc_cli([str(sweep)], cwd=tmp_path, script="megafc-compare")
    assert compare.returncode == 0, compare.stderr[-3000:]
    assert len(pd.read_csv(sweep / DEFAULT_OUT / "jobs.tsv", sep="\t")) == 2


def test_compare_finds_jobs_nested_at_any_depth(tmp_path):
    from megafc.plugins.reports.compare import _candidate_dirs

    deep = tmp_path / "0_dataset.metadata=" / "data" / "study" / "meta.tsv"
    deep.mkdir(parents=True)
    (deep / "provenance.json").write_text("{}")
    (deep / "figures").mkdir()
    (deep / "figures" / "provenance.json").write_text("{}")  # inside a job: not a job of its own
    assert _candidate_dirs(tmp_path, set()) == [deep]


# -- folders that cannot be written ---------------------------------------------------------------


def test_output_folder_under_a_file_is_refused_before_hydra(tmp_path):
    blocker = tmp_path / "results.txt"
    blocker.write_text("a file, not a folder")
    with pytest.raises(ConfigError, match="results.txt is a file"):
        check_output_folders([f"hydra.run.dir={blocker}/run1"])
    out = megafc_cli([*SMALL, f"hydra.run.dir={blocker}/run1"], cwd=tmp_path)
    assert out.returncode == 2 and "hydra.run.dir" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to any folder")
def test_read_only_output_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            check_output_folders([f"hydra.run.dir={ro}/run"])
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("code, words", [(28, "no space left"), (13, "permission denied"), (30, "read-only")])
def test_disk_and_permission_errors_are_user_errors_naming_the_path(code, words):
    message = os_error_message(OSError(code, os.strerror(code), "/data/out/effects.tsv"))
    assert message and words in message and "/data/out/effects.tsv" in message
    assert os_error_message(OSError(2, "No such file", "x")) is None  # other errors stay internal


# -- inputs that would silently distort the results -----------------------------------------------


LABELS = [f"17Networks_{h}_{n}_{i}" for n in ("VisCent", "DefaultA", "SomMotA") for h in ("LH", "RH") for i in (1, 2)]


def write_relmats(folder: Path, n_subjects: int = 4, seed: int = 0) -> Path:
    """Connectome TSVs (xcp_d style) and a metadata table with paths: drug and placebo per subject."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        for session, condition in (("drug", "drug"), ("placebo", "placebo")):
            x = rng.standard_normal((120, len(LABELS))) + rng.standard_normal((120, 1))
            r = np.corrcoef(x.T)
            path = folder / f"sub-{s:02d}_ses-{session}_stat-pearsoncorrelation_relmat.tsv"
            pd.DataFrame(r, index=LABELS, columns=LABELS).to_csv(path, sep="\t")
            rows.append({"dataset": "study", "subject": f"{s:02d}", "session": session, "drug": "psilocybin",
                         "condition": condition, "mean_fd": 0.1, "path": path.name})
    table = folder / "meta.tsv"
    pd.DataFrame(rows).to_csv(table, sep="\t", index=False)
    return table


def run_connectomes(table: Path, run_dir: Path, extra=()):
    cfg = compose(["dataset=connectomes", f"dataset.metadata={table}", "atlas=from_labels", *META, *extra])
    return run_experiment(cfg, build_registry(), run_dir)


def test_relmat_route_runs(tmp_path):
    out = run_connectomes(write_relmats(tmp_path), tmp_path / "run", ["estimator=ledoit_wolf"])
    assert (out.run_dir / "effects.tsv").is_file()
    # given connectomes: the configured estimator never ran, so the run does not cite it
    bib = (out.run_dir / "references.bib").read_text()
    assert "DerSimonian" in bib and "Ledoit" not in bib and "Ledoit" not in (out.run_dir / "methods.md").read_text()


def test_one_file_as_drug_and_control_is_refused(tmp_path):
    table = write_relmats(tmp_path)
    meta = pd.read_csv(table, sep="\t", dtype=str)
    meta.loc[1, "path"] = meta.loc[0, "path"]  # subject 00's placebo row points to the drug file
    meta.to_csv(table, sep="\t", index=False)
    with pytest.raises(InputError, match=r"scans '.*' and '.*' point to the same connectome .*sub-00_ses-drug"):
        run_connectomes(table, tmp_path / "run")
    assert not (tmp_path / "run" / "effects.tsv").exists()


def test_symlinked_and_copied_files_are_the_same_scan(tmp_path):
    table = write_relmats(tmp_path)
    placebo = tmp_path / "sub-01_ses-placebo_stat-pearsoncorrelation_relmat.tsv"
    drug = tmp_path / "sub-01_ses-drug_stat-pearsoncorrelation_relmat.tsv"
    placebo.unlink()
    placebo.symlink_to(drug)
    with pytest.raises(InputError, match="point to the same connectome"):
        run_connectomes(table, tmp_path / "run")
    placebo.unlink()
    shutil.copy(drug, placebo)
    with pytest.raises(InputError, match="byte-identical connectomes"):
        run_connectomes(table, tmp_path / "run")


def test_perfect_correlation_in_a_relmat_is_refused_or_reported(tmp_path, caplog):
    table = write_relmats(tmp_path)
    path = tmp_path / "sub-02_ses-drug_stat-pearsoncorrelation_relmat.tsv"
    mat = pd.read_csv(path, sep="\t", index_col=0)
    a, b = LABELS[0], LABELS[5]
    mat.loc[a, b] = mat.loc[b, a] = 1.0
    mat.to_csv(path, sep="\t")
    with pytest.raises(InputError, match=rf"{path.name}: off-diagonal correlation\(s\) of magnitude 1 between {a}-{b}"):
        run_connectomes(table, tmp_path / "run")
    with caplog.at_level("WARNING", logger="megafc"):
        out = run_connectomes(table, tmp_path / "run", ["dataset.perfect_correlation=warn"])
    warned = [r.getMessage() for r in caplog.records if "magnitude 1 clipped" in r.getMessage()]
    assert warned and path.name in warned[0] and f"{a}-{b}" in warned[0]
    assert (out.run_dir / "effects.tsv").is_file()
    with pytest.raises(ConfigError, match="dataset.perfect_correlation"):
        run_connectomes(table, tmp_path / "run2", ["dataset.perfect_correlation=clip"])


def test_changed_inputs_names_every_input_that_differs_from_the_finished_run(tmp_path):
    from datetime import datetime, timedelta, timezone

    from megafc.core.fingerprints import changed_inputs, fingerprint_file

    meta, data, bold = tmp_path / "meta.tsv", tmp_path / "sub-01.tsv", tmp_path / "sub-01_bold.nii.gz"
    for f, text in ((meta, "scan\n"), (data, "1 2\n"), (bold, "image")):
        f.write_text(text)
    run = tmp_path / "run"
    run.mkdir()
    started = datetime.now(timezone.utc) + timedelta(seconds=5)  # after every file above was written
    (run / "provenance.json").write_text(json.dumps({
        "started": started.isoformat(),
        "input_fingerprints": {"metadata": fingerprint_file(meta), str(data): fingerprint_file(data),
                               "synthetic_generator": "sha256:0"}}))
    pd.DataFrame({"scan_id": ["a"], "bold": [str(bold)]}).to_csv(run / "extraction.tsv", sep="\t", index=False)
    assert changed_inputs(run, str(meta)) == []
    data.write_text("1 3\n")
    meta.unlink()
    later = started.timestamp() + 60
    os.utime(bold, (later, later))
    assert changed_inputs(run, str(meta)) == [f"{meta} is gone", f"{data} has changed",
                                              f"{bold} was modified after the run"]
    # a folder fingerprinted by a plugin is its plugin's business; an unreadable extraction.tsv is said
    prov = json.loads((run / "provenance.json").read_text())
    (run / "provenance.json").write_text(json.dumps({**prov, "input_fingerprints": {str(tmp_path): "sha256:0"}}))
    (run / "extraction.tsv").write_text("scan_id\na\n")
    changed = changed_inputs(run)
    assert len(changed) == 1 and changed[0].startswith(f"{run / 'extraction.tsv'} cannot be read"), changed
    (run / "provenance.json").write_text("{")
    assert changed_inputs(run) == [f"{run / 'provenance.json'} cannot be read"]


def test_an_earlier_versions_run_folder_is_not_replaced_by_a_calibration(tmp_path):
    (tmp_path / "effects.tsv").write_text("the run's")
    (tmp_path / "provenance.json").write_text("{}")
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(["effects.tsv", "provenance.json"]))  # the old format
    with pytest.raises(InputError, match="holds a megafc run's results"):
        StagedRun(tmp_path, kind="calibration")
    assert (tmp_path / "effects.tsv").read_text() == "the run's"


def test_a_folder_holding_one_kind_of_output_is_not_replaced_by_another(tmp_path):
    """megafc-calibrate --out (or megafc-compare --out) pointed at a run's folder once deleted
    that run's results and said so only at INFO level."""
    with StagedRun(tmp_path) as run:
        run.write_text("effects.tsv", "the run's")
        run.write_json("provenance.json", {"run": 1})
        run.commit()
    for other in ("calibration", "comparison"):
        with pytest.raises(InputError, match=rf"holds a megafc run's results.*writing a {other} there would replace"):
            StagedRun(tmp_path, kind=other)
    assert (tmp_path / "effects.tsv").read_text() == "the run's" and (tmp_path / "provenance.json").exists()
    assert not list(tmp_path.glob(".megafc-staging-*")) and not (tmp_path / ".megafc.lock").exists()
    with StagedRun(tmp_path) as rerun:  # the same kind replaces it, as before
        rerun.write_text("effects.tsv", "the rerun's")
        rerun.commit()
    assert (tmp_path / "effects.tsv").read_text() == "the rerun's"


def test_files_the_config_names_are_compared_again_on_a_rerun(tmp_path, monkeypatch):
    """A rerun of the same config skipped a finished run whose atlas files had been edited since,
    or whose relative atlas.labels now named another folder's file: the stale results stood."""
    from megafc.core.fingerprints import changed_config_files, config_files

    for site in ("a", "b"):
        (tmp_path / site).mkdir()
        (tmp_path / site / "labels.tsv").write_text(f"index\tlabel\n1\t{site}\n")
    config = {"atlas": {"name": "custom", "labels": "labels.tsv", "cache_dir": str(tmp_path)}, "seed": 0}
    monkeypatch.chdir(tmp_path / "a")
    recorded = config_files(config)
    assert list(recorded) == ["atlas.labels"]  # a folder is no file, a name no path
    assert changed_config_files(recorded, config) == []
    (tmp_path / "a" / "labels.tsv").write_text("index\tlabel\n1\tedited\n")
    assert changed_config_files(recorded, config) == [f"atlas.labels: {tmp_path / 'a' / 'labels.tsv'} has changed"]
    monkeypatch.chdir(tmp_path / "b")  # the same relative path typed in another folder
    assert changed_config_files(recorded, config) == [
        f"atlas.labels now names {tmp_path / 'b' / 'labels.tsv'}, not the {tmp_path / 'a' / 'labels.tsv'} the run read"]


def test_a_file_both_fingerprinted_and_named_by_the_config_is_said_changed_once(tmp_path, monkeypatch):
    import json as _json

    from megafc.core.fingerprints import changed_inputs, config_files, fingerprint_file

    monkeypatch.chdir(tmp_path)
    (tmp_path / "meta.tsv").write_text("a\n")
    config = {"dataset": {"metadata": "meta.tsv"}}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "provenance.json").write_text(_json.dumps({
        "started": "2026-01-01T00:00:00+00:00", "input_fingerprints": {"metadata": fingerprint_file("meta.tsv")},
        "config_files": config_files(config)}))
    (tmp_path / "meta.tsv").write_text("b\n")
    assert changed_inputs(tmp_path / "run", "meta.tsv", config=config) == [
        f"dataset.metadata: {tmp_path / 'meta.tsv'} has changed"]
