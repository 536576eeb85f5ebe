"""Built-in denoising strategies: ``none``."""

from megafc.core import hookimpl

from .none import NoDenoising


@hookimpl
def megafc_denoisers():
    return [NoDenoising]
