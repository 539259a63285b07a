"""The paper's ResNet-110 warm-up (docs/paper.md §4): lr 0.01 until the training error is
below 80%, the error read as the mean of the last WARMUP_WINDOW iterations' errors, so the
warm-up ends where that error falls below 80%, whatever the evaluation spacing."""

import dataclasses

import pytest
import torch

from resnet.config import TrainConfig
from resnet.data import load_dataset
from resnet.schedule import PAPER_WARMUP_TRAIN_ERROR, WARMUP_WINDOW, LRSchedule
from resnet.train import train

LIMIT = PAPER_WARMUP_TRAIN_ERROR


def test_the_mean_of_a_full_window_ends_the_warmup():
    s = LRSchedule(0.1, "constant", 1000, warmup="paper")
    for _ in range(WARMUP_WINDOW - 1):
        s.observe_iteration_error(0.5)
    assert s.lr(0) == 0.01  # fewer than WARMUP_WINDOW iterations: no reading yet
    s.observe_iteration_error(0.5)
    assert s.lr(1) == 0.1 and not s.needs_train_error()


def test_one_lucky_batch_does_not_end_it_and_a_long_window_does_not_delay_it():
    s = LRSchedule(0.1, "constant", 1000, warmup="paper")
    for it in range(200):  # batches alternating 95% and 70% wrong: 82.5% on average
        s.observe_iteration_error(0.95 if it % 2 else 0.70)
    assert s.needs_train_error()
    # From here every batch is 70% wrong: the window's mean falls below 80% once about a
    # quarter of it is (0.825 - 0.125 k / WARMUP_WINDOW < 0.8), well inside one window.
    seen = 0
    while s.needs_train_error():
        s.observe_iteration_error(0.70)
        seen += 1
    assert 0 < seen < WARMUP_WINDOW


def test_a_resumed_warmup_ends_where_it_would_have():
    errors = [0.9] * 30 + [0.7] * 30
    ends = next(i for i in range(len(errors)) if _ended_after(errors[: i + 1]))
    first = LRSchedule(0.1, "constant", 1000, warmup="paper")
    for e in errors[:35]:
        first.observe_iteration_error(e)
    assert first.needs_train_error()
    resumed = LRSchedule(0.1, "constant", 1000, warmup="paper")
    resumed.load_state_dict(first.state_dict())
    at = 35
    while resumed.needs_train_error():
        resumed.observe_iteration_error(errors[at])
        at += 1
    assert at - 1 == ends


def _ended_after(errors: list[float]) -> bool:
    s = LRSchedule(0.1, "constant", 1000, warmup="paper")
    for e in errors:
        s.observe_iteration_error(e)
    return not s.needs_train_error()


def test_an_older_checkpoint_without_the_window_still_loads():
    s = LRSchedule(0.1, "constant", 1000, warmup="paper")
    state = s.state_dict()
    del state["warmup_errors"]
    LRSchedule(0.1, "constant", 1000, warmup="paper").load_state_dict(state)


@pytest.fixture(scope="module")
def digits_all():
    """digits with no validation split and a small test set: evaluating after every
    iteration (to log each iteration's training error) stays cheap."""
    data = load_dataset("digits", val_size=0)
    return dataclasses.replace(data, test_x=data.test_x[:32], test_y=data.test_y[:32])


def _switch(eval_every: int, data, step: str = "eager") -> tuple[int, list[float]]:
    config = TrainConfig(
        dataset="digits", depth=8, batch_size=128, iterations=40, eval_every=eval_every,
        lr_policy="constant", warmup="paper", val_size=0, device="cpu", step=step,
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same sums on any machine
    try:
        result = train(config, data=data)
    finally:
        torch.set_num_threads(threads)
    its, lrs = result.lr_trace["iteration"], result.lr_trace["lr"]
    assert lrs[:2] == [0.01, 0.1], result.lr_trace  # the switch is in the LR trace
    return its[1], [h["train/error"] for h in result.history]


def test_the_switch_follows_the_per_iteration_error_on_a_tiny_run(digits_all):
    switch, errors = _switch(1, digits_all)  # an evaluation after every iteration
    assert len(errors) == 40  # errors[i]: the error of iteration i + 1 alone
    # The rule, recomputed from the logged errors: the first iteration after which the last
    # WARMUP_WINDOW iterations' mean error is below 80% is the last one trained at 0.01.
    means = {
        k: sum(errors[k - WARMUP_WINDOW : k]) / WARMUP_WINDOW
        for k in range(WARMUP_WINDOW, len(errors) + 1)
    }
    assert switch == min(k for k, m in means.items() if m < LIMIT)
    # Within the window of the first iteration whose error is below 80%: not a pass or
    # an evaluation interval later.
    first_below = 1 + min(i for i, e in enumerate(errors) if e < LIMIT)
    assert first_below <= switch < first_below + WARMUP_WINDOW, (first_below, switch)


def test_the_switch_does_not_wait_for_an_evaluation(digits_all):
    """The old rule read the error averaged since the last evaluation, every 50 iterations;
    the switch now lands on the same iteration however far apart evaluations are, in
    either form of the step."""
    every_iteration, _ = _switch(1, digits_all)
    assert _switch(40, digits_all, step="graph")[0] == every_iteration
