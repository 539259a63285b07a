"""What `ablate show` prints: the plan, its placement, what the store holds of it and an
estimate of the time."""

from __future__ import annotations

import time

from ablations.ledger import Ledger
from ablations.plan import Plan
from resnet.builders import BUILTIN


def show(plan: Plan, ledger: Ledger, effect: float | None = None) -> dict:
    """All that `ablate show` prints: the plan with the seeds earlier rounds added, what the
    store holds, the time it will take and, when asked, the seeds a precision or an effect
    of `effect` points needs."""
    if plan.replication:
        plan = plan.with_seeds(ledger.seeds())
    view = describe(plan, ledger)
    view["estimate"] = estimate(plan, view, ledger)
    if effect is not None:
        view["seed_plan"] = seed_plan(ledger, effect, plan)
    if plan.replication:
        view["target_plan"] = target_plan(plan, ledger, plan.replication.target_ci)
    return view


def describe(plan: Plan, ledger: Ledger) -> dict:
    """Every trial with its settings, size and what the store holds of it, the placement,
    and the compute: training costs about 3x the forward MACs (forward + backward)."""
    rows = []
    for trial in plan.trials:
        params = plan.params(trial)
        train_macs = 3 * params["macs"] * trial.config.batch_size * trial.config.iterations
        rows.append(
            {
                "trial": trial.key,
                "arm": trial.arm,
                "seed": trial.seed,
                "params": params["params"],
                "macs": params["macs"],
                "iterations": trial.config.iterations,
                "batch_size": trial.config.batch_size,
                "training_macs": train_macs,
                "stored": _stored_state(ledger.trials.get(trial.key)),
                "batchnorm": _batchnorm(plan, trial),
                "settings": trial.config.to_dict(),
            }
        )
    return {
        "study": plan.study.name,
        "experiment": plan.experiment,
        "question": " ".join(plan.question.split()),
        "dataset": plan.dataset,
        "notes": plan.notes,
        "arms": len(plan.arms),
        "seeds": plan.seeds,
        "trials": rows,
        "nuisance": plan.nuisance.model_dump() if plan.nuisance else None,
        "placement": plan.placement.describe(),
        "at_once": plan.placement.at_once,
        "total_training_macs": sum(r["training_macs"] for r in rows),
        "running": ledger.running,  # "" unless another driver runs it now
    }


def _batchnorm(plan: Plan, trial) -> bool:
    """Whether the trial's model normalizes with BatchNorm (bn_batch means nothing else)."""
    from resnet.complexity import measure  # torch

    data = plan.data
    counts = measure(trial.config, data.num_classes, data.in_channels, data.image_size)
    return counts["batchnorm_layers"] > 0


def _stored_state(state) -> str:
    """What a rerun would do with a trial, from the store and the storage."""
    if state is None:
        return "new"
    if state.done or not state.checkpoints:
        return state.status
    return f"{state.status}, resumes from {state.checkpoints[0]}"


def estimate(plan: Plan, view: dict, ledger: Ledger) -> dict:
    """Seconds per trial and for the study: from past runs of its arms in the store, else
    a short measurement here scaled by MACs. Training steps only (evaluations add a little)."""
    past = ledger.seconds_per_iteration()
    rate, basis = None, []
    per_trial = {}
    for row in view["trials"]:
        if row["arm"] in past:
            per_trial[row["trial"]] = past[row["arm"]] * row["iterations"]
            continue
        if rate is None:
            rate = _measure(plan, view)
            if rate is None:
                return {
                    "basis": "none: the trials run on a remote cluster's GPUs; past runs in "
                    "the store give an estimate once trials of this study have finished",
                    "total_s": None,
                }
        per_trial[row["trial"]] = row["training_macs"] / rate["macs_per_s"]
    if past:
        basis.append(f"past runs of {len(past)} arm(s) in the store")
    if rate is not None:
        basis.append(rate["basis"])
        replicas = plan.placement.replicas
        if replicas > 1 and plan.placement.device == "cpu":
            basis.append(
                f"measured in one process: {replicas} replicas on CPUs add gloo's exchange of "
                "the gradients at every step and share this machine's cores, so a trial is "
                "usually slower than in one process (a 2-replica digits study on 2 cores "
                "took about 4x as long); replicas pay off on GPUs"
            )
    seconds = list(per_trial.values())
    # Trials run `at_once` at a time: the study takes about the sum over that, and never
    # less than its longest trial.
    total = max(sum(seconds) / view["at_once"], max(seconds, default=0.0))
    return {"basis": "; ".join(basis), "per_trial_s": per_trial, "total_s": total}


