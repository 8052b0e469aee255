"""The self-contained HTML run report (``results/report.html``): collect -> plots -> render.

``collect_report_data(results_dir, config)`` gathers the numbers behind every section;
``build_report(results_dir, config, out_html, truth_dir=None)`` writes the HTML and returns them with timings.
"""

from __future__ import annotations

from typing import Any

from pairedscreen.report.collect import ReportInputError, collect_report_data

__all__ = ["ReportInputError", "build_report", "collect_report_data"]


def __getattr__(name: str) -> Any:
    # matplotlib/jinja2 are only imported when a report is actually rendered
    if name == "build_report":
        from pairedscreen.report.render import build_report

        return build_report
    raise AttributeError(name)
