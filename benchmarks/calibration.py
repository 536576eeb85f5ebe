"""Wall time of megafc-calibrate at full size against its target (prints figures; asserts nothing).

    python benchmarks/calibration.py [--replicates 2] [--scenario all] [--jobs 2] [overrides ...]

Target: ``megafc-calibrate --scenario all --replicates 20 --jobs 2`` (220 full-size replicates)
in under an hour on 2 cores, i.e. ~16 s a replicate. This runs fewer replicates of the same
scenarios through the same ``calibrate`` and projects the full run (all 11 scenarios, whichever
were run here) from the time per replicate. Each worker compiles the model once, so the
projection from a short run overstates the full one a little.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from megafc.plugins.reports.calibration import SCENARIOS, calibrate

TARGET_MINUTES = 60
TARGET_REPLICATES = 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicates", type=int, default=2)
    ap.add_argument("--scenario", action="append", default=None, help="repeatable, or 'all' (default)")
    ap.add_argument("--jobs", type=int, default=2)
    args, overrides = ap.parse_known_args()
    scenarios = list(SCENARIOS) if not args.scenario or "all" in args.scenario else args.scenario
    with tempfile.TemporaryDirectory(prefix="megafc-calibration-bench-") as tmp:
        start = time.perf_counter()
        calibrate(overrides, args.replicates, Path(tmp) / "calibration", scenarios=scenarios, jobs=args.jobs)
        wall = time.perf_counter() - start
    done = args.replicates * len(scenarios)
    per = wall / done
    full = per * TARGET_REPLICATES * len(SCENARIOS) / 60
    print(f"replicates             {done} ({len(scenarios)} scenarios x {args.replicates}), --jobs {args.jobs}")
    print(f"wall time              {wall / 60:7.1f} min  ({per:.1f} s a replicate, first compiles included)")
    print(f"projected --scenario all --replicates {TARGET_REPLICATES}: {full:5.1f} min  "
          f"(target < {TARGET_MINUTES} min: {'met' if full < TARGET_MINUTES else 'NOT met'})")
    print(f"peak memory (parent)   {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:7.0f} MB; "
          f"largest worker process {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MB "
          "(0 with --jobs 1)")


if __name__ == "__main__":
    main()
