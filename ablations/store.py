"""What ablate writes to (and searches in) MLflow, as docs/tracking.md defines it: the
study's experiment and parent run, one child run per trial, and what trials report. Every
call retries on a locked SQLite store (two studies sharing one file); only the driver
writes, so concurrent trials never contend for the store."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from ablations.connect import creating_tables, probe, resolve_uri, retry
from ablations.errors import AblateError
from ablations.manifest import code_tags

__all__ = ["Store", "StudyIds", "check_store", "probe", "resolve_uri", "retry"]
METRIC_KEYS = (
    "train/loss",
    "train/error",
    "val/loss",
    "val/error",
    "test/loss",
    "test/error",
    "lr",
    "images_per_s",
)
REASON_LIMIT = 5000  # MLflow keeps tag values up to 8000 characters


def check_store(plan, uri: str) -> None:
    """What `show` and `run` both check of the store before anything is written: it is
    reachable, and it holds no other study under this study's name. A SQLite store that
    does not exist yet is not created here."""
    probe(uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return
    Store(uri).check_study(plan)


def metric_arm(arm: str) -> str:
    """An arm label as MLflow metric-key text (no `=` allowed there)."""
    return arm.replace("=", ":")


@dataclass(frozen=True)
class StudyIds:
    """A study in the store: its MLflow experiment (named after the study) and parent run."""

    name: str
    experiment_id: str
    parent_id: str


class Store:
    """One MLflow tracking store; `open_study` starts writing, after the plan is valid."""

    def __init__(self, uri: str):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        with creating_tables(uri):
            self.client = MlflowClient(tracking_uri=uri)

    # -- the study: experiment and parent run ---------------------------------------------
    def find_study(self, name: str) -> StudyIds | None:
        exp = retry(lambda: self.client.get_experiment_by_name(name))
        if exp is None:
            return None
        parent = self._parent(exp.experiment_id)
        return StudyIds(name, exp.experiment_id, parent.info.run_id) if parent else None

    def _parent(self, exp_id: str):
        runs = retry(
            lambda: self.client.search_runs(
                [exp_id], "tags.`ablate.role` = 'parent'", max_results=1
            )
        )
        return runs[0] if runs else None

    def check_study(self, plan) -> None:
        """Refuse a plan whose stored study has another definition, naming what changed;
        reads only."""
        exp = retry(lambda: self.client.get_experiment_by_name(plan.experiment))
        parent = self._parent(exp.experiment_id) if exp is not None else None
        if parent is None:
            return
        stored = parent.data.tags.get("ablate.fingerprint")
        if stored == plan.fingerprint():
            return
        changed = self._changes(parent.info.run_id, plan.definition())
        raise AblateError(
            f"the store {self.uri} holds study {plan.experiment} with another definition "
            f"({changed}); use another --tracking-uri, or rename the study"
        )

    def _changes(self, parent_id: str, new: dict) -> str:
        from ablations.plan import describe_changes

        try:
            with self._artifact(parent_id, "study.json") as path:
                old = json.loads(Path(path).read_text())
        except Exception:  # noqa: BLE001 - an older store without study.json
            return "its stored definition cannot be read to compare"
        return describe_changes(old, new)

    @contextlib.contextmanager
    def _artifact(self, run_id: str, path: str):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            yield retry(lambda: self.client.download_artifacts(run_id, path, tmp))

    def open_study(self, plan, code: dict) -> StudyIds:
        """Get or create the study's experiment and parent run (the first write of a run)."""
        self.check_study(plan)
        exp = retry(lambda: self.client.get_experiment_by_name(plan.experiment))
        if exp is None:
            location = None
            if self.uri.startswith("sqlite:///"):
                # Beside the database, not relative to whichever process's cwd writes first.
                db = Path(self.uri.removeprefix("sqlite:///"))
                location = (db.parent / "mlartifacts" / plan.experiment).as_uri()
            exp_id = retry(
                lambda: self.client.create_experiment(plan.experiment, artifact_location=location)
            )
        else:
            exp_id = exp.experiment_id
        retry(
            lambda: self.client.set_experiment_tag(
                exp_id, "mlflow.experimentKind", "custom_model_development"
            )
        )
        retry(lambda: self.client.set_experiment_tag(exp_id, "mlflow.note.content", plan.question))
        parent = self._parent(exp_id)
        if parent is not None:
            parent_id = parent.info.run_id
        else:
            parent_id = self._create_parent(exp_id, plan, code)
        tags = {"ablate.replication": "fixed seeds"}
        if plan.replication:
            rule = plan.replication
            tags = {
                "ablate.replication": rule.describe(),
                "ablate.target_ci": str(rule.target_ci),
                "ablate.max_seeds": str(rule.max_seeds),
            }
        self.set_tags(parent_id, {**tags, **code_tags(code, f"ablate run {plan.experiment}")})
        return StudyIds(plan.experiment, exp_id, parent_id)

    def _create_parent(self, exp_id: str, plan, code: dict) -> str:
        tags = {
            "ablate.role": "parent",
            "ablate.study": plan.experiment,
            "ablate.fingerprint": plan.fingerprint(),
            "ablate.settings": json.dumps(plan.param_types()),
            "ablate.model": plan.model,
            "ablate.model_factors": json.dumps(plan.model_factors),
            "mlflow.note.content": plan.question,
        }
        run = retry(lambda: self.client.create_run(exp_id, run_name=plan.experiment, tags=tags))
        params = {
            "question": plan.question[:500],
            "dataset": plan.dataset,
            "reference": json.dumps(plan.reference),
            "factors": json.dumps(plan.factors),
            "seeds": json.dumps(plan.seeds),
            "preset": plan.preset or "",
            "source": plan.source,
            "expected_trials": len(plan.trials),
            "full_dataset": plan.full["dataset"],
            "full_iterations": plan.full["iterations"],
        }
        self._log_params(run.info.run_id, params)
        retry(lambda: self.client.log_dict(run.info.run_id, plan.definition(), "study.json"))
        return run.info.run_id

    def set_plan_size(self, study: StudyIds, plan) -> None:
        """The planned seeds and trials as they stand (they grow when seeds are added)."""
        planned: dict[str, list[int]] = {}
        for t in plan.trials:
            planned.setdefault(t.arm, []).append(t.seed)
        self.set_tags(
            study.parent_id,
            {
                "ablate.seeds": json.dumps(sorted({t.seed for t in plan.trials})),
                "ablate.planned": json.dumps(planned),
                "ablate.expected_trials": str(len(plan.trials)),
            },
        )

    # -- child runs -----------------------------------------------------------------------
    def trial_runs(self, study: StudyIds) -> list:
        """Every child run of the study (trials and tuning trials), in one search: what
        ablations/ledger.py reads once per round."""
        return retry(
            lambda: self.client.search_runs(
                [study.experiment_id], "tags.`ablate.role` != 'parent'", max_results=50_000
            )
        )

    def create_trial(
        self, study: StudyIds, key: str, arm: str, params: dict, code: dict, role: str = "trial"
    ) -> str:
        """A child run, pending until its trial starts (MLflow status SCHEDULED)."""
        tags = {
            "mlflow.parentRunId": study.parent_id,
            "ablate.role": role,
            "ablate.study": study.name,
            "ablate.trial_key": key,
            "ablate.arm": arm,
            "ablate.status": "pending",
            **code_tags(code, f"ablate run {study.name}"),
        }
        run = retry(lambda: self.client.create_run(study.experiment_id, run_name=key, tags=tags))
        run_id = run.info.run_id
        retry(lambda: self.client.update_run(run_id, status="SCHEDULED"))
        self._log_params(run_id, params)
        retry(lambda: self.client.log_dict(run_id, params, "trial_config.json"))
        return run_id

    def start(self, run_id: str) -> None:
        """A trial starts, or resumes: RUNNING."""
        retry(lambda: self.client.update_run(run_id, status="RUNNING"))
        self.set_tags(run_id, {"ablate.status": "running"})

    def log_start(self, run_id: str, start) -> None:
        """What the worker says when training starts: where it resumed from, the split,
        and the manifest of the process that trains (docs/tracking.md)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        env = start.environment
        self.set_tags(
            run_id,
            {
                "ablate.resumed_from": str(start.resumed_from),
                "ablate.val_digest": start.val_digest,
                "ablate.train_size": str(start.train_size),
                "ablate.versions": json.dumps(env["versions"], sort_keys=True),
                "ablate.device": env["device"],
                "ablate.data_digest": env["data_digest"],
            },
        )
        dataset = Dataset(
            name=env["dataset"],
            digest=env["data_digest"],
            source_type="local",
            source=env["data_source"],
        )
        context = InputTag("mlflow.data.context", "training")
        retry(lambda: self.client.log_inputs(run_id, [DatasetInput(dataset, [context])]))

    def logged_upto(self, run_id: str) -> int:
        """The last iteration whose evaluation is in the store (-1: none)."""
        history = retry(lambda: self.client.get_metric_history(run_id, "train/error"))
        return max((m.step for m in history), default=-1)

    def log_evaluation(self, run_id: str, evaluation: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step = int(evaluation["iteration"])
        metrics = [
            Metric(k, float(evaluation[k]), now, step) for k in METRIC_KEYS if k in evaluation
        ]
        retry(lambda: self.client.log_batch(run_id, metrics=metrics))

    def log_checkpoint(self, run_id: str, path: str, previous: str | None) -> None:
        """Where the trial's newest checkpoints are, for a person looking (resuming reads
        the storage itself: ablations/checkpoints.py)."""
        tags = {"ablate.checkpoint": path}
        if previous:
            tags["ablate.checkpoint_previous"] = previous
        self.set_tags(run_id, tags)

    def finish(self, run_id: str, final) -> None:
        """A trial that ended training (finished or diverged) with its results."""
        from mlflow.entities import Metric

        step = int(final.summary["iterations"])
        now = int(time.time() * 1000)
        metrics = [Metric("wall_time_s", float(final.summary["wall_time_s"]), now, step)]
        retry(lambda: self.client.log_batch(run_id, metrics=metrics))
        retry(lambda: self.client.log_dict(run_id, final.lr_trace, "lr_trace.json"))
        if final.layer_responses:
            retry(
                lambda: self.client.log_dict(run_id, final.layer_responses, "layer_responses.json")
            )
        tags = {"ablate.status": final.status}
        if final.summary.get("diverged_at") is not None:
            tags["ablate.diverged_at"] = str(final.summary["diverged_at"])
        self.set_tags(run_id, tags)
        retry(lambda: self.client.set_terminated(run_id, "FINISHED"))

    def fail(self, run_id: str, reason: str) -> None:
        line = " ".join(reason.split())[:REASON_LIMIT]
        self.set_tags(run_id, {"ablate.error": line, "ablate.status": "failed"})
        retry(lambda: self.client.set_terminated(run_id, "FAILED"))

    def interrupt(self, run_id: str) -> None:
        """Stopped part-way: KILLED, resumable (the next run sets it RUNNING again)."""
        self.set_tags(run_id, {"ablate.status": "interrupted"})
        retry(lambda: self.client.set_terminated(run_id, "KILLED"))

    # -- the end of a study ---------------------------------------------------------------
    def summarize(self, study: StudyIds, ledger) -> None:
        """Per-arm means on the parent run, so the MLflow UI's chart view of the study is
        not empty (step = finished seeds)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(f"mean_{split}_error/{metric_arm(arm)}", sum(v) / len(v) / 100, now, len(v))
            for split in ("test", "train")
            for arm, v in ledger.errors(split).items()
            if v
        ]
        for i in range(0, len(metrics), 500):
            chunk = metrics[i : i + 500]
            retry(lambda chunk=chunk: self.client.log_batch(study.parent_id, metrics=chunk))

    def delete_study(self, study: StudyIds) -> None:
        """Delete the study's experiment. MLflow keeps a deleted experiment (and its name)
        until `mlflow gc`; it is renamed first, so the name is free for a new study."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        new_name = f"{study.name} (removed {stamp})"
        retry(lambda: self.client.rename_experiment(study.experiment_id, new_name))
        retry(lambda: self.client.delete_experiment(study.experiment_id))

    def end(self, study: StudyIds, outcome: str) -> None:
        retry(lambda: self.client.set_terminated(study.parent_id, outcome))

    def running(self, study: StudyIds) -> None:
        retry(lambda: self.client.update_run(study.parent_id, status="RUNNING"))

    # -- helpers --------------------------------------------------------------------------
    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        retry(lambda: self.client.log_batch(run_id, tags=items))

    def _log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            chunk = items[i : i + 100]
            retry(lambda chunk=chunk: self.client.log_batch(run_id, params=chunk))
