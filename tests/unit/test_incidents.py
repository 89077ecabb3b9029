"""The incident state machine: one incident per anomaly, hysteresis, deterministic ids, bounded state."""

import json
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from detector_batches import scored_windows

import worker
from worker.detection.detector import DetectionResult, Detector
from worker.detection.incidents import IncidentSettings, IncidentState, Observation, Phase, incident_id, step
from worker.records import OutboundMessage, detection_messages
from worker.scorer import ModelInfo, Scores
from worker.state.codec import (decode_detector_state, decode_incident, detector_state_bytes, encode_detector_state,
                                encode_incident, incident_bytes)
from worker.state.memory import MemoryStateStore
from worker.windows import DueWindow, WindowSpec

SETTINGS = IncidentSettings(open_surprise=3.0, close_surprise=2.0, close_after=3)
SHARES = np.array([0.2, 0.8], np.float32)


def run(surprises: list[float], series: str = "pump-7", state: IncidentState | None = None,
        settings: IncidentSettings = SETTINGS) -> tuple[IncidentState, list]:
    state = state or IncidentState()
    transitions = []
    for i, surprise in enumerate(surprises):
        seen = Observation(start_ms=1000 * i, end_ms=1000 * (i + 10), score=surprise / 10, surprise=surprise,
                           shares=SHARES)
        state, transition = step(series, state, seen, settings)
        if transition is not None:
            transitions.append(transition)
    return state, transitions


def test_an_anomaly_opens_and_closes_exactly_one_incident() -> None:
    state, transitions = run([0, 0, 4, 5, 3.5, 6, 2.5, 1, 1, 1, 0, 0])
    assert [t.phase for t in transitions] == [Phase.OPENED, Phase.CLOSED]
    assert transitions[0].incident_id == transitions[1].incident_id
    assert not state.open


def test_wobbling_between_the_levels_neither_flaps_nor_closes() -> None:
    _, transitions = run([4, 2.5, 3.2, 2.1, 2.9, 2.5, 3.1, 2.2])
    assert [t.phase for t in transitions] == [Phase.OPENED]


def test_a_single_normal_window_inside_an_anomaly_does_not_close_it() -> None:
    _, transitions = run([4, 1, 1, 4, 1, 1, 4, 1, 1, 1])
    assert [t.phase for t in transitions] == [Phase.OPENED, Phase.CLOSED]


def test_two_separate_anomalies_are_two_incidents_with_different_ids() -> None:
    _, transitions = run([4, 1, 1, 1, 0, 0, 5, 1, 1, 1])
    assert [t.phase for t in transitions] == [Phase.OPENED, Phase.CLOSED, Phase.OPENED, Phase.CLOSED]
    assert transitions[0].incident_id != transitions[2].incident_id


def test_closed_record_carries_peak_duration_and_windows() -> None:
    _, transitions = run([0, 4, 7, 5, 1, 1, 1])
    closed = transitions[-1].state
    assert closed.peak_surprise == 7 and closed.peak_score == pytest.approx(0.7)
    assert closed.peak_end_ms == 12_000 and closed.opened_end_ms == 11_000
    assert closed.last_anomalous_end_ms == 13_000
    assert closed.windows == 6
    assert closed.peak_shares == pytest.approx((0.2, 0.8))


def test_replaying_the_same_windows_from_the_same_state_gives_the_same_ids() -> None:
    first = [t.incident_id for t in run([0, 4, 1, 1, 1])[1]]
    again = [t.incident_id for t in run([0, 4, 1, 1, 1])[1]]
    assert first == again
    assert first[0] == incident_id("pump-7", 11_000)
    assert incident_id("pump-7", 11_000) != incident_id("pump-8", 11_000)


def test_state_round_trips_and_is_bounded_by_the_feature_count() -> None:
    state, _ = run([0, 4, 6] + [3] * 500)
    assert state.open
    raw = encode_incident(state)
    assert len(raw) == incident_bytes(2)
    assert decode_incident(raw) == state


def test_close_level_above_open_level_is_rejected() -> None:
    with pytest.raises(ValueError, match="close_surprise"):
        IncidentSettings(open_surprise=2.0, close_surprise=3.0)


