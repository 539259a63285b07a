"""SIGTERM stops ablate the way Ctrl-C does, however it was started.

A scheduler, `kill` or a script's `kill %1` sends SIGTERM. Forwarding it as SIGINT does not
work for a background job of a non-interactive shell (`ablate run ... &` in a script): such
a job starts with SIGINT ignored, so Python never installs its Ctrl-C handler. Instead the
SIGTERM handler calls whatever handles SIGINT now (Ray Tune's graceful stop while trials
run), or raises KeyboardInterrupt itself.
"""

from __future__ import annotations

import signal
import threading


def _on_sigterm(signum, frame) -> None:
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not _on_sigterm:
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """Install the handler (only the main thread may); again after anything that replaced
    it (ray.init installs its own)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
