"""Sweeps: shared extraction cache, leave-one-dataset-out, resume after a kill, launchers."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import TINY, assert_no_results, compose, megafc_cli
from fmriprep_tree import make_tree
from megafc.core import ConfigError
from megafc.core.pipeline import run_experiment
from megafc.core.registry import build_registry

#: Tiny synthetic data with the fast meta-analysis pooling: a job takes seconds.
META = [o for o in TINY if not o.startswith("pooling.")] + ["pooling=meta"]


def completed_jobs(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.glob("*/provenance.json"))


def test_leave_one_dataset_out(tmp_path):
    out = run_experiment(compose(META + ["loo_dataset=lsd_2"]), build_registry(), tmp_path / "run")
    left = out.scans[out.scans.dataset == "lsd_2"]
    assert left["excluded"].all() and (left["exclusion_reason"] == "left out (leave-one-dataset-out)").all()
    assert "lsd_2" not in set(out.pairs["dataset"])
    assert not out.result.effects["effect"].str.contains("lsd_2").any()
    with pytest.raises(ConfigError, match="loo_dataset.*'nope'"):
        run_experiment(compose(META + ["loo_dataset=nope"]), build_registry(), tmp_path / "bad")
    assert_no_results(tmp_path / "bad")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "local_parallel"])
def test_a_failing_job_fails_the_sweep_but_the_others_run(tmp_path, launcher):
    """The first job's bad config used to exit the whole sweep, with no word that the other
    jobs never ran (and, under joblib, a job cut off mid-run with its staging folder left).
    Under joblib the good job runs PyMC's own sampler with 2 chain processes, which once failed
    in loky's workers ("cannot pickle 'mmap.mmap' object")."""
    out = tmp_path / "sweep"
    job = META if launcher == "basic" else [o for o in TINY if o != "pooling.cores=1"] + ["pooling.cores=2"]
    proc = megafc_cli(["--multirun", f"hydra/launcher={launcher}", "loo_dataset=nope,lsd_2", *job,
                       f"hydra.sweep.dir={out}"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "config key 'loo_dataset' is 'nope'" in proc.stderr and "a job failed (exit 2)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert [p.name.split(",")[0] for p in completed_jobs(out)] == ["1_loo_dataset=lsd_2"]
    assert not list(out.glob("*/.megafc-staging-*")) and not list(out.glob("*/.megafc.lock"))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux /proc")
@pytest.mark.parametrize("signum, mode, whom", [
    (signal.SIGTERM, "--multirun", "launcher"), (signal.SIGKILL, "--multirun", "launcher"),
    (signal.SIGTERM, "hydra.mode=MULTIRUN", "launcher"),  # how experiment configs ask for a sweep
    (signal.SIGTERM, "--multirun", "worker"),
], ids=["SIGTERM", "SIGKILL", "SIGTERM-mode-from-config", "SIGTERM-one-worker"])
def test_a_killed_parallel_sweep_takes_its_running_jobs_along(tmp_path, signum, mode, whom):
    """A joblib sweep's jobs run in worker processes: killing the launcher (a time limit, Ctrl-\\,
    the out-of-memory killer) left them sampling on as orphans. SIGTERM is handed on, so each job
    removes its staging folder and the sweep exits 128 + 15; SIGKILL takes them along at once. A
    job terminated on its own ends the sweep as a terminated job (not as a crashed worker)."""
    from conftest import alive_process, child_processes

    sweep = tmp_path / "sweep"
    job = [o for o in TINY if not o.startswith("pooling.draws")] + ["pooling.draws=20000"]
    exe = Path(sys.executable).parent / "megafc"
    proc = subprocess.Popen([str(exe), mode, "hydra/launcher=local_parallel", "seed=1,2", *job,
                             f"hydra.sweep.dir={sweep}"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and len(list(sweep.glob("*/.megafc-staging-*"))) < 2:
            time.sleep(0.5)
        workers = child_processes(proc.pid)
        assert len(list(sweep.glob("*/.megafc-staging-*"))) == 2, "the jobs never started"
        if whom == "worker":
            loky = [w for w in workers if "LokyProcess" in Path(f"/proc/{w}/cmdline").read_text()]
            os.kill(loky[0], signum)
            _, stderr = proc.communicate(timeout=90)
            assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
            assert "terminated by signal 15; no results were written" in stderr
            assert "TerminatedWorkerError" not in stderr and "Traceback" not in stderr
            return
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=90)
        for _ in range(40):
            if not any(alive_process(w) for w in workers):
                break
            time.sleep(0.5)
        assert not [w for w in workers if alive_process(w)], "the sweep's workers outlived it"
        assert not completed_jobs(sweep)
        if signum == signal.SIGTERM:
            assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
            assert "the sweep was terminated by signal 15" in stderr
            left = sorted(p.name for p in sweep.glob("*/.megafc*"))
            assert not left, f"left behind: {left}"
            assert len(list(sweep.glob("*/.hydra/overrides.yaml"))) == 2  # each job says how it was started
    finally:
        for w in workers:
            try:
                os.kill(w, signal.SIGKILL)
            except OSError:
                pass


def test_killed_sweep_resumes_only_unfinished_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["--multirun", "seed=1,2,3", *META, f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}"]
    exe = Path(sys.executable).parent / "megafc"
    proc = subprocess.Popen([str(exe), *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while not (sweep / "0" / "provenance.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.name: (p / "provenance.json").stat().st_mtime_ns for p in completed_jobs(sweep)}
    assert "0" in done_before and len(done_before) < 3, done_before
    # a killed job may leave its staging folder, but no result files, and never counts as complete
    from conftest import RESULT_FILES

    for job in {"1", "2"} - set(done_before):
        assert not [f for f in RESULT_FILES if (sweep / job / f).exists()]
    again = megafc_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    done_after = {p.name: (p / "provenance.json").stat().st_mtime_ns for p in completed_jobs(sweep)}
    assert set(done_after) == {"0", "1", "2"}
    for job, mtime in done_before.items():
        assert done_after[job] == mtime, f"job {job} was recomputed"
    assert "skipping" in (sweep / "0" / "megafc.log").read_text()
    # a different config in the same place is not mistaken for a finished one
    cfg = json.loads((sweep / "0" / "provenance.json").read_text())["config_fingerprint"]
    assert cfg != json.loads((sweep / "1" / "provenance.json").read_text())["config_fingerprint"]


@pytest.mark.slow
def test_submitit_local_launcher(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    proc = megafc_cli(["--multirun", "hydra/launcher=submitit_local_megafc", "estimator=correlation,ledoit_wolf",
                       *META, f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = completed_jobs(sweep)
    assert [j.name for j in jobs] == ["0", "1"]
    names = {json.loads((j / "provenance.json").read_text())["plugins"]["estimator"]["name"] for j in jobs}
    assert names == {"correlation", "ledoit_wolf"}
    assert (sweep / ".submitit").is_dir()


@pytest.mark.slow
def test_sweep_extracts_each_scan_once_per_atlas_and_denoiser(tmp_path):
    tree = make_tree(tmp_path / "data", n_subjects=2, n_volumes=60)
    # a second atlas: the same regions, each block shrunk to its lower corner voxel layer
    img = nib.load(tree.atlas_image)
    labels = np.asarray(img.dataobj).copy()
    labels[:, :, 1:] = 0
    second = tmp_path / "data" / "atlas2_dseg.nii.gz"
    nib.Nifti1Image(labels, img.affine).to_filename(second)
    overrides = [o for o in tree.overrides() if not o.startswith(("atlas.image", "denoiser"))]
    sweep, cache = tmp_path / "sweep", tmp_path / "cache"
    proc = megafc_cli([
        "--multirun", f"atlas.image={tree.atlas_image},{second}", "denoiser=none,simple",
        "estimator=correlation,ledoit_wolf", "pooling=meta",  # estimators share the extracted timeseries
        *overrides, "figures=false", "report=false", f"extraction.cache_dir={cache}", f"hydra.sweep.dir={sweep}",
        "pooling.motion=false",  # 2 subjects per site: with FD, meta has no residual degrees of freedom
        "hydra.sweep.subdir=${hydra.job.num}",
    ], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = completed_jobs(sweep)
    assert len(jobs) == 8
    extracted = {}
    for job in jobs:
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(job / "config.yaml")
        key = (cfg.atlas.image, cfg.denoiser.name)
        ext = pd.read_csv(job / "extraction.tsv", sep="\t")
        extracted.setdefault(key, []).append(int((~ext["cached"]).sum()))
    assert len(extracted) == 4
    for key, fresh in extracted.items():
        assert sorted(fresh) == [0, 8], (key, fresh)  # one job extracts all 8 scans, the other none
    assert len(list(cache.glob("*/*.tsv"))) == 4 * 8
    # the comparison gathers all 8 pipelines into one robustness table and report
    cmp = megafc_cli([str(sweep)], cwd=tmp_path, script="megafc-compare")
    assert cmp.returncode == 0, cmp.stderr[-2000:]
    table = pd.read_csv(sweep / "comparison" / "robustness.tsv", sep="\t")
    overall = table[table.effect == "overall"]
    assert (overall["n_pipelines"] == 8).all()
    assert len(overall) == 28  # 7 networks
    means = overall.filter(like="mean[")
    assert means.shape[1] == 8
    agree = (np.sign(means).nunique(axis=1) == 1)
    assert (overall["sign_agree"].astype(bool) == agree).all()
    assert (sweep / "comparison" / "report.html").exists()
