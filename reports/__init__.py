"""HTML reports of ablate studies, read from MLflow only (docs/tracking.md).

Layers: `fetch` (and `runfiles`, for histories and artifacts) talks to MLflow and returns
DataFrames (`data.StudyData`); `stats`, `tables`, `context`, `effects`, `findings` and
`export` compute from frames; `plots`, `html`, `header`, `sections` and `page` turn them
into a page; `build` ties them together for the CLI. Never imports resnet, ray, torch or
ablations.

For sizing a study: `reports.fetch.seed_spread` measures a study's seed spread,
`reports.stats.seeds_needed` and `reports.stats.mde` turn a spread into seeds and
detectable differences, and `reports.stats.PRIOR_SEED_SD` stands in when nothing is
measured.
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
