"""One batch: parse -> windows -> score -> decide -> records. It writes nothing and delivers nothing: the
checkpoint (worker.checkpoint) runs the delivery order on what `process` returns, including the state
write it prepared.

A batch runs in two halves so the loop can overlap them across batches (worker.loop): `prepare`
parses (pure Python, no state, no I/O) and `process` does everything that reads state: the state
store's peek (one round trip) and the forward pass (both release the GIL), then the decision, per
window (windows mode) or per series (incidents mode).
"""

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

import numpy as np

from worker.detection.alerts import Alert, decide_alerts
from worker.detection.detector import DetectionResult, Detector
from worker.detection.incidents import IncidentEvent
from worker.events import Event, EventParser, Invalid, InvalidReason, SourceRecord, internal_detail
from worker.metrics import Metrics
from worker.records import (DEFAULT_MAX_MESSAGE_BYTES, OutboundMessage, alert_message, dead_letter_message,
                            detection_messages)
from worker.scorer import ModelInfo, Scores
from worker.state.interfaces import StateStore
from worker.windows import DueWindow, Peek


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
class StateWrite:
    """What a batch changes in the state store, written only once its records are delivered."""

    store: StateStore
    windows: dict[str, Any]  # the window states the peek computed, in the store's own form
    detector_states: dict[str, bytes]
    now_ms: int

    def apply(self) -> None:
        self.store.write(self.windows, self.detector_states, self.now_ms)


@dataclass(frozen=True)
class ProcessedBatch:
    """A batch whose records are ready and whose state write is prepared; nothing delivered or written."""

    records: Sequence[SourceRecord]
    messages: list[OutboundMessage]
    state: StateWrite
    detection: DetectionResult | None
    scores: Scores
    report: BatchReport
    started: float


