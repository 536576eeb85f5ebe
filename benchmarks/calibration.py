"""Wall time of megafc-calibrate at full size against its target (prints figures; asserts nothing).

    python benchmarks/calibration.py [--replicates 2] [--scenario all] [--jobs 2] [overrides ...]

Target: ``megafc-calibrate --scenario all --replicates 20 --jobs 2`` (220 full-size replicates)
in under an hour on 2 cores, i.e. ~16 s a replicate. This runs fewer replicates of the same
scenarios through the same ``calibrate`` and projects the full run (all 11 scenarios, whichever
were run here): the first round (each worker's first replicate, with its model compile) as
measured, then every later replicate at the pace measured after it (from the times the
replicates' provenance.json were written). Give at least ``--jobs`` + 1 replicates in all.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from megafc.plugins.reports.calibration import SCENARIOS, calibrate
from study import peak_rss_mb

TARGET_MINUTES = 60
TARGET_REPLICATES = 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicates", type=int, default=2)
    ap.add_argument("--scenario", action="append", default=None, help="repeatable, or 'all' (default)")
    ap.add_argument("--jobs", type=int, default=2)
    args, overrides = ap.parse_known_args()
    scenarios = list(SCENARIOS) if not args.scenario or "all" in args.scenario else args.scenario
    done = args.replicates * len(scenarios)
    if done <= args.jobs:
        ap.error(f"{done} replicates cannot show the pace after the first round of {args.jobs}; run more")
    with tempfile.TemporaryDirectory(prefix="megafc-calibration-bench-") as tmp:
        start = time.time()
        out = calibrate(overrides, args.replicates, Path(tmp) / "calibration", scenarios=scenarios, jobs=args.jobs)
        wall = time.time() - start
        finished = sorted(p.stat().st_mtime - start for p in Path(out).glob("*/replicate-*/provenance.json"))
    first_round, last = finished[args.jobs - 1], finished[-1]
    pace = (last - first_round) / (len(finished) - args.jobs)
    total = TARGET_REPLICATES * len(SCENARIOS)
    full = (first_round + pace * (total - args.jobs) + (wall - last)) / 60
    print(f"replicates             {done} ({len(scenarios)} scenarios x {args.replicates}), --jobs {args.jobs}")
    print(f"wall time              {wall / 60:7.1f} min  (first round {first_round:.0f} s with the compile, "
          f"then {pace:.1f} s a replicate)")
    print(f"projected --scenario all --replicates {TARGET_REPLICATES} ({total} replicates): {full:5.1f} min  "
          f"(target < {TARGET_MINUTES} min: {'met' if full < TARGET_MINUTES else 'NOT met'})")
    print(f"peak memory (parent)   {peak_rss_mb():7.0f} MB; "
          f"largest worker process {peak_rss_mb(resource.RUSAGE_CHILDREN):.0f} MB "
          "(0 with --jobs 1)")


if __name__ == "__main__":
    main()
