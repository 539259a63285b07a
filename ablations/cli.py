"""ablate: architecture and hyperparameter ablation studies of residual networks, with
seeds as replicates and a test of whether each difference is real.

  ablate list                   the built-in studies
  ablate show STUDY             the plan: trials, compute, placement, time, what is stored
  ablate run STUDY              run it (Ray Tune; MLflow records every trial; resumable)
  ablate report STUDY           its HTML report
  ablate ui STUDY               browse it in the MLflow UI
  ablate rm STUDY               remove it from the store and the storage
  ablate train / ablate model   one model, no study

STUDY is a built-in name or a study .yaml file. `ablate COMMAND --help` lists a command's
flags; README.md explains studies, reports and clusters.

Exit codes: 0 done; 1 some trials failed (or `rm` not confirmed); 2 bad input (one line on
stderr, nothing ran or was written); 3 done, but an arm missed the --target-ci precision;
130 interrupted (run the same command again to resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys

from ablations.environment import package_version
from ablations.request import Request
from ablations.signals import stop_on_sigterm
from resnet.builders import BUILTIN, load_builder
from resnet.config import TrainConfig
from resnet.settings import settings_of
from resnet.spec import ModelSpec

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_TARGET_MISSED, EXIT_INTERRUPTED = 1, 2, 3, 130


class UsageError(Exception):
    """Bad input caught by the CLI itself."""


class _Parser(argparse.ArgumentParser):
    # argparse prints usage plus the error; we promise one line naming what is wrong.
    def error(self, message: str) -> None:
        raise UsageError(message)


def _help(text: str) -> str:
    return text.replace("%", "%%")  # argparse formats help with %


# -- flags from their one definition ----------------------------------------------------


def _setting_flags(p: argparse.ArgumentParser, settings: list) -> None:
    """One flag per setting, named, typed and explained by its definition."""
    for s in settings:
        if not s.flag:
            continue
        flag = "--" + s.name.replace("_", "-")
        default = "" if s.default is None else f" (default {s.default})"
        kind = {"action": argparse.BooleanOptionalAction} if s.type is bool else {"type": s.type}
        p.add_argument(flag, default=None, help=_help(s.describe() + default), **kind)


def _settings_from(owner: type, args: argparse.Namespace, settings: list, **overrides):
    """The settings dataclass from the flags given (absent flags keep its defaults);
    `overrides` win over flags of the same name."""
    values = {s.name: getattr(args, s.name, None) for s in settings}
    return owner(**{**{k: v for k, v in values.items() if v is not None}, **overrides})


def _train_settings(model: str) -> list:
    """The flags of `ablate train`: the model builder's factors, then the recipe. A builder's
    module is found in the working folder too, as `ablate run` finds one beside its study."""
    if model != BUILTIN and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    return [*load_builder(model).factors, *settings_of(TrainConfig)]


def _model_in(argv: list[str]) -> str | None:
    """The --model an `ablate train` command line names (its flags depend on it)."""
    pre = _Parser(add_help=False)
    pre.add_argument("--model")
    return pre.parse_known_args(argv)[0].model


def _request_flags(p: argparse.ArgumentParser) -> None:
    """The flags of `show` and `run`, from the fields of ablations.request.Request."""
    for f in dataclasses.fields(Request):
        meta = f.metadata
        if f.name == "study":
            p.add_argument("study", help=meta["help"])
            continue
        flag = "--" + f.name.replace("_", "-")
        p.add_argument(flag, type=meta["type"], default=f.default, help=_help(meta["help"]))


def _request(args: argparse.Namespace) -> Request:
    return Request(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Request)
                      if hasattr(args, f.name)})  # fmt: skip


def _study_flags(p: argparse.ArgumentParser, study_help: str, optional: bool = False) -> None:
    """The study and where its records are, for report, ui and rm."""
    p.add_argument("study", nargs="?" if optional else None, help=study_help)
    p.add_argument("--preset", default=None, help="a preset of the study, e.g. smoke")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: MLFLOW_TRACKING_URI or ./mlflow.db)",
    )


# -- commands ---------------------------------------------------------------------------


def cmd_model(args: argparse.Namespace) -> int:
    from resnet.complexity import complexity, layout, render  # torch

    classes = args.num_classes or (1000 if args.stem == "imagenet" else None)
    extra = {"num_classes": classes} if classes else {}
    spec = _settings_from(ModelSpec, args, settings_of(ModelSpec), **extra)
    counts = complexity(spec)
    info = {**counts, "spec": spec.to_dict(), "layout": layout(spec)}
    print(json.dumps(info) if args.json else render(spec, counts))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ablations.progress import TrainProgress  # torch
    from resnet.data import ensure_available, load_dataset
    from resnet.train import train

    config = _settings_from(TrainConfig, args, _train_settings(args.model or BUILTIN))
    if config.replicas > 1:
        raise UsageError("--replicas: ablate train trains in one process; a study runs replicas")
    # Bad data input fails here, in one line, before the progress bar or any compute.
    ensure_available(config.dataset, config.data_dir)
    data = load_dataset(config.dataset, config.data_dir, config.val_size)
    with TrainProgress(config.iterations) as progress:
        result = train(config, progress, checkpoints=args.checkpoint_dir, data=data)
    summary = result.summary()
    print(json.dumps(summary) if args.json else " ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ablations.study import list_studies  # pydantic, yaml

    rows = list_studies()
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        presets = ", ".join(f"{p}: {n}" for p, n in row["presets"].items())
        print(f"{row['name']:<19} {row['trials']:>3} trials on {row['dataset']} ({presets})")
        print(f"{'':<19} {row['question']}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from ablations import describe as d  # torch, mlflow
    from ablations.api import make
    from ablations.ledger import stored

    if args.effect is not None and not args.effect > 0:
        raise UsageError(f"--effect {args.effect:g}: must be a positive number of points")
    request = _request(args)
    plan = make(request)
    view = d.show(plan, stored(plan, request.tracking_uri, request.storage), args.effect)
    print(json.dumps(view, default=str) if args.json else d.render(view))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ablations import api  # torch, ray, mlflow

    request = _request(args)
    api.refuse_if_running(request, wait=args.wait)
    plan = api.make(request)
    where = {"tracking_uri": request.tracking_uri, "storage": request.storage, "wait": args.wait}
    summary = api.run(plan, **where, address=request.address, progress=not args.quiet)
    print("\n".join(summary.lines()))
    if summary.interrupted:
        return EXIT_INTERRUPTED
    if args.report:
        print(f"report: {api.report(plan, tracking_uri=request.tracking_uri)}")
    if summary.failed:
        return EXIT_FAILED
    return EXIT_TARGET_MISSED if summary.missed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from ablations import api  # mlflow, plotly

    path = api.report(
        args.study,
        preset=args.preset,
        tracking_uri=args.tracking_uri,
        out=args.out,
        mlflow_ui_url=args.mlflow_ui_url,
    )
    print(f"report: {path}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from ablations.ui import serve  # mlflow, plotly

    try:
        return serve(args.study, args.preset, args.tracking_uri, args.port)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def cmd_rm(args: argparse.Namespace) -> int:
    from ablations.ledger import plan_removal

    removal = plan_removal(args.study, args.preset, args.tracking_uri, args.storage)
    print(removal.describe())
    if not args.yes:
        try:
            answer = input("remove? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing removed (confirm with y, or pass --yes)")
            return EXIT_FAILED
    print(removal.run())
    return 0


# -- the parser -------------------------------------------------------------------------


def build_parser(model: str | None = None) -> argparse.ArgumentParser:
    """The parser; `model`: the builder whose factors `ablate train` takes as flags."""
    parser = _Parser(
        prog="ablate",
        description=__doc__.split("\n\nExit codes")[0],
        epilog=__doc__[__doc__.index("Exit codes") :],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    version = f"ablate {package_version('ablate')}"
    parser.add_argument("--version", action="version", version=version)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="the built-in studies, their presets and trial counts")
    p.add_argument("--json", action="store_true", help="one JSON list")
    p.set_defaults(func=cmd_list)
    _study_commands(sub)
    _model_commands(sub, model or BUILTIN)
    return parser


def _study_commands(sub) -> None:
    """show, run, report, ui and rm: the commands of a study."""
    p = sub.add_parser("show", help="a study's resolved plan, placement and time, unrun")
    _request_flags(p)
    p.add_argument(
        "--effect",
        type=float,
        default=None,
        help="seeds per arm needed to detect a difference of this many points",
    )
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("run", help="run a study (resumes: finished trials are skipped)")
    _request_flags(p)
    p.add_argument("--quiet", action="store_true", help="no live progress view")
    p.add_argument("--report", action="store_true", help="write the report when done")
    p.add_argument("--wait", action="store_true", help="another driver runs it: wait, then resume")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="write a study's HTML report from MLflow")
    _study_flags(p, "a study name or study .yaml file")
    p.add_argument("--out", default=None, help="default ./ablate-reports/NAME")
    p.add_argument("--mlflow-ui-url", default=None, help="link table rows to this MLflow UI")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("ui", help="the MLflow UI on the study store, on 127.0.0.1")
    _study_flags(p, "open this study (name or file)", optional=True)
    p.add_argument("--port", type=int, default=5000, help="default 5000")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("rm", help="remove a study: its MLflow experiment and checkpoints")
    _study_flags(p, "a study name or study .yaml file")
    p.add_argument("--storage", default=None, help="Ray's storage (default ./ablate-results)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_rm)


def _model_commands(sub, model: str) -> None:
    """train and model: one network, no study."""
    p = sub.add_parser("train", help="train one model with the paper's recipe (no Ray, no MLflow)")
    _setting_flags(p, _train_settings(model))
    p.add_argument("--checkpoint-dir", default=None, help="resume from / save to here")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout at the end")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("model", help="print a network's layout, parameters and MACs")
    _setting_flags(p, settings_of(ModelSpec))
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_model)


def _is_user_error(err: BaseException) -> bool:
    """A typed error of one of our packages (a user's mistake, not a bug). A package not
    yet imported cannot have raised, so nothing is imported to decide."""
    ours = {
        "ablations.errors": "AblateError",
        "resnet.errors": "ResnetError",
        "reports.errors": "ReportError",
    }
    typed = [getattr(sys.modules[m], name) for m, name in ours.items() if m in sys.modules]
    return isinstance(err, (UsageError, *typed))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    previous = signal.getsignal(signal.SIGTERM)
    stop_on_sigterm()
    # MLflow and alembic announce schema work at INFO; the progress view says enough.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # A progress bar per artifact read would bury the one line an error promises.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        argv = sys.argv[1:] if argv is None else argv
        args = build_parser(_model_in(argv)).parse_args(argv)
        code = args.func(args)
    except KeyboardInterrupt:
        print("ablate: interrupted; run the same command again to resume", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except Exception as err:
        if not _is_user_error(err):
            raise
        print(f"ablate: error: {' '.join(str(err).split())}", file=sys.stderr)
        code = EXIT_BAD_INPUT
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    sys.stdout.flush()
    return code
