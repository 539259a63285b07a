"""`ablate report NAME`: read a study from MLflow, write DIR/index.html, CSV tables and
paper-ready tables, and log the same files to the study's parent run under `report/`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from reports.errors import ReportError
from reports.fetch import connect, fetch_study, first_line
from reports.layout import REPORTS_ROOT, STORE_MARK, redact, report_store
from reports.page import Report, render_report

ARTIFACT_PATH = "report"


def default_out_dir(experiment_name: str) -> Path:
    return REPORTS_ROOT / experiment_name


def _claim(target: Path, name: str, uri: str) -> None:
    """Mark `target` as the report of this store's study; a folder holding the report of
    another store's namesake is refused, never overwritten."""
    held = report_store(target)
    if held is not None and held != uri:
        raise ReportError(
            f"{target} holds the report of {name} from the store {held}; write this store's "
            "report elsewhere with --out DIR, or remove that folder"
        )
    target.mkdir(parents=True, exist_ok=True)
    (target / STORE_MARK).write_text(uri + "\n", encoding="utf-8")


def write_report(report: Report, out_dir: Path) -> Path:
    """index.html, one CSV per table and the paper-ready texts (comparison.md,
    comparison.tex), side by side; returns the page's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index = out_dir / "index.html"
    index.write_text(report.html, encoding="utf-8")
    for name, frame in report.tables.items():
        frame.to_csv(out_dir / f"{name}.csv", index=False)
    for name, text in report.texts.items():
        (out_dir / name).write_text(text, encoding="utf-8")
    return index


def build_report(
    experiment_name: str,
    tracking_uri: str | None = None,
    out_dir: str | Path | None = None,
    mlflow_ui_url: str | None = None,
    log_to_mlflow: bool = True,
    generated_at: datetime | None = None,
) -> Path:
    """Build the report of study `experiment_name` (the MLflow experiment, e.g.
    `shortcut_types@smoke`) and return the path of its index.html; with `log_to_mlflow`,
    also log the files to the parent run under `report/`, replacing an earlier report.
    Raises ReportError with a one-line message for problems the user can fix."""
    data = fetch_study(experiment_name, tracking_uri)
    report = render_report(data, mlflow_ui_url, generated_at)
    target = Path(out_dir) if out_dir is not None else default_out_dir(experiment_name)
    uri = redact(tracking_uri or mlflow.get_tracking_uri())
    try:
        _claim(target, experiment_name, uri)
        index = write_report(report, target)
    except OSError as error:
        raise ReportError(
            f"cannot write the report to {target}: {error.strerror or error}"
        ) from error
    if log_to_mlflow and data.info.parent_run_id:
        try:
            client = connect(tracking_uri)
            for path in sorted(target.iterdir()):
                if path.is_file() and path.name != STORE_MARK:  # the mark is the folder's
                    client.log_artifact(data.info.parent_run_id, str(path), ARTIFACT_PATH)
        except (MlflowException, OSError) as error:
            raise ReportError(
                f"wrote {index} but could not log it to the parent run in {uri}: "
                f"{first_line(error)}"
            ) from error
    return index
