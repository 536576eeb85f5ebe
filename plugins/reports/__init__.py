"""Built-in report sections, registered like a third party's (hook ``megafc_report_sections``)."""

from megafc.core import hookimpl
from megafc.core.report import ReportSection

from .brain import brain_section
from .forest import forest_section


@hookimpl
def megafc_report_sections() -> list[ReportSection]:
    return [
        ReportSection("brain", "Brain", brain_section, after="effects"),
        ReportSection("datasets", "Datasets, drugs, overall", forest_section, after="effects"),
    ]
