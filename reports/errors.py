"""The one error type reports raise for problems a user can fix."""


class ReportError(ValueError):
    """A one-line, user-facing reason why a report cannot be built (the CLI prints it)."""
