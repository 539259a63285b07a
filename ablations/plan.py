"""A study file becomes a plan: every trial (arm x seed) with its resolved settings, the
data set, the nuisance search space and the placement, checked whole before anything is
written or started (docs/design.md §5b). `ablate show` and `ablate run` both make it here
(from one `Request`, flags and all), so they refuse exactly the same inputs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import search_spaces
from ablations import placement as places
from ablations.errors import AblateError
from ablations.request import Request
from ablations.study import Nuisance, StudyFile, experiment_name, load, settings_for, with_preset
from resnet.builders import BUILTIN, load_builder
from resnet.config import DatasetInfo, TrainConfig
from resnet.errors import ModelError, ResnetError
from resnet.settings import SCIENCE, type_table


@dataclass(frozen=True)
class Trial:
    key: str  # stable across reruns: "depth=20 shortcut=A seed=0"
    arm: str  # "depth=20 shortcut=A"
    factors: dict[str, Any]
    seed: int
    config: TrainConfig  # resolved: exactly what it trains, on the placement's device
    tuned_from: str = ""  # the tuning run whose values it trains with


@dataclass(frozen=True)
class Replication:
    """Stein's two-stage design (reports/replication.py, docs/tracking.md): the plan's
    `first` seeds per arm, then, from their spread alone, each arm's total for a 95% CI
    half-width of at most target_ci points, at most max_seeds, added in one round."""

    target_ci: float
    max_seeds: int
    first: int = 3  # seeds per arm in the first stage: the plan's seeds

    def describe(self) -> str:
        from reports.replication import TwoStage

        return TwoStage(self.first, self.target_ci, self.max_seeds).describe()


@dataclass(frozen=True)
class Plan:
    study: StudyFile  # the file as written
    source: str
    preset: str | None
    experiment: str  # MLflow experiment: NAME, or NAME@PRESET
    question: str
    dataset: str  # as trained (imagefolder paths absolute)
    factors: list[str]
    reference: dict[str, Any]
    seeds: list[int]
    trials: list[Trial]
    nuisance: Nuisance | None
    space: dict | None  # the nuisance search space, validated
    data: DatasetInfo
    placement: places.Placement
    full: dict[str, Any]  # dataset and iterations of the study without its preset
    replication: Replication | None = None
    notes: list[str] = field(default_factory=list)
    model: str = BUILTIN  # the model builder, module:function

    @property
    def model_factors(self) -> tuple[str, ...]:
        return load_builder(self.model).names

    @property
    def arms(self) -> list[str]:
        return list(dict.fromkeys(t.arm for t in self.trials))

    def param_types(self) -> dict[str, str]:
        """The type of every param a trial records (the store's `ablate.settings`)."""
        factors = {s.name: s.type_name for s in load_builder(self.model).factors}
        counts = {"num_classes": "int", "in_channels": "int", "params": "int", "macs": "int"}
        recipe = type_table(TrainConfig, SCIENCE)
        return {**factors, **recipe, "replicas": "int", **counts, "tuned_from": "str"}

    def params(self, trial: Trial) -> dict[str, Any]:
        """What a trial records as MLflow params (docs/tracking.md)."""
        extra = {"tuned_from": trial.tuned_from} if trial.tuned_from else {}
        data = {"num_classes": self.data.num_classes, "in_channels": self.data.in_channels}
        counts = {**data, **_complexity(trial.config, self.data), **extra}
        return {**trial.config.science(), "replicas": trial.config.replicas, **counts}

    def tuning_trial(self, arm: str) -> Trial:
        """What an arm's tuning trials train before the searcher's values are applied."""
        base, n = next(t for t in self.trials if t.arm == arm), self.nuisance
        config = replace(
            base.config, seed=n.seed, iterations=n.iterations or base.config.iterations
        )
        return Trial(f"{arm} tune", arm, base.factors, n.seed, config)

    def with_tuned(self, best: dict[str, tuple[dict[str, Any], str]]) -> Plan:
        """The plan with each arm's tuned values applied: {arm: (values, tuning run id)}."""
        trials = [
            replace(
                t,
                config=TrainConfig(**{**t.config.to_dict(), **best[t.arm][0]}),
                tuned_from=best[t.arm][1],
            )
            for t in self.trials
        ]
        return replace(self, trials=trials)

    def definition(self) -> dict:
        """What makes the study itself, without its seeds (adding seeds extends a study;
        changing anything else makes it another study): each arm's science settings."""
        arms = {t.arm: t.config.science() for t in self.trials}
        for science in arms.values():
            science.pop("seed")
        return {
            "arms": dict(sorted(arms.items())),
            "nuisance": self.nuisance.model_dump() if self.nuisance else None,
        }

    def fingerprint(self) -> str:
        blob = json.dumps(self.definition(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_seeds(self, seeds_by_arm: dict[str, list[int]]) -> Plan:
        """The plan with these seeds added to these arms."""
        first = {t.arm: t for t in reversed(self.trials)}
        trials = {t.key: t for t in self.trials}
        for arm, seeds in seeds_by_arm.items():
            for seed in seeds if arm in first else []:
                config = replace(first[arm].config, seed=seed)
                trial = replace(first[arm], key=f"{arm} seed={seed}", seed=seed, config=config)
                trials.setdefault(trial.key, trial)
        if len(trials) == len(self.trials):
            return self
        order = sorted(trials.values(), key=lambda t: (self.arms.index(t.arm), t.seed))
        return replace(self, trials=order)


def _absolute_dataset(name: str) -> str:
    """`imagefolder:` paths made absolute where the user typed them (the working folder),
    so no trial resolves them inside Ray's own working folders."""
    if name.startswith("imagefolder:"):
        path = name.removeprefix("imagefolder:")
        if path:
            return f"imagefolder:{Path(path).expanduser().resolve()}"
    return name


def _settings(chosen: StudyFile, arm_factors: dict, dataset: str, data_dir: str) -> dict:
    settings = {k: v for k, v in chosen.fixed.items() if v is not None}
    settings["dataset"] = dataset
    settings["data_dir"] = data_dir
    for rule in chosen.rules:
        if all(str(arm_factors.get(k)) == str(v) for k, v in rule.when.items()):
            settings.update({k: v for k, v in rule.set.items() if v is not None})
    settings.update(arm_factors)
    return settings


def _data_info(dataset: str, data_dir: str) -> DatasetInfo:
    from resnet.data import dataset_info

    try:
        return dataset_info(dataset, data_dir)
    except ResnetError as err:
        raise AblateError(str(err)) from None


def _complexity(config: TrainConfig, data: DatasetInfo) -> dict[str, int]:
    """Parameters and multiply-accumulates per image of a trial's model, on its data."""
    from resnet.complexity import of_config

    return of_config(config, data.num_classes, data.in_channels, data.image_size)


def _resolved(config: TrainConfig, data: DatasetInfo, where: str) -> TrainConfig:
    """The config with what the data decides (validation split, one evaluation per pass),
    checked: the model builds for the data, the splits and a batch fit."""
    try:
        _complexity(config, data)
    except ModelError as err:
        raise AblateError(f"{where}: {config.model} on {config.dataset}: {err}") from None
    except ResnetError as err:
        raise AblateError(f"{where}: {err}") from None
    n = data.train_images
    val = config.val_size
    if val is None:
        from resnet.data import default_val_size

        val = default_val_size(config.dataset, n)
    if not 0 <= val < n:
        raise AblateError(
            f"{where}: val_size={val} must be in [0, {n}) (training images of {config.dataset})"
        )
    if config.batch_size > n - val:
        raise AblateError(
            f"{where}: batch_size {config.batch_size} exceeds the {n - val} training images "
            f"of {config.dataset} left after the validation split"
        )
    every = config.eval_every or max(1, (n - val) // config.batch_size)
    return replace(config, val_size=val, eval_every=every)


def _check_space(nuisance: Nuisance, trials: list[Trial], source: str) -> dict:
    """The nuisance search space exists, tunes settings, and every bound is a valid value
    of its setting for every arm."""
    try:
        space = search_spaces.load(nuisance.search_space)
    except search_spaces.SearchSpaceError as err:
        raise AblateError(f"{source}: nuisance.search_space: {err}") from None
    known = settings_for(trials[0].config.model)
    for param, dist in space.items():
        if param not in known:
            raise AblateError(
                f"search space {nuisance.search_space}: {param} is not a setting; "
                f"allowed: {', '.join(known)}"
            )
        kind, args = next(iter(dist.items()))
        for value in args:
            for trial in {t.arm: t for t in trials}.values():
                try:
                    TrainConfig(**{**trial.config.to_dict(), param: value})
                except ResnetError as err:
                    raise AblateError(
                        f"search space {nuisance.search_space}: {param} {kind} {args}: {err}"
                    ) from None
    return space


def _seeds(request: Request, chosen: StudyFile) -> list[int]:
    if request.seeds is None:
        return list(chosen.seeds)
    if request.seeds < 1:
        raise AblateError(f"--seeds: must be at least 1, got {request.seeds}")
    return list(range(request.seeds))


def _config(settings: dict, where: str) -> TrainConfig:
    try:
        return TrainConfig(**settings)
    except ResnetError as err:
        raise AblateError(f"{where}: {err}") from None


def _arm_config(settings: dict, replicas: int | None, where: str) -> TrainConfig:
    """An arm's config. `--replicas` says how it runs, never what it trains: BatchNorm's
    batch left open resolves as the study runs without the flag, and replicas whose batch
    cannot hold that many images are refused, naming the fix."""
    config = _config(settings, where)
    if replicas is None or replicas == config.replicas:
        return config
    share, rest = divmod(config.batch_size, max(replicas, 1))  # TrainConfig refuses < 1
    if replicas > 0 and not rest and share % config.bn_batch:
        raise AblateError(
            f"{where}: --replicas {replicas} gives each replica {share} of the batch's "
            f"{config.batch_size} images, but the study normalizes BatchNorm over "
            f"{config.bn_batch} (bn_batch); set bn_batch in the study to a divisor of {share} "
            "(that changes the science and its fingerprint), or run without --replicas"
        )
    return _config({**settings, "bn_batch": config.bn_batch, "replicas": replicas}, where)


def _arms(request: Request, chosen: StudyFile, source: str, data: DatasetInfo, seed: int) -> list:
    """(arm, factors, resolved config) of every combination of the scientific factors."""
    dataset = _absolute_dataset(request.dataset or chosen.dataset)
    data_dir = str(Path(request.data_dir or "./data").expanduser().resolve())
    factors = list(chosen.scientific)
    arms = []
    for levels in itertools.product(*(chosen.scientific[f] for f in factors)):
        arm_factors = dict(zip(factors, levels, strict=True))
        arm = " ".join(f"{k}={v}" for k, v in arm_factors.items())
        settings = _settings(chosen, arm_factors, dataset, data_dir)
        where = f"{source}: arm {arm}"
        settings = {**settings, "model": chosen.model, "seed": seed}
        config = _arm_config(settings, request.replicas, where)
        arms.append((arm, arm_factors, _resolved(config, data, where)))
    return arms


def make_plan(request: Request, resources: places.Resources) -> Plan:
    """Every trial with its settings, checked whole; errors name the file, the arm and the
    field. `resources`: what the trials can run on (ablations.cluster.resources)."""
    study, source = load(request.study)
    chosen = with_preset(study, source, request.preset)
    seeds = _seeds(request, chosen)
    dataset = _absolute_dataset(request.dataset or chosen.dataset)
    data = _data_info(dataset, str(Path(request.data_dir or "./data").expanduser().resolve()))
    arms = _arms(request, chosen, source, data, seeds[0])
    replication = _replication(request, seeds)
    placement = places.place(
        max(_complexity(config, data)["macs"] for _, _, config in arms),
        len(arms) * len(seeds),
        resources,
        places.parse_gpus(request.gpus_per_trial),
        request.cpus_per_trial,
        request.max_concurrent,
        replicas=max(config.replicas for _, _, config in arms),
    )
    trials = [
        Trial(f"{arm} seed={s}", arm, factors, s, replace(c, seed=s, device=placement.device))
        for arm, factors, c in arms
        for s in seeds
    ]
    space = _check_space(chosen.nuisance, trials, source) if chosen.nuisance else None
    notes = []
    if not data.present:
        notes.append(
            f"{dataset} is not in {data.location} yet; `ablate run` downloads it once "
            "before any trial starts"
        )
    return Plan(
        study=study,
        source=source,
        preset=request.preset,
        experiment=experiment_name(study.name, request.preset),
        question=study.question,
        dataset=dataset,
        factors=list(chosen.scientific),
        reference=dict(chosen.reference),
        seeds=seeds,
        trials=trials,
        nuisance=chosen.nuisance,
        space=space,
        data=data,
        placement=placement,
        # The study without its preset: the yardstick a report measures a reduced run against.
        full={
            "dataset": study.dataset,
            "iterations": study.fixed.get("iterations") or TrainConfig().iterations,
        },
        replication=replication,
        notes=notes,
        model=study.model,
    )


def _replication(request: Request, seeds: list[int]) -> Replication | None:
    if request.target_ci is None:
        if request.max_seeds is not None:
            raise AblateError("--max-seeds needs --target-ci (the precision to replicate to)")
        return None
    if not request.target_ci > 0:
        raise AblateError(f"--target-ci {request.target_ci:g}: must be a positive number of points")
    max_seeds = request.max_seeds if request.max_seeds is not None else max(10, len(seeds))
    if max_seeds < len(seeds):
        raise AblateError(
            f"--max-seeds {max_seeds}: below the {len(seeds)} seeds the study already plans"
        )
    return Replication(request.target_ci, max_seeds, len(seeds))
