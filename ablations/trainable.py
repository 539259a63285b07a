"""The Ray Tune trainable: one trial in a worker process. It trains with resnet.train, tells
the driver what happens through typed events (ablations/events.py), and keeps its
checkpoints in Ray's storage (`--storage`: a local folder, or a bucket URI that every node
reaches), so a trial retried on another machine, or resumed by a later `ablate run`, finds
them without a shared disk.

A deterministic error (bad data, an impossible setting, a full disk) ends the trial as
failed, with its reason, and is not retried: Ray's retries are for workers that died.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import traceback
import warnings
from pathlib import Path

from ablations.events import Evaluation, Final, Saved, Start, encode

STATE_FILE = "state.pt"
# {"trial": key, "run": MLflow run id, "iteration": N}: what a checkpoint folder holds
META_FILE = "meta.json"


class CheckpointLost(RuntimeError):
    """The trial has checkpoints on record, but none can be read from the storage."""


class TuneCheckpoints:
    """resnet's Checkpoints protocol on Ray Tune: save = report a checkpoint directory
    (Tune copies it into the storage and keeps the newest two); load = the checkpoint of
    an earlier attempt of this Tune run, else those a previous `ablate run` recorded."""

    def __init__(self, storage: str, resume: list[str], key: str = "", run: str = ""):
        self.storage, self.resume, self.key, self.run = storage, resume, key, run

    def _candidates(self):
        from ray import tune

        current = tune.get_checkpoint()
        if current is not None:
            yield from self._unregistered_after(current)
            yield current
        if self.resume:
            import pyarrow.fs

            fs, _ = pyarrow.fs.FileSystem.from_uri(self.storage)
            for path in self.resume:
                yield tune.Checkpoint(path=path, filesystem=fs)

    def _unregistered_after(self, current):
        """This trial's checkpoints newer than Ray's `current`, newest first: a worker that
        died after writing a checkpoint but before the driver heard of it leaves one, and
        Ray restores the one before. Every evaluation up to it had reached the driver (the
        worker writes a checkpoint only after the driver took its previous report), so
        resuming from it loses and repeats nothing."""
        import pyarrow.fs
        from ray import tune

        fs = current.filesystem
        trial_folder = current.path.rstrip("/").rsplit("/", 1)[0]
        base = _read_meta(fs, f"{current.path}/{META_FILE}")
        newer = []
        try:
            for info in fs.get_file_info(pyarrow.fs.FileSelector(trial_folder)):
                if info.type != pyarrow.fs.FileType.Directory or info.path == current.path:
                    continue
                meta = _read_meta(fs, f"{info.path}/{META_FILE}")
                if meta and (meta.get("trial"), meta.get("run")) == (self.key, self.run):
                    if base is None or meta["iteration"] > base["iteration"]:
                        newer.append((meta["iteration"], info.path))
        except OSError:
            return []  # an unlistable storage: Ray's own checkpoint stands
        newer.sort(reverse=True)
        return [tune.Checkpoint(path=path, filesystem=fs) for _, path in newer]

    def load(self, map_location):
        import torch

        tried = []
        for checkpoint in self._candidates():
            try:
                with checkpoint.as_directory() as folder:
                    return torch.load(
                        Path(folder) / STATE_FILE, map_location=map_location, weights_only=True
                    )
            except Exception as err:  # noqa: BLE001 - any unreadable checkpoint: fall back
                warnings.warn(
                    f"checkpoint {checkpoint.path} is unreadable ({type(err).__name__}: "
                    f"{err}); falling back to the previous one",
                    RuntimeWarning,
                    stacklevel=2,
                )
                tried.append(checkpoint.path)
        if tried:
            raise CheckpointLost(
                f"no checkpoint of this trial can be read from {self.storage} (tried "
                f"{', '.join(tried)}); rerun with the --storage the study ran with"
            )
        return None

    def save(self, state: dict, iteration: int) -> str:
        import torch
        from ray import tune

        folder = Path(tempfile.mkdtemp(prefix="ablate-ckpt-"))
        try:
            torch.save(state, folder / STATE_FILE)
            meta = {"trial": self.key, "run": self.run, "iteration": iteration}
            (folder / META_FILE).write_text(json.dumps(meta))
            tune.report(encode(Saved(iteration)), checkpoint=tune.Checkpoint.from_directory(folder))
        except OSError as err:
            raise OSError(
                f"could not write the checkpoint at iteration {iteration} to {self.storage} "
                f"({err.strerror or err}); the previous checkpoint is intact"
            ) from err
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return self.storage


def folder_key(key: str) -> str:
    """A trial key as the start of its folder name in the storage (Tune adds its id)."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", key)[:80]


