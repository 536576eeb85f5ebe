"""Wall time of megafc-calibrate at full size against its target (prints figures; asserts nothing).

    python benchmarks/calibration.py [--replicates 3] [--scenario all] [--jobs 2] [overrides ...]
    python benchmarks/calibration.py --from-run DIR [--replicates 3]

Target: ``megafc-calibrate --scenario all --replicates 20 --jobs 2`` (20 full-size replicates of
each of the 12 scenarios, 240 in all) in under an hour on 2 cores, i.e. 15 s a replicate. This
runs fewer replicates of the same scenarios through the same ``calibrate`` and projects the full
run from each replicate's own elapsed time (its provenance.json): per scenario, the first
``--jobs`` replicates (each worker compiles a model it has not seen) as measured and the others
at the mean of the later ones, divided among the workers, times how far this run's wall time
was above its replicates' summed time over ``--jobs`` (imperfect overlap, scoring). Projecting
from the finish times of two replicates a scenario counted a compile in nearly every one (both
workers compile) and said 72 min, half an hour after a full run had taken 58. ``--from-run``
projects from the first ``--replicates`` replicates of a finished calibration folder and prints
that run's own time, to check the projection: from the first three of each scenario it said
54.6 and 55.9 min for the two full runs of 2026-12-02, whose replicates ran for 57.2 and 59.3
min (4-6% low: a few replicates in 240 keep a chain in a second mode and take 3-6x as long).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd

from megafc.plugins.reports.calibration import SCENARIOS, calibrate
from study import peak_rss_mb

TARGET_MINUTES = 60
TARGET_REPLICATES = 20


def replicate_times(out: Path) -> pd.DataFrame:
    """One row per replicate of a calibration folder: scenario, replicate, when it started and
    finished, and the seconds between."""
    rows = []
    for path in sorted(out.glob("*/replicate-*/provenance.json")):
        p = json.loads(path.read_text())
        started, finished = pd.Timestamp(p["started"]), pd.Timestamp(p["finished"])
        rows.append({"scenario": path.parent.parent.name, "replicate": int(path.parent.name.split("-")[1]),
                     "started": started, "finished": finished, "elapsed": (finished - started).total_seconds()})
    return pd.DataFrame(rows, columns=["scenario", "replicate", "started", "finished", "elapsed"])


def project_minutes(times: pd.DataFrame, wall: float, jobs: int, scenarios: list[str],
                    replicates: int = TARGET_REPLICATES) -> float:
    """Minutes the full run would take: per scenario ``jobs`` first replicates as measured plus
    the rest at the later ones' mean elapsed time, shared among ``jobs`` workers, scaled by this
    run's wall time over its summed elapsed time / ``jobs``. Scenarios not run here count at
    the mean of those that were."""
    seconds = []
    for _, g in times.groupby("scenario"):
        first, later = g[g["replicate"] < jobs]["elapsed"], g[g["replicate"] >= jobs]["elapsed"]
        steady = later.mean() if len(later) else first.mean()
        seconds.append((first.mean() * min(jobs, replicates) + steady * max(replicates - jobs, 0)) / jobs)
    overlap = wall / (times["elapsed"].sum() / jobs)
    per_scenario = sum(seconds) / len(seconds)
    return per_scenario * len(scenarios) * overlap / 60


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicates", type=int, default=3)
    ap.add_argument("--scenario", action="append", default=None, help="repeatable, or 'all' (default)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--from-run", type=Path, default=None,
                    help="a finished megafc-calibrate folder: project from its first --replicates replicates")
    args, overrides = ap.parse_known_args()
    scenarios = list(SCENARIOS) if not args.scenario or "all" in args.scenario else args.scenario
    if args.replicates <= args.jobs:
        ap.error(f"--replicates {args.replicates} cannot show the pace after each worker's first replicate "
                 f"of a scenario (--jobs {args.jobs}); give at least {args.jobs + 1}")
    if args.from_run is not None:
        everything = replicate_times(args.from_run)
        if everything.empty:
            ap.error(f"--from-run {args.from_run}: no */replicate-*/provenance.json in it")
        times = everything[everything["replicate"] < args.replicates]
        ran = (everything["finished"].max() - everything["started"].min()).total_seconds()
        # this slice's own wall time is unknown; the whole run's overlap stands in for it
        wall = ran * times["elapsed"].sum() / everything["elapsed"].sum()
        print(f"replicates used        {len(times)} of {len(everything)} in {args.from_run}")
        print(f"that run, first replicate started to last finished: {ran / 60:5.1f} min")
    else:
        with tempfile.TemporaryDirectory(prefix="megafc-calibration-bench-") as tmp:
            start = time.time()
            out = calibrate(overrides, args.replicates, Path(tmp) / "calibration", scenarios=scenarios,
                            jobs=args.jobs)
            wall = time.time() - start
            times = replicate_times(Path(out))
        print(f"replicates             {len(times)} ({len(scenarios)} scenarios x {args.replicates}), --jobs {args.jobs}")
        print(f"wall time              {wall / 60:7.1f} min  ({times['elapsed'].median():.1f} s median elapsed a "
              f"replicate, {args.jobs} at a time)")
    full = project_minutes(times, wall, args.jobs, list(SCENARIOS))
    total = TARGET_REPLICATES * len(SCENARIOS)
    print(f"projected --scenario all --replicates {TARGET_REPLICATES} ({total} replicates): {full:5.1f} min  "
          f"(target < {TARGET_MINUTES} min: {'met' if full < TARGET_MINUTES else 'NOT met'})")
    if args.from_run is None:
        print(f"peak memory (parent)   {peak_rss_mb():7.0f} MB; "
              f"largest worker process {peak_rss_mb(resource.RUSAGE_CHILDREN):.0f} MB "
              "(0 with --jobs 1)")


if __name__ == "__main__":
    main()
