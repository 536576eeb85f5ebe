"""An example megafc plugin package: adds the ``shrunk_partial_correlation`` estimator.

Use it with ``megafc estimator=shrunk_partial_correlation`` (optionally ``estimator.shrinkage=0.2``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from megafc.core import ConfigError, ConnectivityEstimator, hookimpl


class PartialCorrelation(ConnectivityEstimator):
    """Partial correlation from a shrunk precision matrix, Fisher z-transformed."""

    name = "shrunk_partial_correlation"

    @dataclass
    class Config:
        #: Shrinkage of the covariance toward its diagonal before inversion, in [0, 1).
        shrinkage: float = 0.1

    def __init__(self, config=None):
        super().__init__(config)
        if not 0 <= self.config.shrinkage < 1:
            raise ConfigError(f"config key 'estimator.shrinkage' is {self.config.shrinkage}; expected in [0, 1)")

    def estimate(self, timeseries: np.ndarray) -> np.ndarray:
        x = (timeseries - timeseries.mean(0)) / timeseries.std(0)
        cov = np.cov(x, rowvar=False)
        s = self.config.shrinkage
        cov = (1 - s) * cov + s * np.diag(np.diag(cov))
        prec = np.linalg.inv(cov)
        d = np.sqrt(np.diag(prec))
        pcorr = -prec / np.outer(d, d)
        z = np.arctanh(np.clip(pcorr, -0.9999999, 0.9999999))
        np.fill_diagonal(z, 0.0)
        return (z + z.T) / 2


@hookimpl
def megafc_estimators():
    return [PartialCorrelation]
