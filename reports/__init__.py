"""HTML reports of ablate studies, read from MLflow only (docs/tracking.md).

Layers: `fetch` talks to MLflow and returns DataFrames (`data.StudyData`); `stats`,
`tables`, `findings`, `plots`, `html` and `page` turn frames into a page; `build` ties
them together for the CLI. Never imports resnet, ray, torch or ablations.
"""

from reports.build import build_report, default_out_dir, write_report
from reports.data import StudyData, StudyInfo
from reports.errors import ReportError
from reports.fetch import fetch_study
from reports.page import Report, render_report

__all__ = [
    "Report",
    "ReportError",
    "StudyData",
    "StudyInfo",
    "build_report",
    "default_out_dir",
    "fetch_study",
    "render_report",
    "write_report",
]
