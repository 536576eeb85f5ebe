"""The run's typed config schema (plugin groups are filled from the ConfigStore)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class AggregateConfig:
    #: ``network`` (e.g. Default) or ``subnetwork`` (e.g. DefaultA) pairs.
    level: str = "network"


@dataclass
class RunConfig:
    dataset: Any = MISSING
    atlas: Any = MISSING
    denoiser: Any = MISSING
    estimator: Any = MISSING
    pooling: Any = MISSING
    #: Seeds data simulation and MCMC; recorded in provenance.json.
    seed: int = 0
    aggregate: AggregateConfig = field(default_factory=AggregateConfig)
    #: Exit non-zero (after writing outputs) when any posterior fails its diagnostics.
    fail_on_bad_diagnostics: bool = False
    #: Draw figures (matplotlib) into figures/.
    figures: bool = True