def stored_checkpoints(storage: str, prefix: str, keys: list[str]) -> dict[str, list[str]]:
    """MLflow run id -> its checkpoints in the storage, newest first, from the meta files of
    the trials `keys` in the Tune runs named `prefix`*. The store records each checkpoint
    only once the driver hears of it; a driver killed in between leaves a newer one that
    only this finds."""
    import pyarrow.fs

    folders = {folder_key(k) + "-" for k in keys}

    fs, root = pyarrow.fs.FileSystem.from_uri(storage)
    found: dict[str, list[tuple[int, str]]] = {}
    try:
        tune_runs = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
        for tune_run in tune_runs:
            if tune_run.type != pyarrow.fs.FileType.Directory:
                continue
            if not tune_run.base_name.startswith(prefix):
                continue
            for info in fs.get_file_info(pyarrow.fs.FileSelector(tune_run.path, recursive=True)):
                if info.base_name != META_FILE:
                    continue
                trial_folder = info.path.rsplit("/", 3)[-3]  # <trial>/checkpoint_N/meta.json
                if not any(trial_folder.startswith(f) for f in folders):
                    continue  # another trial's: not read (a bucket charges per read)
                meta = _read_meta(fs, info.path)
                if meta and meta.get("run"):  # else half-written: the recorded ones stand
                    folder = info.path.rsplit("/", 1)[0]
                    found.setdefault(meta["run"], []).append((meta["iteration"], folder))
    except OSError:
        return {}  # an unreadable storage: resume from what the store recorded
    return {run: [path for _, path in sorted(kept, reverse=True)] for run, kept in found.items()}


def _read_meta(fs, path: str) -> dict | None:
    """A checkpoint's meta file (its "iteration" an int), or None if it cannot be read."""
    try:
        with fs.open_input_stream(path) as f:
            meta = json.loads(f.read())
        meta["iteration"] = int(meta["iteration"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return meta


def run_trial(tune_config: dict) -> None:
    """Train the trial in `tune_config["trial"]` (a payload from ablations/runner.py);
    sampled nuisance values, when tuning, sit beside it."""
    import torch
    from ray import tune

    from ablations.manifest import environment
    from resnet.config import TrainConfig
    from resnet.data import load_dataset
    from resnet.train import Callback, train

    payload = tune_config["trial"]
    threads = int(payload["threads"])
    torch.set_num_threads(threads)
    overrides = {k: v for k, v in tune_config.items() if k != "trial"}

    class Relay(Callback):
        def __init__(self, env: dict):
            self.env = env

        def on_start(self, info: dict) -> None:
            start = Start(
                info["resumed_from"],
                info["val_digest"],
                info["train_size"],
                self.env,
                info["history"],
            )
            tune.report(encode(start))

        def on_eval(self, record: dict) -> None:
            tune.report(encode(Evaluation(record)))

    try:
        config = TrainConfig.from_dict({**payload["config"], **overrides})
        data = load_dataset(config.dataset, config.data_dir, config.val_size)
        env = environment(config, data, threads)
        store = TuneCheckpoints(
            payload["storage"], payload.get("resume", []), payload["key"], payload.get("run", "")
        )
        result = train(config, Relay(env), store if payload["checkpoints"] else None, data)
        final = Final(result.status, result.summary(), result.lr_trace, result.layer_responses)
    except Exception as err:  # noqa: BLE001 - deterministic: recorded, not retried
        final = Final("failed", error=_reason(err))
    tune.report(encode(final))


def _reason(err: BaseException) -> str:
    """The error in one line: its type and message, and where it came from when the
    message alone does not say (an unexpected error)."""
    from resnet.errors import ResnetError

    text = " ".join(str(err).split())
    if isinstance(err, ResnetError | OSError | CheckpointLost):
        return f"{type(err).__name__}: {text}"
    frame = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    where = f" (at {Path(frame.filename).name}:{frame.lineno})" if frame else ""
    return f"{type(err).__name__}: {text}{where}"
