import json
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import numpy as np

import worker
from worker.detection.alerts import alert_id, decide_alerts, top_features
from worker.events import Event, Invalid, InvalidReason, SourceRecord
from worker.records import alert_message, dead_letter_message
from worker.scorer import ModelInfo, Scores
from worker.windows import DueWindow

SCHEMAS = Path(worker.__file__).parent / "schemas"
MODEL = ModelInfo(name="vrae", version="v1", sha256="ab" * 32, window=2, features=("temp", "rpm", "flow"),
                  threshold=0.9)
NOW = datetime(2026, 11, 24, 3, 0, tzinfo=timezone.utc)


def due(series: str, start: int, end: int, offset: int = 7) -> DueWindow:
    record = SourceRecord("events", 2, offset, series.encode(), b"{}")
    event = Event(series, end, np.zeros(3, np.float32), record)
    return DueWindow(series, start, end, np.zeros((2, 3), np.float32), event)


def test_alert_id_is_deterministic_per_window() -> None:
    assert alert_id("pump-7", 1000, 2000) == alert_id("pump-7", 1000, 2000)
    assert len({alert_id("pump-7", 1000, 2000), alert_id("pump-7", 1000, 2001), alert_id("pump-8", 1000, 2000),
                alert_id("pump-71", 0, 2000)}) == 4


def test_only_windows_reaching_the_threshold_alert() -> None:
    windows = [due("a", 0, 1), due("b", 0, 1), due("c", 0, 1)]
    scores = Scores(score=np.array([1.0, 2.0, 3.0], np.float32), anomaly_score=np.array([0.5, 0.9, 0.99], np.float32),
                    feature_shares=np.full((3, 3), 1 / 3, np.float32))
    alerts = decide_alerts(windows, scores, MODEL, top_k=2, now=NOW)
    assert [a.series_id for a in alerts] == ["b", "c"]
    assert alerts[1].score == 3.0 and alerts[1].threshold == 0.9


def test_top_features_are_the_largest_shares_first() -> None:
    assert top_features(np.array([0.2, 0.5, 0.3]), ("temp", "rpm", "flow"), 2) == (("rpm", 0.5), ("flow", 0.3))


def test_alert_document_matches_its_schema_even_for_overflowing_scores() -> None:
    scores = Scores(score=np.array([np.inf], np.float32), anomaly_score=np.array([np.nan], np.float32),
                    feature_shares=np.array([[np.nan, 0.5, 0.5]], np.float32))
    (alert,) = decide_alerts([due("pump-7", 1763942400000, 1763942460000)], scores, MODEL, top_k=3, now=NOW)
    document = json.loads(alert_message(alert, "alerts").value)
    jsonschema.validate(document, json.loads((SCHEMAS / "alert.schema.json").read_text()))
    assert document["window_start_iso"] == "2025-11-24T00:00:00.000Z"
    assert document["source"] == {"partition": 2, "offset": 7}
    assert document["alert_id"] == alert_id("pump-7", 1763942400000, 1763942460000)


def test_dead_letter_keeps_original_bytes_and_says_why_and_where() -> None:
    record = SourceRecord("events", 3, 42, b"k\xff", b"\x00garbage")
    message = dead_letter_message(Invalid(InvalidReason.NOT_UTF8, "invalid UTF-8 at byte 1", record), "dlq")
    assert (message.topic, message.key, message.value) == ("dlq", b"k\xff", b"\x00garbage")
    assert dict(message.headers) == {"error": b"not_utf8", "error_detail": b"invalid UTF-8 at byte 1",
                                     "source_topic": b"events", "source_partition": b"3", "source_offset": b"42"}


def test_example_event_matches_the_event_schema() -> None:
    schema = json.loads((SCHEMAS / "event.schema.json").read_text())
    for example in ({"series_id": "pump-7", "ts": 1763942400000, "value": 0.42},
                    {"series_id": "pump-7", "ts": "2025-11-24T00:00:00Z", "values": [1.0, 2.0]},
                    {"series_id": "pump-7", "ts": 1, "features": {"temp": 1.0}}):
        jsonschema.validate(example, schema)
