"""Built-in dataset loaders: ``synthetic``, ``fmriprep``, ``timeseries``, ``connectomes``."""

from megafc.core import hookimpl

from .fmriprep import FmriprepDataset
from .precomputed import ConnectomesDataset, TimeseriesDataset
from .synthetic import SyntheticDataset


@hookimpl
def megafc_datasets():
    return [SyntheticDataset, FmriprepDataset, TimeseriesDataset, ConnectomesDataset]
