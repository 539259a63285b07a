"""GPU check: no host synchronization inside the training step loop.

Trains ResNet-20 on digits through the real engine with torch's sync debug mode on
between two evaluation points, and counts the synchronizing CUDA calls it reports. The
only one expected is the copy of each new data-order permutation to the device (once per
pass over the training set, not per step).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from resnet.config import TrainConfig  # noqa: E402
from resnet.train import Callback, train  # noqa: E402

ON, OFF = 20, 120  # steps between which syncs are counted (no evaluation in between)


class SyncWatch(Callback):
    def on_step(self, iteration: int) -> None:
        if iteration == ON:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("warn")
        elif iteration == OFF:
            torch.cuda.set_sync_debug_mode("default")


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_sync_check: no CUDA GPU; nothing to check")
        return 0
    for compiled in (False, True):
        config = TrainConfig(
            dataset="digits",
            depth=20,
            iterations=OFF + 10,
            eval_every=OFF + 10,
            device="cuda",
            compile=compiled,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(config, SyncWatch())
        syncs = [
            str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()
        ]
        passes = (OFF - ON) * config.batch_size / 1350 + 1  # digits: 1350 training images
        print(
            f"compile={compiled}: {len(syncs)} synchronizing calls in {OFF - ON} steps "
            f"(<= {int(passes) + 1} data passes)"
        )
        for line in sorted(set(syncs)):
            print("   ", line[:160])
    return 0


if __name__ == "__main__":
    sys.exit(main())
