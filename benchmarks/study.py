"""The built-in synthetic study run through megafc's own stages (shared by the benchmarks):
the same load -> extract -> estimate -> aggregate as ``megafc``, so a benchmark times what a
run does, not a hand-assembled copy of it."""

from __future__ import annotations

import resource

import pandas as pd

from megafc.core.config import compose
from megafc.core.pipeline import RunContext, RunResults, run_stages


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory in MB of this process (or, with RUSAGE_CHILDREN, its largest child)."""
    return resource.getrusage(who).ru_maxrss / 1024


def run_until(overrides: list[str], until: str = "aggregate") -> tuple[RunContext, RunResults]:
    """The run of ``megafc <overrides>`` up to stage ``until``, as values (nothing is written)."""
    ctx = RunContext.create(compose(["report=false", "figures=false", "extraction.cache_dir=null", *overrides]))
    return ctx, run_stages(ctx, until=until)


def default_study_pairs(level: str = "network", seed: int = 0) -> pd.DataFrame:
    """Fisher-z network-pair FC of every informative scan of the default synthetic study."""
    _, results = run_until([f"aggregate.level={level}", f"seed={seed}"])
    return results.aggregated.pairs
