"""In-memory source and sink: what unit tests, the backtest and benchmarks run the worker's loop with.

They behave like the Kafka ones where it matters: the source serves batches in order, a rewind puts
records back to be served again (a Kafka seek), commits are recorded; the sink confirms delivery by
returning and can be told to fail, as a broker that is away would.
"""

import threading
from collections.abc import Sequence

from worker.checkpoint import Checkpoint
from worker.events import SourceRecord
from worker.exceptions import DeliveryError
from worker.health import Heartbeat
from worker.loop import Backoff, Loop, Sequential, TwoStage, process_and_seal
from worker.metrics import Metrics
from worker.model_reload import ReloadingScorer
from worker.pipeline import BatchReport, Pipeline
from worker.records import OutboundMessage


class ListSource:
    """Serves `batches` in order; a rewind puts the records back in front. With `stop`, it sets it at the
    second empty poll in a row (with two stages, the first may come while the last batch is in flight)."""

    def __init__(self, batches: list[list[SourceRecord]], stop: threading.Event | None = None) -> None:
        self._batches = [list(batch) for batch in batches]
        self._stop = stop
        self.committed: dict[tuple[str, int], int] = {}
        self.commits: list[dict[tuple[str, int], int]] = []
        self.rewound: list[int] = []  # the first offset of each rewind
        self._empty_polls = 0

    @property
    def rewinds(self) -> int:
        return len(self.rewound)

    def poll(self) -> list[SourceRecord]:
        if not self._batches:
            self._empty_polls += 1
            if self._stop is not None and self._empty_polls == 2:
                self._stop.set()
            return []
        self._empty_polls = 0
        return self._batches.pop(0)

    def commit(self, offsets: dict[tuple[str, int], int]) -> bool:
        self.commits.append(dict(offsets))
        self.committed.update(offsets)
        return True

    def rewind(self, records: Sequence[SourceRecord]) -> None:
        self.rewound.append(min(record.offset for record in records))
        self._batches.insert(0, list(records))


class ListSink:
    """Keeps what it is sent (unless `keep` is False); the first `failures` sends raise `error` (by default
    what the Kafka sink raises when the broker is away), delivering nothing."""

    def __init__(self, failures: int = 0, *, error: type[Exception] = DeliveryError, keep: bool = True) -> None:
        self.sent: list[OutboundMessage] = []
        self._failures = failures
        self._error = error
        self._keep = keep

    def send(self, messages: Sequence[OutboundMessage]) -> None:
        if self._failures:
            self._failures -= 1
            raise self._error("sink away")
        if self._keep:
            self.sent.extend(messages)

    def on(self, topic: str) -> list[OutboundMessage]:
        return [message for message in self.sent if message.topic == topic]


def run_batch(pipeline: Pipeline, checkpoint: Checkpoint, records: Sequence[SourceRecord]) -> BatchReport:
    """One batch processed and sealed on this thread, as a runner does it (no offset commit)."""
    return process_and_seal(pipeline, checkpoint)(pipeline.prepare(records)).report


def memory_loop(source: ListSource, pipeline: Pipeline, sink: ListSink, metrics: Metrics, heartbeat: Heartbeat,
                backoff: Backoff, *, overlap: bool = False, model: ReloadingScorer | None = None) -> Loop:
    """The service's loop on in-memory parts; `overlap` picks the two-stage runner, as the service does."""
    checkpoint = Checkpoint(sink, source, metrics)
    stage = process_and_seal(pipeline, checkpoint)
    runner = TwoStage(stage) if overlap else Sequential(stage)
    return Loop(source, pipeline, checkpoint, runner, heartbeat, backoff, metrics, model=model)
