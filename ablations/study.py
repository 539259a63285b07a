"""Study files: a small declarative schema (STYLE.md section 4), validated before anything
runs, and its resolution into a plan of trials (one per arm and seed).

The schema is pydantic, which also publishes it as JSON schema (`ablations/study.schema.json`)
so editors can check study files.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ablations.errors import AblateError
from resnet.config import TrainConfig
from resnet.spec import SpecError

# Settings a study may fix or vary: every TrainConfig field except execution details.
SETTINGS = tuple(
    f.name
    for f in dataclasses.fields(TrainConfig)
    if f.name not in ("device", "compile", "data_dir")
)
Level = int | float | str | bool


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

    when: dict[str, Level]
    set: dict[str, Level]


class Preset(Strict):
    """A named variant of the study (at least `smoke`): replaces what it names."""

    dataset: str | None = None
    scientific: dict[str, list[Level]] | None = None
    fixed: dict[str, Level | None] | None = None
    seeds: list[Annotated[int, Field(ge=0)]] | None = None
    nuisance: Nuisance | None = None


class Study(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    question: str = Field(min_length=10, description="the question the study answers")
    dataset: str = Field(description="cifar10 | cifar100 | digits | imagefolder:<path>")
    scientific: dict[str, list[Level]] = Field(
        description="factors the study measures; every combination is an arm"
    )
    reference: dict[str, Level] = Field(
        default_factory=dict, description="the arm the others are tested against"
    )
    fixed: dict[str, Level | None] = Field(
        default_factory=dict, description="settings other than the paper's recipe"
    )
    rules: list[Rule] = Field(default_factory=list)
    seeds: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    nuisance: Nuisance | None = None
    presets: dict[str, Preset] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Study:
        for where, keys in (
            ("scientific", self.scientific),
            ("fixed", self.fixed),
            ("reference", self.reference),
        ):
            for key in keys:
                if key not in SETTINGS:
                    raise ValueError(
                        f"{where}.{key}: unknown setting; allowed: {', '.join(SETTINGS)}"
                    )
        for key, levels in self.scientific.items():
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


@dataclasses.dataclass(frozen=True)
class Trial:
    key: str  # stable across reruns: "depth=20 shortcut=A seed=0"
    arm: str  # "depth=20 shortcut=A"
    factors: dict[str, Any]
    seed: int
    config: TrainConfig


@dataclasses.dataclass(frozen=True)
class Plan:
    study: Study
    preset: str | None
    experiment: str  # MLflow experiment: NAME, or NAME@PRESET
    trials: list[Trial]
    nuisance: Nuisance | None
    source: str

    @property
    def arms(self) -> list[str]:
        return list(dict.fromkeys(t.arm for t in self.trials))

    def fingerprint(self) -> str:
        """Hash of the study's definition without its seeds (adding seeds extends a study;
        changing anything else makes it another study)."""
        import hashlib

        arms = sorted({t.arm + "|" + _config_fingerprint(t.config) for t in self.trials})
        blob = json.dumps([arms, self.nuisance.model_dump() if self.nuisance else None])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _config_fingerprint(config: TrainConfig) -> str:
    return dataclasses.replace(config, seed=0).fingerprint()


def builtin_names() -> list[str]:
    folder = resources.files("ablations") / "studies"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load(name_or_path: str) -> tuple[Study, str]:
    """A built-in study by name, or a study file by path; (study, where it came from)."""
    path = Path(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) or path.is_file():
        source = str(path)
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


def parse(text: str, source: str = "<study>") -> Study:
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
            f"{source}: a study file is a mapping with keys {', '.join(Study.model_fields)}"
        )
    try:
        return Study.model_validate(raw)
    except ValidationError as err:
        raise AblateError(f"{source}: {_one_line(err)}") from None


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        parent = Study if len(first["loc"]) == 1 else None
        allowed = f"; allowed: {', '.join(parent.model_fields)}" if parent else ""
        return f"{loc}: unknown key{allowed}"
    return f"{loc}: {msg}" if loc else msg


def resolve(
    study: Study,
    source: str,
    preset: str | None = None,
    seeds: int | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
) -> Plan:
    """Every trial (arm x seed) with its full settings; invalid combinations are errors
    naming the file, the arm and the field, before anything runs."""
    chosen = study
    if preset is not None:
        if preset not in study.presets:
            allowed = ", ".join(study.presets) or "none defined"
            raise AblateError(f"{source}: unknown preset {preset!r}; presets: {allowed}")
        p = study.presets[preset]
        chosen = study.model_copy(
            update={
                "dataset": p.dataset or study.dataset,
                "scientific": {**study.scientific, **(p.scientific or {})},
                "fixed": {**study.fixed, **(p.fixed or {})},
                "seeds": p.seeds or study.seeds,
                "nuisance": p.nuisance or study.nuisance,
            }
        )
    seed_list = list(chosen.seeds)
    if seeds is not None:
        if seeds < 1:
            raise AblateError(f"--seeds: must be at least 1, got {seeds}")
        seed_list = list(range(seeds))
    factors = list(chosen.scientific)
    trials = []
    for levels in itertools.product(*(chosen.scientific[f] for f in factors)):
        arm_factors = dict(zip(factors, levels, strict=True))
        arm = " ".join(f"{k}={v}" for k, v in arm_factors.items())
        settings = {k: v for k, v in chosen.fixed.items() if v is not None}
        settings["dataset"] = dataset or chosen.dataset
        if data_dir:
            settings["data_dir"] = data_dir
        settings["device"] = device
        for rule in chosen.rules:
            if all(str(arm_factors.get(k)) == str(v) for k, v in rule.when.items()):
                settings.update(rule.set)
        settings.update(arm_factors)
        for seed in seed_list:
            try:
                config = TrainConfig.from_dict(_coerce({**settings, "seed": seed}))
            except SpecError as err:
                raise AblateError(f"{source}: arm {arm}: {err}") from None
            trials.append(Trial(f"{arm} seed={seed}", arm, arm_factors, seed, config))
    name = study.name if preset is None else f"{study.name}@{preset}"
    return Plan(chosen, preset, name, trials, chosen.nuisance, source)


def _coerce(settings: dict) -> dict:
    # YAML reads `warmup: 400` as an int; TrainConfig spells it as a string.
    if "warmup" in settings:
        settings["warmup"] = str(settings["warmup"])
    for key in ("lr", "weight_decay", "momentum", "warmup_lr"):
        if isinstance(settings.get(key), int) and not isinstance(settings[key], bool):
            settings[key] = float(settings[key])
    return settings


def json_schema() -> dict:
    return Study.model_json_schema()
