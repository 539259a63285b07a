"""Parameter and multiply-accumulate counts, by torch's own machinery (no hand formulas)."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnet.model import build
from resnet.spec import ModelSpec


def input_size(spec: ModelSpec) -> int:
    """32x32 for CIFAR nets, 224x224 for ImageNet nets (the sizes the paper counts at)."""
    return 32 if spec.stem == "cifar" else 224


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, size: int, in_channels: int = 3) -> int:
    """Forward multiply-accumulates for one image. FlopCounterMode counts convs and
    matmuls and reports FLOPs = 2 x MACs; BN, ReLU, pooling and additions are not counted
    (neither does the paper)."""
    was_training = model.training
    model.eval()
    try:
        with torch.device("meta"):
            x = torch.empty(1, in_channels, size, size)
        # Counting on the meta device costs no memory or compute, even for ResNet-1202.
        on_meta = next(model.parameters()).is_meta
        meta = model if on_meta else copy.deepcopy(model).to("meta")
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            meta(x)
        return counter.get_total_flops() // 2
    finally:
        model.train(was_training)


def complexity(spec: ModelSpec) -> dict[str, int]:
    """`{"params": ..., "macs": ...}` for a spec, counted on the meta device."""
    with torch.device("meta"):
        model = build(spec)
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