def _measure(plan: Plan, view: dict) -> dict | None:
    """MACs per second of training on the trials' device: two timed forward and backward
    passes of the smallest model after a warm-up. No optimizer: building one loads
    torch's compiler stack (over a second), and its step is a small part of the cost."""
    import torch
    from torch import nn

    placement = plan.placement
    if placement.device == "cuda" and placement.resources.where != "this machine":
        return None
    device = torch.device(placement.device)
    smallest = min(view["trials"], key=lambda r: r["macs"])
    trial = next(t for t in plan.trials if t.key == smallest["trial"])
    classes, channels = plan.data.num_classes, plan.data.in_channels
    batch = min(trial.config.batch_size, 32)
    size = plan.data.image_size
    h, w = (size, size) if isinstance(size, int) else size
    threads = torch.get_num_threads()
    torch.set_num_threads(placement.threads)
    try:
        model = trial.config.build_model(classes, channels)
        model = model.to(device, memory_format=torch.channels_last)
        x = torch.randn(batch, channels, h, w, device=device)
        y = torch.randint(0, classes, (batch,), device=device)

        def step() -> None:
            model.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()

        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(2):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / 2
    finally:
        torch.set_num_threads(threads)
    macs_per_s = 3 * smallest["macs"] * batch / seconds
    where = "GPU" if device.type == "cuda" else f"CPU, {placement.threads} thread(s) per trial"
    return {
        "macs_per_s": macs_per_s,
        "basis": f"two training passes of {trial.arm} measured on this machine ({where}), "
        "scaled by each trial's MACs: a rough estimate",
    }


def render(view: dict) -> str:
    """The plan as `ablate show` prints it."""
    from ablations.progress import duration

    lines = [
        f"{view['experiment']}: {view['question']}",
        f"dataset {view['dataset']}; {view['arms']} arms x {len(view['seeds'])} seeds "
        f"{view['seeds']} = {len(view['trials'])} trials",
    ]
    lines += [f"note: {note}" for note in view["notes"]]
    if view["running"]:
        lines.append(f"running now {view['running']}: `ablate run` refuses it (or --wait)")
    first = view["trials"][0]["settings"]
    norm = "no BatchNorm in the model"
    if any(row["batchnorm"] for row in view["trials"]):
        norm = f"BatchNorm over {first['bn_batch']} images (bn_batch)"
    lines.append(
        f"batch {first['batch_size']}, {norm}, "
        f"val_size {first['val_size']} (training images held out for validation)"
    )
    if view["nuisance"]:
        n = view["nuisance"]
        lines.append(
            f"nuisance: {n['trials']} Optuna trials per arm over {n['search_space']} "
            f"({n['iterations'] or 'full'} iterations each), then the seeds at the best point"
        )
    lines.append(
        f"{'trial':<36} {'params':>11} {'MACs':>9} {'iterations':>10} {'time':>9}  in the store"
    )
    per_trial = view["estimate"].get("per_trial_s", {})
    for row in view["trials"]:
        lines.append(
            f"{row['trial']:<36} {row['params']:>11,} {_si(row['macs']):>9} "
            f"{row['iterations']:>10,} {duration(per_trial.get(row['trial'])):>9}  "
            f"{row['stored']}"
        )
    total = view["total_training_macs"]
    lines.append(
        f"compute: about {total:.3g} multiply-accumulates in training "
        f"({total / 1e15:.2f} PMAC; forward + backward = 3x forward)"
    )
    lines.append(f"runs {view['placement']}")
    est = view["estimate"]
    when = "no estimate" if est.get("total_s") is None else f"about {duration(est['total_s'])}"
    when = when.replace("about < 1 s", "under a second")
    lines.append(f"time: {when} ({est['basis']})")
    lines += [view[key]["text"] for key in ("seed_plan", "target_plan") if key in view]
    return "\n".join(lines)


