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

import importlib

# Names load on first use, as resnet's do: reports.layout (the store's names, standard
# library only) is imported by every `ablate` command, the rest needs mlflow and plotly.
_HOME = {
    "build_report": "reports.build",
    "default_out_dir": "reports.build",
    "write_report": "reports.build",
    "StudyData": "reports.data",
    "StudyInfo": "reports.data",
    "ReportError": "reports.errors",
    "fetch_study": "reports.fetch",
    "Report": "reports.page",
    "render_report": "reports.page",
    "Study": "reports.study",
    "load_study": "reports.study",
}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'reports' has no attribute {name!r}")
