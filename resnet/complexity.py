"""Parameter and multiply-accumulate counts of a model, from one forward pass of a single
image on the CPU: of any trial's model (`of_config`), or of a ResNet spec at the size the
paper counts it (`complexity`)."""

from __future__ import annotations

import copy
import functools
import traceback
from pathlib import Path

import torch
from torch import nn

from resnet.builders import load_builder
from resnet.errors import ModelError, ResnetError, one_line
from resnet.model import build
from resnet.spec import ModelSpec


def input_size(spec: ModelSpec) -> int:
    """32x32 for CIFAR nets, 224x224 for ImageNet nets (the sizes the paper counts at)."""
    return 32 if spec.stem == "cifar" else 224


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, size: int | tuple[int, int], in_channels: int = 3) -> int:
    """Forward multiply-accumulates for one image: convs and linear layers, from the shapes
    of one forward pass (BN, ReLU, pooling and additions are not counted, nor by the
    paper). torch's FlopCounterMode counts the same (the tests check) at several times the
    cost. On the CPU: on the meta device the first ReLU or BN loads torch's compiler stack
    (1.5 s)."""
    total = 0

    def count(module: nn.Module, _inputs, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += out.numel() * module.in_channels // module.groups * k
        else:
            total += out.numel() * module.in_features

    if next(model.parameters()).device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    hooks = [
        m.register_forward_hook(count)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    was_training, threads = model.training, torch.get_num_threads()
    # One thread: a batch of one is too small to share, and OpenMP threads wait many-fold
    # longer than they compute when another process uses the cores.
    torch.set_num_threads(1)
    model.eval()
    try:
        h, w = (size, size) if isinstance(size, int) else size
        with torch.inference_mode():
            model(torch.zeros(1, in_channels, h, w))
        return total
    finally:
        for hook in hooks:
            hook.remove()
        torch.set_num_threads(threads)
        model.train(was_training)


def of_config(config, num_classes: int, in_channels: int, size) -> dict[str, int]:
    """`{"params": ..., "macs": ...}` of a trial's model at the data set's image size."""
    counts = measure(config, num_classes, in_channels, size)
    return {k: counts[k] for k in ("params", "macs")}


def measure(config, num_classes: int, in_channels: int, size) -> dict[str, int]:
    """of_config's counts and the model's BatchNorm layers (`batchnorm_layers`)."""
    factors = tuple(sorted(config.factors.items()))
    size = size if isinstance(size, int) else tuple(size)
    return dict(_counted(config.model, factors, num_classes, in_channels, size))


@functools.lru_cache(maxsize=256)
def _counted(model: str, factors: tuple, num_classes: int, in_channels: int, size) -> tuple:
    """The counts of a trial's model, after one training step on a batch of two images of
    the data set's shape proved that it trains (ModelError otherwise, in one line)."""
    h, w = (size, size) if isinstance(size, int) else size
    shape = f"a batch of 2 x {in_channels} x {h} x {w} images, {num_classes} classes"
    with torch.random.fork_rng(devices=[]):  # the trials' random streams stay untouched
        try:
            net = load_builder(model).build(num_classes, in_channels, dict(factors))
            _one_step(net, num_classes, torch.randn(2, in_channels, h, w))
            norms = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
            macs = count_macs(net, size, in_channels)
            return (("params", count_params(net)), ("macs", macs), ("batchnorm_layers", norms))
        except ModelError as err:
            raise ModelError(f"the model does not train on {shape}: {err}") from None
        except ResnetError:
            raise
        except Exception as err:  # noqa: BLE001 - a user's model may fail any way: one line
            raise ModelError(
                f"the model does not train on {shape}: {one_line(err)}{_where(err)}"
            ) from None


def _one_step(net: nn.Module, num_classes: int, x: torch.Tensor) -> None:
    """Forward and backward in training mode, as a trial's first step runs them."""
    if not isinstance(net, nn.Module):
        raise ModelError(f"the builder returned a {type(net).__name__}, not a torch nn.Module")
    if not any(p.requires_grad for p in net.parameters()):
        raise ModelError("it has no trainable parameters")
    net.train()
    entered: list[str] = []  # the layers whose forward started, innermost last
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, name=name: entered.append(name))
        for name, m in net.named_modules()
        if name
    ]
    try:
        out = net(x)
    except Exception as err:
        err.add_note(_layer(net, entered))
        raise
    finally:
        for hook in hooks:
            hook.remove()
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x), num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"it returns {got}, not ({len(x)}, {num_classes}) class scores")
    out.float().sum().backward()


def _layer(net: nn.Module, entered: list[str]) -> str:
    """` (in layer NAME: TYPE)`: the layer whose forward started last."""
    if not entered:
        return ""
    return f" (in layer {entered[-1]}: {type(net.get_submodule(entered[-1])).__name__})"


def _where(err: BaseException) -> str:
    """Where the model failed: ` (at FILE:LINE)`, the last frame of the traceback outside
    torch (the user's own code), and the layer that was running."""
    layer = "".join(getattr(err, "__notes__", []))
    inside = (
        Path(torch.__file__).parent,
        Path(__file__).parent.parent / "resnet" / "complexity.py",
    )
    frames = [
        f
        for f in traceback.extract_tb(err.__traceback__)
        if not Path(f.filename).is_relative_to(inside[0]) and Path(f.filename) != inside[1]
    ]
    at = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return at + layer


@functools.lru_cache(maxsize=256)
def complexity(spec: ModelSpec) -> dict[str, int]:
    """`{"params": ..., "macs": ...}` for a spec. Built on the CPU with PyTorch's default
    init (the paper's init costs a second to set up and changes no count)."""
    model = build(spec, init=False)
    return {
        "params": count_params(model),
        "macs": count_macs(model, input_size(spec), spec.in_channels),
    }


def layout(spec: ModelSpec) -> list[dict]:
    """The network by stage: units, unit layout, output width and feature-map size."""
    size = input_size(spec)
    size = size // 4 if spec.stem == "imagenet" else size
    unit = "1x1-3x3-1x1 bottleneck" if spec.bottleneck else "-".join(["3x3"] * spec.skip_length)
    unit = ("BN-ReLU-conv " if spec.preactivation else "") + unit
    stem = "7x7/2 conv + 3x3/2 max pool" if spec.stem == "imagenet" else "3x3 conv"
    rows = [("stem", 1, stem, spec.width, size)]
    for i, (n, w) in enumerate(zip(spec.units, spec.stage_widths, strict=True)):
        size = size if i == 0 else (size + 1) // 2
        rows.append((f"stage{i + 1}", n, unit, w, size))
    rows.append(("head", 1, f"global avg pool, fc {spec.num_classes}", spec.num_classes, 1))
    keys = ("stage", "units", "unit", "width", "size")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def render(spec: ModelSpec, counts: dict[str, int]) -> str:
    """`ablate model`'s text: the net, its stages and its counts."""
    extras = ", bottleneck" * spec.bottleneck + ", pre-activation" * spec.preactivation
    lines = [f"{spec.label()}  ({spec.stem} stem, skip length {spec.skip_length}{extras})"]
    lines.append(f"{'stage':<8} {'units':>5}  {'unit':<32} {'width':>6} {'map':>5}")
    for row in layout(spec):
        lines.append(
            f"{row['stage']:<8} {row['units']:>5}  {row['unit']:<32} {row['width']:>6} "
            f"{row['size']:>4}²"
        )
    lines.append(f"params {counts['params']:,}   MACs {counts['macs'] / 1e6:,.2f}M per image")
    return "\n".join(lines)
