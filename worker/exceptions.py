"""The worker's own errors. Errors are values at the edges (a dead letter, a one-line CLI message); these
are the exceptions inside."""

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # `vrae-worker check` imports this module and must stay light
    from worker.events import SourceRecord


class WorkerError(Exception):
    """Base of every error the worker package raises on purpose."""


class UsageError(WorkerError):
    """A problem the user fixes (configuration, model file); the CLI prints it as one line, exit 2."""


class DeliveryError(WorkerError):
    """At least one record of a batch was not confirmed by the broker: its offsets must not be committed."""


class BatchFailed(WorkerError):
    """A dependency failed while a batch was processed: `records` (the batch, and with two stages the one
    polled behind it) must be rewound and consumed again after a back-off."""

    def __init__(self, records: "Sequence[SourceRecord]", error: Exception) -> None:
        super().__init__(f"batch of {len(records)} records failed: {error!r}")
        self.records = list(records)
        self.error = error
