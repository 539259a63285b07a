"""Study files: a small declarative schema (docs/design.md §4), loaded by name or path.

The keys a study may fix or vary, and their types, come from the settings' one definition
(resnet/settings.py), as do the CLI flags and the MLflow params; pydantic publishes the
schema for editors (`ablations/study.schema.json`). Only the file itself is checked here;
what needs the data, the search spaces or the machine is checked by ablations/plan.py.
"""

from __future__ import annotations

import math
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator

from ablations.errors import AblateError
from resnet.builders import BUILTIN, load_builder
from resnet.config import TrainConfig
from resnet.errors import ResnetError, SpecError
from resnet.settings import EXECUTION, SCIENCE, Setting, check, settings_of

# The recipe settings a study may fix or vary (seeds and the model have keys of their own);
# the model builder's factors join them (`settings_for`). How a trial runs (replicas, the
# step's form) may be fixed too; it is no part of what the study measures.
_RECIPE = {s.name: s for s in settings_of(TrainConfig, SCIENCE) if s.name not in ("seed", "model")}
_RUN = ("replicas", "compile", "step", "checkpoint_every")
_EXECUTION = {s.name: s for s in settings_of(TrainConfig, EXECUTION) if s.name in _RUN}


def settings_for(model: str) -> dict[str, Setting]:
    """The settings a study of `model` may fix or vary: its factors, then the recipe."""
    try:
        factors = load_builder(model).factors
    except ResnetError as err:
        raise ValueError(str(err)) from None
    return {**{s.name: s for s in factors}, **_RECIPE, **_EXECUTION}


_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: ["string", "number"]}


def _value_schema(s: Setting, unset: bool) -> dict:
    """The JSON schema of one value of a setting, from its one definition (`unset`: null
    allowed, for the setting's default)."""
    types = _JSON_TYPES[s.type]
    types = [*types, "null"] if isinstance(types, list) else [types, "null"]
    schema: dict[str, Any] = {"type": types if unset else _JSON_TYPES[s.type]}
    if s.choices:
        schema = {"enum": [*s.choices, *([None] if unset else [])]}
    if s.ge is not None:
        schema["minimum"] = s.ge
    if s.gt is not None:
        schema["exclusiveMinimum"] = s.gt
    return schema


def _settings_schema(title: str, as_list: bool) -> dict:
    properties = {}
    for name, s in settings_for(BUILTIN).items():
        value = _value_schema(s, unset=not as_list)
        if as_list:
            value = {"type": "array", "items": value, "minItems": 1}
        properties[name] = {**value, "description": s.describe()}
    return {"title": title, "type": "object", "properties": properties,
            "additionalProperties": False}  # fmt: skip


FixedSettings = Annotated[
    dict[str, Any], WithJsonSchema(_settings_schema("FixedSettings", as_list=False))
]
Factors = Annotated[dict[str, Any], WithJsonSchema(_settings_schema("ScientificFactors", True))]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class Nuisance(Strict):
    """Hyperparameters tuned separately for every arm (Optuna through Ray Tune) before the
    seeds run, so that the comparison is fair."""

    search_space: str = Field(description="a search space in search_spaces/ (e.g. lr_weight_decay)")
    trials: Annotated[int, Field(ge=1)] = Field(description="Optuna trials per arm")
    iterations: Annotated[int, Field(ge=1)] | None = Field(
        None, description="training budget of one tuning trial (default: the study's)"
    )
    seed: int = Field(0, description="the seed tuning trials train with")


class Rule(Strict):
    """Settings applied to the arms whose factors match `when` (e.g. warm-up at depth 110)."""

    when: FixedSettings
    set: FixedSettings


class Preset(Strict):
    """A named variant of the study (at least `smoke`): replaces what it names."""

    dataset: str | None = None
    scientific: Factors | None = None
    fixed: FixedSettings | None = None
    seeds: list[Annotated[int, Field(ge=0)]] | None = None
    nuisance: Nuisance | None = None


class StudyFile(Strict):
    # The published schema (study.schema.json) names what a study file is: a Study.
    model_config = ConfigDict(extra="forbid", strict=False, title="Study")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    question: str = Field(min_length=10, description="the question the study answers")
    dataset: str = Field(description="cifar10 | cifar100 | digits | imagefolder:<path>")
    model: str = Field(
        BUILTIN,
        description="the model builder, module:function; its keyword parameters are the "
        "model's factors (default: the paper's ResNets, whose factors are listed here)",
    )
    scientific: Factors = Field(
        description="factors the study measures; every combination is an arm"
    )
    reference: FixedSettings = Field(
        default_factory=dict, description="the arm the others are tested against"
    )
    fixed: FixedSettings = Field(
        default_factory=dict, description="settings other than the paper's recipe"
    )
    rules: list[Rule] = Field(default_factory=list)
    seeds: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    nuisance: Nuisance | None = None
    presets: dict[str, Preset] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> StudyFile:
        known = settings_for(self.model)
        self.scientific = _typed(known, self.scientific, "scientific", as_list=True)
        self.fixed = _typed(known, self.fixed, "fixed")
        self.reference = _typed(known, self.reference, "reference")
        for i, rule in enumerate(self.rules):
            rule.when = _typed(known, rule.when, f"rules.{i}.when")
            rule.set = _typed(known, rule.set, f"rules.{i}.set")
        for name, p in self.presets.items():
            if p.scientific is not None:
                p.scientific = _typed(known, p.scientific, f"presets.{name}.scientific", True)
            if p.fixed is not None:
                p.fixed = _typed(known, p.fixed, f"presets.{name}.fixed")
        for key, levels in self.scientific.items():
            if key in _EXECUTION:
                raise ValueError(f"scientific.{key}: how a trial runs is no factor; fix it")
            if not levels:
                raise ValueError(f"scientific.{key}: empty list of levels; give at least one")
            if len(set(map(str, levels))) != len(levels):
                raise ValueError(f"scientific.{key}: repeated level in {levels}")
            if key in self.fixed:
                raise ValueError(f"fixed.{key}: also a scientific factor; keep it in one place")
        for key, value in self.reference.items():
            if key not in self.scientific or str(value) not in map(str, self.scientific[key]):
                raise ValueError(
                    f"reference.{key}: {value!r} is not a level of a scientific factor {key}"
                )
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: duplicate seed in {self.seeds}; seeds are replicates")
        return self


