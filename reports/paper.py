"""The papers' published test errors (docs/paper.md §5), each with the data set, the
full model settings of the net that earned it, and the recipe it was trained with. A number
sits beside an arm of the built-in ResNets only when the data set, every model setting and
every setting of the recipe the paper fixed (schedule, learning rates, momentum, weight
decay, batch, BatchNorm batch, iterations, training images) equal what the arm trained;
where only the net matches, the report names each difference instead of the number
(`paper_comparison`). Where ablate's engine itself differs from the authors' setup, with
no setting to change it, is listed in docs/paper.md §9.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PAPER_2015 = "He et al. 2015"
PAPER_2016 = "He et al. 2016 (Identity Mappings)"
CIFAR_ITERATIONS = 64_000
# Training images before any validation split: a difference in `val_size` is told as the
# images an arm trained on.
TRAIN_IMAGES = {"cifar10": 50_000, "imagenet": 1_281_167}


@dataclass(frozen=True)
class PaperResult:
    test_error_pct: float
    source: str
    note: str = ""


@dataclass(frozen=True)
class Entry:
    dataset: str
    settings: tuple[tuple[str, Any], ...]  # the net, as ablate names its settings
    result: PaperResult
    # The recipe the paper fixed, as ablate names its settings (docs/paper.md §4, §5).
    recipe: tuple[tuple[str, Any], ...] = ()
    # Where ablate cannot train or test as the paper did, whatever the settings.
    engine: tuple[str, ...] = ()


@dataclass(frozen=True)
class PaperComparison:
    """The paper's net an arm builds, and how the arm's training differs from the paper's:
    the number compares with the arm only when there is no difference."""

    result: PaperResult
    differences: tuple[str, ...] = ()

    @property
    def comparable(self) -> bool:
        return not self.differences


# The papers' nets as ablate names their settings (docs/paper.md §3, §5).
_CIFAR_NET = {
    "shortcut": "A",
    "skip_length": 2,
    "bottleneck": False,
    "preactivation": False,
    "stem": "cifar",
    "width": 16,
}
_IMAGENET_NET = {**_CIFAR_NET, "stem": "imagenet", "width": 64}

# The 2015 paper's CIFAR-10 recipe (Sec. 4.2; docs/paper.md §4, §4b): step schedule 0.1,
# /10 at 32k and 48k of 64k iterations, momentum 0.9, weight decay 1e-4, batch 128 on two
# GPUs (BatchNorm over 64: inferred), trained on all 50k training images (the 45k/5k
# split only chose the schedule).
_CIFAR_RECIPE = {
    "lr_policy": "step",
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "batch_size": 128,
    "bn_batch": 64,
    "iterations": CIFAR_ITERATIONS,
    "val_size": 0,
    "warmup": "none",
}
# ResNet-110: lr 0.01 until the training error is below 80% (Sec. 4.2).
_WARMUP_2015 = {"warmup": "paper", "warmup_lr": 0.01}
# The 2016 paper warms every CIFAR run up at 0.01 for 400 iterations (Appendix).
_RECIPE_2016 = {**_CIFAR_RECIPE, "warmup": "400", "warmup_lr": 0.01}
# ImageNet (2015 paper, Sec. 3.4; docs/paper.md §4b, §5): batch 256 (BatchNorm over 32 on
# eight GPUs: inferred), 0.1 divided by 10 on plateaus, up to 60x10^4 iterations, every
# training image.
_IMAGENET_RECIPE = {
    **_CIFAR_RECIPE,
    "lr_policy": "plateau",
    "batch_size": 256,
    "bn_batch": 32,
    "iterations": 600_000,
}
_IMAGENET_ENGINE = (
    "tested on one centre crop, paper 10 crops",
    "no colour augmentation, paper the standard one",
)


def _entry(
    dataset: str,
    net: dict,
    settings: dict,
    recipe: dict,
    value: float,
    source: str,
    note: str = "",
    engine: tuple[str, ...] = (),
) -> Entry:
    full = {**net, **settings}
    if full["bottleneck"]:
        full["skip_length"] = 3  # a bottleneck unit spans 3 layers
    return Entry(
        dataset,
        tuple(sorted(full.items())),
        PaperResult(value, source, note),
        tuple(recipe.items()),
        engine,
    )


def _cifar(settings: dict[str, Any], value: float, source: str, note: str = "") -> Entry:
    if source == _TABLE6:
        recipe = {**_CIFAR_RECIPE, **(_WARMUP_2015 if settings["depth"] == 110 else {})}
        if settings["depth"] == 1202:
            # Trained "as described above" (Sec. 4.2): whether that includes ResNet-110's
            # warm-up the paper leaves open, so the warm-up is not compared.
            del recipe["warmup"]
    else:
        recipe = _RECIPE_2016
    return _entry("cifar10", _CIFAR_NET, settings, recipe, value, source, note)


def _imagenet(settings: dict[str, Any], value: float, source: str) -> Entry:
    return _entry(
        "imagenet", _IMAGENET_NET, settings, _IMAGENET_RECIPE, value, source, "", _IMAGENET_ENGINE
    )


_TABLE6 = f"{PAPER_2015}, Table 6"
_FOLLOWUP = f"{PAPER_2016}, median of 5"

ENTRIES: tuple[Entry, ...] = (
    # CIFAR-10 Table 6, option A shortcuts, plain residual units.
    _cifar({"depth": 20}, 8.75, _TABLE6),
    _cifar({"depth": 32}, 7.51, _TABLE6),
    _cifar({"depth": 44}, 7.17, _TABLE6),
    _cifar({"depth": 56}, 6.97, _TABLE6),
    # Table 6's 6.43 is the best of 5 runs; the mean is the fair comparison for a mean.
    _cifar({"depth": 110}, 6.61, _TABLE6, "mean of 5 runs ± 0.16; best 6.43"),
    _cifar({"depth": 1202}, 7.93, _TABLE6),
    # 2016 follow-up (docs/paper.md §5).
    _cifar({"depth": 110, "skip_length": 1}, 9.90, _FOLLOWUP, "1-layer skip"),
    _cifar({"depth": 110, "skip_length": 1, "preactivation": True}, 8.91, _FOLLOWUP),
    _cifar({"depth": 110, "preactivation": True}, 6.37, _FOLLOWUP),
    _cifar({"depth": 110, "shortcut": "C"}, 12.22, _FOLLOWUP, "1x1 conv on every shortcut"),
    # Its bottleneck nets project where dimensions grow (option B; docs/paper.md §3).
    _cifar({"depth": 164, "bottleneck": True, "shortcut": "B"}, 5.93, _FOLLOWUP),
    _cifar(
        {"depth": 164, "bottleneck": True, "shortcut": "B", "preactivation": True}, 5.46, _FOLLOWUP
    ),
    _cifar({"depth": 1001, "bottleneck": True, "shortcut": "B"}, 7.61, _FOLLOWUP),
    _cifar(
        {"depth": 1001, "bottleneck": True, "shortcut": "B", "preactivation": True}, 4.92, _FOLLOWUP
    ),
    # ImageNet top-1, 10-crop validation (Tables 2 and 3).
    _imagenet({"depth": 18, "shortcut": "none"}, 27.94, f"{PAPER_2015}, Table 2"),
    _imagenet({"depth": 18, "shortcut": "A"}, 27.88, f"{PAPER_2015}, Table 2"),
    _imagenet({"depth": 34, "shortcut": "none"}, 28.54, f"{PAPER_2015}, Table 3"),
    _imagenet({"depth": 34, "shortcut": "A"}, 25.03, f"{PAPER_2015}, Table 3"),
    _imagenet({"depth": 34, "shortcut": "B"}, 24.52, f"{PAPER_2015}, Table 3"),
    _imagenet({"depth": 34, "shortcut": "C"}, 24.19, f"{PAPER_2015}, Table 3"),
    _imagenet({"depth": 50, "shortcut": "B", "bottleneck": True}, 22.85, f"{PAPER_2015}, Table 3"),
    _imagenet({"depth": 101, "shortcut": "B", "bottleneck": True}, 21.75, f"{PAPER_2015}, Table 3"),
    _imagenet({"depth": 152, "shortcut": "B", "bottleneck": True}, 21.43, f"{PAPER_2015}, Table 3"),
)


def normalize_dataset(name: Any) -> str:
    """'CIFAR-10', 'cifar_10' and 'cifar10' are one data set."""
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def paper_net(settings: Mapping[str, Any]) -> Entry | None:
    """The paper's entry for the net these recorded settings build on their data set, the
    recipe aside; None when the papers report no such net."""
    dataset = normalize_dataset(settings.get("dataset", ""))
    for entry in ENTRIES:
        if entry.dataset == dataset and all(
            key in settings and settings[key] == value for key, value in entry.settings
        ):
            return entry
    return None


def paper_comparison(settings: Mapping[str, Any]) -> PaperComparison | None:
    """The paper's number for the net these recorded settings build, with each way the
    arm's training differs from the paper's (empty: the two compare); None when the papers
    report no such net."""
    entry = paper_net(settings)
    if entry is None:
        return None
    return PaperComparison(entry.result, tuple(recipe_differences(entry, settings)))


def paper_result(settings: Mapping[str, Any]) -> PaperResult | None:
    """The published test error that compares with an arm of these recorded settings: the
    same net, trained with the paper's recipe; None otherwise."""
    found = paper_comparison(settings)
    return found.result if found is not None and found.comparable else None


