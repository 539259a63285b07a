"""How a setting is defined, once, and the one check every value of it goes through.

A setting is a dataclass field made with `setting()`: type, default, meaning, kind
(science changes the result: a study key, an MLflow param, part of the fingerprint;
execution says where and how fast it runs) and allowed values. `check()` enforces them for
study files, CLI flags and trial configs alike; rules tying settings together live in the
dataclass that owns them. No torch here: the CLI builds its flags from this module.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any

from resnet.errors import SpecError

SCIENCE = "science"
EXECUTION = "execution"
TYPE_NAMES = {int: "int", float: "float", bool: "bool", str: "str"}


def setting(
    default: Any,
    help: str,
    kind: str = SCIENCE,
    choices: tuple | None = None,
    ge: float | None = None,
    gt: float | None = None,
    flag: bool = True,
) -> Any:
    """A dataclass field with its meaning and allowed values; `flag=False`: no CLI flag."""
    meta = {"help": help, "kind": kind, "choices": choices, "ge": ge, "gt": gt, "flag": flag}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Setting:
    """One setting, read from its field: what `check` and every derived surface need."""

    name: str
    type: type  # int, float, bool or str
    default: Any
    help: str
    kind: str = SCIENCE
    choices: tuple | None = None
    ge: float | None = None
    gt: float | None = None
    optional: bool = False  # None allowed: resolved later from other settings or the data
    flag: bool = True

    @property
    def type_name(self) -> str:
        return TYPE_NAMES[self.type]

    def describe(self) -> str:
        """The meaning, with the allowed values when they are a closed set."""
        if self.choices:
            return f"{self.help} (one of {', '.join(map(str, self.choices))})"
        return self.help


def settings_of(owner: type, kind: str | None = None) -> list[Setting]:
    """The settings of a settings dataclass, in declaration order; only `kind` if given."""
    hints = typing.get_type_hints(owner)
    out = []
    for f in dataclasses.fields(owner):
        meta = f.metadata
        if not f.init or "kind" not in meta or (kind is not None and meta["kind"] != kind):
            continue
        hint, optional, _ = typed(hints[f.name])
        if hint is None:
            raise TypeError(f"setting {f.name}: unsupported type {hints[f.name]!r}")
        default = None if f.default is MISSING else f.default
        names = ("help", "kind", "choices", "ge", "gt", "flag")
        out.append(Setting(f.name, hint, default, optional=optional, **{k: meta[k] for k in names}))
    return out


def typed(hint: Any) -> tuple[type | None, bool, tuple | None]:
    """(int | float | bool | str, None allowed, closed set) of an annotation."""
    optional, choices = False, None
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0] if len(args) == 1 else None
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        kinds = {type(c) for c in choices}
        hint = kinds.pop() if len(kinds) == 1 else None
    return (hint if hint in TYPE_NAMES else None), optional, choices


def check(s: Setting, value: Any) -> Any:
    """`value` as setting `s` takes it, or SpecError naming the setting and what is allowed.
    YAML's spellings are read as the setting's type: an int for a float (`lr: 1`), a number
    for a text setting (`warmup: 400`)."""
    if value is None:
        if s.optional:
            return None
        raise SpecError(s.name, f"must be set ({s.describe()})")
    if s.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif s.type is str and isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, s.type) or (s.type is int and isinstance(value, bool)):
        raise SpecError(s.name, f"must be {_kind_words(s)}, got {value!r}")
    if s.type is float and not math.isfinite(value):
        raise SpecError(s.name, f"must be a finite number, got {value!r}")
    if s.choices is not None and value not in s.choices:
        raise SpecError(s.name, f"{value!r} is not one of {', '.join(map(str, s.choices))}")
    if (s.ge is not None and value < s.ge) or (s.gt is not None and value <= s.gt):
        raise SpecError(s.name, f"must be {_kind_words(s)}, got {value!r}")
    return value


def _kind_words(s: Setting) -> str:
    noun = {int: "integer", float: "number", bool: "true or false", str: "text"}[s.type]
    if s.gt == 0 or (s.type is int and s.ge == 1):
        return f"a positive {noun}"
    if s.ge is not None:
        return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun} >= {s.ge:g}"
    if s.type is bool:
        return noun
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def check_all(instance: Any) -> None:
    """Every setting of a settings dataclass instance, checked (and coerced) in place."""
    for s in settings_of(type(instance)):
        value = check(s, getattr(instance, s.name))
        object.__setattr__(instance, s.name, value)


def type_table(owner: type, kind: str | None = SCIENCE) -> dict[str, str]:
    """{name: type name}: recorded so that readers without this package decode params."""
    return {s.name: s.type_name for s in settings_of(owner, kind)}
