"""Parameter and multiply-accumulate counts of a model, on the meta device (no memory, no
compute, even for ResNet-1202)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from resnet.model import build
from resnet.spec import ModelSpec


def input_size(spec: ModelSpec) -> int:
    """32x32 for CIFAR nets, 224x224 for ImageNet nets (the sizes the paper counts at)."""
    return 32 if spec.stem == "cifar" else 224


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, size: int, in_channels: int = 3) -> int:
    """Forward multiply-accumulates for one image: every conv (output elements x input
    channels per group x kernel area) and linear layer (inputs x outputs), from the shapes
    one forward pass gives. BN, ReLU, pooling and additions are not counted (neither does
    the paper). The tests check it against torch's FlopCounterMode, which counts the same
    at several times the cost (`ablate show` counts many nets).

    The pass runs on the CPU over zeroed weights (only shapes matter): on the meta device
    the first ReLU or BN loads torch's compiler stack, a second and a half."""
    was_training = model.training
    model.eval()
    total = 0

    def count(module: nn.Module, _inputs, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += out.numel() * module.in_channels // module.groups * k
        else:
            total += out.numel() * module.in_features

    shapes = copy.deepcopy(model) if not next(model.parameters()).is_meta else model
    shapes = shapes.to_empty(device="cpu")
    with torch.no_grad():
        for t in (*shapes.parameters(), *shapes.buffers()):
            t.zero_()  # garbage memory may hold denormals, which are slow to compute on
    for m in shapes.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            m.register_forward_hook(count)
    threads = torch.get_num_threads()
    # One thread: a batch of one is too small to share, and OpenMP threads wait many-fold
    # longer than they compute when another process uses the cores.
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            shapes(torch.zeros(1, in_channels, size, size))
        return total
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)


def complexity(spec: ModelSpec) -> dict[str, int]:
    """`{"params": ..., "macs": ...}` for a spec (built on the meta device: no init)."""
    with torch.device("meta"):
        model = build(spec, init=False)
    return {
        "params": count_params(model),
        "macs": count_macs(model, input_size(spec), spec.in_channels),
    }


def layout(spec: ModelSpec) -> list[dict]:
    """The network by stage: units, unit layout, output width and feature-map size."""
    size = input_size(spec)
    size = size // 4 if spec.stem == "imagenet" else size
    if spec.bottleneck:
        unit = "1x1-3x3-1x1 bottleneck"
    else:
        unit = "-".join(["3x3"] * spec.skip_length)
    unit = ("BN-ReLU-conv " if spec.preactivation else "") + unit
    rows = [
        {
            "stage": "stem",
            "units": 1,
            "unit": "7x7/2 conv + 3x3/2 max pool" if spec.stem == "imagenet" else "3x3 conv",
            "width": spec.width,
            "size": size,
        }
    ]
    for i, (n, w) in enumerate(zip(spec.units, spec.stage_widths, strict=True)):
        size = size if i == 0 else (size + 1) // 2
        rows.append({"stage": f"stage{i + 1}", "units": n, "unit": unit, "width": w, "size": size})
    rows.append(
        {
            "stage": "head",
            "units": 1,
            "unit": f"global avg pool, fc {spec.num_classes}",
            "width": spec.num_classes,
            "size": 1,
        }
    )
    return rows
