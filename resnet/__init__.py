"""Models, data and the training loop. Knows torch and torchvision only. Attributes load
on first use, so `resnet.config` and `resnet.spec` (no torch) stay cheap for the CLI."""

from __future__ import annotations

import importlib

__all__ = ["ModelSpec", "SpecError", "build", "response_modules"]
_HOME = {
    "ModelSpec": "resnet.spec",
    "SpecError": "resnet.errors",
    "build": "resnet.model",
    "response_modules": "resnet.model",
}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'resnet' has no attribute {name!r}")
