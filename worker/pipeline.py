"""One batch: parse -> windows -> score -> decide -> records. It never delivers and never commits: the
checkpoint (worker.checkpoint) runs the delivery order on what `process` returns.

A batch runs in two halves so the loop can overlap them across batches (worker.loop): `prepare`
parses (pure Python, no state, no I/O) and `process` does everything that reads or writes state: the
window store's round trip and the forward pass (both release the GIL), then the decision, per window
(windows mode) or per series (incidents mode).
"""

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

import numpy as np

from worker.detection.alerts import Alert, decide_alerts
from worker.detection.detector import DetectionResult, Detector, IncidentEvent
from worker.events import Event, EventParser, Invalid, SourceRecord
from worker.metrics import Metrics
from worker.records import (DEFAULT_MAX_MESSAGE_BYTES, OutboundMessage, alert_message, dead_letter_message,
                            detection_messages)
from worker.scorer import ModelInfo, Scores
from worker.state.interfaces import WindowStore
from worker.windows import DueWindow, Outcome

log = logging.getLogger("worker.pipeline")


class BatchScorer(Protocol):
    info: ModelInfo

    def score(self, windows: np.ndarray) -> Scores: ...


@dataclass(frozen=True)
class Topics:
    alerts: str
    dead_letters: str
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # the producer's limit: larger dead letters are cut


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
    started: float  # perf_counter at prepare(): the batch-duration metric spans parse to delivery


@dataclass(frozen=True)
class ProcessedBatch:
    """A batch whose window state is written and whose records are ready, not yet delivered."""

    records: Sequence[SourceRecord]
    messages: list[OutboundMessage]
    detection: DetectionResult | None  # incidents mode: the detector states to save after delivery
    detector: Detector | None  # and where to save them
    scores: Scores
    report: BatchReport
    started: float


class Pipeline:
    def __init__(self, parser: EventParser, store: WindowStore, scorer: BatchScorer, metrics: Metrics,
                 topics: Topics, *, top_k: int = 3,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 detector: Detector | None = None) -> None:
        self._parser = parser
        self._store = store
        self._scorer = scorer
        self._metrics = metrics
        self._topics = topics
        self._top_k = top_k
        self._clock = clock
        self.detector = detector  # None: one alert per window over the model's threshold

    def prepare(self, records: Sequence[SourceRecord]) -> PreparedBatch:
        """Parse and validate: no state is read or written, so this may run ahead of `process`."""
        started = time.perf_counter()
        parsed = [self._parser.parse(record) for record in records]
        events = [item for item in parsed if isinstance(item, Event)]
        invalid = [item for item in parsed if isinstance(item, Invalid)]
        return PreparedBatch(records, events, invalid, started)

    def process(self, batch: PreparedBatch) -> ProcessedBatch:
        """Update the windows, score the due ones and decide: the records to deliver, not delivered yet."""
        applied = self._store.apply(batch.events)
        model = self._scorer.info  # a hot model swap happens between batches, never inside one
        scores = self._score(applied.windows)
        alerts, detection, messages = self._decide(applied.windows, scores, model)
        messages += [dead_letter_message(item, self._topics.dead_letters, self._topics.max_message_bytes)
                     for item in batch.invalid]
        self._count(applied.outcomes, applied.new_series, batch.invalid, len(applied.windows), len(alerts))
        report = BatchReport(records=len(batch.records), events=len(batch.events), invalid=batch.invalid,
                             windows=len(applied.windows), alerts=alerts,
                             incidents=detection.events if detection is not None else [],
                             offsets=next_offsets(batch.records))
        return ProcessedBatch(batch.records, messages, detection, self.detector, scores, report, batch.started)

    def _decide(self, windows: Sequence[DueWindow], scores: Scores,
                model: ModelInfo) -> tuple[list[Alert], DetectionResult | None, list[OutboundMessage]]:
        """Per-window alerts, or (with a detector) per-series calibration and incident records."""
        now = self._clock()
        if self.detector is None:
            alerts = decide_alerts(windows, scores, model, top_k=self._top_k, now=now)
            return alerts, None, [alert_message(alert, self._topics.alerts) for alert in alerts]
        detection = self.detector.detect(windows, scores, model)
        messages = detection_messages(detection, scores, model, alert_topic=self._topics.alerts,
                                      scores_topic=self.detector.scores_topic, top_k=self.detector.top_k, now=now)
        return [], detection, messages

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


def next_offsets(records: Sequence[SourceRecord]) -> dict[tuple[str, int], int]:
    """The commit position per partition: one past the highest offset seen in the batch."""
    offsets: dict[tuple[str, int], int] = {}
    for record in records:
        key = (record.topic, record.partition)
        offsets[key] = max(offsets.get(key, 0), record.offset + 1)
    return offsets
