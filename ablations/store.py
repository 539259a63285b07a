"""The study's MLflow store, as docs/tracking.md defines it. Every read and write of the
study machinery goes through here, each with retries on a locked SQLite store.

Only the driver writes (from the trial events Ray relays), so concurrent trials never
contend for the store; the retries are for two studies sharing one SQLite file.

One class over 300 lines on purpose: it is the whole of what ablate writes to MLflow, so
the contract of docs/tracking.md can be read (and changed) in one place.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablations.connect import creating_tables, probe, resolve_uri, retry
from ablations.errors import AblateError
from ablations.manifest import code_tags

__all__ = ["Store", "StudyRecord", "check_store", "probe", "resolve_uri", "retry"]
TERMINAL = ("finished", "diverged")
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
class StudyRecord:
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
    def find_study(self, name: str) -> StudyRecord | None:
        exp = retry(lambda: self.client.get_experiment_by_name(name))
        if exp is None:
            return None
        parent = self._parent(exp.experiment_id)
        return StudyRecord(exp.experiment_id, parent.info.run_id) if parent else None

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

    def open_study(self, plan, code: dict) -> StudyRecord:
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
        self.set_tags(
            parent_id,
            {
                "ablate.replication": plan.replication.describe()
                if plan.replication
                else "fixed seeds",
                **code_tags(code, f"ablate run {plan.experiment}"),
            },
        )
        return StudyRecord(exp_id, parent_id)

    def _create_parent(self, exp_id: str, plan, code: dict) -> str:
        from resnet.config import TrainConfig
        from resnet.settings import SCIENCE, type_table

        types = type_table(TrainConfig, SCIENCE)
        tags = {
            "ablate.role": "parent",
            "ablate.study": plan.experiment,
            "ablate.fingerprint": plan.fingerprint(),
            "ablate.settings": json.dumps(types),
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

    def setting_types(self, record: StudyRecord) -> dict[str, str]:
        """The parent's `ablate.settings`: how to decode the params of this study."""
        parent = retry(lambda: self.client.get_run(record.parent_id))
        return json.loads(parent.data.tags["ablate.settings"])

    def set_plan_size(self, record: StudyRecord, plan) -> None:
        """The planned seeds and trials as they stand (they grow when seeds are added)."""
        seeds = sorted({t.seed for t in plan.trials})
        self.set_tags(
            record.parent_id,
            {"ablate.seeds": json.dumps(seeds), "ablate.expected_trials": str(len(plan.trials))},
        )

    # -- child runs -----------------------------------------------------------------------
    def trial_runs(self, exp_id: str, role: str = "trial") -> dict[str, Any]:
        """Existing child runs by trial key."""
        runs = retry(
            lambda: self.client.search_runs(
                [exp_id], f"tags.`ablate.role` = '{role}'", max_results=50_000
            )
        )
        return {r.data.tags["ablate.trial_key"]: r for r in runs}

    def create_trial(
        self,
        record: StudyRecord,
        study: str,
        key: str,
        arm: str,
        params: dict,
        code: dict,
        role: str = "trial",
    ) -> str:
        """A child run, pending until its trial starts (MLflow status SCHEDULED)."""
        tags = {
            "mlflow.parentRunId": record.parent_id,
            "ablate.role": role,
            "ablate.study": study,
            "ablate.trial_key": key,
            "ablate.arm": arm,
            "ablate.status": "pending",
            **code_tags(code, f"ablate run {study}"),
        }
        run = retry(lambda: self.client.create_run(record.experiment_id, run_name=key, tags=tags))
        run_id = run.info.run_id
        retry(lambda: self.client.update_run(run_id, status="SCHEDULED"))
        self._log_params(run_id, params)
        retry(lambda: self.client.log_dict(run_id, params, "trial_config.json"))
        return run_id

    def start(self, run_id: str) -> None:
        """A trial starts, or resumes: RUNNING."""
        retry(lambda: self.client.update_run(run_id, status="RUNNING"))
        self.set_tags(run_id, {"ablate.status": "running"})

    def record_start(self, run_id: str, start) -> None:
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

    def record_eval(self, run_id: str, record: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step = int(record["iteration"])
        metrics = [Metric(k, float(record[k]), now, step) for k in METRIC_KEYS if k in record]
        retry(lambda: self.client.log_batch(run_id, metrics=metrics))

    def record_checkpoint(self, run_id: str, path: str, previous: str | None) -> None:
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
    def final_test_errors(self, exp_id: str) -> dict[str, list[float]]:
        """Per arm, the final test error (points) of each finished trial."""
        out: dict[str, list[float]] = {}
        for run in self.trial_runs(exp_id).values():
            tags = run.data.tags
            value = run.data.metrics.get("test/error")
            out.setdefault(tags["ablate.arm"], [])
            if tags.get("ablate.status") == "finished" and value is not None:
                if math.isfinite(value):
                    out[tags["ablate.arm"]].append(100 * value)
        return out

    def seconds_per_iteration(self, experiment: str) -> dict[str, float]:
        """Per arm, the mean wall seconds per iteration of its finished trials (for time
        estimates); empty when the study is not in the store."""
        found = self.find_study(experiment)
        if found is None:
            return {}
        per_arm: dict[str, list[float]] = {}
        for run in self.trial_runs(found.experiment_id).values():
            wall = run.data.metrics.get("wall_time_s")
            iterations = float(run.data.params.get("iterations", "nan"))
            if run.data.tags.get("ablate.status") == "finished" and wall and iterations > 0:
                per_arm.setdefault(run.data.tags["ablate.arm"], []).append(wall / iterations)
        return {arm: sum(v) / len(v) for arm, v in per_arm.items()}

    def summarize(self, record: StudyRecord) -> None:
        """Per-arm means on the parent run, so the MLflow UI's chart view of the study is
        not empty (step = finished seeds)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        sums: dict[str, dict[str, list[float]]] = {}
        for run in self.trial_runs(record.experiment_id).values():
            if run.data.tags.get("ablate.status") != "finished":
                continue
            arm = sums.setdefault(run.data.tags["ablate.arm"], {"test": [], "train": []})
            for kind in ("test", "train"):
                value = run.data.metrics.get(f"{kind}/error")
                if value is not None and math.isfinite(value):
                    arm[kind].append(value)
        metrics = [
            Metric(f"mean_{kind}_error/{metric_arm(arm)}", sum(v) / len(v), now, len(v))
            for arm, kinds in sums.items()
            for kind, v in kinds.items()
            if v
        ]
        for i in range(0, len(metrics), 500):
            chunk = metrics[i : i + 500]
            retry(lambda chunk=chunk: self.client.log_batch(record.parent_id, metrics=chunk))

    def end(self, record: StudyRecord, outcome: str) -> None:
        retry(lambda: self.client.set_terminated(record.parent_id, outcome))

    def running(self, record: StudyRecord) -> None:
        retry(lambda: self.client.update_run(record.parent_id, status="RUNNING"))

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
