"""Built-in atlases: ``synthetic``, ``custom``, ``from_labels``."""

from megafc.core import hookimpl

from .custom import CustomAtlas
from .from_labels import FromLabelsAtlas
from .synthetic import SyntheticAtlas


@hookimpl
def megafc_atlases():
    return [SyntheticAtlas, CustomAtlas, FromLabelsAtlas]
