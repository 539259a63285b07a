"""Typed errors of the model and training layer. Each message is one line naming what is
wrong and what is allowed; callers (the CLI, the study runner) show it as it is."""


class ResnetError(ValueError):
    """A problem the user can fix: a setting, a data set, a device, a checkpoint."""


class SpecError(ResnetError):
    """An impossible setting; the message names the field and what is allowed."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class DataError(ResnetError):
    """A data set that is missing, malformed or too small for the settings."""


class DeviceError(ResnetError):
    """A device was asked for that this machine does not have."""


class CheckpointMismatch(ResnetError):
    """A checkpoint that belongs to other settings than the run resuming from it."""


class ModelError(ResnetError):
    """A model builder whose model cannot train on the data set's inputs."""


def one_line(err: BaseException, limit: int | None = 300) -> str:
    """`Type: message` of an error on one line, at most `limit` characters of message (None:
    all of it): how an error that is not ours (a user's model, a library) is shown."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:limit]}"
