"""Wall time and memory of ``megafc experiment=girn2026`` (prints figures; asserts nothing).

    python benchmarks/girn2026.py [--out DIR] [extra megafc overrides ...]

Target (docs/replication.md, issue acceptance): the eight jobs (four denoising pipelines x
network/subnetwork) and the comparison in under 20 minutes on 2 cores, offline.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=None, help="sweep folder (default: a new temporary folder)")
    ap.add_argument("overrides", nargs="*", help="extra megafc overrides, e.g. hydra/launcher=basic")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="girn2026-")) / "sweep"
    exe = Path(sys.executable).parent / "megafc"
    start = time.perf_counter()
    proc = subprocess.run([str(exe), "experiment=girn2026", f"hydra.sweep.dir={out}", *args.overrides],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stderr[-3000:])
        raise SystemExit(f"megafc failed (exit {proc.returncode})")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    jobs = sorted(p for p in out.iterdir() if (p / "provenance.json").exists())
    print(f"girn2026: {len(jobs)} jobs + comparison in {wall / 60:.1f} min (target < 20 min on 2 cores); "
          f"largest process peak RSS {peak:.0f} MB")
    for job in jobs:
        diag = pd.read_csv(job / "diagnostics.tsv", sep="\t")
        print(f"  {job.name[:60]:<60} max R-hat {diag['r_hat_max'].max():.3f}, min ESS "
              f"{diag['ess_bulk_min'].min():.0f}, divergences {int(diag['divergences'].max())}")
    curve = out / "comparison" / "figures" / "specification_curve.png"
    print(f"specification curve: {curve} ({'present' if curve.exists() else 'MISSING'})")


if __name__ == "__main__":
    main()
