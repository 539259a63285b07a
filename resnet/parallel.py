"""Training one model on several data-parallel replicas, and the BatchNorm batch.

The paper trained CIFAR-10 at batch 128 on two GPUs and ImageNet at 256 on eight, so each
BatchNorm normalized over 64 or 32 images (docs/paper.md §4, §5). With `bn_batch`,
BatchNorm layers normalize over "ghost batches" of that many images of a replica's batch,
so one GPU trains exactly what several trained.

Replicas (torch.distributed, initialized by the caller: Ray Train, or a test) each train
on their slice of the global batch; DistributedDataParallel averages the gradients. Each
replica updates its running statistics once per step from the mean of its ghost batches;
they are averaged over replicas before every evaluation and checkpoint (an average of
moving averages is the moving average of the averages), so the result does not depend on
the number of replicas beyond float rounding.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


def world() -> tuple[int, int]:
    """(rank, replicas) of this process; (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_sum(*tensors: Tensor) -> None:
    """Sum each tensor over the replicas, in place (nothing when not distributed)."""
    if world()[1] > 1:
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def earliest(first_bad: Tensor) -> int:
    """The earliest iteration any replica saw a non-finite loss (-1: none)."""
    if world()[1] == 1:
        return int(first_bad.item())
    never = torch.iinfo(torch.int64).max
    value = torch.where(first_bad < 0, never, first_bad).reshape(1).clone()
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return -1 if value.item() == never else int(value.item())


def average_statistics(model: nn.Module) -> None:
    """Every replica's BatchNorm running statistics replaced by their mean."""
    replicas = world()[1]
    if replicas == 1:
        return
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            all_sum(m.running_mean, m.running_var)
            m.running_mean.div_(replicas)
            m.running_var.div_(replicas)


class GhostBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over groups of `ghost` images of the batch in training (Hoffer et al.
    2017); evaluation uses the running statistics, as BatchNorm does. The state (weights,
    running statistics) is BatchNorm's, under the same names."""

    ghost: int

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        n = x.shape[0]
        if n % self.ghost:
            raise ValueError(f"a batch of {n} does not split into ghost batches of {self.ghost}")
        groups = x.float().reshape(n // self.ghost, self.ghost, *x.shape[1:])
        dims = [1, *range(3, groups.dim())]  # images and positions, per group and channel
        mean = groups.mean(dim=dims, keepdim=True)
        var = groups.var(dim=dims, unbiased=False, keepdim=True)
        shape = [1, 1, -1, *[1] * (groups.dim() - 3)]
        y = (groups - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.track_running_stats:
            count = groups[0].numel() // groups.shape[2]  # values per group and channel
            with torch.no_grad():
                step_mean = mean.reshape(mean.shape[0], -1).mean(0)
                step_var = var.reshape(var.shape[0], -1).mean(0) * count / max(count - 1, 1)
                self.num_batches_tracked.add_(1)
                momentum = self.momentum or 1 / float(self.num_batches_tracked)
                self.running_mean.lerp_(step_mean, momentum)
                self.running_var.lerp_(step_var, momentum)
        return y.reshape(x.shape).to(x.dtype).contiguous(memory_format=_format(x))


def _format(x: Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class GhostBatchNorm1d(GhostBatchNorm, nn.BatchNorm1d):
    pass


class GhostBatchNorm2d(GhostBatchNorm, nn.BatchNorm2d):
    pass


class GhostBatchNorm3d(GhostBatchNorm, nn.BatchNorm3d):
    pass


_GHOSTS = {
    nn.BatchNorm1d: GhostBatchNorm1d,
    nn.BatchNorm2d: GhostBatchNorm2d,
    nn.BatchNorm3d: GhostBatchNorm3d,
}


def ghost_batches(model: nn.Module, ghost: int) -> int:
    """Make every BatchNorm layer of `model` normalize over ghost batches of `ghost`
    images (any model's: the layers keep their state and names); returns how many."""
    changed = 0
    for m in model.modules():
        if type(m) in _GHOSTS:
            m.__class__ = _GHOSTS[type(m)]
            m.ghost = ghost
            changed += 1
    return changed