def _si(count: float) -> str:
    """12.3k, 97.2M, 1.81G: a count in three figures."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g}{unit}"
    return f"{count:.0f}"


def _spread(ledger: Ledger, plan: Plan | None = None) -> tuple[float, str, bool]:
    """The seed-to-seed SD to plan with: measured in the store, else the stated prior (a
    ResNet's on CIFAR-10: for another model, a guess until its own seeds are measured)."""
    from reports import stats

    measured = stats.pooled_sd(ledger.errors())
    if measured is not None:
        sd, dof = measured
        return sd, f"seed-to-seed SD {sd:.2f} points measured in the store ({dof} d.o.f.)", True
    sd, source = stats.PRIOR_SEED_SD, stats.PRIOR_SEED_SD_SOURCE
    if plan is not None and plan.model != BUILTIN:
        source += f"; measured for ResNets, a guess for {plan.model} until its seeds are stored"
    return sd, f"prior seed-to-seed SD {sd:.2f} points ({source})", False


def comparisons(plan: Plan) -> int:
    """How many arms the report tests against a reference arm: those whose reference
    factors differ from the reference's (Holm's correction runs over them)."""
    ref = {k: str(v) for k, v in plan.reference.items()}
    factors = {t.arm: t.factors for t in plan.trials}
    if not ref:
        return 1
    tested = [a for a, f in factors.items() if any(str(f.get(k)) != v for k, v in ref.items())]
    return max(1, len(tested))


def seed_plan(ledger: Ledger, effect: float, plan: Plan | None = None) -> dict:
    """Seeds per arm for the verdicts' test (Welch's, two-sided, alpha 0.05 with Holm over
    the plan's comparisons, bounded by Bonferroni) to detect a difference of `effect`
    points with power 0.8, at the spread measured in the store, else a stated prior."""
    from reports import stats

    sd, basis, measured = _spread(ledger, plan)
    tests = comparisons(plan) if plan is not None else 1
    seeds = stats.seeds_needed(effect, sd, tests=tests)
    level = "alpha 0.05" if tests == 1 else f"alpha 0.05 Holm-corrected over {tests} comparisons"
    return {
        "effect": effect,
        "sd": sd,
        "measured": measured,
        "comparisons": tests,
        "seeds_per_arm": seeds,
        "text": f"seeds: {seeds} per arm detect a {effect:g}-point difference "
        f"(Welch's test, two-sided {level}, power 0.8; {basis})",
    }


def target_plan(plan: Plan, ledger: Ledger, target: float) -> dict:
    """Seeds each arm runs under the two-stage design for a 95% CI half-width of at most
    `target` points: its total when its first stage (the plan's seeds) has 2 finished
    seeds, else the total it reaches with probability 0.9 at the pooled (or prior) spread.
    Uncapped: more than max_seeds means the cap will hold the interval wider."""
    from reports import replication

    sd, basis, measured = _spread(ledger, plan)
    first = max(2, len(plan.seeds))
    per_arm, lines = {}, []
    for arm in plan.arms:
        stage = [
            value
            for state in ledger.trials.values()
            if state.arm == arm and state.seed in plan.seeds
            if (value := state.error_pct()) is not None
        ]
        if len(stage) >= 2:
            per_arm[arm] = replication.needed_seeds(stage, target)
            source = f"from its {len(stage)} first-stage seeds"
        else:
            per_arm[arm] = replication.planned_seeds(sd, first, target)
            source = "at most, 9 times in 10, at the study's spread"
        lines.append(f"  {arm}: {per_arm[arm]} seeds ({source})")
    text = (
        f"seeds for a 95% CI of +-{target:g} points per arm (two-stage design: {first} "
        f"seeds first, their spread sets the total; {basis}):"
    )
    return {"target": target, "measured": measured, "seeds_per_arm": per_arm,
            "first_stage": first, "text": "\n".join([text, *lines])}  # fmt: skip
