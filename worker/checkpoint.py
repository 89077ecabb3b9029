"""The commit order: the delivery guarantee, stated once and run in one place.

Every batch reaches four places, always in this order:

    1. window state written     the pipeline's `WindowStore.apply` (atomic per series), before scoring
    2. records delivered        every alert, incident record and dead letter of the batch, each one
                                confirmed by the broker (`Sink.send` returns only then)
    3. detector state saved     incidents mode: each series' score history and incident (newer-wins)
    4. offsets committed        the batch's next offsets, for the partitions still owned

A crash (or a failed step) anywhere before 4 replays the batch from the last committed offset:
- before 2 or between 2 and 3: the window store recognises the replayed events (their offsets are at or
  below the last one applied to their series) and hands back their due windows again; the detector,
  still holding its state from before the batch, judges them exactly as before, so the same records
  are delivered again under the same ids (at least once: consumers deduplicate on `alert_id` /
  `incident_id`);
- between 3 and 4: the replayed windows end at or before the saved state's `last_end_ms` and are
  skipped; their records were delivered already.
Offsets are committed only after 2 and 3, so no batch is committed whose records may be lost.

`seal` runs 2 and 3 on the thread that processed the batch; `commit` runs 4 on the consumer's own
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
    """Delivered, its detector state saved: only its offsets remain to be committed."""

    records: Sequence[SourceRecord]
    report: BatchReport


class Checkpoint:
    def __init__(self, sink: Sink, committer: Committer, metrics: Metrics) -> None:
        self._sink = sink
        self._committer = committer
        self._metrics = metrics

    def seal(self, batch: ProcessedBatch) -> SealedBatch:
        """Steps 2 and 3: deliver the batch's records (confirmed), then save its detector state."""
        self._sink.send(batch.messages)
        if batch.detector is not None and batch.detection is not None:
            batch.detector.save(batch.detection)
        self._count(batch)
        return SealedBatch(batch.records, batch.report)

    def commit(self, batch: SealedBatch) -> bool:
        """Step 4: commit the batch's offsets; False when the commit failed (the batch will be replayed)."""
        return self._committer.commit(batch.report.offsets)

    def _count(self, batch: ProcessedBatch) -> None:
        for event in batch.report.incidents:
            self._metrics.incidents.labels(event.transition.phase.value).inc()
        self._metrics.batch_size.observe(len(batch.records))
        self._metrics.batch_seconds.observe(time.perf_counter() - batch.started)
        self._metrics.batches.inc()
