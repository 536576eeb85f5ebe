"""Extraction throughput (scans/s) on a generated fMRIPrep-like tree, cold and cached (the run's
own load and extract stages, ``dataset=fmriprep atlas=custom denoiser=simple``).

    python benchmarks/extraction_throughput.py [--subjects 8] [--volumes 200] [--n-jobs 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fmriprep_tree import make_tree  # noqa: E402

from study import run_until  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--subjects", type=int, default=8, help="subjects per dataset (2 datasets, 2 scans each)")
    ap.add_argument("--volumes", type=int, default=200)
    ap.add_argument("--n-jobs", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tree = make_tree(Path(tmp) / "data", n_subjects=args.subjects, n_volumes=args.volumes)
        cache = Path(tmp) / "cache"
        overrides = tree.overrides("simple") + ["pooling=meta", f"extraction.cache_dir={cache}",
                                                f"extraction.n_jobs={args.n_jobs}"]
        for label in ("cold", "cached"):
            _, results = run_until(overrides, until="extract")
            ext, dt = results.extracted.extraction, results.timings["extract"]
            print(f"{label:7s} {len(ext)} scans in {dt:6.2f} s = {len(ext) / dt:7.1f} scans/s "
                  f"({int(ext['cached'].sum())} from cache; {results.atlas.n_regions} regions, "
                  f"{args.volumes} volumes, n_jobs={args.n_jobs})")

if __name__ == "__main__":
    main()