class Pipeline:
    def __init__(self, parser: EventParser, store: StateStore, scorer: BatchScorer, metrics: Metrics,
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
        """Peek at the state, score the due windows and decide: the records to deliver and the state to
        write after them, neither delivered nor written yet."""
        now_ms = int(self._clock().timestamp() * 1000)
        peek = self._store.peek(batch.events, detector=self.detector is not None, now_ms=now_ms)
        admitted, tracked = self._store.admit(peek.new_series, peek.refresh, now_ms)
        events, windows, refused = self._within_series_limit(batch.events, peek, admitted)
        model = self._scorer.info  # a hot model swap happens between batches, never inside one
        values = np.stack([w.values for w in windows]) if windows else np.zeros((0, model.window, len(model.features)),
                                                                                 np.float32)
        scores = self._score(values)
        alerts, detection, messages = self._decide(windows, values, scores, model, peek.detector_states)
        invalid = batch.invalid + refused
        messages += [dead_letter_message(item, self._topics.dead_letters, self._topics.max_message_bytes)
                     for item in invalid]
        written = detection.states if detection is not None else {}
        self._count(peek, events, admitted, tracked, invalid, len(windows), len(alerts))
        report = BatchReport(records=len(batch.records), events=len(events), invalid=invalid,
                             windows=len(windows), alerts=alerts,
                             incidents=detection.events if detection is not None else [],
                             offsets=next_offsets(batch.records))
        pending = {sid: state for sid, state in peek.pending.items() if sid in admitted or sid not in peek.new_series}
        return ProcessedBatch(batch.records, messages, StateWrite(self._store, pending, written, now_ms), detection,
                              scores, report, batch.started)

    def quarantine(self, record: SourceRecord, error: Exception) -> ProcessedBatch:
        """One record whose processing raised: its dead letter (reason `internal`, naming the exception),
        and nothing else of it is written or scored."""
        invalid = Invalid(InvalidReason.INTERNAL, internal_detail(error), record)
        self._metrics.invalid.labels(invalid.reason.value).inc()
        report = BatchReport(records=1, invalid=[invalid], offsets=next_offsets([record]))
        nothing = StateWrite(self._store, {}, {}, 0)
        no_scores = Scores(np.zeros(0, np.float32), np.zeros(0, np.float32),
                           np.zeros((0, self._store.spec.n_features), np.float32))
        dead_letter = dead_letter_message(invalid, self._topics.dead_letters, self._topics.max_message_bytes)
        return ProcessedBatch([record], [dead_letter], nothing, None,
                              no_scores, report, time.perf_counter())

    def _within_series_limit(self, events: list[Event], peek: Peek,
                             admitted: set[str]) -> tuple[list[Event], list[DueWindow], list[Invalid]]:
        """The batch without the events of new series the store may not track (VRAE_WINDOW__MAX_SERIES):
        those become dead letters; nothing of them is written or scored."""
        refused_series = set(peek.new_series) - admitted
        if not refused_series:
            return events, peek.windows, []
        kept = [event for event in events if event.series_id not in refused_series]
        windows = [window for window in peek.windows if window.series_id not in refused_series]
        refused = [Invalid(InvalidReason.SERIES_LIMIT, "the store tracks as many series as it may "
                           "(VRAE_WINDOW__MAX_SERIES); this series is not tracked", event.record)
                   for event in events if event.series_id in refused_series]
        peek.outcomes = [outcome for event, outcome in zip(events, peek.outcomes)
                         if event.series_id not in refused_series]
        return kept, windows, refused

    def _decide(self, windows: Sequence[DueWindow], values: np.ndarray, scores: Scores, model: ModelInfo,
                states: dict[str, bytes]) -> tuple[list[Alert], DetectionResult | None, list[OutboundMessage]]:
        """Per-window alerts, or (with a detector) per-series calibration and incident records."""
        now = self._clock()
        if self.detector is None:
            alerts = decide_alerts(windows, scores, model, top_k=self._top_k, now=now)
            return alerts, None, [alert_message(alert, self._topics.alerts) for alert in alerts]
        detection = self.detector.detect(windows, scores, model, states, values)
        messages = detection_messages(detection, scores, model, alert_topic=self._topics.alerts,
                                      scores_topic=self.detector.scores_topic, top_k=self.detector.top_k, now=now)
        return [], detection, messages

    def _score(self, values: np.ndarray) -> Scores:
        """All windows that came due in the batch (B, T, F), in one (chunked) forward pass."""
        started = time.perf_counter()
        scores = self._scorer.score(values)  # (B, T, F) -> (B,)
        if len(values):
            self._metrics.inference_seconds.observe(time.perf_counter() - started)
        return scores

    def _count(self, peek: Peek, events: list[Event], admitted: set[str], tracked: int | None,
               invalid: list[Invalid], windows: int, alerts: int) -> None:
        for outcome, count in Counter(peek.outcomes).items():
            self._metrics.events.labels(outcome.value).inc(count)
        for reason, count in Counter(item.reason for item in invalid).items():
            self._metrics.invalid.labels(reason.value).inc(count)
        self._metrics.series_created.inc(len(admitted))
        if peek.detector_states:
            self._metrics.detector_states.labels("copy").inc(peek.detector_cached)
            self._metrics.detector_states.labels("redis").inc(len(peek.detector_states) - peek.detector_cached)
        if tracked is not None:
            self._metrics.series_tracked.set(tracked)
        self._metrics.windows_scored.inc(windows)
        self._metrics.alerts.inc(alerts)


def merged(reports: Sequence[BatchReport]) -> BatchReport:
    """One report for a batch processed in parts (worker.loop's isolation of a record that raises)."""
    offsets: dict[tuple[str, int], int] = {}
    for report in reports:
        for key, offset in report.offsets.items():
            offsets[key] = max(offsets.get(key, 0), offset)
    return BatchReport(records=sum(r.records for r in reports), events=sum(r.events for r in reports),
                       invalid=[item for r in reports for item in r.invalid], windows=sum(r.windows for r in reports),
                       alerts=[alert for r in reports for alert in r.alerts],
                       incidents=[event for r in reports for event in r.incidents], offsets=offsets)


def next_offsets(records: Sequence[SourceRecord]) -> dict[tuple[str, int], int]:
    """The commit position per partition: one past the highest offset seen in the batch."""
    offsets: dict[tuple[str, int], int] = {}
    for record in records:
        key = (record.topic, record.partition)
        offsets[key] = max(offsets.get(key, 0), record.offset + 1)
    return offsets
