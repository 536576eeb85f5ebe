"""Partial correlation and tangent-space connectivity via nilearn's ConnectivityMeasure."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from megafc.core import ConfigError, ConnectivityEstimator

from .correlation import fisher_z, shrunk_covariance


class _NilearnMeasure(ConnectivityEstimator):
    """What the nilearn kinds share: a (Ledoit-Wolf or fixed) shrunk covariance of z-scored series."""

    #: nilearn's ConnectivityMeasure ``kind``.
    measure_kind = ""

    @dataclass
    class Config:
        #: Fixed covariance shrinkage in [0, 1); null estimates it (Ledoit & Wolf 2004).
        shrinkage: float | None = None

    def __init__(self, config=None):
        super().__init__(config)
        s = self.config.shrinkage
        if s is not None and not 0 <= s < 1:
            raise ConfigError(f"config key 'estimator.shrinkage' is {s}; expected a value in [0, 1) or null")

    def measure(self):
        from nilearn.connectome import ConnectivityMeasure

        return ConnectivityMeasure(cov_estimator=shrunk_covariance(self.config.shrinkage), kind=self.measure_kind,
                                   standardize="zscore_sample")


class PartialCorrelation(_NilearnMeasure):
    """Partial correlation (from the Ledoit-Wolf shrunk precision matrix), Fisher z-transformed.

    Each edge is the correlation of two regions after removing every other region's signal:
    direct rather than shared coupling. Needs clearly more volumes than regions.
    """

    name = "partial_correlation"
    measure_kind = "partial correlation"

    def estimate(self, timeseries: np.ndarray) -> np.ndarray:
        return fisher_z(self.measure().fit_transform([timeseries])[0])


class TangentSpace(_NilearnMeasure):
    """Tangent-space connectivity (Varoquaux et al. 2010): each scan's covariance relative to the
    group's geometric mean, as nilearn's ConnectivityMeasure(kind="tangent") computes it.

    Group-level: every included scan enters the reference mean. Values are tangent-space
    coordinates, not correlations; drug-minus-control differences of their network averages
    are still differences on one common scale (Dadi et al. 2019 found it the most predictive).
    """

    name = "tangent"
    measure_kind = "tangent"
    group_level = True
    fisher_z = False

    def estimate(self, timeseries: np.ndarray) -> np.ndarray:
        raise ConfigError("estimator 'tangent' needs every scan at once (it is group-level): use estimate_group")

    def estimate_group(self, timeseries: list[np.ndarray]) -> list[np.ndarray]:
        if len(timeseries) < 2:
            raise ConfigError("estimator 'tangent' needs at least 2 scans to form the group's mean covariance")
        return [(m + m.T) / 2 for m in self.measure().fit_transform(timeseries)]