# --- the detector: calibration + incidents over batches, with a store -------------------------------------------

MODEL = ModelInfo(name="vrae", version="v1", sha256="ab" * 32, window=4, features=("temp", "rpm"), threshold=0.99)
NOW = datetime(2026, 11, 24, 3, 0, tzinfo=timezone.utc)
SCHEMA = json.loads((Path(worker.__file__).parent / "schemas" / "incident.schema.json").read_text())


def stream_scores(n: int = 800, anomaly: slice = slice(600, 612)) -> list[float]:
    scores = (0.1 * np.exp(0.2 * np.random.default_rng(0).standard_normal(n))).tolist()
    scores[anomaly] = [3.0] * (anomaly.stop - anomaly.start)
    return scores


def render(detector: Detector, result: DetectionResult, batch: Scores) -> list[OutboundMessage]:
    return detection_messages(result, batch, MODEL, alert_topic="alerts", scores_topic=detector.scores_topic,
                              top_k=detector.top_k, now=NOW)


class Stored:
    """Detector states kept as the state store keeps them: encoded, read per batch, written newer-wins."""

    def __init__(self) -> None:
        self.store = MemoryStateStore(WindowSpec(window=4, n_features=2))

    def detect(self, detector: Detector, windows: list[DueWindow], batch: Scores) -> DetectionResult:
        raw = self.store.peek([window.event for window in windows], detector=True, now_ms=0).detector_states
        return detector.detect(windows, batch, MODEL, {sid: decode_detector_state(r) for sid, r in raw.items()})

    def save(self, result: DetectionResult) -> None:
        self.store.write({}, {sid: encode_detector_state(state) for sid, state in result.states.items()}, 0)

    def raw(self, series_id: str) -> bytes | None:
        return self.store.detector_raw(series_id)


def deliver(detector: Detector, stored: Stored, series: str, first: int, scores: list[float]) -> list[dict]:
    windows, batch = scored_windows(series, first, scores, SHARES)
    result = stored.detect(detector, windows, batch)
    messages = render(detector, result, batch)
    stored.save(result)
    return [json.loads(m.value) for m in messages if m.topic == "alerts"]


def test_detector_turns_one_anomaly_into_one_opened_and_one_closed_record() -> None:
    detector, stored = Detector(), Stored()
    scores = stream_scores()
    records = [r for first in range(0, 800, 100)
               for r in deliver(detector, stored, "pump-7", first + 1, scores[first:first + 100])]
    assert [r["phase"] for r in records] == ["opened", "closed"]
    opened, closed = records
    assert opened["incident_id"] == closed["incident_id"]
    # The anomaly starts in the window ending at 601 s; its overlapping successor confirms it.
    assert opened["window_end"] == 602_000
    # The short-term mean stays raised for a few windows after the last anomalous one.
    assert 612_000 <= closed["closed_at"] <= 620_000
    assert closed["duration_ms"] == closed["closed_at"] - 602_000 and closed["peak"]["score"] == pytest.approx(3.0)
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
    assert len(before) <= detector_state_bytes(2)


def test_replay_before_the_save_re_emits_the_same_ids() -> None:
    detector, stored = Detector(), Stored()
    scores = stream_scores()
    deliver(detector, stored, "s", 1, scores[:500])
    windows, batch = scored_windows("s", 501, scores[500:700], SHARES)
    first = render(detector, stored.detect(detector, windows, batch), batch)  # crash: no save
    again = render(detector, stored.detect(detector, windows, batch), batch)
    assert [m.value for m in first] == [m.value for m in again] and len(first) == 2


def test_scores_topic_gets_every_judged_window() -> None:
    detector = Detector(scores_topic="scores")
    windows, batch = scored_windows("s", 1, [0.1] * 5, SHARES)
    messages = render(detector, Stored().detect(detector, windows, batch), batch)
    documents = [json.loads(m.value) for m in messages if m.topic == "scores"]
    assert [d["window_end"] for d in documents] == [1000, 2000, 3000, 4000, 5000]
    assert all(m.key == b"s" for m in messages)
