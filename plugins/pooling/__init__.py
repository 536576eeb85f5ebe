"""Built-in pooling models: ``pymc`` (scan-level, joint over pairs), ``pymc_paired`` (paired
differences), ``bambi`` (per network pair), ``meta`` (frequentist two-stage random-effects
meta-analysis, a comparator) and ``pymc_edges`` (edge level)."""

from megafc.core import hookimpl

from .bambi_per_pair import BambiPooling
from .meta import MetaAnalysisPooling
from .pymc_edges import PyMCEdgePooling
from .pymc_paired import PyMCPairedPooling
from .pymc_scan_level import PyMCPooling


@hookimpl
def megafc_pooling_models():
    return [PyMCPooling, PyMCPairedPooling, BambiPooling, MetaAnalysisPooling, PyMCEdgePooling]