def _typed(
    known: dict[str, Setting], values: dict[str, Any], where: str, as_list: bool = False
) -> dict[str, Any]:
    """`values` checked by the settings' one check (resnet/settings.py), in the file's
    order, each read as its setting's type (YAML's `400` for a text setting is "400")."""
    out = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"{where}.{key}: unknown setting; allowed: {', '.join(known)}")
        if as_list and not isinstance(value, list):
            raise ValueError(f"{where}.{key}: must be a list of levels, got {value!r}")
        try:
            if as_list:
                out[key] = [check(known[key], v) for v in value]
            else:  # None: the setting's default (a preset undoing what the study fixed)
                out[key] = None if value is None else check(known[key], value)
        except SpecError as err:
            raise ValueError(f"{where}.{err}") from None
    return out


def builtin_names() -> list[str]:
    folder = resources.files("ablations") / "studies"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def is_file_ref(name_or_path: str) -> bool:
    return name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file()


def load(name_or_path: str) -> tuple[StudyFile, str]:
    """A built-in study by name, or a study file by path; (study, where it came from)."""
    if is_file_ref(name_or_path):
        path = Path(name_or_path)
        source = str(path)
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.append(folder)  # a model builder beside the study file imports
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise AblateError(f"{source}: cannot read study file ({err.strerror})") from None
        except UnicodeDecodeError as err:
            raise AblateError(
                f"{source}: not UTF-8 text (byte {err.object[err.start]:#x} at offset "
                f"{err.start}); a study file is YAML saved as UTF-8"
            ) from None
    elif name_or_path in builtin_names():
        source = f"ablations/studies/{name_or_path}.yaml"
        text = (resources.files("ablations") / "studies" / f"{name_or_path}.yaml").read_text()
    else:
        raise AblateError(
            f"unknown study {name_or_path!r}; built-in studies: "
            f"{', '.join(builtin_names())} (or give a path to a .yaml file)"
        )
    return parse(text, source), source


def parse(text: str, source: str = "<study>") -> StudyFile:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise AblateError(
            f"{source}:{where} YAML syntax error: {getattr(err, 'problem', None) or err}"
        ) from None
    if not isinstance(raw, dict):
        raise AblateError(
            f"{source}: a study file is a mapping with keys {', '.join(StudyFile.model_fields)}"
        )
    try:
        return StudyFile.model_validate(raw)
    except ValidationError as err:
        raise AblateError(f"{source}: {_one_line(err)}") from None


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        parent = {(): StudyFile, ("nuisance",): Nuisance}.get(tuple(first["loc"][:-1]))
        if parent is None and len(first["loc"]) == 3 and first["loc"][0] == "presets":
            parent = Preset
        allowed = f"; allowed: {', '.join(parent.model_fields)}" if parent else ""
        return f"{loc}: unknown key{allowed}"
    return f"{loc}: {msg}" if loc else msg


def experiment_name(study: str, preset: str | None) -> str:
    """The MLflow experiment of a study: NAME, or NAME@PRESET. `study`: a study's name, or
    a study file (its `name` counts)."""
    name = load(study)[0].name if is_file_ref(study) else study
    return name if preset is None else f"{name}@{preset}"


def json_schema() -> dict:
    return StudyFile.model_json_schema()


def with_preset(study: StudyFile, source: str, preset: str | None) -> StudyFile:
    if preset is None:
        return study
    if preset not in study.presets:
        allowed = ", ".join(study.presets) or "none defined"
        raise AblateError(f"{source}: unknown preset {preset!r}; presets: {allowed}")
    p = study.presets[preset]
    return study.model_copy(
        update={
            "dataset": p.dataset or study.dataset,
            "scientific": {**study.scientific, **(p.scientific or {})},
            "fixed": {**study.fixed, **(p.fixed or {})},
            "seeds": p.seeds or study.seeds,
            "nuisance": p.nuisance or study.nuisance,
        }
    )


def _trial_count(study: StudyFile, preset: str | None) -> int:
    chosen = with_preset(study, study.name, preset)
    return math.prod(len(levels) for levels in chosen.scientific.values()) * len(chosen.seeds)


def list_studies() -> list[dict]:
    """Every built-in study: name, question, trials, and trials per preset."""
    out = []
    for name in builtin_names():
        study = load(name)[0]
        out.append(
            {
                "name": name,
                "question": " ".join(study.question.split()),
                "dataset": study.dataset,
                "trials": _trial_count(study, None),
                "presets": {p: _trial_count(study, p) for p in study.presets},
            }
        )
    return out
