"""Built-in dataset loaders: ``synthetic``."""

from megafc.core import hookimpl

from .synthetic import SyntheticDataset


@hookimpl
def megafc_datasets():
    return [SyntheticDataset]
