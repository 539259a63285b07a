"""What `ablate list` and `ablate show` print: studies and resolved plans, no compute."""

from __future__ import annotations

from ablations import study as studies
from ablations.study import Plan


def list_studies() -> list[tuple[str, str]]:
    """(name, question) of every built-in study."""
    return [(name, studies.load(name)[0].question) for name in studies.builtin_names()]


def describe(plan: Plan) -> dict:
    """Every trial with its settings, params and MACs, and an estimate of the compute:
    training costs about 3x the forward multiply-accumulates (forward + backward)."""
    from resnet.complexity import complexity
    from resnet.data import DataError, dataset_info

    first = plan.trials[0].config
    try:
        info = dataset_info(first.dataset, first.data_dir)
        data_note = ""
    except DataError as err:  # show still resolves; run will refuse
        info = {"num_classes": 1000 if first.stem == "imagenet" else 10, "in_channels": 3}
        data_note = str(err)
    cache: dict = {}
    rows = []
    total_macs = 0.0
    for trial in plan.trials:
        spec = trial.config.model_spec(info["num_classes"], info["in_channels"])
        counts = cache.setdefault(spec, complexity(spec))
        train_macs = 3 * counts["macs"] * trial.config.batch_size * trial.config.iterations
        total_macs += train_macs
        rows.append(
            {
                "trial": trial.key,
                "arm": trial.arm,
                "seed": trial.seed,
                **counts,
                "iterations": trial.config.iterations,
                "training_macs": train_macs,
                "settings": trial.config.to_dict(),
            }
        )
    nuisance = plan.nuisance.model_dump() if plan.nuisance else None
    return {
        "study": plan.study.name,
        "experiment": plan.experiment,
        "question": plan.study.question,
        "dataset": first.dataset,
        "data_note": data_note,
        "arms": len(plan.arms),
        "seeds": sorted({t.seed for t in plan.trials}),
        "trials": rows,
        "nuisance": nuisance,
        "total_training_macs": total_macs,
    }
