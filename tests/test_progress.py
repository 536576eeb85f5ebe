"""Progress lines reach the log (so megafc.log, SLURM and redirected output), not only a terminal."""

import re
import time

import numpy as np

from megafc.core import progress
from megafc.core.progress import Heartbeat


def test_heartbeat_logs_elapsed_done_and_time_left(caplog):
    assert not progress.running()
    with caplog.at_level("INFO", logger="megafc"):
        with Heartbeat("sampling", every=0.05, total=10) as beat:
            assert progress.running()  # a plugin inside a stage does not start a second one
            time.sleep(0.12)
            beat.advance(5)
            time.sleep(0.12)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sampling:")]
    assert len(lines) >= 3
    assert "elapsed" in lines[0] and "5/10 (50%)" in lines[-1] and "s left" in lines[-1]
    n = len(caplog.records)
    time.sleep(0.15)
    assert len(caplog.records) == n, "the heartbeat kept logging after the step ended"


def test_sampling_logs_start_heartbeat_and_end(caplog, monkeypatch):
    import pymc as pm

    from megafc.plugins.pooling.pymc_scan_level import PyMCPooling
    from megafc.plugins.pooling.design import sample

    monkeypatch.setattr(progress, "EVERY", 0.01)
    c = PyMCPooling.Config(draws=400, tune=200, chains=1, cores=1, sampler="pymc", progressbar=False)
    with pm.Model() as model:
        pm.Normal("x", 0, 1, shape=50)
    with caplog.at_level("INFO", logger="megafc"):
        idata = sample(model, c, "pymc", seed=1)
    lines = [r.getMessage() for r in caplog.records]
    assert idata.posterior.sizes["draw"] == 400 and np.isfinite(idata.posterior["x"]).all()
    assert any("sampling 1 chains x (200 tune + 400 draws) with pymc" in m for m in lines)
    assert any(m.startswith("pooling: sampled in") and "divergent" in m for m in lines)
    assert "pooling: summarising the posterior ..." in lines  # the next stage is named at once
    # PyMC's own sampler counts its draws: the heartbeat says how far it is
    assert any(re.search(r"pooling: sampling: \d+ s elapsed, \d+/600 \(\d+%\)", m) for m in lines), lines
