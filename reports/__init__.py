"""Reads an ablate study from MLflow (docs/tracking.md) and reports it: an HTML page with
its CSV and paper-ready tables (`build_report`), or the same numbers as DataFrames for a
notebook (`load_study`). Never imports resnet, ray, torch or ablations.

Layers: `fetch` talks to MLflow and returns DataFrames (`data.StudyData`); `stats`,
`paper`, `tables` and `effects` compute from frames and `study` gathers them once; `header`
(the top of the page) and `page` (the sections below it), with `plots` and `html`, turn
them into a page; `build` writes it for the CLI.

Also used by the runner and `ablate show`: `data.decode` reads a param's text by its type;
`stats.pooled_sd`, `stats.seeds_needed`, `stats.mde` and `stats.seeds_for_ci` turn seed
spreads into seeds and detectable differences, and `stats.PRIOR_SEED_SD` stands in when
nothing is measured.
"""

from reports.build import build_report, default_out_dir, write_report
from reports.data import StudyData, StudyInfo
from reports.errors import ReportError
from reports.fetch import fetch_study
from reports.page import Report, render_report
from reports.study import Study, load_study

__all__ = [
    "Report",
    "ReportError",
    "StudyData",
    "Study",
    "StudyInfo",
    "build_report",
    "default_out_dir",
    "fetch_study",
    "load_study",
    "render_report",
    "write_report",
]
