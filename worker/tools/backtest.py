"""Backtest: recorded events through the worker's own pipeline in memory, no Kafka, no Redis.

`Pipeline` and `Checkpoint` with the in-memory window and detector stores and the in-memory source and
sink (worker.testing), exactly as the service runs them otherwise: the same parsing, windowing,
scoring, per-series calibration and incident machine. The quality harness judges the worker this way
and `vrae-worker tune-levels` chooses alert levels this way, so both see the surprise values the
running worker would compute. Judgements are read from the processed batches themselves, never
re-parsed from the records the pipeline rendered.
"""

import heapq
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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


class _Collector:
    """Each judged window's surprise and each opening, by the position of the event that ended it in its
    series (kept as plain numbers: a labelled history of a million windows must not hold their records)."""

    def __init__(self, streams: Sequence[Recorded]) -> None:
        self.position: list[int] = []  # offset -> the event's index in its series
        self.surprise: dict[str, list[tuple[int, float]]] = {s.series_id: [] for s in streams}
        self.openings: dict[str, list[int]] = {s.series_id: [] for s in streams}

    def collect(self, detection: DetectionResult | None) -> None:
        if detection is None:
            return
        for verdict in detection.verdicts:
            window = verdict.window
            self.surprise[window.series_id].append((self.position[window.event.record.offset],
                                                    verdict.judgement.surprise))
        for event in detection.events:
            if event.transition.phase is Phase.OPENED:
                self.openings[event.window.series_id].append(self.position[event.window.event.record.offset])


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
    """Stream the events through the pipeline in batches of BATCH_RECORDS; collect surprise and openings."""
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
        collector.collect(processed.detection)

    for record in records_of(streams, collector.position):
        batch.append(record)
        if len(batch) == BATCH_RECORDS:
            run(batch)
            batch = []
    if batch:
        run(batch)
    seconds = time.perf_counter() - started
    stats = Stats({sid: np.array([v for _, v in rows], np.float64) for sid, rows in collector.surprise.items()},
                  {sid: np.array([n for n, _ in rows], np.int64) for sid, rows in collector.surprise.items()})
    return Backtest(stats, collector.openings, seconds, sum(len(v) for v in stats.values.values()))


class _NoCommit:
    def commit(self, offsets: dict[tuple[str, int], int]) -> bool:
        return True
