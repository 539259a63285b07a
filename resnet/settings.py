"""How a setting is defined, once: a dataclass field whose metadata says what it means and
whether it is science (changes the result: a study key, an MLflow param, part of the
fingerprint) or execution (where and how fast it runs).

Everything else derives from these fields: the CLI flags (`ablations.cli`), the study-file
keys and their JSON schema (`ablations.study`), the MLflow params and their typed decoding
(`ablations.store`, and `reports/` through the type table the store records).

No torch here: the CLI builds its flags from this module and must answer at once.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING, Field
from typing import Any

SCIENCE = "science"
EXECUTION = "execution"
TYPE_NAMES = {int: "int", float: "float", bool: "bool", str: "str"}


def setting(
    default: Any,
    help: str,
    kind: str = SCIENCE,
    choices: tuple | None = None,
    flag: bool = True,
) -> Any:
    """A dataclass field with its meaning: `help` (one line, with units or the paper's
    section), `kind` (science or execution), `choices` (allowed values, if a closed set)
    and `flag` (False: no CLI flag, e.g. a value derived from the data set)."""
    return dataclasses.field(
        default=default,
        metadata={"help": help, "kind": kind, "choices": choices, "flag": flag},
    )


def fields_of(cls: type, kind: str | None = None) -> list[Field]:
    """The settings of a settings dataclass, in declaration order; only `kind` if given."""
    return [
        f
        for f in dataclasses.fields(cls)
        if f.init and "kind" in f.metadata and (kind is None or f.metadata["kind"] == kind)
    ]


def base_type(f: Field, owner: type) -> type:
    """int, float, bool or str: the field's type without `| None`."""
    hint = typing.get_type_hints(owner)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0]
    if hint not in TYPE_NAMES:
        raise TypeError(f"setting {f.name}: unsupported type {hint!r}")
    return hint


def optional(f: Field, owner: type) -> bool:
    hint = typing.get_type_hints(owner)[f.name]
    return type(None) in typing.get_args(hint)


def type_table(owner: type, kind: str | None = SCIENCE) -> dict[str, str]:
    """{name: "int" | "float" | "bool" | "str"}: what the store records so that readers
    without this package (the reports) can decode params."""
    return {f.name: TYPE_NAMES[base_type(f, owner)] for f in fields_of(owner, kind)}


def decode(type_name: str, text: str | None) -> Any:
    """A param's text back to its value ("None" is unset). Raises ValueError on text that
    is not of the type."""
    if text is None or text == "None":
        return None
    if type_name == "bool":
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(f"{text!r} is not true or false")
    if type_name == "int":
        value = float(text)
        if not value.is_integer():
            raise ValueError(f"{text!r} is not a whole number")
        return int(value)
    if type_name == "float":
        return float(text)
    return text


def default_of(f: Field) -> Any:
    return None if f.default is MISSING else f.default