def recipe_differences(entry: Entry, settings: Mapping[str, Any]) -> list[str]:
    """Each setting of the paper's recipe the arm trained otherwise (or did not record), in
    words, then what ablate's engine does otherwise for this entry."""
    out = []
    for key, paper in entry.recipe:
        ours = settings.get(key)
        if key == "warmup_lr" and str(settings.get("warmup")) == "none":
            continue  # the arm did not warm up (told under `warmup`): its rate never trained
        if _unset(ours):
            out.append(f"{_LABELS.get(key, key)} not recorded, paper {_words(key, paper, entry)}")
        elif not _same(ours, paper):
            out.append(_difference(key, ours, paper, entry))
    return [*out, *entry.engine]


_LABELS = {"val_size": "training images", "bn_batch": "BN batch", "warmup_lr": "warm-up lr"}


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # None or NaN


def _same(ours: Any, paper: Any) -> bool:
    if isinstance(paper, str) or isinstance(ours, str):
        return str(ours) == str(paper)
    if isinstance(ours, bool) or isinstance(paper, bool):
        return ours == paper
    return abs(float(ours) - float(paper)) <= 1e-9 * max(abs(float(paper)), 1e-12)


def _images(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    return f"{n // 1000}k" if n % 1000 == 0 else f"{n:,}"


def _warmup_words(value: Any) -> str:
    if str(value) == "none":
        return "no warm-up"
    if str(value) == "paper":
        return "warm-up until training error < 80%"
    return f"{value}-iteration warm-up"


def _words(key: str, value: Any, entry: Entry) -> str:
    """The paper's value of `key`, as the difference names it."""
    if key == "val_size":
        return _images(TRAIN_IMAGES[entry.dataset] - int(value))
    if key == "warmup":
        return _warmup_words(value)
    if key in ("iterations", "batch_size", "bn_batch"):
        return f"{int(value):,}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _difference(key: str, ours: Any, paper: Any, entry: Entry) -> str:
    """The arm's value of `key`, then the paper's: "cosine schedule, paper step"."""
    theirs = _words(key, paper, entry)
    if key == "val_size":
        total = TRAIN_IMAGES[entry.dataset]
        mine = _images(total - int(ours))
        if mine == theirs:  # 1.28M both: the counts themselves
            mine, theirs = f"{total - int(ours):,}", f"{total - int(paper):,}"
        return f"trained on {mine} images, paper {theirs}"
    if key == "warmup":
        return f"{_warmup_words(ours)}, paper {theirs}"
    mine = _words(key, ours, entry)
    return {
        "lr_policy": f"{mine} schedule, paper {theirs}",
        "lr": f"lr {mine}, paper {theirs}",
        "warmup_lr": f"warm-up lr {mine}, paper {theirs}",
        "momentum": f"momentum {mine}, paper {theirs}",
        "weight_decay": f"weight decay {mine}, paper {theirs}",
        "batch_size": f"batch {mine}, paper {theirs}",
        "bn_batch": f"BN over {mine} images, paper {theirs}",
        "iterations": f"{mine} iterations, paper {theirs}",
    }.get(key, f"{key} {mine}, paper {theirs}")


def table6_points() -> list[tuple[int, float]]:
    """(depth, test error %) of Table 6, for the depth plot's overlay."""
    return [
        (dict(e.settings)["depth"], e.result.test_error_pct)
        for e in ENTRIES
        if e.result.source == _TABLE6
    ]
