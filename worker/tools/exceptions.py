"""Errors of the developer tools (demo, backtest, local services)."""

from worker.exceptions import WorkerError


class ToolError(WorkerError):
    """Base of the tools' own errors."""


class ServiceError(ToolError):
    """A local service could not be started; the message says what to do about it."""
