"""Models, data and the training loop. Knows torch and torchvision only."""

from resnet.complexity import complexity
from resnet.model import build, response_modules
from resnet.spec import ModelSpec, SpecError

__all__ = ["ModelSpec", "SpecError", "build", "complexity", "response_modules"]
