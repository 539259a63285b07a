"""Evaluation and the paper's layer responses (Fig. 7)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from resnet.model import response_modules
from resnet.step import eval_autocast


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], precision: str = "fp32"
) -> tuple[float, float] | None:
    """Mean cross-entropy and error (fraction) over the batches; None when there are none.
    Sums stay on the device; one host read at the end."""
    was_training = model.training
    model.eval()
    loss_sum = err_sum = None
    count = 0
    for x, y in batches:
        device = x.device
        with eval_autocast(device, precision):
            out = model(x)
        loss = nn.functional.cross_entropy(out.float(), y, reduction="sum")
        err = (out.argmax(1) != y).sum()
        loss_sum = loss if loss_sum is None else loss_sum + loss
        err_sum = err if err_sum is None else err_sum + err
        count += len(y)
    model.train(was_training)
    if not count:
        return None
    return loss_sum.item() / count, err_sum.item() / count


@torch.no_grad()
def layer_responses(model: nn.Module, x: Tensor) -> dict[str, list] | None:
    """Std of each weight layer's response (BN output before the addition / ReLU) over a
    fixed batch of test images, in layer order (docs/paper.md §5, Fig. 7).

    Per layer: the standard deviation of each channel over images and positions, averaged
    over channels, in eval mode and fp32. None for a model without the paper's weight
    layers (another builder's).
    """
    modules = response_modules(model)
    if not modules:
        return None
    was_training = model.training
    model.eval()
    names, stds = [], []

    def hook(name: str):
        def record(_module, _inputs, out: Tensor) -> None:
            per_channel = out.float().transpose(0, 1).flatten(1).std(dim=1)
            names.append(name)
            stds.append(per_channel.mean())

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in modules]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {"names": names, "std": [float(s) for s in torch.stack(stds).cpu()]}
