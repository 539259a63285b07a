"""Shared fixtures: one local Ray for the in-process runner tests, tiny study files; and the
two tiers. The fast tier (`pytest -m "not slow"`, minutes) is every test that needs none of
the slow tier's parts; the slow tier (`pytest -m slow`) is every test that runs a study
through Ray, starts a cluster, a tracking server or a browser, kills processes, or is
marked slow itself. CI runs both."""

from __future__ import annotations

import os
import textwrap

import pytest

# Keep Ray's and MLflow's chatter out of test logs; no usage stats from test machines.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


# Fixtures that bring up a slow tier's part: any test using one is in the slow tier.
SLOW_FIXTURES = {"ray_local", "smoke_store", "ray_cluster", "mlflow_server", "s3_bucket"}
# Modules whose every test kills, interrupts or restarts real processes.
SLOW_MODULES = {"test_faults", "test_signals", "test_main_job", "test_lease", "test_equivalence"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__ if item.module else ""
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray instance for every in-process runner test (starting Ray costs
    seconds, so tests share it)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


TINY_STUDY = """\
name: tiny
question: Does the shortcut type change digits error on a tiny budget?
dataset: digits
scientific:
  shortcut: [none, A]
reference: {shortcut: A}
fixed: {depth: 8, iterations: 12, eval_every: 4, batch_size: 32}
seeds: [0, 1]
"""


@pytest.fixture(scope="session")
def smoke_store(ray_local, tmp_path_factory):
    """A real smoke study (TINY_STUDY: 2 arms x 2 seeds on digits) run once through local
    Ray into a SQLite MLflow store, shared by the runner and report tests. Returns
    (tracking URI, storage folder, plan, run summary)."""
    from ablations.runner import RunOptions, run_study

    root = tmp_path_factory.mktemp("smoke")
    path = root / "tiny.yaml"
    path.write_text(TINY_STUDY)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    options = RunOptions(tracking_uri=uri, storage=str(root / "res"), progress=False)
    plan = plan_of(str(path))
    return uri, options, plan, run_study(plan, options)


# Two CPUs and no GPU: the machine the tests plan for, whatever machine runs them.
def cpu_machine():
    from ablations.placement import Resources

    return Resources(cpus=2.0, gpus=0.0, where="this machine")


def plan_of(study: str, **request):
    """The plan of a study (a name or a path) on cpu_machine()."""
    from ablations.plan import Request, make_plan

    return make_plan(Request(study=study, **request), resources=cpu_machine())


@pytest.fixture
def study_file(tmp_path):
    """Write a study file; returns a function taking the YAML text (default: TINY_STUDY)."""

    def write(text: str = TINY_STUDY, name: str = "study.yaml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write
