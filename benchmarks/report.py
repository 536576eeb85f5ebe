"""Time of the run report (report.html and its figures) on a finished run (prints figures; asserts nothing).

    megafc hydra.run.dir=/tmp/run && python benchmarks/report.py /tmp/run [--workers 1 2] [--repeat 2]

The report is drawn on a copy of the run folder, after importing what a run has imported by
the time its report is drawn (PyMC, ArviZ, nilearn), so the figure is the reporter's time in
``megafc.log`` ("reporter 'run_report': N s"). Target: < 5 s for the default run on 2 cores.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    for module in ("pymc", "arviz", "nilearn.connectome"):  # imported by a run before its report
        importlib.import_module(module)
    from megafc.core.outputs import plugin_report_sections
    from megafc.core.registry import build_registry
    from megafc.core.report import load_run
    from megafc.plugins.reports.run_report import write_report

    sections = plugin_report_sections(build_registry(), load_run(args.run_dir).config)
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            times = []
            for i in range(args.repeat):
                folder = Path(tmp) / f"w{workers}-{i}"
                shutil.copytree(args.run_dir, folder, ignore=shutil.ignore_patterns("posterior.nc", "figures"))
                if (args.run_dir / "posterior.nc").exists():  # read by no section; its presence is
                    (folder / "posterior.nc").symlink_to((args.run_dir / "posterior.nc").resolve())
                started = time.perf_counter()
                write_report(folder, extra_sections=sections, workers=workers)
                times.append(time.perf_counter() - started)
            print(f"report, {workers} worker(s)   " + "  ".join(f"{t:5.1f} s" for t in times))


if __name__ == "__main__":
    main()
