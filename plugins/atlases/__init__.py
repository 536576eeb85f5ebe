"""Built-in atlases: ``synthetic``."""

from megafc.core import hookimpl

from .synthetic import SyntheticAtlas


@hookimpl
def megafc_atlases():
    return [SyntheticAtlas]
