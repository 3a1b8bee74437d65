"""The self-contained HTML run report (``elbolab report RUN [RUN ...] --out report.html``).

:func:`build_report` reads run folders (:mod:`elbolab.report.rundata`), draws the figures
(:mod:`elbolab.report.figures`) and writes one HTML file with everything inline (:mod:`elbolab.report.html`).
"""

from elbolab.report.html import ReportResult, build_report, format_number
from elbolab.report.rundata import (
    PER_T_FILE,
    SAMPLER_QUALITY_FILE,
    PerTimestep,
    RunData,
    SamplerQualityRow,
    compute_per_timestep,
    load_run_data,
    lookup,
)

__all__ = ["PER_T_FILE", "SAMPLER_QUALITY_FILE", "PerTimestep", "ReportResult", "RunData", "SamplerQualityRow",
           "build_report", "compute_per_timestep", "format_number", "load_run_data", "lookup"]
