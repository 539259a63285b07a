"""Typed errors of the study machinery; the CLI turns them into one line and exit 2."""


class AblateError(ValueError):
    """Bad input: a study file, a flag, a store or a cluster address. Nothing has run."""
