"""Replay recorded events through the worker's own pipeline in memory: no Kafka, no Redis.

`BatchProcessor` with the in-memory window and detector stores, an in-memory source and sink, exactly
as the service runs it otherwise: the same parsing, windowing, scoring, per-series calibration and
incident machine. The quality harness judges the worker this way, and `vrae-worker tune-levels`
chooses alert levels this way, so both see the surprise values the running worker would compute.
"""

import heapq
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from worker.detection import Detector, DetectorSettings, MemoryDetectorStore
from worker.evaluation import Stats
from worker.events import EventParser, SourceRecord
from worker.metrics import Metrics
from worker.outbound import OutboundMessage
from worker.pipeline import BatchProcessor, Topics
from worker.scorer import Scorer
from worker.windows import MemoryWindowStore, WindowSpec

BATCH_RECORDS = 500
_SCORES, _ALERTS = "scores", "alerts"


class Recorded(Protocol):
    """One series' events, in time order."""

    series_id: str
    timestamps: np.ndarray  # (n,) int64 epoch ms, increasing
    values: np.ndarray  # (n, F)


@dataclass
class Replay:
    surprise: Stats  # every judged window's surprise, indexed by the event ending it
    openings: dict[str, list[int]]  # series -> event indices of incident openings
    seconds: float  # wall time of the pipeline alone
    windows: int


class _Collector:
    """The sink: keeps each judged window's surprise and each opening as it is sent, not the messages
    (a message is ~0.5 KB; a labelled history of a million windows would hold half a gigabyte of them)."""

    def __init__(self, streams: Sequence[Recorded]) -> None:
        self._timestamps = {s.series_id: np.asarray(s.timestamps) for s in streams}
        self.surprise: dict[str, list[tuple[int, float]]] = {s.series_id: [] for s in streams}
        self.openings: dict[str, list[int]] = {s.series_id: [] for s in streams}
        self.seconds = 0.0  # spent here, which is the replay's bookkeeping, not the worker's pipeline

    def send(self, messages: Sequence[OutboundMessage]) -> None:
        started = time.perf_counter()
        for message in messages:
            if message.topic not in (_SCORES, _ALERTS) or message.value is None:
                continue  # dead letters: the worker's, not the replay's, business
            document = json.loads(message.value)
            sid = document["series_id"]
            if message.topic == _SCORES:
                self.surprise[sid].append((self._index(sid, document["window_end"]), document["surprise"]))
            elif document["phase"] == "opened":
                self.openings[sid].append(self._index(sid, document["window_end"]))
        self.seconds += time.perf_counter() - started

    def _index(self, series_id: str, timestamp: int) -> int:
        """The event ending a window: its series' timestamps are increasing."""
        return int(np.searchsorted(self._timestamps[series_id], timestamp))


def records_of(streams: Sequence[Recorded]) -> Iterator[SourceRecord]:
    """Events of all series interleaved in timestamp order, as producers would emit them (merged lazily:
    one pending event per series, not a sorted copy of the whole history)."""
    def events(i: int, s: Recorded) -> Iterator[tuple[int, int, int]]:
        return ((ts, i, n) for n, ts in enumerate(s.timestamps.tolist()))

    merged = heapq.merge(*(events(i, s) for i, s in enumerate(streams)))
    for offset, (ts, i, n) in enumerate(merged):
        s = streams[i]
        body = json.dumps({"series_id": s.series_id, "ts": ts, "values": s.values[n].tolist()})
        yield SourceRecord("events", 0, offset, s.series_id.encode(), body.encode())


def replay(streams: Sequence[Recorded], scorer: Scorer, stride: int, settings: DetectorSettings) -> Replay:
    """Stream the events through the pipeline in batches of BATCH_RECORDS; collect surprise and openings."""
    features = scorer.info.features
    spec = WindowSpec(window=scorer.info.window, n_features=len(features), stride=stride)
    detector = Detector(MemoryDetectorStore(), settings, scores_topic=_SCORES)
    sink = _Collector(streams)
    processor = BatchProcessor(EventParser(features), MemoryWindowStore(spec), scorer, sink, Metrics(),
                               Topics(alerts=_ALERTS, dead_letters="dead-letters"), detector=detector)
    started = time.perf_counter()
    batch: list[SourceRecord] = []
    for record in records_of(streams):
        batch.append(record)
        if len(batch) == BATCH_RECORDS:
            processor.process(batch)
            batch = []
    if batch:
        processor.process(batch)
    seconds = time.perf_counter() - started - sink.seconds
    stats = Stats({sid: np.array([v for _, v in rows], np.float64) for sid, rows in sink.surprise.items()},
                  {sid: np.array([n for n, _ in rows], np.int64) for sid, rows in sink.surprise.items()})
    return Replay(stats, sink.openings, seconds, sum(len(v) for v in stats.values.values()))
