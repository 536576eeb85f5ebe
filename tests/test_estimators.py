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
