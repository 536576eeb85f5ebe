"""Built-in site harmonisation steps, registered through the same entry point a third party uses."""

from __future__ import annotations

from megafc.core import hookimpl

from .combat import ComBatHarmonizer
from .none import NoHarmonization


@hookimpl
def megafc_harmonizers():
    return [NoHarmonization, ComBatHarmonizer]
