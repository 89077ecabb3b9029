"""The detector over batches: one fault is one incident, its records, replays, and the scores topic."""

import json
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from detector_batches import scored_windows

import worker
from worker.detection.calibration import Reference
from worker.detection.detector import DetectionResult, Detector
from worker.detection.incidents import incident_id
from worker.records import OutboundMessage, detection_messages
from worker.scorer import ModelInfo, Scores
from worker.state.codec import detector_state_bytes
from worker.state.memory import MemoryStateStore
from worker.windows import DueWindow, WindowSpec

SHARES = np.array([0.2, 0.8], np.float32)
# The model's calibration of normal errors: each feature's share of a 0.1 score, with the stream's spread.
REFERENCE = Reference(median=np.log(0.1 * 2 * SHARES), scale=np.full(2, 0.2), mean=np.zeros(2), std=np.ones(2),
                      window=4)
MODEL = ModelInfo(name="vrae", version="v1", sha256="ab" * 32, window=4, features=("temp", "rpm"), threshold=0.99,
                  reference=REFERENCE)
NOW = datetime(2026, 11, 24, 3, 0, tzinfo=timezone.utc)
SCHEMA = json.loads((Path(worker.__file__).parent / "schemas" / "incident.schema.json").read_text())


def stream_scores(n: int = 900, anomaly: slice = slice(600, 640)) -> list[float]:
    scores = (0.1 * np.exp(0.2 * np.random.default_rng(0).standard_normal(n))).tolist()
    scores[anomaly] = [3.0] * (anomaly.stop - anomaly.start)
    return scores


def render(detector: Detector, result: DetectionResult, batch: Scores) -> list[OutboundMessage]:
    return detection_messages(result, batch, MODEL, alert_topic="alerts", scores_topic=detector.scores_topic,
                              top_k=detector.top_k, now=NOW)


class Stored:
    """Detector states kept as the state store keeps them: read per batch, written newer-wins."""

    def __init__(self) -> None:
        self.store = MemoryStateStore(WindowSpec(window=4, n_features=2))

    def detect(self, detector: Detector, windows: list[DueWindow], batch: Scores) -> DetectionResult:
        raw = self.store.peek([window.event for window in windows], detector=True, now_ms=0).detector_states
        return detector.detect(windows, batch, MODEL, raw)

    def save(self, result: DetectionResult) -> None:
        self.store.write({}, result.states, 0)

    def raw(self, series_id: str) -> bytes | None:
        return self.store.detector_raw(series_id)


def deliver(detector: Detector, stored: Stored, series: str, first: int, scores: list[float]) -> list[dict]:
    windows, batch = scored_windows(series, first, scores, SHARES)
    result = stored.detect(detector, windows, batch)
    messages = render(detector, result, batch)
    stored.save(result)
    return [json.loads(m.value) for m in messages if m.topic == "alerts"]


def test_detector_turns_one_fault_into_one_opened_and_one_closed_record() -> None:
    detector, stored = Detector(), Stored()
    scores = stream_scores()
    records = [r for first in range(0, 900, 100)
               for r in deliver(detector, stored, "pump-7", first + 1, scores[first:first + 100])]
    assert [r["phase"] for r in records] == ["opened", "closed"]
    opened, closed = records
    assert opened["incident_id"] == closed["incident_id"] == incident_id("pump-7", opened["opened_at"])
    # The fault starts in the window ending at 601 s: found within a few windows of its start ...
    assert 601_000 <= opened["window_end"] <= 606_000
    # ... and closed once the stream is back (the recent average needs a few of its half-lives to come down).
    assert 640_000 <= closed["closed_at"] <= 665_000 and closed["close_reason"] == "recovered"
    assert closed["duration_ms"] == closed["closed_at"] - opened["opened_at"]
    assert closed["peak"]["score"] == pytest.approx(3.0) and closed["windows"] >= 35
    assert closed["top_features"][0] == {"name": "rpm", "share": pytest.approx(0.8)}
    for record in records:
        jsonschema.validate(record, SCHEMA)


def test_replay_after_the_save_emits_nothing_and_leaves_the_state_unchanged() -> None:
    detector, stored = Detector(), Stored()
    scores = stream_scores()
    deliver(detector, stored, "s", 1, scores[:650])
    before = stored.raw("s")
    assert deliver(detector, stored, "s", 551, scores[550:650]) == []
    assert stored.raw("s") == before
    assert len(before) == detector_state_bytes(2)


def test_replay_before_the_save_re_emits_the_same_ids() -> None:
    detector, stored = Detector(), Stored()
    scores = stream_scores()
    deliver(detector, stored, "s", 1, scores[:500])
    windows, batch = scored_windows("s", 501, scores[500:700], SHARES)
    first = render(detector, stored.detect(detector, windows, batch), batch)  # crash: no save
    again = render(detector, stored.detect(detector, windows, batch), batch)
    assert [m.value for m in first] == [m.value for m in again] and len(first) == 2


def test_batches_of_any_size_give_the_same_records() -> None:
    """One window per series per batch, or hundreds: the rounds judge each series' windows in order."""
    scores = stream_scores()

    def records(size: int) -> list[dict]:
        detector, stored = Detector(), Stored()
        return [r for first in range(0, 900, size)
                for r in deliver(detector, stored, "s", first + 1, scores[first:first + size])]

    big, small = records(900), records(7)
    for record in big + small:
        record.pop("source")  # the offset of the event ending a window is the same; the batch is not
    assert big == small and len(big) == 2


def test_two_series_in_one_batch_are_judged_as_if_alone() -> None:
    scores, quiet = stream_scores(), stream_scores(anomaly=slice(0, 0))
    windows_a, batch_a = scored_windows("a", 1, scores, SHARES)
    windows_b, batch_b = scored_windows("b", 1, quiet, SHARES)
    order = np.argsort(np.array([w.end_ms for w in windows_a + windows_b]), kind="stable")
    windows = [(windows_a + windows_b)[i] for i in order]
    batch = Scores(*(np.concatenate([getattr(batch_a, name), getattr(batch_b, name)])[order]
                     for name in ("score", "anomaly_score", "feature_shares")))
    together = Stored().detect(Detector(), windows, batch)
    alone = Stored().detect(Detector(), windows_a, batch_a)
    assert [e.incident_id for e in together.events] == [e.incident_id for e in alone.events]
    assert {e.window.series_id for e in together.events} == {"a"}


def test_scores_topic_gets_every_judged_window() -> None:
    detector = Detector(scores_topic="scores")
    windows, batch = scored_windows("s", 1, [0.1] * 5, SHARES)
    messages = render(detector, Stored().detect(detector, windows, batch), batch)
    documents = [json.loads(m.value) for m in messages if m.topic == "scores"]
    assert [d["window_end"] for d in documents] == [1000, 2000, 3000, 4000, 5000]
    assert all(m.key == b"s" for m in messages) and all("surprise" in d for d in documents)
