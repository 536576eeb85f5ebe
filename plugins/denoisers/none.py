"""The ``none`` denoiser: for inputs that were denoised elsewhere (timeseries, connectomes)."""

from megafc.core import Denoiser


class NoDenoising(Denoiser):
    """No confound regression or censoring (inputs already denoised or simulated)."""

    name = "none"

    def signal_kwargs(self) -> dict:
        # None, not False: nilearn 0.14 warns that boolean standardize values are deprecated.
        return {"standardize": None}
