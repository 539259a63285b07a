"""One training step and the sums of the evaluation window, kept on the device so the loop
never waits for the GPU. Two forms of one body: `eager` (ordinary PyTorch), and `graph`
(static inputs, lr and iteration as device tensors), which a GPU captures once as a CUDA
graph and replays: one launch per step instead of hundreds (a CIFAR ResNet step is many
small kernels whose launch overhead sets the pace). On a CPU the static body runs without
capture, so the tests compare it with `eager` step by step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from resnet.parallel import all_sum, world


def make_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float):
    """SGD as the paper trains (docs/paper.md §4). The fused kernel on every device: it
    takes the learning rate as a device tensor without reading it back (the graph form
    needs that), and both forms then share the same arithmetic."""
    return torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, fused=True
    )


class Step:
    """`step(x, y, lr, iteration)` trains on one batch; `window()` reads and resets the
    mean training loss and error since the last read; `first_bad` is the first iteration
    whose loss was not finite (-1: none)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        precision: str = "fp32",
        graph: bool = False,
        forward: Callable[[Tensor], Tensor] | None = None,
        mark_steps: bool = False,
    ):
        """`forward` replaces `model(x)` in training (a `torch.compile`d module sharing the
        model's weights); `mark_steps` tells torch.compile's own CUDA graphs where a step
        begins (they reuse output memory between replays)."""
        self.model, self.optimizer, self.device = model, optimizer, device
        self.forward = forward or model
        self.mark_steps = mark_steps
        self.bf16 = precision == "bf16"
        self.graph = graph
        zeros = lambda: torch.zeros((), device=device)  # noqa: E731
        self.acc = {"loss": zeros(), "err": zeros(), "n": zeros()}
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self._cuda_graph: torch.cuda.CUDAGraph | None = None
        if graph:
            self._lr = torch.tensor(float(optimizer.param_groups[0]["lr"]), device=device)
            self._it = torch.zeros((), dtype=torch.long, device=device)
            for group in optimizer.param_groups:
                group["lr"] = self._lr
            self._x: Tensor | None = None
            self._y: Tensor | None = None

    # -- the body -------------------------------------------------------------------------
    def _body(self, x: Tensor, y: Tensor, it: Tensor | int, set_to_none: bool = True) -> None:
        if self.mark_steps:
            torch.compiler.cudagraph_mark_step_begin()
        # Autocast's weight-cast cache must be off while a CUDA graph is captured.
        with torch.autocast(self.device.type, torch.bfloat16, self.bf16, not self.graph):
            out = self.forward(x)
        loss = nn.functional.cross_entropy(out.float(), y)
        if set_to_none:
            self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        loss = loss.detach()
        self.acc["loss"].add_(loss * len(y))
        self.acc["err"].add_((out.detach().argmax(1) != y).sum())
        self.acc["n"].add_(len(y))
        bad = (self.first_bad < 0) & ~torch.isfinite(loss)
        self.first_bad.copy_(torch.where(bad, it, self.first_bad))

    # -- one step -------------------------------------------------------------------------
    def __call__(self, x: Tensor, y: Tensor, lr: float, iteration: int) -> None:
        if not self.graph:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self._body(x, y, iteration)
            return
        if self._x is None or self._x.shape != x.shape:
            self._x, self._y = torch.empty_like(x), torch.empty_like(y)
            self._cuda_graph = None
        self._x.copy_(x)
        self._y.copy_(y)
        self._lr.fill_(lr)
        self._it.fill_(iteration)
        if self.device.type != "cuda":
            self._body(self._x, self._y, self._it)
            return
        if self._cuda_graph is None:
            self._capture()
        with torch.cuda.device(self.device):
            self._cuda_graph.replay()

    def _capture(self) -> None:
        """Warm up on a side stream, then record the body once as a CUDA graph, on the
        step's own GPU (not whichever is current). `thread_local` capture lets other
        threads (a DataLoader's pin-memory thread) allocate while this one records."""
        with torch.cuda.device(self.device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._warm_up()
            torch.cuda.current_stream().wait_stream(side)
            self.optimizer.zero_grad(set_to_none=True)  # grads get allocated in the graph
            self._cuda_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._cuda_graph, capture_error_mode="thread_local"):
                self._body(self._x, self._y, self._it, set_to_none=False)

    def _warm_up(self, steps: int = 3) -> None:
        """Run the body `steps` times (cuDNN picks its kernels, SGD makes its momentum
        buffers), then put every value back as it was, in place, so the graph records the
        tensors training goes on with. A momentum buffer the warm-up made is zeroed: a
        fresh SGD's first update (dampening 0) sets the buffer to the gradient, and so
        does 0.9 * 0 + g. Device-agnostic, so the tests run it on CPU."""
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        had_buffer = {id(p) for p in params if "momentum_buffer" in self.optimizer.state[p]}
        targets = self._state_tensors()  # as they are now: buffers made below are not in it
        saved = [t.detach().clone() for t in targets]
        for _ in range(steps):
            self._body(self._x, self._y, self._it)
        with torch.no_grad():
            for tensor, value in zip(targets, saved, strict=True):
                tensor.copy_(value)
            for p in params:
                if id(p) not in had_buffer:
                    self.optimizer.state[p]["momentum_buffer"].zero_()

    def _state_tensors(self) -> list[Tensor]:
        """Everything a step changes besides gradients: weights, running statistics and
        their counters, momentum buffers, the window sums."""
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        for p in self.model.parameters():
            buffer = self.optimizer.state.get(p, {}).get("momentum_buffer")
            if buffer is not None:
                tensors.append(buffer)
        return tensors + [*self.acc.values(), self.first_bad]

    # -- the window -----------------------------------------------------------------------
    def _sums(self) -> Tensor:
        """The window's sums over every replica (loss, errors, images)."""
        sums = torch.stack(list(self.acc.values()))
        all_sum(sums)
        return sums

    def window(self) -> tuple[float, float, float]:
        """(mean loss, error, images) since the last call, then zeroed (one host read)."""
        loss, err, n = self._sums().tolist()
        for v in self.acc.values():
            v.zero_()
        n = max(n, 1.0)
        return loss / n, err / n, n

    def train_error(self) -> float:
        """The window's error so far, without resetting it (a host read)."""
        _, err, n = self._sums().tolist()
        return err / max(n, 1.0)

    def state_dict(self) -> dict:
        """The window's sums over every replica (a checkpoint resumes on any number)."""
        sums = self._sums().cpu()
        return {
            "acc": dict(zip(self.acc, sums, strict=True)),
            "first_bad": self.first_bad.detach().cpu(),
        }

    def load_state_dict(self, state: dict) -> None:
        first = world()[0] == 0  # the sums are restored once, on the first replica
        with torch.no_grad():
            for k, v in self.acc.items():
                v.copy_(state["acc"][k] if first else torch.zeros(()))
            self.first_bad.copy_(state["first_bad"])
