"""experiment=girn2026: the paper's analysis as one command (a reduced version of it here)."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from conftest import TINY, compose, megafc_cli


def test_girn2026_composes_the_papers_choices():
    cfg = compose(["experiment=girn2026"])
    assert cfg.dataset.name == "synthetic" and cfg.dataset.confounds is True
    assert cfg.atlas.name == "synthetic" and cfg.pooling.name == "pymc"
    assert "atlas 'synthetic'" in cfg.notes[1] and "atlas=girn2026" in cfg.notes[1]
    # real data: the same experiment with the paper's atlas and another dataset composes too
    real = compose(["experiment=girn2026", "atlas=girn2026", "dataset=connectomes"])
    assert real.dataset.name == "connectomes" and real.atlas.name == "combined"
    assert (real.atlas.cortical.n_rois, real.atlas.cortical.yeo_networks) == (400, 17)
    assert {real.atlas[p].source for p in ("cortical", "subcortical", "cerebellar")} == {"templateflow"}
    assert "atlas 'combined'" in real.notes[1]


@pytest.mark.slow
def test_girn2026_reduced_runs_four_pipelines_and_compares_them(tmp_path):
    """Four denoising pipelines on the synthetic study (network level, two pairs + the
    summaries, tiny MCMC); the sweep ends with the comparison and its specification curve."""
    sweep = tmp_path / "girn 2026"
    overrides = [o for o in TINY if not o.startswith(("dataset.scale", "pooling.draws"))] + [
        "dataset.scale=0.1", "pooling.draws=40", "aggregate.level=network",
        "aggregate.pairs=[[Default,Vis],[Caudate,SomMot]]", f"dataset.confounds_dir={tmp_path / 'confounds'}",
        "pooling.session_order=false"]  # the pipelines are the point here; the order slope costs ~30% a fit
    proc = megafc_cli(["experiment=girn2026", *overrides, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = {yaml.safe_load((p / "config.yaml").read_text())["denoiser"]["name"]: p
            for p in sweep.iterdir() if (p / "provenance.json").exists()}
    assert set(jobs) == {"simple", "simple_gsr", "scrubbing", "compcor"}
    # the note about the atlas stand-in reaches the log and the methods
    for j in jobs.values():
        assert "offline stand-in" in (j / "methods.md").read_text()
        assert "note: atlas 'synthetic'" in (j / "megafc.log").read_text()
    # the denoisers act on the synthetic study: global signal regression lowers mean FC
    fc = {d: pd.read_csv(j / "network_pairs.tsv", sep="\t")["fc"].mean() for d, j in jobs.items()}
    assert fc["simple_gsr"] < fc["simple"] - 0.05
    comparison = sweep / "comparison"
    report = (comparison / "report.html").read_text()
    assert 'id="specification-curve"' in report and "data:image/png;base64," in report
    assert (comparison / "figures" / "specification_curve.png").stat().st_size > 10_000
    summaries = pd.read_csv(comparison / "summaries_long.tsv", sep="\t")
    tu = summaries[(summaries["summary"] == "transmodal-unimodal") & (summaries["effect"] == "overall")]
    assert tu["pipeline"].nunique() == 4 and tu["hdi_low"].le(tu["mean"]).all()
