"""Learning-rate policies (`step`, `plateau`, `cosine`, `constant`) behind an optional
warm-up (`none`, `paper`, or iterations) (docs/paper.md §4). torch's schedulers cannot
express the paper's warm-up rule (lr 0.01 until the training error falls below 80%), and
`ReduceLROnPlateau` does not compose with the others: hence small state machines here.

The paper's rule reads the training error *now*: the mean error of the last
WARMUP_WINDOW iterations, each iteration's error handed in as it is trained
(`observe_iteration_error`), so the warm-up ends within that window of where the error
falls below 80%, not hundreds of iterations later (docs/paper.md §4).
"""

from __future__ import annotations

import math

POLICIES = ("step", "plateau", "cosine", "constant")
# docs/paper.md §4: divide by 10 at 32k and 48k of 64k iterations.
STEP_MILESTONES = (0.5, 0.75)
PAPER_WARMUP_TRAIN_ERROR = 0.80
# Iterations whose mean training error the paper's warm-up rule reads: 20 batches (2,560
# images at batch 128, a standard error near 0.8 points at 80%), so noise in one batch does
# not end the warm-up, and the mean lags the error it follows by about 10 iterations.
WARMUP_WINDOW = 20


def parse_warmup(warmup: str | int) -> str | int:
    """`none`, `paper`, or a non-negative number of iterations (the 2016 paper uses 400)."""
    if warmup in ("none", "paper"):
        return warmup
    if isinstance(warmup, bool) or not (isinstance(warmup, int) or str(warmup).isdigit()):
        raise ValueError(f"warmup: {warmup!r} is not none, paper or a number of iterations")
    return "none" if int(warmup) == 0 else int(warmup)


class LRSchedule:
    """The learning rate at each iteration, and the trace of every change."""

    # Besides the trace; `warmup_errors` so that a resumed warm-up ends where it would have.
    STATE = ("warmup_done", "plateau_scale", "best_val", "bad_evals", "warmup_errors")

    def __init__(
        self,
        lr: float,
        policy: str,
        iterations: int,
        warmup: str | int = "none",
        warmup_lr: float = 0.01,
        plateau_patience: int = 5,
    ):
        self.base_lr, self.policy, self.iterations = lr, policy, iterations
        self.warmup = parse_warmup(warmup)
        self.warmup_lr, self.patience = warmup_lr, plateau_patience
        # Mutable state (saved in checkpoints).
        self.warmup_done = self.warmup == "none"
        self.plateau_scale = 1.0
        self.best_val = math.inf
        self.bad_evals = 0
        self.warmup_errors: list[float] = []  # the last WARMUP_WINDOW iterations' errors
        self.trace: list[tuple[int, float]] = []

    def in_warmup(self, iteration: int) -> bool:
        if isinstance(self.warmup, int):
            return iteration < self.warmup
        return not self.warmup_done

    def policy_lr(self, iteration: int) -> float:
        if self.policy == "step":
            drops = sum(iteration >= round(m * self.iterations) for m in STEP_MILESTONES)
            return self.base_lr / 10**drops
        if self.policy == "cosine":
            return self.base_lr * 0.5 * (1 + math.cos(math.pi * iteration / self.iterations))
        if self.policy == "plateau":
            return self.base_lr * self.plateau_scale
        return self.base_lr

    def lr(self, iteration: int) -> float:
        """Learning rate for the update made at `iteration` (0-based); records changes."""
        value = self.warmup_lr if self.in_warmup(iteration) else self.policy_lr(iteration)
        if not self.trace or self.trace[-1][1] != value:
            self.trace.append((iteration, value))
        return value

    def needs_train_error(self) -> bool:
        """Whether the paper's warm-up rule still waits for the training error."""
        return self.warmup == "paper" and not self.warmup_done

    def observe_iteration_error(self, error: float) -> None:
        """One iteration's training error (the fraction of its batch misclassified): once
        WARMUP_WINDOW iterations are in, their mean decides the paper's warm-up."""
        if not self.needs_train_error():
            return
        self.warmup_errors = [*self.warmup_errors, float(error)][-WARMUP_WINDOW:]
        if len(self.warmup_errors) == WARMUP_WINDOW:
            self.observe_train_error(sum(self.warmup_errors) / WARMUP_WINDOW)

    def observe_train_error(self, train_error: float) -> None:
        """The training error of the recent iterations: below 80% ends the paper's warm-up."""
        if self.warmup == "paper" and train_error < PAPER_WARMUP_TRAIN_ERROR:
            self.warmup_done = True
            self.warmup_errors = []

    def observe_val_error(self, val_error: float) -> None:
        """Plateau: divide by 10 after `patience` evaluations without improvement."""
        if self.policy != "plateau" or math.isnan(val_error):
            return
        if val_error < self.best_val - 1e-4:
            self.best_val, self.bad_evals = val_error, 0
            return
        self.bad_evals += 1
        if self.bad_evals >= self.patience:
            self.plateau_scale /= 10
            self.bad_evals = 0

    def trace_dict(self, last_iteration: int) -> dict[str, list]:
        its = [i for i, _ in self.trace]
        lrs = [v for _, v in self.trace]
        if self.trace and its[-1] != last_iteration:
            its.append(last_iteration)
            lrs.append(lrs[-1])
        return {"iteration": its, "lr": lrs}

    def state_dict(self) -> dict:
        state = {key: getattr(self, key) for key in self.STATE}
        state["trace_iterations"] = [i for i, _ in self.trace]
        state["trace_lrs"] = [v for _, v in self.trace]
        return state

    def load_state_dict(self, state: dict) -> None:
        for key in self.STATE:
            if key in state or key != "warmup_errors":  # absent from older checkpoints
                setattr(self, key, state[key])
        self.trace = list(zip(state["trace_iterations"], state["trace_lrs"], strict=True))
