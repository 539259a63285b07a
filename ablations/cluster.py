"""The one place that starts or joins Ray on the driver and counts what it has: planning
asks it for the resources to place trials on, execution for a Ray to run them in."""

from __future__ import annotations

import contextlib
import os

from ablations.errors import AblateError
from ablations.placement import Resources
from ablations.signals import stop_on_sigterm
from resnet.errors import one_line

_shipped: tuple[str, ...] | None = None  # what our Ray job ships; None: not started here


def init_ray(address: str | None = None, ship: tuple[str, ...] = ()) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS), or start a local Ray. `ship`: code
    (a model builder's package folder or module file) every node must import; Ray
    uploads it (runtime_env py_modules), so nodes need no copy of their own."""
    import ray

    global _shipped
    if ray.is_initialized():
        if _shipped is None or set(ship) <= set(_shipped):
            return  # another's Ray (e.g. a caller's own ray.init), or ours as needed
        ray.shutdown()  # ours, joined without the code to ship (to count resources)
    address = address or os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if address and "RAY_AUTH_MODE" not in os.environ and _token_available():
        # `ray start` turns token authentication on when the user has a token; a driver
        # joining the cluster does not, unless told. Ray reads the mode into its config
        # when it is imported, so the config is read again (in another Ray without that
        # call, the variable alone must do).
        os.environ["RAY_AUTH_MODE"] = "token"
        with contextlib.suppress(ImportError, AttributeError):
            from ray._raylet import Config

            Config.initialize("")
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
            configure_logging=True,
            runtime_env={"py_modules": list(ship)} if ship else None,
        )
        _shipped = tuple(ship)
    except (ConnectionError, RuntimeError) as err:
        cause = err.__cause__ or err
        raise AblateError(f"cannot reach the Ray cluster at {address}: {one_line(cause)}") from None
    # ray.init installs a SIGTERM handler that aborts the process: SIGTERM (a scheduler,
    # `kill`) stops like Ctrl-C instead (ablations/__init__.py).
    stop_on_sigterm()


def _token_available() -> bool:
    """Whether this user has a Ray authentication token (where Ray looks for one)."""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or os.path.isfile(path)


def local_resources() -> Resources:
    """This machine's CPUs and GPUs (what a local Ray would see)."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    name = torch.cuda.get_device_name(0) if gpus else ""
    return Resources(float(os.cpu_count() or 1), float(gpus), "this machine", name)


def cluster_resources(address: str) -> Resources:
    """The CPUs and GPUs of a running Ray cluster (connects to it; starts nothing)."""
    import ray

    init_ray(address)
    total = ray.cluster_resources()
    return Resources(
        float(total.get("CPU", 0)), float(total.get("GPU", 0)), f"the Ray cluster at {address}"
    )


def resources(address: str | None) -> Resources:
    """What a study's trials can run on: the Ray cluster at `address` (or RAY_ADDRESS),
    joined here, else this machine (nothing is started)."""
    address = address or os.environ.get("RAY_ADDRESS")
    return cluster_resources(address) if address else local_resources()
