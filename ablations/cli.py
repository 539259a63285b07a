"""The `ablate` command: parses, calls one library function, and turns the library's
typed errors into one line and a documented exit code (STYLE.md section 5).

Exit codes: 0 success; 1 a study ran but some trials failed; 2 bad input (nothing was
run, nothing was written); 130 interrupted (resumable: run the same command again).
"""

from __future__ import annotations

import argparse
import dataclasses
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


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--depth", type=int, default=20, help="weight layers (CIFAR: 6n+2 basic)")
    p.add_argument("--shortcut", default="A", help="none|A|B|C (none = plain net)")
    p.add_argument("--skip-length", type=int, default=None, help="1, 2 or 3 layers per unit")
    p.add_argument("--bottleneck", action="store_true", default=None)
    p.add_argument("--preactivation", action="store_true")
    p.add_argument("--stem", default="cifar", help="cifar|imagenet")
    p.add_argument("--width", type=int, default=None, help="base filters (16 cifar, 64 imagenet)")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--in-channels", type=int, default=3)


def _from_args(cls, args: argparse.Namespace, **overrides):
    """A dataclass built from the flags that share its field names (STYLE.md section 2)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return cls(**{**values, **overrides})


def _spec_from(args: argparse.Namespace):
    from resnet.spec import ModelSpec

    default_classes = 1000 if args.stem == "imagenet" else 10
    return _from_args(ModelSpec, args, num_classes=args.num_classes or default_classes)


def cmd_model(args: argparse.Namespace) -> int:
    from resnet.complexity import complexity, layout

    spec = _spec_from(args)
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ablate", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("model", help="print a network's layout, parameters and MACs")
    _model_flags(p)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_model)

    _study_commands(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from resnet.spec import SpecError

    errors: list[type[BaseException]] = [UsageError, SpecError]
    try:
        from resnet.data import DataError

        errors.append(DataError)
    except ImportError:
        pass
    from ablations.errors import AblateError
    from reports import ReportError

    errors += [AblateError, ReportError]
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    # MLflow and alembic announce schema work at INFO; the progress view says enough.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        args = build_parser().parse_args(argv)
        code = args.func(args)
    except _user_errors() as err:
        print(f"ablate: error: {err}", file=sys.stderr)
        code = EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("ablate: interrupted; run the same command again to resume", file=sys.stderr)
        code = 130
    sys.stdout.flush()
    return code


def cmd_train(args: argparse.Namespace) -> int:
    from ablations.progress import TrainProgress
    from resnet.config import TrainConfig
    from resnet.data import load_dataset
    from resnet.train import train

    config = _from_args(TrainConfig, args)
    # Bad data input fails here, in one line, before the progress bar or any compute.
    data = load_dataset(config.dataset, config.data_dir, config.val_size)
    with TrainProgress(config.iterations, quiet=args.json) as progress:
        result = train(config, progress, checkpoint_dir=args.checkpoint_dir, data=data)
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ablations.plan_view import list_studies

    for name, question in list_studies():
        print(f"{name:<20} {question}")
    return 0


def _plan(args: argparse.Namespace):
    from ablations import study

    loaded, source = study.load(args.study)
    return study.resolve(
        loaded,
        source,
        preset=args.preset,
        seeds=args.seeds,
        dataset=args.dataset,
        data_dir=args.data_dir,
    )


def cmd_show(args: argparse.Namespace) -> int:
    from ablations.plan_view import describe

    view = describe(_plan(args))
    if args.json:
        print(json.dumps(view, default=str))
        return 0
    print(f"{view['experiment']}: {view['question']}")
    print(
        f"dataset {view['dataset']}; {view['arms']} arms x {len(view['seeds'])} seeds "
        f"{view['seeds']} = {len(view['trials'])} trials"
    )
    if view["data_note"]:
        print(f"note: {view['data_note']}")
    if view["nuisance"]:
        n = view["nuisance"]
        print(
            f"nuisance: {n['trials']} Optuna trials per arm over {n['search_space']} "
            f"({n['iterations'] or 'full'} iterations each), then the seeds at the best point"
        )
    print(f"{'trial':<40} {'params':>11} {'MACs':>9} {'iterations':>10}")
    for row in view["trials"]:
        print(
            f"{row['trial']:<40} {row['params']:>11,} {row['macs'] / 1e6:>8.1f}M "
            f"{row['iterations']:>10,}"
        )
    total = view["total_training_macs"]
    print(
        f"compute: about {total:.3g} multiply-accumulates in training "
        f"({total / 1e15:.2f} PMAC; forward + backward = 3x forward)"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ablations.runner import RunOptions, run_study

    plan = _plan(args)
    options = _from_args(RunOptions, args, progress=not args.quiet)
    summary = run_study(plan, options)
    counts: dict[str, int] = {}
    for status in summary.statuses.values():
        counts[status] = counts.get(status, 0) + 1
    ran = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to run"
    print(
        f"{summary.experiment}: {summary.total} trials; {summary.skipped} already done; "
        f"this run: {ran}. Store: {summary.tracking_uri}"
    )
    if "interrupted" in counts:
        print("interrupted: run the same command again to resume")
        return 130
    if args.report:
        _report(summary.experiment, args.tracking_uri, None, None)
    return 1 if summary.failed else 0


def _report(name: str, tracking_uri: str | None, out: str | None, ui_url: str | None) -> None:
    from ablations.tracking import check_reachable, resolve_uri
    from reports import build_report

    uri = resolve_uri(tracking_uri)
    check_reachable(uri)
    path = build_report(name, uri, out or f"ablate-reports/{name}", mlflow_ui_url=ui_url)
    print(f"report: {path}")


def cmd_report(args: argparse.Namespace) -> int:
    name = args.study if not args.preset else f"{args.study}@{args.preset}"
    _report(name, args.tracking_uri, args.out, args.mlflow_ui_url)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    import subprocess

    from ablations.tracking import resolve_uri

    uri = resolve_uri(args.tracking_uri)
    print(f"MLflow UI for {uri} on http://127.0.0.1:{args.port}", flush=True)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
    ]
    return subprocess.call(cmd)


def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="a built-in study name (ablate list) or a study .yaml file")
    p.add_argument("--preset", default=None, help="a preset of the study, e.g. smoke")
    p.add_argument("--seeds", type=int, default=None, help="run seeds 0..N-1 instead")
    p.add_argument("--dataset", default=None, help="override the study's data set")
    p.add_argument("--data-dir", default=None, help="where data sets live (default ./data)")


def _study_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="the built-in studies and their questions")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="a study's resolved plan, without running it")
    _study_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("run", help="run a study (resumes: finished trials are skipped)")
    _study_args(p)
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: MLFLOW_TRACKING_URI or ./mlflow.db)",
    )
    p.add_argument(
        "--storage",
        default=None,
        help="results and checkpoints (default ./ablate-results; shared on a cluster)",
    )
    p.add_argument("--address", default=None, help="a Ray cluster (default: RAY_ADDRESS)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="0.25 packs 4 per GPU")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--max-concurrent", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help="no live progress view")
    p.add_argument("--report", action="store_true", help="write the report when done")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="write a study's HTML report from MLflow")
    p.add_argument("study")
    p.add_argument("--preset", default=None)
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--out", default=None, help="default ./ablate-reports/NAME")
    p.add_argument("--mlflow-ui-url", default=None, help="link table rows to this MLflow UI")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("ui", help="the MLflow UI on the study store, on 127.0.0.1")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("train", help="train one model with the paper's recipe (no Ray, no MLflow)")
    _model_flags(p)
    p.add_argument("--dataset", default="cifar10", help="cifar10|cifar100|digits|imagefolder:PATH")
    p.add_argument("--data-dir", default="./data")
    p.add_argument("--val-size", type=int, default=None)
    p.add_argument("--iterations", type=int, default=64_000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--lr-policy", default="step", help="step|plateau|cosine|constant")
    p.add_argument("--warmup", default="none", help="none|paper|ITERATIONS")
    p.add_argument("--eval-every", type=int, default=None, help="default: one pass")
    p.add_argument("--checkpoint-every", type=int, default=None, help="default: each eval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-dir", default=None, help="resume from / save to here")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--json", action="store_true", help="one JSON object at the end")
    p.set_defaults(func=cmd_train)
