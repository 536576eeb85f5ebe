"""Extraction throughput (scans/s) on a generated fMRIPrep-like tree, cold and cached.

    python benchmarks/extraction_throughput.py [--subjects 8] [--volumes 200] [--n-jobs 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fmriprep_tree import make_tree  # noqa: E402

from megafc.core.extraction import extract_all  # noqa: E402
from megafc.plugins.atlases.custom import CustomAtlas  # noqa: E402
from megafc.plugins.datasets.fmriprep import FmriprepDataset  # noqa: E402
from megafc.plugins.denoisers.fmriprep_strategies import SimpleDenoiser  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--subjects", type=int, default=8, help="subjects per dataset (2 datasets, 2 scans each)")
    ap.add_argument("--volumes", type=int, default=200)
    ap.add_argument("--n-jobs", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tree = make_tree(Path(tmp) / "data", n_subjects=args.subjects, n_volumes=args.volumes)
        atlas = CustomAtlas(CustomAtlas.Config(image=str(tree.atlas_image), labels=str(tree.atlas_labels))).load()
        ds = FmriprepDataset(FmriprepDataset.Config(metadata=str(tree.metadata), roots={k: str(v) for k, v in tree.roots.items()}))
        inputs = ds.load(atlas, 0)
        ids = list(inputs.scans["scan_id"])
        cache = str(Path(tmp) / "cache")
        for label in ("cold", "cached"):
            t = time.perf_counter()
            out = extract_all(inputs.images, ids, atlas, SimpleDenoiser(), cache, n_jobs=args.n_jobs)
            dt = time.perf_counter() - t
            print(f"{label:7s} {len(ids)} scans in {dt:6.2f} s = {len(ids) / dt:7.1f} scans/s "
                  f"({sum(e.cached for e in out.values())} from cache; {atlas.n_regions} regions, "
                  f"{args.volumes} volumes, n_jobs={args.n_jobs})")


if __name__ == "__main__":
    main()
