"""Built-in connectivity estimators: ``correlation``, ``ledoit_wolf``, ``partial_correlation``, ``tangent``."""

from megafc.core import hookimpl

from .correlation import FisherZCorrelation, LedoitWolfCorrelation
from .nilearn_kinds import PartialCorrelation, TangentSpace


@hookimpl
def megafc_estimators():
    return [FisherZCorrelation, LedoitWolfCorrelation, PartialCorrelation, TangentSpace]
