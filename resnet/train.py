"""The training engine: the paper's recipe, a fast loop, exact resume (docs/paper.md §4).

Usable alone: `train(config, callback)` knows nothing of Ray or MLflow. Progress leaves
through a plain callback; the study runner plugs Ray Tune and MLflow in there, and keeps
checkpoints where it likes through the `Checkpoints` protocol (resnet/checkpoint.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from resnet.augment import ResidentBatches, eval_batches, normalize, share
from resnet.checkpoint import Checkpoints, FolderCheckpoints
from resnet.complexity import count_macs, count_params
from resnet.config import TrainConfig
from resnet.data import ImageSplits, StreamingSplits, load_dataset
from resnet.errors import CheckpointMismatch, DataError, DeviceError
from resnet.measure import Clock, compile_mode, evaluate, layer_responses, resolve_device
from resnet.parallel import all_sum, average_statistics, earliest, ghost_batches, world
from resnet.schedule import LRSchedule
from resnet.step import Step, make_optimizer
from resnet.streaming import StreamingBatches, streaming_eval

RESPONSE_IMAGES = 500  # test images in the fixed batch for layer responses
EVAL_BATCH = 1000


class Callback:
    """Hooks the loop calls; every method is optional."""

    def on_start(self, info: dict) -> None:
        """Once, with `params`, `macs`, `resumed_from` (iteration), `history`, `eval_every`,
        `train_size` and `val_digest` (the validation split's fingerprint)."""

    def on_step(self, iteration: int) -> None:
        """After every optimizer step (cheap: no device sync happens for it)."""

    def on_eval(self, evaluation: dict) -> None:
        """At each evaluation point, with the metrics of docs/tracking.md."""

    def on_checkpoint(self, iteration: int, where: str) -> None:
        """After a checkpoint is safely kept, with where it is."""

    def should_stop(self) -> bool:
        """Polled every step: True checkpoints and returns with status `stopped`."""
        return False


@dataclass
class TrainResult:
    status: str  # finished | diverged | stopped
    iterations: int  # completed iterations
    history: list[dict]
    lr_trace: dict[str, list]
    layer_responses: dict[str, list] | None
    wall_time_s: float
    params: int
    macs: int
    diverged_at: int | None = None

    def summary(self) -> dict:
        last = self.history[-1] if self.history else {}
        return {
            "status": self.status,
            "iterations": self.iterations,
            "diverged_at": self.diverged_at,
            "train_error": last.get("train/error"),
            "val_error": last.get("val/error"),
            "test_error": last.get("test/error"),
            "wall_time_s": round(self.wall_time_s, 3),
            "params": self.params,
            "macs": self.macs,
        }


@dataclass
class _Setup:
    """Everything a run trains with, before any checkpoint is restored."""

    model: nn.Module
    forward: nn.Module  # the model, or its torch.compile'd twin for the training forward
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    batches: ResidentBatches | StreamingBatches
    eval_sets: Callable[[], tuple[Iterator, Iterator]]
    probe: torch.Tensor  # fixed test images for the layer responses
    eval_every: int
    checkpoint_every: int
    params: int
    macs: int


@dataclass
class _State:
    """What the loop advances and a checkpoint carries besides the torch state."""

    iteration: int = 0
    history: list[dict] = field(default_factory=list)
    wall_time_s: float = 0.0


def train(
    config: TrainConfig,
    callback: Callback | None = None,
    checkpoints: Checkpoints | str | Path | None = None,
    data: ImageSplits | StreamingSplits | None = None,
) -> TrainResult:
    """Train one model with `config`; resume from `checkpoints` (a `Checkpoints`, or a
    folder) when they hold a state of the same settings."""
    cb = callback or Callback()
    if isinstance(checkpoints, str | Path):
        checkpoints = FolderCheckpoints(checkpoints)
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = data or load_dataset(config.dataset, config.data_dir, config.val_size)
    setup = _setup(config, data, device)
    state = _State()
    saved = checkpoints.load(device) if checkpoints is not None else None
    if saved is not None:
        state = _restore(config, setup, saved)
    step = Step(
        setup.model,
        setup.optimizer,
        device,
        config.precision,
        graph=config.step == "graph",
        forward=setup.forward,
        mark_steps=config.compile and compile_mode(device) == "reduce-overhead",
    )
    if saved is not None:
        step.load_state_dict(saved)
    cb.on_start(
        {
            "params": setup.params,
            "macs": setup.macs,
            "resumed_from": state.iteration,
            "history": list(state.history),
            "eval_every": setup.eval_every,
            "train_size": data.train_size,
            "val_digest": data.val_digest,
        }
    )
    status, diverged_at = _loop(config, setup, step, state, cb, checkpoints, device)
    responses = layer_responses(setup.model, setup.probe) if status == "finished" else None
    return TrainResult(
        status=status,
        iterations=state.iteration,
        history=state.history,
        lr_trace=setup.schedule.trace_dict(state.iteration),
        layer_responses=responses,
        wall_time_s=state.wall_time_s,
        params=setup.params,
        macs=setup.macs,
        diverged_at=diverged_at,
    )


def _setup(
    config: TrainConfig, data: ImageSplits | StreamingSplits, device: torch.device
) -> _Setup:
    if config.batch_size > data.train_size:
        raise DataError(
            f"batch_size {config.batch_size} exceeds the {data.train_size} training images"
        )
    rank, replicas = world()
    if replicas != config.replicas:
        raise DeviceError(
            f"replicas: the config asks for {config.replicas}, and {replicas} process(es) "
            "train it (torch.distributed); a study starts them itself"
        )
    # Initialization draws from the trial's seed only (no global state leaks in or out).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = config.build_model(data.num_classes, data.in_channels)
    size = tuple(data.train_x.shape[-2:]) if isinstance(data, ImageSplits) else 224
    params, macs = count_params(model), count_macs(model, size, data.in_channels)
    if config.bn_batch < config.batch_size:
        ghost_batches(model, config.bn_batch)
    model = model.to(device, memory_format=torch.channels_last)
    forward = model
    if replicas > 1:  # gradients averaged over the replicas; BN statistics stay per replica
        ids = [device.index or 0] if device.type == "cuda" else None
        forward = nn.parallel.DistributedDataParallel(
            model, device_ids=ids, broadcast_buffers=False
        )
    # The training forward (and, through AOTAutograd, backward) compiled; evaluation and
    # layer responses use the eager module, which shares its weights.
    if config.compile:
        forward = torch.compile(forward, mode=compile_mode(device))
    optimizer = make_optimizer(model, config.lr, config.momentum, config.weight_decay)
    schedule = LRSchedule(
        config.lr,
        config.lr_policy,
        config.iterations,
        config.warmup,
        config.warmup_lr,
        config.plateau_patience,
    )
    batches, eval_sets, probe = _data_on_device(config, data, device, rank, replicas)
    eval_every = config.eval_every or max(1, data.train_size // config.batch_size)
    return _Setup(
        model=model,
        forward=forward,
        optimizer=optimizer,
        schedule=schedule,
        batches=batches,
        eval_sets=eval_sets,
        probe=probe,
        eval_every=eval_every,
        checkpoint_every=config.checkpoint_every or eval_every,
        params=params,
        macs=macs,
    )


def _data_on_device(
    config: TrainConfig, data, device: torch.device, rank: int = 0, replicas: int = 1
):
    """Training batches (replica `rank`'s part of each), a function giving fresh (val, test)
    batch iterators, and the fixed batch of test images for the layer responses."""
    part = {"rank": rank, "replicas": replicas}
    if isinstance(data, ImageSplits):
        batches = ResidentBatches(
            data.train_x.to(device),
            data.train_y.to(device),
            config.batch_size,
            config.seed,
            data.mean,
            data.std,
            **part,
        )

        def mine(x: torch.Tensor) -> torch.Tensor:
            # Each replica evaluates its contiguous share; evaluate() sums the shares.
            return x[share(len(x), rank, replicas)].to(device)

        val = mine(data.val_x), mine(data.val_y)
        test = mine(data.test_x), mine(data.test_y)

        def eval_sets():
            return [eval_batches(*s, EVAL_BATCH, data.mean, data.std) for s in (val, test)]

        probe = normalize(data.test_x[:RESPONSE_IMAGES].to(device), data.mean, data.std)
        return batches, eval_sets, probe
    batches = StreamingBatches(data, config.batch_size, config.seed, device, **part)

    def streamed():  # each replica its share, as above
        return tuple(streaming_eval(data, split, device, **part) for split in ("val", "test"))

    probe = next(iter(streaming_eval(data, "test", device, limit=64)))[0]
    return batches, streamed, probe


def _restore(config: TrainConfig, setup: _Setup, saved: dict) -> _State:
    """Put a checkpoint's state into the setup; the returned state continues the run."""
    if saved["fingerprint"] != config.fingerprint():
        raise CheckpointMismatch(
            "the checkpoint to resume from belongs to other settings (fingerprint "
            f"{saved['fingerprint']}, these {config.fingerprint()}); use another "
            "checkpoint location"
        )
    try:
        setup.model.load_state_dict(saved["model"])
    except RuntimeError as e:  # same settings, other modules: saved by another model code
        first = (str(e).strip().splitlines() or [type(e).__name__])[-1].strip()[:300]
        raise CheckpointMismatch(
            "the checkpoint's weights do not fit this model (saved by another version of the "
            f"model code?): {first}; use another checkpoint location"
        ) from e
    setup.optimizer.load_state_dict(saved["optimizer"])
    setup.schedule.load_state_dict(saved["schedule"])
    setup.batches.load_state_dict(saved["batches"])
    return _State(int(saved["iteration"]), list(saved["history"]), float(saved["wall_time_s"]))


def _checkpoint_blob(config: TrainConfig, setup: _Setup, step: Step, state: _State) -> dict:
    return {
        "fingerprint": config.fingerprint(),
        "model": setup.model.state_dict(),
        "optimizer": setup.optimizer.state_dict(),
        "schedule": setup.schedule.state_dict(),
        "batches": setup.batches.state_dict(),
        **step.state_dict(),
        "iteration": state.iteration,
        "history": state.history,
        "wall_time_s": state.wall_time_s,
    }


def _evaluation(setup: _Setup, step: Step, precision: str, it: int, lr: float, images, clock):
    """The record of one evaluation: the training window since the last (`images` trained
    since `clock`'s last lap), then val and test (skipped once the loss is not finite)."""
    loss, err, _ = step.window()
    evaluation = {"iteration": it, "lr": lr, "train/loss": loss, "train/error": err}
    evaluation["images_per_s"] = images / max(clock.lap(), 1e-9)
    if math.isfinite(loss):
        for split, batches in zip(("val", "test"), setup.eval_sets(), strict=True):
            result = evaluate(setup.model, batches, precision)
            if result is not None:
                evaluation[f"{split}/loss"], evaluation[f"{split}/error"] = result
    return evaluation


def _window_counts(step: Step) -> torch.Tensor:
    """(errors, images) of the step's training window so far, on the device, not read."""
    return torch.stack([step.acc["err"], step.acc["n"]])


def _iteration_error(step: Step, before: torch.Tensor) -> float:
    """The training error of the iteration just trained, over every replica: the window's
    counts now minus `before` (the paper's warm-up rule, resnet/schedule.py)."""
    counts = _window_counts(step) - before
    all_sum(counts)
    errors, images = counts.tolist()
    return errors / max(images, 1.0)


def _loop(
    config: TrainConfig,
    setup: _Setup,
    step: Step,
    state: _State,
    cb: Callback,
    checkpoints: Checkpoints | None,
    device: torch.device,
) -> tuple[str, int | None]:
    """Train from state.iteration to config.iterations; returns (status, diverged_at)."""
    status, diverged_at = "finished", None
    it = state.iteration
    clock = Clock(device)
    window_images = 0
    schedule = setup.schedule
    setup.model.train()
    while it < config.iterations:
        lr = schedule.lr(it)
        x, y = setup.batches.next()
        before = _window_counts(step) if schedule.needs_train_error() else None
        step(x, y, lr, it)
        if before is not None:  # the paper's warm-up: one host read per iteration it lasts
            schedule.observe_iteration_error(_iteration_error(step, before))
        it += 1
        window_images += config.batch_size
        cb.on_step(it)

        stop = cb.should_stop()
        at_eval = it % setup.eval_every == 0 or it == config.iterations
        saving = checkpoints is not None and (
            stop or it % setup.checkpoint_every == 0 or it == config.iterations
        )
        if at_eval or saving:
            average_statistics(setup.model)  # the replicas' running statistics, as one
        if at_eval:
            evaluation = _evaluation(setup, step, config.precision, it, lr, window_images, clock)
            state.history.append(evaluation)
            if "val/error" in evaluation:
                schedule.observe_val_error(evaluation["val/error"])
            bad = earliest(step.first_bad)
            if bad >= 0:
                status, diverged_at = "diverged", bad
            cb.on_eval(evaluation)
            window_images = 0
        if status == "diverged":
            break
        if saving:
            state.iteration = it
            state.wall_time_s += clock.total()
            where = checkpoints.save(_checkpoint_blob(config, setup, step, state), it)
            cb.on_checkpoint(it, where)
        if stop:
            status = "stopped"
            break
        if at_eval:
            clock.lap()  # evaluation and checkpoint time stay out of images/s
    state.iteration = it
    state.wall_time_s += clock.total()
    return status, diverged_at
