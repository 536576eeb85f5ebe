"""Built-in reporters and report sections, registered like a third party's (hooks
``megafc_reporters`` and ``megafc_report_sections``).

- ``run_report`` (run_report.py): every run's report.html and figures;
- ``compare`` (compare.py): a sweep's comparison (``megafc-compare``);
- ``calibration_report`` (calibration.py): a calibration's report (``megafc-calibrate``);
- sections ``brain`` (brain.py) and ``datasets`` (forest.py) in the run report.
"""

from megafc.core import hookimpl
from megafc.core.report import ReportSection

from .brain import brain_section
from .calibration import CalibrationReport
from .compare import SweepComparison
from .forest import forest_section
from .run_report import RunReport


@hookimpl
def megafc_reporters():
    return [RunReport, SweepComparison, CalibrationReport]


@hookimpl
def megafc_report_sections() -> list[ReportSection]:
    return [
        ReportSection("brain", "Brain", brain_section, after="effects"),
        ReportSection("datasets", "Datasets, drugs, overall", forest_section, after="effects"),
    ]
