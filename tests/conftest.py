"""Shared fixtures: composed configs, small runs, and a third-party plugin install."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_PLUGIN = REPO / "examples" / "megafc-example-plugin"

#: Small, fast settings: ~40 subjects, 7 cortical networks + subcortex + cerebellum, tiny MCMC.
TINY = [
    "dataset.scale=0.15",
    "dataset.n_volumes=80",
    "atlas.n_cortical=34",
    "atlas.n_cerebellar=2",
    "pooling.draws=60",
    "pooling.tune=60",
    "pooling.chains=2",
    "pooling.cores=1",
    "pooling.sampler=pymc",
    "pooling.max_treedepth=5",  # tiny runs check the plumbing, not the posterior
    "figures=false",
    "report=false",
]


def compose(overrides: list[str], registry=None):
    """The run config exactly as ``megafc <overrides>`` would compose it."""
    from megafc.core.config import compose as compose_config

    return compose_config(overrides, registry)


@pytest.fixture(scope="session")
def tiny_pymc_run(tmp_path_factory):
    """One tiny default run with figures and report, shared by the pipeline and report tests."""
    from megafc.core.pipeline import run_experiment
    from megafc.core.registry import build_registry

    cfg = compose([o for o in TINY if o != "figures=false"] + ["figures.formats=[png,svg]", "report=true"])
    return run_experiment(cfg, build_registry(), tmp_path_factory.mktemp("tiny_pymc"))


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


def megafc_cli(args: list[str], cwd: Path, env_extra: dict | None = None, script: str = "megafc", timeout: int = 600):
    """Run an installed megafc console script; returns the CompletedProcess."""
    exe = Path(sys.executable).parent / script
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("MEGAFC_TRACEBACK", None)
    env.update(env_extra or {})
    return subprocess.run(
        [str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def alive_process(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def child_processes(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry))
    return out


BROKEN_PLUGIN = '''
import numpy as np
from megafc.core import ConnectivityEstimator, hookimpl


class NonSquare(ConnectivityEstimator):
    """Returns a matrix of the wrong shape (a deliberately broken plugin)."""

    name = "malformed"

    def estimate(self, timeseries):
        return np.zeros((timeseries.shape[1], timeseries.shape[1] + 1))


class Asymmetric(ConnectivityEstimator):
    """Returns a non-symmetric matrix (a deliberately broken plugin)."""

    name = "asymmetric"

    def estimate(self, timeseries):
        n = timeseries.shape[1]
        return np.triu(np.ones((n, n)))


@hookimpl
def megafc_estimators():
    return [NonSquare, Asymmetric]
'''


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> Path:
    """Install the example plugin and a broken test plugin into a private --target folder."""
    site = tmp_path_factory.mktemp("site")
    broken = tmp_path_factory.mktemp("broken_pkg")
    (broken / "megafc_broken_plugin").mkdir()
    (broken / "megafc_broken_plugin" / "__init__.py").write_text(BROKEN_PLUGIN)
    (broken / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "megafc-broken-plugin"
        version = "0.0.1"
        [project.entry-points.megafc]
        broken = "megafc_broken_plugin"
        [tool.setuptools]
        packages = ["megafc_broken_plugin"]
    """))
    for pkg in (EXAMPLE_PLUGIN, broken):
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
             "--no-build-isolation", "--target", str(site), str(pkg)],
            check=True, capture_output=True, text=True,
        )
    return site


RESULT_FILES = ("scans.tsv", "effects.tsv", "network_pairs.tsv", "posterior.nc", "provenance.json", "diagnostics.tsv")


def assert_no_results(run_dir: Path) -> None:
    if not run_dir.exists():
        return
    present = [f for f in RESULT_FILES if (run_dir / f).exists()]
    staging = [p.name for p in run_dir.glob(".megafc-staging-*")]
    assert not present and not staging, f"half-written results left in {run_dir}: {present + staging}"
