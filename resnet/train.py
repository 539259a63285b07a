"""The training engine: the paper's recipe, a fast loop, exact resume (PAPER.md section 4).

Usable alone: `train(config, callback)` knows nothing of Ray or MLflow. Progress leaves
through a plain callback; the runner plugs Ray Tune and MLflow in there.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from resnet import checkpoint
from resnet.augment import ResidentBatches, eval_batches
from resnet.complexity import count_macs, count_params, input_size
from resnet.config import TrainConfig
from resnet.data import DataError, ImageSplits, StreamingSplits, load_dataset
from resnet.measure import evaluate, layer_responses
from resnet.model import build
from resnet.schedule import LRSchedule
from resnet.streaming import StreamingBatches, streaming_eval

RESPONSE_IMAGES = 500  # test images in the fixed batch for layer responses
WARMUP_CHECK_EVERY = 50  # iterations between reads of the training error in paper warm-up
EVAL_BATCH = 1000


class Callback:
    """Hooks the loop calls; every method is optional."""

    def on_start(self, info: dict) -> None:
        """Once, with `params`, `macs`, `resumed_from` (iteration), `history`, `eval_every`,
        `train_size` and `val_digest` (the validation split's fingerprint)."""

    def on_step(self, iteration: int) -> None:
        """After every optimizer step (cheap: no device sync happens for it)."""

    def on_eval(self, record: dict) -> None:
        """At each evaluation point, with the metrics of STYLE.md section 2."""

    def on_checkpoint(self, iteration: int, path: Path) -> None:
        """After a checkpoint is safely on disk."""

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
    final: dict = field(default_factory=dict)

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


def compile_mode(device: torch.device) -> str:
    """CUDA graphs on a GPU: a CIFAR ResNet step is hundreds of small kernels whose launch
    overhead dominates; inductor's default on CPU (no graphs there)."""
    return "reduce-overhead" if device.type == "cuda" else "default"


def compile_model(model: nn.Module, device: torch.device) -> nn.Module:
    """The training forward (and, through AOTAutograd, backward) compiled; evaluation and
    layer responses keep using the eager module, which shares its parameters."""
    return torch.compile(model, mode=compile_mode(device))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DataError(f"device {name!r} asked for, but no CUDA GPU is visible; use cpu or auto")
    return torch.device(name)


def train(
    config: TrainConfig,
    callback: Callback | None = None,
    checkpoint_dir: str | Path | None = None,
    data: ImageSplits | StreamingSplits | None = None,
) -> TrainResult:
    """Train one model with `config`; resume from `checkpoint_dir` if it holds a checkpoint."""
    cb = callback or Callback()
    device = resolve_device(config.device)
    data = data or load_dataset(config.dataset, config.data_dir, config.val_size)
    in_channels = data.train_x.shape[1] if isinstance(data, ImageSplits) else 3
    spec = config.model_spec(data.num_classes, in_channels)
    if isinstance(data, ImageSplits) and config.batch_size > len(data.train_x):
        raise DataError(
            f"batch_size {config.batch_size} exceeds the {len(data.train_x)} training images"
        )
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True

    # Initialization draws from the trial's seed only (no global state leaks in or out).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build(spec)
    params, macs = count_params(model), count_macs(model, input_size(spec), in_channels)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        fused=cuda or None,
    )
    schedule = LRSchedule(
        config.lr,
        config.lr_policy,
        config.iterations,
        config.warmup,
        config.warmup_lr,
        config.plateau_patience,
    )
    if isinstance(data, ImageSplits):
        batches = ResidentBatches(
            data.train_x.to(device),
            data.train_y.to(device),
            config.batch_size,
            config.seed,
            data.mean,
            data.std,
        )
        val = (data.val_x.to(device), data.val_y.to(device))
        test = (data.test_x.to(device), data.test_y.to(device))

        def eval_sets():
            return (
                eval_batches(*val, EVAL_BATCH, data.mean, data.std),
                eval_batches(*test, EVAL_BATCH, data.mean, data.std),
            )

        train_size = len(data.train_x)
        probe = data.test_x[:RESPONSE_IMAGES].to(device)
        probe = next(
            eval_batches(probe, probe.new_zeros(len(probe)), len(probe), data.mean, data.std)
        )[0]
    else:
        batches = StreamingBatches(data, config.batch_size, config.seed, device)

        def eval_sets():
            return streaming_eval(data, "val", device), streaming_eval(data, "test", device)

        train_size = len(data.train_samples)
        probe = next(iter(streaming_eval(data, "test", device, limit=64)))[0]

    eval_every = config.eval_every or max(1, train_size // config.batch_size)
    ckpt_every = config.checkpoint_every or eval_every
    step_model = compile_model(model, device) if config.compile else model
    graphs = config.compile and compile_mode(device) == "reduce-overhead"

    # Accumulators live on the device: no host sync inside the step loop.
    acc = {k: torch.zeros((), device=device) for k in ("loss", "err", "n")}
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    state = {"iteration": 0, "history": [], "wall_time_s": 0.0}

    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else None
    saved = checkpoint.load_latest(ckpt_dir, device) if ckpt_dir else None
    if saved is not None:
        if saved["fingerprint"] != config.fingerprint():
            raise DataError(
                f"checkpoints in {ckpt_dir} belong to other settings; "
                "use another checkpoint directory"
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        batches.load_state_dict(saved["batches"])
        for k in acc:
            acc[k].copy_(saved["acc"][k])
        first_bad.copy_(saved["first_bad"])
        state = {k: saved[k] for k in ("iteration", "history", "wall_time_s")}

    def save_checkpoint() -> None:
        if ckpt_dir is None:
            return
        blob = {
            "fingerprint": config.fingerprint(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "batches": batches.state_dict(),
            "acc": {k: v.detach().cpu() for k, v in acc.items()},
            "first_bad": first_bad.cpu(),
            **state,
        }
        cb.on_checkpoint(state["iteration"], checkpoint.save(blob, ckpt_dir, state["iteration"]))

    cb.on_start(
        {
            "params": params,
            "macs": macs,
            "resumed_from": state["iteration"],
            "history": list(state["history"]),
            "eval_every": eval_every,
            "train_size": train_size,
            "val_digest": data.val_digest,
        }
    )
    status, diverged_at = "finished", None
    it = state["iteration"]
    clock = _Clock(cuda)
    window_images = 0
    model.train()
    while it < config.iterations:
        lr = schedule.lr(it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = batches.next()
        if graphs:
            # CUDA graph trees reuse output memory between replays: mark each new step.
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            out = step_model(x)
        loss = nn.functional.cross_entropy(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss = loss.detach()
        acc["loss"] += loss * len(y)
        acc["err"] += (out.detach().argmax(1) != y).sum()
        acc["n"] += len(y)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), it, first_bad)
        it += 1
        window_images += len(y)
        cb.on_step(it)

        if schedule.needs_train_error() and it % WARMUP_CHECK_EVERY == 0:
            schedule.observe_train_error((acc["err"] / acc["n"]).item())
        stop = cb.should_stop()
        at_eval = it % eval_every == 0 or it == config.iterations
        if at_eval:
            train_seconds = clock.lap()
            record = _record(
                it, lr, acc, window_images / max(train_seconds, 1e-9), model, eval_sets, cuda
            )
            state["history"].append(record)
            if "val/error" in record:
                schedule.observe_val_error(record["val/error"])
            bad = int(first_bad.item())
            if bad >= 0:
                status, diverged_at = "diverged", bad
            cb.on_eval(record)
            for v in acc.values():
                v.zero_()
            window_images = 0
        if status == "diverged":
            break
        if stop or it % ckpt_every == 0 or it == config.iterations:
            state["iteration"] = it
            state["wall_time_s"] += clock.total()
            save_checkpoint()
        if stop:
            status = "stopped"
            break
        if at_eval:
            clock.lap()  # evaluation and checkpoint time stay out of images/s

    state["wall_time_s"] += clock.total()
    responses = layer_responses(model, probe) if status == "finished" else None
    return TrainResult(
        status=status,
        iterations=it,
        history=state["history"],
        lr_trace=schedule.trace_dict(it),
        layer_responses=responses,
        wall_time_s=state["wall_time_s"],
        params=params,
        macs=macs,
        diverged_at=diverged_at,
        final=state["history"][-1] if state["history"] else {},
    )


class _Clock:
    """Seconds between laps (synchronizing the GPU first) and in total since last read."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.last_lap = self.last_total = time.perf_counter()

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def lap(self) -> float:
        now = self._now()
        seconds, self.last_lap = now - self.last_lap, now
        return seconds

    def total(self) -> float:
        now = self._now()
        seconds, self.last_total = now - self.last_total, now
        return seconds


def _record(it, lr, acc, images_per_s, model, eval_sets, autocast) -> dict:
    n = max(acc["n"].item(), 1.0)
    record = {
        "iteration": it,
        "lr": lr,
        "train/loss": acc["loss"].item() / n,
        "train/error": acc["err"].item() / n,
        "images_per_s": images_per_s,
    }
    if not math.isfinite(record["train/loss"]):
        return record
    val, test = eval_sets()
    for prefix, batches in (("val", val), ("test", test)):
        result = evaluate(model, batches, autocast)
        if result is not None:
            record[f"{prefix}/loss"], record[f"{prefix}/error"] = result
    return record
