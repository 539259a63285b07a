"""The `ablate` command: parses, calls one library function, and turns the library's typed
errors into one line and a documented exit code (docs/design.md §5).

Exit codes: 0 success; 1 a study ran but some trials failed; 2 bad input (nothing was
run, nothing was written); 130 interrupted (resumable: run the same command again).

Flags that set a training or model setting are made from the settings' one definition
(resnet/config.py, resnet/spec.py): same name, type, default and meaning. Heavy libraries
load inside the commands, so `--help`, `--version` and `list` answer at once. A little
over 300 lines: the whole user-facing surface in one file, each command a short function.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Bad input caught by the CLI itself."""


class _Parser(argparse.ArgumentParser):
    # argparse prints usage plus the error; we promise one line naming what is wrong.
    def error(self, message: str) -> None:
        raise UsageError(message)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ablate")
    except PackageNotFoundError:
        return "unknown (not installed)"


# -- flags from the settings ------------------------------------------------------------


def _setting_flags(p: argparse.ArgumentParser, owner: type, skip: tuple[str, ...] = ()) -> None:
    """One flag per setting of `owner`, named, typed and explained by its definition."""
    from resnet.settings import base_type, default_of, fields_of

    for f in fields_of(owner):
        if f.name in skip or not f.metadata.get("flag", True):
            continue
        kind = base_type(f, owner)
        flag = "--" + f.name.replace("_", "-")
        default = default_of(f)
        help_text = f.metadata["help"] + ("" if default is None else f" (default {default})")
        if kind is bool:
            p.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            p.add_argument(flag, type=kind, default=None, help=help_text)


def _settings_from(owner: type, args: argparse.Namespace, **overrides):
    """The settings dataclass from the flags given (absent flags keep its defaults)."""
    from resnet.settings import fields_of

    values = {f.name: getattr(args, f.name, None) for f in fields_of(owner)}
    values = {k: v for k, v in values.items() if v is not None}
    return owner(**{**values, **overrides})


# -- commands ---------------------------------------------------------------------------


def cmd_model(args: argparse.Namespace) -> int:
    from resnet.complexity import complexity, layout
    from resnet.spec import ModelSpec

    classes = args.num_classes or (1000 if args.stem == "imagenet" else None)
    spec = _settings_from(ModelSpec, args, **({"num_classes": classes} if classes else {}))
    counts = complexity(spec)
    if args.json:
        print(json.dumps({**counts, "spec": spec.to_dict(), "layout": layout(spec)}))
        return 0
    print(
        f"{spec.label()}  ({spec.stem} stem, skip length {spec.skip_length}"
        f"{', bottleneck' if spec.bottleneck else ''}"
        f"{', pre-activation' if spec.preactivation else ''})"
    )
    print(f"{'stage':<8} {'units':>5}  {'unit':<32} {'width':>6} {'map':>5}")
    for row in layout(spec):
        print(
            f"{row['stage']:<8} {row['units']:>5}  {row['unit']:<32} {row['width']:>6} "
            f"{row['size']:>4}²"
        )
    print(f"params {counts['params']:,}   MACs {counts['macs'] / 1e6:,.2f}M per image")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ablations.progress import TrainProgress
    from resnet.config import TrainConfig
    from resnet.data import ensure_available, load_dataset
    from resnet.train import train

    config = _settings_from(TrainConfig, args)
    # Bad data input fails here, in one line, before the progress bar or any compute.
    ensure_available(config.dataset, config.data_dir)
    data = load_dataset(config.dataset, config.data_dir, config.val_size)
    with TrainProgress(config.iterations) as progress:
        result = train(config, progress, checkpoints=args.checkpoint_dir, data=data)
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ablations.describe import list_studies

    rows = list_studies()
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        presets = ", ".join(f"{p}: {n}" for p, n in row["presets"].items())
        print(f"{row['name']:<19} {row['trials']:>3} trials on {row['dataset']} ({presets})")
        print(f"{'':<19} {row['question']}")
    return 0


def _request(args: argparse.Namespace):
    from ablations.plan import Request

    return Request(
        study=args.study,
        preset=args.preset,
        seeds=args.seeds,
        dataset=args.dataset,
        data_dir=args.data_dir,
        gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial,
        max_concurrent=args.max_concurrent,
        address=args.address,
        target_ci=getattr(args, "target_ci", None),
        max_seeds=getattr(args, "max_seeds", None),
    )


def _plan(args: argparse.Namespace):
    from ablations.plan import make_plan

    return make_plan(_request(args))


def cmd_show(args: argparse.Namespace) -> int:
    from ablations.describe import describe, estimate, render, seed_plan
    from ablations.store import check_store, resolve_uri

    plan = _plan(args)
    check_store(plan, resolve_uri(args.tracking_uri))  # what `run` would refuse, show refuses
    view = describe(plan)
    view["estimate"] = estimate(plan, view, args.tracking_uri)
    if args.effect is not None:
        if not args.effect > 0:
            raise UsageError(f"--effect {args.effect:g}: must be a positive number of points")
        view["seed_plan"] = seed_plan(plan, args.effect, args.tracking_uri)
    print(json.dumps(view, default=str) if args.json else render(view))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ablations.runner import RunOptions, run_study

    plan = _plan(args)
    options = RunOptions(args.tracking_uri, args.storage, progress=not args.quiet)
    summary = run_study(plan, options, address=args.address)
    counts: dict[str, int] = {}
    for status in summary.statuses.values():
        counts[status] = counts.get(status, 0) + 1
    if summary.not_started:
        counts["not started"] = len(summary.not_started)
    ran = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to run"
    print(
        f"{summary.experiment}: {summary.total} trials; {summary.skipped} already done; "
        f"this run: {ran}. Store: {summary.tracking_uri}"
    )
    for arm, seeds in summary.added.items():
        print(f"  added seeds {', '.join(map(str, seeds))} to {arm} (95% CI still too wide)")
    if summary.interrupted:
        print("interrupted: run the same command again to resume")
        return 130
    if args.report:
        _report(summary.experiment, args.tracking_uri, None, None)
    return 1 if summary.failed else 0


