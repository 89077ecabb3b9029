"""Errors raised inside vrae_model; the CLI and the worker turn them into values at their edges."""


class VraeError(Exception):
    """Base class, so callers can catch everything this library raises on purpose."""


class DataError(VraeError):
    """Input data is unusable; the message is one line that says what to fix."""


class ArtifactError(VraeError):
    """An artifact or checkpoint is missing, corrupt or does not match what was expected."""


class ConfigError(VraeError):
    """A preset name or a configuration override is unknown or out of range."""
