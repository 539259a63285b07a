"""Named search spaces (data, one YAML file each) and their translation to Optuna.

A space file maps each nuisance hyperparameter (a setting, named as everywhere else) to one
distribution: `loguniform: [low, high]`, `uniform: [low, high]`, `int: [low, high]`
or `choice: [a, b, ...]`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

KINDS = ("loguniform", "uniform", "int", "choice")


class SearchSpaceError(ValueError):
    """An unknown or malformed search space; the message names it and what is allowed."""


def names() -> list[str]:
    folder = resources.files("search_spaces")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load(name: str) -> dict[str, dict[str, list]]:
    """`{param: {kind: args}}` for a named space (or a space file, `NAME.yaml`, relative to
    the working folder), validated."""
    if name.endswith((".yaml", ".yml")):
        try:
            text = Path(name).read_text(encoding="utf-8")
        except OSError as err:
            raise SearchSpaceError(f"search space file {name}: {err.strerror}") from None
    elif name in names():
        text = (resources.files("search_spaces") / f"{name}.yaml").read_text()
    else:
        raise SearchSpaceError(
            f"unknown search space {name!r}; available: {', '.join(names())} "
            "(or a path to a .yaml file)"
        )
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SearchSpaceError(f"search space {name}: YAML syntax error ({err})") from None
    params = raw.get("params") if isinstance(raw, dict) else None
    if not isinstance(params, dict) or not params:
        raise SearchSpaceError(f"search space {name}: needs a non-empty 'params' mapping")
    for param, dist in params.items():
        if not isinstance(dist, dict) or len(dist) != 1 or next(iter(dist)) not in KINDS:
            raise SearchSpaceError(
                f"search space {name}: {param}: one of {', '.join(KINDS)} with its arguments"
            )
        kind, args = next(iter(dist.items()))
        if kind != "choice" and (len(args) != 2 or not args[0] < args[1]):
            raise SearchSpaceError(f"search space {name}: {param}: {kind} needs [low, high]")
    return params


def to_optuna(space: dict[str, dict[str, list]]) -> dict[str, Any]:
    """Optuna distributions, for Ray Tune's OptunaSearch."""
    import optuna.distributions as d

    out: dict[str, Any] = {}
    for param, dist in space.items():
        kind, args = next(iter(dist.items()))
        if kind == "loguniform":
            out[param] = d.FloatDistribution(float(args[0]), float(args[1]), log=True)
        elif kind == "uniform":
            out[param] = d.FloatDistribution(float(args[0]), float(args[1]))
        elif kind == "int":
            out[param] = d.IntDistribution(int(args[0]), int(args[1]))
        else:
            out[param] = d.CategoricalDistribution(list(args))
    return out