def _experiment(study: str, preset: str | None) -> str:
    """The experiment a study name or study file records into."""
    from ablations.study import experiment_name, is_file_ref, load

    if is_file_ref(study):
        return experiment_name(load(study)[0], preset)
    return study if not preset else f"{study}@{preset}"


def _report(name: str, tracking_uri: str | None, out: str | None, ui_url: str | None) -> None:
    from ablations.store import probe, resolve_uri
    from reports import build_report

    uri = resolve_uri(tracking_uri)
    probe(uri)
    path = build_report(name, uri, out or f"ablate-reports/{name}", mlflow_ui_url=ui_url)
    print(f"report: {path}")


def cmd_report(args: argparse.Namespace) -> int:
    _report(_experiment(args.study, args.preset), args.tracking_uri, args.out, args.mlflow_ui_url)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from ablations.store import resolve_uri
    from ablations.ui import serve

    experiment = _experiment(args.study, args.preset) if args.study else None
    return serve(resolve_uri(args.tracking_uri), args.port, experiment)


# -- the parser -------------------------------------------------------------------------


def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="a built-in study name (ablate list) or a study .yaml file")
    p.add_argument("--preset", default=None, help="a preset of the study, e.g. smoke")
    p.add_argument("--seeds", type=int, default=None, help="run seeds 0..N-1 instead")
    p.add_argument("--dataset", default=None, help="override the study's data set")
    p.add_argument("--data-dir", default=None, help="where data sets live (default ./data)")
    p.add_argument(
        "--gpus-per-trial",
        default="auto",
        help="auto (default: GPUs when the machine or cluster has them, small models 4 "
        "to a GPU), 0 to force CPUs, a fraction to share a GPU, or a whole number",
    )
    p.add_argument("--cpus-per-trial", type=float, default=None, help="default 1")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at once, at most")
    p.add_argument("--address", default=None, help="a Ray cluster (default: RAY_ADDRESS)")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: MLFLOW_TRACKING_URI or ./mlflow.db)",
    )


def build_parser() -> argparse.ArgumentParser:
    from resnet.config import TrainConfig
    from resnet.spec import ModelSpec

    parser = _Parser(prog="ablate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"ablate {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="the built-in studies, their presets and trial counts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="a study's resolved plan, placement and time, unrun")
    _study_args(p)
    p.add_argument(
        "--effect",
        type=float,
        default=None,
        help="seeds per arm needed to detect a difference of this many points",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("run", help="run a study (resumes: finished trials are skipped)")
    _study_args(p)
    p.add_argument(
        "--storage",
        default=None,
        help="Ray's storage for checkpoints: a folder (default ./ablate-results) or a "
        "bucket URI every node reaches (s3://..., gs://...)",
    )
    p.add_argument("--target-ci", type=float, default=None, help="add seeds until every arm's "
                   "95%% CI half-width of test error is at most this many points")  # fmt: skip
    p.add_argument("--max-seeds", type=int, default=None, help="with --target-ci (default 10)")
    p.add_argument("--quiet", action="store_true", help="no live progress view")
    p.add_argument("--report", action="store_true", help="write the report when done")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="write a study's HTML report from MLflow")
    p.add_argument("study", help="a study name or study .yaml file")
    p.add_argument("--preset", default=None)
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--out", default=None, help="default ./ablate-reports/NAME")
    p.add_argument("--mlflow-ui-url", default=None, help="link table rows to this MLflow UI")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("ui", help="the MLflow UI on the study store, on 127.0.0.1")
    p.add_argument("study", nargs="?", default=None, help="open this study (name or file)")
    p.add_argument("--preset", default=None)
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("train", help="train one model with the paper's recipe (no Ray, no MLflow)")
    _setting_flags(p, TrainConfig)
    p.add_argument("--checkpoint-dir", default=None, help="resume from / save to here")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout at the end")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("model", help="print a network's layout, parameters and MACs")
    _setting_flags(p, ModelSpec)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_model)
    return parser


def _is_user_error(err: BaseException) -> bool:
    """A typed error of one of our packages (a user's mistake, not a bug). A package not
    yet imported cannot have raised, so nothing is imported to decide."""
    if isinstance(err, UsageError):
        return True
    for module, name in (
        ("ablations.errors", "AblateError"),
        ("resnet.errors", "ResnetError"),
        ("reports.errors", "ReportError"),
    ):
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(err, getattr(loaded, name)):
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    # MLflow and alembic announce schema work at INFO; the progress view says enough.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # A progress bar per artifact read would bury the one line an error promises.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        args = build_parser().parse_args(argv)
        code = args.func(args)
    except KeyboardInterrupt:
        print("ablate: interrupted; run the same command again to resume", file=sys.stderr)
        code = 130
    except Exception as err:
        if not _is_user_error(err):
            raise
        print(f"ablate: error: {' '.join(str(err).split())}", file=sys.stderr)
        code = EXIT_BAD_INPUT
    sys.stdout.flush()
    return code
