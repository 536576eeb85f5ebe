"""Correlation-based connectivity via nilearn's ConnectivityMeasure, Fisher z-transformed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from megafc.core import FISHER_Z_MAX_ABS_R as MAX_ABS_R
from megafc.core import ConfigError, ConnectivityEstimator


def fisher_z(r: np.ndarray) -> np.ndarray:
    z = np.arctanh(np.clip(r, -MAX_ABS_R, MAX_ABS_R))
    np.fill_diagonal(z, 0.0)
    return z


class FisherZCorrelation(ConnectivityEstimator):
    """Pearson correlation (sample covariance), Fisher z-transformed."""

    name = "correlation"
    stat_entity = "pearsoncorrelation"

    def _cov_estimator(self):
        from sklearn.covariance import EmpiricalCovariance

        return EmpiricalCovariance(store_precision=False)

    def estimate(self, timeseries: np.ndarray) -> np.ndarray:
        from nilearn.connectome import ConnectivityMeasure

        measure = ConnectivityMeasure(cov_estimator=self._cov_estimator(), kind="correlation", standardize=False)
        r = measure.fit_transform([timeseries])[0]
        return fisher_z(r)


class LedoitWolfCorrelation(FisherZCorrelation):
    """Correlation from the Ledoit-Wolf shrunk covariance, Fisher z-transformed.

    Shrinkage stabilises estimates when regions outnumber volumes; it also pulls
    correlations toward zero, so effects are smaller than with plain correlation.
    """

    name = "ledoit_wolf"
    stat_entity = "ledoitwolfcorrelation"
    references = [
        "Pedregosa F, Varoquaux G, Gramfort A, et al. (2011) Scikit-learn: machine learning in Python. "
        "J Mach Learn Res 12:2825-2830",
        "Ledoit O, Wolf M (2004) A well-conditioned estimator for large-dimensional covariance matrices. "
        "J Multivar Anal 88:365-411",
    ]

    @dataclass
    class Config:
        #: Fixed shrinkage in [0, 1]; null estimates it (Ledoit & Wolf 2004).
        shrinkage: float | None = None

    def __init__(self, config=None):
        super().__init__(config)
        s = self.config.shrinkage
        if s is not None and not 0 <= s <= 1:
            raise ConfigError(f"config key 'estimator.shrinkage' is {s}; expected a value in [0, 1] or null")

    def _cov_estimator(self):
        return shrunk_covariance(self.config.shrinkage)


def shrunk_covariance(shrinkage: float | None):
    """Ledoit-Wolf shrinkage (estimated) when ``shrinkage`` is None, else that fixed shrinkage."""
    from sklearn.covariance import LedoitWolf, ShrunkCovariance

    if shrinkage is None:
        return LedoitWolf(store_precision=False)
    return ShrunkCovariance(shrinkage=shrinkage, store_precision=False)
