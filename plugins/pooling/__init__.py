"""Built-in pooling models: ``pymc`` (joint), ``bambi`` (per network pair), ``meta``
(frequentist two-stage random-effects meta-analysis, a comparator)."""

from megafc.core import hookimpl

from .bambi_per_pair import BambiPooling
from .meta import MetaAnalysisPooling
from .pymc_edges import PyMCEdgePooling
from .pymc_joint import PyMCPooling


@hookimpl
def megafc_pooling_models():
    return [PyMCPooling, BambiPooling, MetaAnalysisPooling, PyMCEdgePooling]
