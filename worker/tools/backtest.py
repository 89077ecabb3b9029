"""Backtest: recorded events through the worker's own pipeline in memory, no Kafka, no Redis.

`vrae-worker backtest --model m.pt --data history.csv --out events.csv [--plot timeline.png]` is what a
user runs before deploying: the configured settings and model, exactly the worker's logic, and per
event what the worker would have done. `Pipeline` and `Checkpoint` run with the in-memory state store
and the in-memory sink (worker.testing), as the service runs them otherwise: the same parsing,
windowing (gaps included), scoring, per-series calibration and incident machine. The quality harness
judges the worker this way and `vrae-worker tune-levels` chooses alert levels this way: one path.
Judgements are read from the processed batches themselves, never re-parsed from the rendered records.
"""

import heapq
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from vrae_model.windowing import DEFAULT_GAP_FACTOR, GapPolicy
from worker.checkpoint import Checkpoint
from worker.detection.detector import DetectionResult, Detector, DetectorSettings
from worker.detection.incidents import Phase
from worker.events import EventParser, SourceRecord
from worker.metrics import Metrics
from worker.pipeline import Pipeline, Topics
from worker.scorer import Scorer
from worker.state.memory import MemoryStateStore
from worker.testing import ListSink
from worker.tools.evaluation import Stats
from worker.windows import WindowSpec

BATCH_RECORDS = 500


class Recorded(Protocol):
    """One series' events, in time order."""

    series_id: str
    timestamps: np.ndarray  # (n,) int64 epoch ms, increasing
    values: np.ndarray  # (n, F)


@dataclass
class Backtest:
    surprise: Stats  # every judged window's surprise, indexed by the event ending it
    openings: dict[str, list[int]]  # series -> event indices of incident openings
    seconds: float  # wall time of the pipeline alone
    windows: int
    closings: dict[str, list[int]] = field(default_factory=dict)  # series -> event indices of closings
    closed_at: dict[str, list[int]] = field(default_factory=dict)  # series -> each closing's last anomalous ms
    close_reasons: dict[str, list[str]] = field(default_factory=dict)  # series -> "recovered" | "settled"
    model_surprise: Stats | None = None  # the model's own surprise at the same windows


class _Collector:
    """Each judged window's surprise and each transition, by the position of the event that ended it in
    its series (plain numbers: a labelled history of a million windows must not hold their records)."""

    def __init__(self, streams: Sequence[Recorded]) -> None:
        self.position: list[int] = []  # offset -> the event's index in its series
        self.surprise: dict[str, list[tuple[int, float, float]]] = {s.series_id: [] for s in streams}
        self.transitions: dict[Phase, dict[str, list[int]]] = {phase: {s.series_id: [] for s in streams}
                                                               for phase in Phase}
        self.last_anomalous: dict[str, list[int]] = {s.series_id: [] for s in streams}  # closed_at, epoch ms
        self.close_reasons: dict[str, list[str]] = {s.series_id: [] for s in streams}

    def collect(self, detection: DetectionResult | None, model_surprise: np.ndarray) -> None:
        if detection is None:
            return
        for verdict in detection.verdicts:
            window = verdict.window
            self.surprise[window.series_id].append((self.position[window.event.record.offset], verdict.surprise,
                                                    float(model_surprise[verdict.index])))
        for event in detection.events:
            series = self.transitions[event.phase][event.window.series_id]
            series.append(self.position[event.window.event.record.offset])
            if event.phase is Phase.CLOSED:
                self.last_anomalous[event.window.series_id].append(event.last_anomalous_ms)
                self.close_reasons[event.window.series_id].append(event.close_reason.value)

    def stats(self, column: int) -> Stats:
        return Stats({sid: np.array([row[column] for row in rows], np.float64) for sid, rows in self.surprise.items()},
                     {sid: np.array([row[0] for row in rows], np.int64) for sid, rows in self.surprise.items()})


def records_of(streams: Sequence[Recorded], positions: list[int] | None = None) -> Iterator[SourceRecord]:
    """Events of all series interleaved in timestamp order, as producers would emit them (merged lazily:
    one pending event per series, not a sorted copy of the whole history). With `positions`, each
    record's index in its own series is appended to it, in offset order."""
    def events(i: int, s: Recorded) -> Iterator[tuple[int, int, int]]:
        return ((ts, i, n) for n, ts in enumerate(s.timestamps.tolist()))

    merged = heapq.merge(*(events(i, s) for i, s in enumerate(streams)))
    for offset, (ts, i, n) in enumerate(merged):
        s = streams[i]
        if positions is not None:
            positions.append(n)
        body = json.dumps({"series_id": s.series_id, "ts": ts, "values": s.values[n].tolist()})
        yield SourceRecord("events", 0, offset, s.series_id.encode(), body.encode())


def backtest(streams: Sequence[Recorded], scorer: Scorer, stride: int, settings: DetectorSettings,
             gap_factor: float = DEFAULT_GAP_FACTOR) -> Backtest:
    """Stream the events through the pipeline in batches of BATCH_RECORDS; collect surprise and openings. The
    detector judges the `stride` events new in each window for spikes, whatever `settings` say."""
    settings = replace(settings, calibration=replace(settings.calibration, stride=stride))
    features = scorer.info.features
    spec = WindowSpec(window=scorer.info.window, n_features=len(features), stride=stride,
                      gaps=GapPolicy(factor=gap_factor, interval_ms=scorer.info.interval_ms))
    pipeline = Pipeline(EventParser(features), MemoryStateStore(spec), scorer, Metrics(),
                        Topics(alerts="alerts", dead_letters="dead-letters"), detector=Detector(settings))
    checkpoint = Checkpoint(ListSink(keep=False), _NoCommit(), Metrics())
    collector = _Collector(streams)
    started = time.perf_counter()
    batch: list[SourceRecord] = []

    def run(records: list[SourceRecord]) -> None:
        processed = pipeline.process(pipeline.prepare(records))
        checkpoint.seal(processed)
        collector.collect(processed.detection, processed.scores.surprise)

    for record in records_of(streams, collector.position):
        batch.append(record)
        if len(batch) == BATCH_RECORDS:
            run(batch)
            batch = []
    if batch:
        run(batch)
    seconds = time.perf_counter() - started
    stats = collector.stats(1)
    return Backtest(stats, collector.transitions[Phase.OPENED], seconds, sum(len(v) for v in stats.values.values()),
                    closings=collector.transitions[Phase.CLOSED], closed_at=collector.last_anomalous,
                    close_reasons=collector.close_reasons, model_surprise=collector.stats(2))


class _NoCommit:
    def commit(self, offsets: dict[tuple[str, int], int]) -> bool:
        return True
