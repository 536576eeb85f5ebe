"""The ``none`` harmonizer: connectomes go to aggregation as estimated (the default).

Site differences are then the pooling model's business: the hierarchical model's subject
intercepts absorb additive site offsets and its per-dataset residual sds absorb scale.
"""

from __future__ import annotations

from megafc.core import Harmonizer


class NoHarmonization(Harmonizer):
    """No site harmonisation; the pooling model's dataset terms handle sites."""

    name = "none"
