"""Built-in connectivity estimators: ``correlation``, ``ledoit_wolf``."""

from megafc.core import hookimpl

from .correlation import FisherZCorrelation, LedoitWolfCorrelation


@hookimpl
def megafc_estimators():
    return [FisherZCorrelation, LedoitWolfCorrelation]
