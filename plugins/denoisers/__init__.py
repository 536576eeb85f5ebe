"""Built-in denoising strategies: ``none``, ``simple``, ``simple_gsr``, ``scrubbing``, ``compcor``."""

from megafc.core import hookimpl

from .fmriprep_strategies import (
    CompCorDenoiser,
    ScrubbingDenoiser,
    SimpleDenoiser,
    SimpleGsrDenoiser,
)
from .none import NoDenoising


@hookimpl
def megafc_denoisers():
    return [NoDenoising, SimpleDenoiser, SimpleGsrDenoiser, ScrubbingDenoiser, CompCorDenoiser]
