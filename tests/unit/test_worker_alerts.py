import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from kafka.record.default_records import DefaultRecordBatchBuilder
from poison_records import FEATURES, POISON, Poison

import worker
from worker.detection.alerts import alert_id, decide_alerts, top_features
from worker.events import Event, EventParser, Invalid, InvalidReason, SourceRecord
from worker.records import (DEFAULT_MAX_MESSAGE_BYTES, MAX_DEAD_LETTER_KEY_BYTES, OutboundMessage, alert_message,
                            dead_letter_message)
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


def accepted_by_the_producer(message: OutboundMessage, max_request_size: int) -> bool:
    """What kafka-python's send() checks before it takes a record: a key or a value, within the size limit."""
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(message.key, message.value, list(message.headers))
    return (message.key is not None or message.value is not None) and size <= max_request_size


def test_dead_letter_of_a_record_without_key_and_value_has_an_empty_value_and_says_so() -> None:
    record = SourceRecord("events", 0, 9, None, None)
    message = dead_letter_message(Invalid(InvalidReason.EMPTY, "record value is empty", record), "dlq")
    assert (message.key, message.value) == (None, b"")
    assert dict(message.headers)["value_null"] == b"true"
    assert dict(message.headers)["error"] == b"empty"
    assert accepted_by_the_producer(message, DEFAULT_MAX_MESSAGE_BYTES)


@pytest.mark.parametrize("key_bytes, value_bytes, max_bytes", [
    (0, 2_000_000, DEFAULT_MAX_MESSAGE_BYTES),
    (6, 1_048_576, DEFAULT_MAX_MESSAGE_BYTES),
    (2_000_000, 100, DEFAULT_MAX_MESSAGE_BYTES),
    (700_000, 700_000, DEFAULT_MAX_MESSAGE_BYTES),
    (6, 50_000, 20_000),
    (1025, 0, DEFAULT_MAX_MESSAGE_BYTES),
])
def test_dead_letter_too_large_for_the_producer_is_cut_with_its_original_size_and_sha256(
        key_bytes: int, value_bytes: int, max_bytes: int) -> None:
    key = (b"k" * key_bytes) or None
    value = bytes(range(256)) * (value_bytes // 256) + b"v" * (value_bytes % 256)
    record = SourceRecord("events", 1, 77, key, value)
    message = dead_letter_message(Invalid(InvalidReason.OVERSIZED, "too big", record), "dlq", max_bytes=max_bytes)
    assert accepted_by_the_producer(message, max_bytes)
    headers = dict(message.headers)
    for part, original, cut, room in (("key", key, message.key, MAX_DEAD_LETTER_KEY_BYTES),
                                      ("value", value, message.value, max_bytes - 4096)):
        if original is not None and len(cut) < len(original):
            assert original.startswith(cut) and len(cut) >= room
            assert headers[f"original_{part}_size"] == str(len(original)).encode()
            assert headers[f"original_{part}_sha256"] == hashlib.sha256(original).hexdigest().encode()
        else:
            assert cut == original and f"original_{part}_size" not in headers
    assert headers["error"] == b"oversized" and headers["source_offset"] == b"77"


@pytest.mark.parametrize("poison", [pytest.param(poison, id=poison.name) for poison in POISON])
def test_every_poison_record_gets_a_dead_letter_the_producer_accepts(poison: Poison) -> None:
    invalid = EventParser(feature_names=FEATURES).parse(SourceRecord("events", 0, 3, poison.key, poison.value))
    assert isinstance(invalid, Invalid)
    message = dead_letter_message(invalid, "dlq")
    assert accepted_by_the_producer(message, DEFAULT_MAX_MESSAGE_BYTES)
    assert dict(message.headers)["error"] == poison.reason.value.encode()


def test_example_event_matches_the_event_schema() -> None:
    schema = json.loads((SCHEMAS / "event.schema.json").read_text())
    for example in ({"series_id": "pump-7", "ts": 1763942400000, "value": 0.42},
                    {"series_id": "pump-7", "ts": "2025-11-24T00:00:00Z", "values": [1.0, 2.0]},
                    {"series_id": "pump-7", "ts": 1, "features": {"temp": 1.0}}):
        jsonschema.validate(example, schema)
