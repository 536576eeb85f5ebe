"""An example megafc plugin package: adds the ``shrunk_partial_correlation`` estimator and,
to the report of every run that uses it, a section about it (with what to cite).

Use it with ``megafc estimator=shrunk_partial_correlation`` (optionally ``estimator.shrinkage=0.2``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from megafc.core import ConfigError, ConnectivityEstimator, hookimpl
from megafc.core.report import ReportSection, Run, esc


class PartialCorrelation(ConnectivityEstimator):
    """Partial correlation from a shrunk precision matrix, Fisher z-transformed."""

    name = "shrunk_partial_correlation"
    #: What to cite when the estimator is used: megafc collects it into methods.md,
    #: provenance.json and references.bib.
    references = [
        "Smith SM, Miller KL, Salimi-Khorshidi G, Webster M, Beckmann CF, Nichols TE, Ramsey JD, Woolrich MW "
        "(2011) Network modelling methods for FMRI. NeuroImage 54:875-891",
    ]

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


#: What a reader of the report section below should cite.
SECTION_REFERENCE = (
    "Marrelec G, Krainik A, Duffau H, Pelegrini-Issac M, Lehericy S, Doyon J, Benali H (2006) Partial "
    "correlation for functional brain interactivity investigation in functional MRI. NeuroImage 32:228-237"
)


def partial_correlation_section(run: Run) -> str:
    """What a partial-correlation connectome means, with this run's shrinkage."""
    shrinkage = run.cfg("estimator", "shrinkage", default="?")
    return (f"<p>Connectivity is partial correlation: each edge is the correlation of two regions after "
            f"every other region is regressed out, from a covariance shrunk toward its diagonal by "
            f"<code>{esc(shrinkage)}</code> (<code>estimator.shrinkage</code>). Direct couplings therefore "
            f"look stronger, and couplings relayed through third regions weaker, than with full "
            f"correlation.</p>")


@hookimpl
def megafc_report_sections(config):
    """The section, only in the reports of runs that use the estimator."""
    estimator = (config or {}).get("estimator") or {}
    if estimator.get("name") != PartialCorrelation.name:
        return []
    return [ReportSection("partial-correlation", "Partial correlation", partial_correlation_section,
                          after="effects", references=[SECTION_REFERENCE])]
