"""Built-in pooling models: ``pymc`` (joint), ``bambi`` (per network pair)."""

from megafc.core import hookimpl

from .bambi_per_pair import BambiPooling
from .pymc_joint import PyMCPooling


@hookimpl
def megafc_pooling_models():
    return [PyMCPooling, BambiPooling]
