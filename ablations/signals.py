"""SIGTERM (a scheduler, `kill`) stops ablate as Ctrl-C does: its handler calls whatever
handles SIGINT now (Ray Tune's graceful stop while trials run), or raises
KeyboardInterrupt. Forwarding SIGINT would not do: a background job of a non-interactive
shell (`ablate run ... &` in a script) starts with SIGINT ignored."""

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
