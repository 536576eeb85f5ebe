"""Partial correlation and tangent-space connectivity via nilearn's ConnectivityMeasure."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from megafc.core import ConfigError, ConnectivityEstimator

from .correlation import fisher_z


def _cov_estimator(shrinkage: float | None):
    from sklearn.covariance import LedoitWolf, ShrunkCovariance

    if shrinkage is None:
        return LedoitWolf(store_precision=False)
    return ShrunkCovariance(shrinkage=shrinkage, store_precision=False)


def _check_shrinkage(s: float | None) -> None:
    if s is not None and not 0 <= s < 1:
        raise ConfigError(f"config key 'estimator.shrinkage' is {s}; expected a value in [0, 1) or null")


class PartialCorrelation(ConnectivityEstimator):
    """Partial correlation (from the Ledoit-Wolf shrunk precision matrix), Fisher z-transformed.

    Each edge is the correlation of two regions after removing every other region's signal:
    direct rather than shared coupling. Needs clearly more volumes than regions.
    """

    name = "partial_correlation"

    @dataclass
    class Config:
        #: Fixed covariance shrinkage in [0, 1); null estimates it (Ledoit & Wolf 2004).
        shrinkage: float | None = None

    def __init__(self, config=None):
        super().__init__(config)
        _check_shrinkage(self.config.shrinkage)

    def estimate(self, timeseries: np.ndarray) -> np.ndarray:
        from nilearn.connectome import ConnectivityMeasure

        measure = ConnectivityMeasure(cov_estimator=_cov_estimator(self.config.shrinkage), kind="partial correlation",
                                      standardize="zscore_sample")
        return fisher_z(measure.fit_transform([timeseries])[0])


class TangentSpace(ConnectivityEstimator):
    """Tangent-space connectivity (Varoquaux et al. 2010): each scan's covariance relative to the
    group's geometric mean, as nilearn's ConnectivityMeasure(kind="tangent") computes it.

    Group-level: every included scan enters the reference mean. Values are tangent-space
    coordinates, not correlations; drug-minus-control differences of their network averages
    are still differences on one common scale (Dadi et al. 2019 found it the most predictive).
    """

    name = "tangent"
    group_level = True

    @dataclass
    class Config:
        #: Fixed covariance shrinkage in [0, 1); null estimates it (Ledoit & Wolf 2004).
        shrinkage: float | None = None

    def __init__(self, config=None):
        super().__init__(config)
        _check_shrinkage(self.config.shrinkage)

    def estimate(self, timeseries: np.ndarray) -> np.ndarray:
        raise ConfigError("estimator 'tangent' needs every scan at once (it is group-level): use estimate_group")

    def estimate_group(self, timeseries: list[np.ndarray]) -> list[np.ndarray]:
        from nilearn.connectome import ConnectivityMeasure

        if len(timeseries) < 2:
            raise ConfigError("estimator 'tangent' needs at least 2 scans to form the group's mean covariance")
        measure = ConnectivityMeasure(cov_estimator=_cov_estimator(self.config.shrinkage), kind="tangent",
                                      standardize="zscore_sample")
        out = measure.fit_transform(timeseries)
        return [(m + m.T) / 2 for m in out]
