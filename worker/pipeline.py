"""One batch: parse -> update windows -> score the due ones -> decide alerts -> deliver -> offsets.

The processor never commits: it returns the offsets that are safe to commit once it has returned,
i.e. after every alert and dead letter of the batch was confirmed delivered. The caller commits.

A batch runs in two halves so the worker can overlap them across batches: `prepare` parses (pure
Python, no I/O) and `complete` does everything with state or I/O: the window store's round trip and
the forward pass (both release the GIL), alerts and delivery. `process` runs both, one after the other.
"""

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

import numpy as np

from worker.alerts import Alert, decide_alerts
from worker.detection import DetectionResult, Detector, IncidentEvent
from worker.events import Event, EventParser, Invalid, SourceRecord
from worker.metrics import Metrics
from worker.outbound import OutboundMessage, alert_message, dead_letter_message
from worker.scorer import ModelInfo, Scores
from worker.windows import DueWindow, Outcome, WindowStore

log = logging.getLogger("worker.pipeline")


class Sink(Protocol):
    """Delivers messages; returns only when all are confirmed, raises otherwise."""

    def send(self, messages: Sequence[OutboundMessage]) -> None: ...


class BatchScorer(Protocol):
    info: ModelInfo

    def score(self, windows: np.ndarray) -> Scores: ...


@dataclass(frozen=True)
class Topics:
    alerts: str
    dead_letters: str


@dataclass
class BatchReport:
    """What one batch did; `offsets` maps (topic, partition) to the next offset to consume."""

    records: int = 0
    events: int = 0
    invalid: list[Invalid] = field(default_factory=list)
    windows: int = 0
    alerts: list[Alert] = field(default_factory=list)
    incidents: list[IncidentEvent] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass(frozen=True)
class PreparedBatch:
    """A parsed batch: nothing of it is in the window store yet."""

    records: Sequence[SourceRecord]
    events: list[Event]
    invalid: list[Invalid]
    started: float  # perf_counter at prepare(): the batch-duration metric spans both halves


class BatchProcessor:
    def __init__(self, parser: EventParser, store: WindowStore, scorer: BatchScorer, sink: Sink,
                 metrics: Metrics, topics: Topics, *, top_k: int = 3,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 detector: Detector | None = None) -> None:
        self._parser = parser
        self._store = store
        self._scorer = scorer
        self._sink = sink
        self._metrics = metrics
        self._topics = topics
        self._top_k = top_k
        self._clock = clock
        self._detector = detector  # None: one alert per window over the model's threshold

    def process(self, records: Sequence[SourceRecord]) -> BatchReport:
        return self.complete(self.prepare(records))

    def prepare(self, records: Sequence[SourceRecord]) -> PreparedBatch:
        """Parse and validate: no state is read or written, so this may run ahead of `complete`."""
        started = time.perf_counter()
        parsed = [self._parser.parse(record) for record in records]
        events = [item for item in parsed if isinstance(item, Event)]
        invalid = [item for item in parsed if isinstance(item, Invalid)]
        return PreparedBatch(records, events, invalid, started)

    def complete(self, batch: PreparedBatch) -> BatchReport:
        """Update the windows, score the due ones, decide, deliver (confirmed), persist detector state."""
        invalid = batch.invalid
        applied = self._store.apply(batch.events)
        model = self._scorer.info  # a hot model swap happens between batches, never inside one
        scores = self._score(applied.windows)
        alerts, detection, messages = self._decide(applied.windows, scores, model)
        messages += [dead_letter_message(item, self._topics.dead_letters) for item in invalid]
        self._sink.send(messages)
        if detection is not None:
            # Only once delivered: dying before this replays the batch from the old state, which
            # re-emits the same incident records; dying after it makes the replay a no-op.
            self._detector.commit(detection)
            self._count_incidents(detection)

        self._count(applied.outcomes, applied.new_series, invalid, len(applied.windows), len(alerts))
        self._metrics.batch_size.observe(len(batch.records))
        self._metrics.batch_seconds.observe(time.perf_counter() - batch.started)
        return BatchReport(records=len(batch.records), events=len(batch.events), invalid=invalid,
                           windows=len(applied.windows), alerts=alerts,
                           incidents=detection.events if detection is not None else [],
                           offsets=next_offsets(batch.records))

    def _decide(self, windows: Sequence[DueWindow], scores: Scores,
                model: ModelInfo) -> tuple[list[Alert], DetectionResult | None, list[OutboundMessage]]:
        """Per-window alerts, or (with a detector) per-series calibration and incident records."""
        now = self._clock()
        if self._detector is None:
            alerts = decide_alerts(windows, scores, model, top_k=self._top_k, now=now)
            return alerts, None, [alert_message(alert, self._topics.alerts) for alert in alerts]
        detection = self._detector.detect(windows, scores, model)
        return [], detection, self._detector.messages(detection, scores, model, self._topics.alerts, now)

    def _count_incidents(self, detection: DetectionResult) -> None:
        for phase, count in Counter(event.transition.phase.value for event in detection.events).items():
            self._metrics.incidents.labels(phase).inc(count)

    def _score(self, windows: Sequence[DueWindow]) -> Scores:
        """All windows that came due in the batch, in one (chunked) forward pass."""
        info = self._scorer.info
        batch = np.stack([w.values for w in windows]) if windows else np.zeros((0, info.window, len(info.features)),
                                                                                np.float32)
        started = time.perf_counter()
        scores = self._scorer.score(batch)  # (B, T, F) -> (B,)
        if windows:
            self._metrics.inference_seconds.observe(time.perf_counter() - started)
        return scores

    def _count(self, outcomes: list[Outcome], new_series: int, invalid: list[Invalid], windows: int,
               alerts: int) -> None:
        for outcome, count in Counter(outcomes).items():
            self._metrics.events.labels(outcome.value).inc(count)
        lost = outcomes.count(Outcome.REPLAY_UNRECOVERABLE)
        if lost:
            log.warning("replayed events older than the replay margin: their alerts are not re-emitted",
                        extra={"events": lost, "hint": "raise VRAE_WINDOW__REPLAY_MARGIN"})
        for reason, count in Counter(item.reason for item in invalid).items():
            self._metrics.invalid.labels(reason.value).inc(count)
        self._metrics.series_created.inc(new_series)
        self._metrics.windows_scored.inc(windows)
        self._metrics.alerts.inc(alerts)
        self._metrics.batches.inc()


def next_offsets(records: Sequence[SourceRecord]) -> dict[tuple[str, int], int]:
    """The commit position per partition: one past the highest offset seen in the batch."""
    offsets: dict[tuple[str, int], int] = {}
    for record in records:
        key = (record.topic, record.partition)
        offsets[key] = max(offsets.get(key, 0), record.offset + 1)
    return offsets
