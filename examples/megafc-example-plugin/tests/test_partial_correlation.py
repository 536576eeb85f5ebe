import numpy as np
import pytest

from megafc.core import ConfigError
from megafc_example_plugin import PartialCorrelation


def test_shrunk_partial_correlation_recovers_conditional_independence():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(2000)
    b = a + 0.5 * rng.standard_normal(2000)  # b depends on a
    c = b + 0.5 * rng.standard_normal(2000)  # c depends on a only through b
    z = PartialCorrelation(PartialCorrelation.Config(shrinkage=0.0)).estimate(np.column_stack([a, b, c]))
    assert z.shape == (3, 3) and np.allclose(z, z.T)
    assert abs(z[0, 2]) < 0.1 < z[0, 1]


def test_bad_shrinkage_is_a_config_error():
    with pytest.raises(ConfigError, match="estimator.shrinkage"):
        PartialCorrelation(PartialCorrelation.Config(shrinkage=1.5))
