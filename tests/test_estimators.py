import numpy as np
import pytest

from megafc.core import ConfigError
from megafc.plugins.estimators.correlation import FisherZCorrelation, LedoitWolfCorrelation


@pytest.fixture
def ts():
    rng = np.random.default_rng(3)
    shared = rng.standard_normal((150, 1))
    return shared + rng.standard_normal((150, 6))


def test_correlation_is_fisher_z_of_pearson(ts):
    z = FisherZCorrelation().estimate(ts)
    expected = np.arctanh(np.corrcoef(ts, rowvar=False))
    off = ~np.eye(6, dtype=bool)
    assert np.allclose(z[off], expected[off], atol=1e-6)
    assert np.all(np.diag(z) == 0) and np.allclose(z, z.T)


def test_ledoit_wolf_shrinks_toward_zero(ts):
    off = ~np.eye(6, dtype=bool)
    plain = FisherZCorrelation().estimate(ts)[off]
    shrunk = LedoitWolfCorrelation().estimate(ts)[off]
    assert np.all(np.abs(shrunk) < np.abs(plain))
    full = LedoitWolfCorrelation(LedoitWolfCorrelation.Config(shrinkage=1.0)).estimate(ts)
    assert np.allclose(full[off], 0)


def test_ledoit_wolf_shrinkage_range():
    with pytest.raises(ConfigError, match="estimator.shrinkage"):
        LedoitWolfCorrelation(LedoitWolfCorrelation.Config(shrinkage=2.0))


def test_partial_correlation_removes_shared_drive():
    """A -> B -> C chain: A and C correlate, but their partial correlation given B is ~0."""
    from megafc.plugins.estimators.nilearn_kinds import PartialCorrelation

    rng = np.random.default_rng(3)
    a = rng.standard_normal(4000)
    b = a + rng.standard_normal(4000)
    c = b + rng.standard_normal(4000)
    ts = np.column_stack([a, b, c])
    z = PartialCorrelation().estimate(ts)
    full = FisherZCorrelation().estimate(ts)
    assert full[0, 2] > 0.4 and abs(z[0, 2]) < 0.05 and z[0, 1] > 0.4 and z[1, 2] > 0.4
    assert np.allclose(z, z.T) and np.all(np.diag(z) == 0)
    with pytest.raises(ConfigError, match="estimator.shrinkage"):
        PartialCorrelation(PartialCorrelation.Config(shrinkage=1.0))


def test_tangent_is_group_level_and_matches_nilearn(tmp_path):
    from nilearn.connectome import ConnectivityMeasure
    from sklearn.covariance import LedoitWolf

    from megafc.core.pipeline import estimate_connectomes
    from megafc.plugins.atlases.synthetic import SyntheticAtlas
    from megafc.plugins.estimators.nilearn_kinds import TangentSpace

    atlas = SyntheticAtlas(SyntheticAtlas.Config(n_cortical=34, subcortical=False, n_cerebellar=0)).load()
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((atlas.n_regions, atlas.n_regions)) * 0.3 + np.eye(atlas.n_regions)
    ts = {f"s{i}": rng.standard_normal((120, atlas.n_regions)) @ mix for i in range(5)}
    conn = estimate_connectomes(TangentSpace(), ts, list(ts), atlas)
    ref = ConnectivityMeasure(cov_estimator=LedoitWolf(store_precision=False), kind="tangent",
                              standardize="zscore_sample").fit_transform(list(ts.values()))
    off = ~np.eye(atlas.n_regions, dtype=bool)
    assert np.allclose(conn.matrices[2][off], ref[2][off], atol=1e-8)
    # each scan depends on the others through the group mean: a group of 4 gives other values
    fewer = estimate_connectomes(TangentSpace(), ts, list(ts)[:4], atlas)
    assert not np.allclose(fewer.matrices[0], conn.matrices[0])
    with pytest.raises(ConfigError, match="group-level"):
        TangentSpace().estimate(ts["s0"])


def test_tangent_runs_end_to_end(tmp_path):
    """Through the pipeline on timeseries, with the deterministic meta pooling."""
    from conftest import TINY, compose
    from megafc.core.pipeline import run_experiment
    from megafc.core.registry import build_registry

    small = [o for o in TINY if o.startswith(("dataset.", "atlas.", "figures", "report"))]
    out = run_experiment(compose(small + ["estimator=tangent", "pooling=meta"]), build_registry(), tmp_path / "run")
    assert "tangent" in (out.run_dir / "methods.md").read_text()
    assert np.isfinite(out.result.effects["mean"]).all()
