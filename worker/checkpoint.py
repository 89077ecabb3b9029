"""The commit order: the delivery guarantee, stated once and run in one place.

Processing a batch (worker.pipeline) only reads state: the state store's peek gives each event's
outcome, the windows that come due and the detector states, and the batch's records and state
changes are prepared from them. Then, always in this order:

    1. records delivered       every alert, incident record and dead letter of the batch, each one
                               confirmed by the broker (`Sink.send` returns only then)
    2. state written           each series' window state and detector state, atomically per series,
                               skipping events at or below the series' last applied offset (and
                               detector states no newer than the stored one)
    3. offsets committed       the batch's next offsets, for the partitions still owned

A crash, a timeout or a failed step anywhere replays the batch from the last committed offset:
- before 2: nothing was written, so the replay peeks at the same state, finds the same windows,
  judges them from the same detector states and delivers the same records under the same ids
  again (at least once: consumers deduplicate on `alert_id` / `incident_id`);
- after 2 (or a write that timed out on the client and ran on the server later): the replayed events
  are at or below their series' last applied offset, so they end no window and change nothing; their
  records went out in 1.
Either way the state ends as in a run without the fault, whatever the number of events per series in
a batch: nothing is kept for replays, so nothing has to be sized for them. Offsets are committed only
after 1 and 2, so no batch is committed whose records may be lost.

`seal` runs 1 and 2 on the thread that processed the batch; `commit` runs 3 on the consumer's own
thread (a Kafka consumer is not thread-safe), in batch order (worker.loop).
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from worker.events import SourceRecord
from worker.metrics import Metrics
from worker.pipeline import BatchReport, ProcessedBatch
from worker.records import OutboundMessage


class Sink(Protocol):
    """Delivers messages; returns only when all are confirmed, raises otherwise."""

    def send(self, messages: Sequence[OutboundMessage]) -> None: ...


class Committer(Protocol):
    """Commits consumed offsets; False (never an exception) when the commit failed: the batch replays."""

    def commit(self, offsets: dict[tuple[str, int], int]) -> bool: ...


@dataclass(frozen=True)
class SealedBatch:
    """Delivered, its state written: only its offsets remain to be committed."""

    records: Sequence[SourceRecord]
    report: BatchReport


class Checkpoint:
    def __init__(self, sink: Sink, committer: Committer, metrics: Metrics) -> None:
        self._sink = sink
        self._committer = committer
        self._metrics = metrics

    def seal(self, batch: ProcessedBatch) -> SealedBatch:
        """Steps 1 and 2: deliver the batch's records (confirmed), then write its state."""
        self._sink.send(batch.messages)
        batch.state.apply()
        self._count(batch)
        return SealedBatch(batch.records, batch.report)

    def commit(self, batch: SealedBatch) -> bool:
        """Step 3: commit the batch's offsets; False when the commit failed (the batch will be replayed)."""
        return self._committer.commit(batch.report.offsets)

    def _count(self, batch: ProcessedBatch) -> None:
        for event in batch.report.incidents:
            self._metrics.incidents.labels(event.phase.value).inc()
        self._metrics.batch_size.observe(len(batch.records))
        self._metrics.batch_seconds.observe(time.perf_counter() - batch.started)
        self._metrics.batches.inc()
