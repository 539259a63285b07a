"""The papers' published test errors (docs/paper.md §5), keyed by data set and model settings.

A number is shown beside an arm only when the data set and every model setting listed for
the entry match; settings an arm does not record take the paper's defaults (post-activation,
basic units, skip length 2, or 3 for bottleneck units). The paper trained CIFAR-10 for 64k
iterations and ImageNet far longer, so a shortened run's gap to these numbers is expected;
the report says so when the recipe differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PAPER_2015 = "He et al. 2015"
PAPER_2016 = "He et al. 2016 (Identity Mappings)"
CIFAR_ITERATIONS = 64_000


@dataclass(frozen=True)
class PaperResult:
    test_error_pct: float
    source: str
    note: str = ""


@dataclass(frozen=True)
class Entry:
    dataset: str
    settings: tuple[tuple[str, Any], ...]
    result: PaperResult


def _cifar(settings: dict[str, Any], value: float, source: str, note: str = "") -> Entry:
    full = {
        "shortcut": "A",
        "skip_length": 2,
        "bottleneck": False,
        "preactivation": False,
        "stem": "cifar",
        "width": 16,
        **settings,
    }
    if full["bottleneck"] and "skip_length" not in settings:
        full["skip_length"] = 3
    return Entry("cifar10", tuple(sorted(full.items())), PaperResult(value, source, note))


def _imagenet(settings: dict[str, Any], value: float, source: str) -> Entry:
    full = {
        "skip_length": 2,
        "bottleneck": False,
        "preactivation": False,
        "stem": "imagenet",
        "width": 64,
        **settings,
    }
    if full["bottleneck"]:
        full["skip_length"] = 3
    return Entry("imagenet", tuple(sorted(full.items())), PaperResult(value, source))


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


def _same(key: str, ours: Any, theirs: Any) -> bool:
    if isinstance(theirs, bool):
        return str(ours).strip().lower() in (("true", "1") if theirs else ("false", "0"))
    if isinstance(theirs, int):
        try:
            return int(float(ours)) == theirs
        except (TypeError, ValueError):
            return False
    return str(ours) == str(theirs)


def paper_result(settings: Mapping[str, Any]) -> PaperResult | None:
    """The published test error for an arm with these settings, or None."""
    dataset = normalize_dataset(settings.get("dataset", ""))
    for entry in ENTRIES:
        if entry.dataset != dataset:
            continue
        wanted = dict(entry.settings)
        ok = True
        for key, theirs in wanted.items():
            ours = settings.get(key)
            if ours is None:
                # Not recorded: the paper's default holds (every entry names depth and
                # shortcut explicitly or by default, and those are always recorded).
                if key in ("depth", "shortcut"):
                    ok = False
                    break
                continue
            if key == "skip_length" and _same("bottleneck", settings.get("bottleneck"), True):
                # A bottleneck unit is always 3 layers; the param may be left at 2.
                continue
            if not _same(key, ours, theirs):
                ok = False
                break
        if ok:
            return entry.result
    return None


def table6_points() -> list[tuple[int, float]]:
    """(depth, test error %) of Table 6, for the depth plot's overlay."""
    return [
        (dict(e.settings)["depth"], e.result.test_error_pct)
        for e in ENTRIES
        if e.result.source == _TABLE6
    ]
