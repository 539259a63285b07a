"""Model builders: any function that returns an `nn.Module`, named `module:function`.

A builder takes `num_classes` and `in_channels` (from the data set) and its factors: its
other keyword parameters, typed by their annotations (int, float, bool, str, `X | None`,
`Literal[...]`) and defaults. It may carry `.settings`, a settings dataclass defining its
factors, and `.resolve(**factors)`, the values it will build with (`resnet.spec:resnet`
has both). Torch is imported only to build: naming and checking factors stays cheap.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import inspect
import subprocess
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet.errors import ResnetError, SpecError, one_line
from resnet.settings import Setting, check, settings_of, typed

BUILTIN = "resnet.spec:resnet"
DATA_ARGS = ("num_classes", "in_channels")


class ModelError(ResnetError):
    """A builder that cannot be imported, has factors ablate cannot type, or fails."""


@dataclass(frozen=True)
class Builder:
    ref: str  # module:function
    fn: Callable
    factors: tuple[Setting, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.factors)

    def resolve(self, values: dict[str, Any]) -> dict[str, Any]:
        """Every factor's value as the builder will build it (checked, defaults filled)."""
        unknown = sorted(set(values) - set(self.names))
        if unknown:
            factors = ", ".join(self.names)
            raise SpecError(unknown[0], f"not a factor of model {self.ref}; its factors: {factors}")
        checked = {s.name: check(s, values.get(s.name, s.default)) for s in self.factors}
        resolver = getattr(self.fn, "resolve", None)
        return dict(resolver(**checked)) if resolver else checked

    def build(self, num_classes: int, in_channels: int, factors: dict[str, Any]):
        """The model; ModelError (one line) when the builder fails or returns no module."""
        from torch import nn

        try:
            model = self.fn(num_classes=num_classes, in_channels=in_channels, **factors)
        except ResnetError:
            raise
        except Exception as err:  # noqa: BLE001 - the user's code: any error, in one line
            raise ModelError(
                f"model {self.ref} failed to build with {factors}: {one_line(err)}"
            ) from None
        if not isinstance(model, nn.Module):
            raise ModelError(f"model {self.ref} returned {type(model).__name__}, not an nn.Module")
        return model

    def source(self) -> dict[str, str]:
        """Where the builder's code is: its module, the file's sha256 and, when the file is
        in a git checkout, the commit (and whether the file has uncommitted changes)."""
        file = Path(inspect.getfile(self.fn)).resolve()
        out = {"module": self.fn.__module__, "file": str(file)}
        out["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()[:16]
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            commit = git(file.parent, "rev-parse", "HEAD")
            dirty = git(file.parent, "status", "--porcelain", "--", str(file))
            out.update(commit=commit, dirty="true" if dirty else "false")
        return out

    def shipped(self) -> str | None:
        """What a Ray cluster's nodes need to import the builder: its top-level package's
        folder or its module's file; None when it is installed (or ablate's own)."""
        top = self.fn.__module__.split(".")[0]
        if top in ("resnet", "ablations", "reports", "search_spaces"):
            return None
        module = sys.modules[top]
        path = Path(module.__file__).resolve()
        if any(part in ("site-packages", "dist-packages") for part in path.parts):
            return None
        return str(path.parent if path.name == "__init__.py" else path)


def git(folder: Path, *args: str) -> str:
    """A git command's output in `folder`; OSError or SubprocessError when it fails."""
    run = subprocess.run(["git", *args], capture_output=True, text=True, cwd=folder, timeout=10)
    run.check_returncode()
    return run.stdout.strip()


@functools.lru_cache(maxsize=64)
def load_builder(ref: str) -> Builder:
    """The builder `module:function`, its factors typed; ModelError naming what is wrong."""
    module_name, sep, name = ref.partition(":")
    if not sep or not module_name or not name:
        raise ModelError(f"model {ref!r}: name a builder as module:function, e.g. {BUILTIN}")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - ImportError, or the module's own error
        raise ModelError(f"model {ref}: cannot import {module_name} ({one_line(err)})") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ModelError(f"model {ref}: {module_name} has no function {name}")
    definition = getattr(fn, "settings", None)
    factors = settings_of(definition) if definition else _from_signature(fn, ref)
    return Builder(ref, fn, tuple(factors))


def _from_signature(fn: Callable, ref: str) -> list[Setting]:
    params = inspect.signature(fn).parameters
    kinds = {p.kind for p in params.values()}
    if not (set(DATA_ARGS) <= set(params) or inspect.Parameter.VAR_KEYWORD in kinds):
        raise ModelError(f"model {ref}: must take the keywords num_classes and in_channels")
    try:
        hints = typing.get_type_hints(fn, include_extras=False)
    except Exception as err:  # noqa: BLE001 - an annotation that does not evaluate
        raise ModelError(f"model {ref}: cannot read its annotations ({err})") from None
    out = []
    for name, p in params.items():
        if name in DATA_ARGS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = None if p.default is p.empty else p.default
        hint = hints.get(name, type(default) if default is not None else None)
        kind, optional, choices = typed(hint)
        if kind is None:
            raise ModelError(
                f"model {ref}: factor {name} has type {hint!r}; a factor is int, float, bool "
                "or str (or X | None, or Literal[...])"
            )
        out.append(Setting(name, kind, default, f"a factor of {ref}", choices=choices,
                           optional=optional or p.default is None))  # fmt: skip
    return out
