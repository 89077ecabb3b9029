import json

import numpy as np
import pytest
from poison_records import FEATURES, POISON, Poison

from worker.events import Event, EventParser, Invalid, InvalidReason, SourceRecord

PARSER = EventParser(feature_names=("temp", "rpm"), max_bytes=256, max_series_id_length=16)
UNIVARIATE = EventParser(feature_names=("value",))


def record(value: object, key: bytes | None = b"pump-7") -> SourceRecord:
    raw = value if isinstance(value, bytes) or value is None else json.dumps(value).encode()
    return SourceRecord(topic="events", partition=0, offset=5, key=key, value=raw)


def test_univariate_event_with_epoch_ms() -> None:
    event = UNIVARIATE.parse(record({"series_id": "pump-7", "ts": 1763942400000, "value": 0.42}))
    assert isinstance(event, Event)
    assert (event.series_id, event.ts_ms) == ("pump-7", 1763942400000)
    assert event.values.dtype == np.float32 and event.values.tolist() == pytest.approx([0.42])


def test_values_in_feature_order_and_features_by_name_agree() -> None:
    by_order = PARSER.parse(record({"series_id": "pump-7", "ts": 1, "values": [20.5, 1500]}))
    by_name = PARSER.parse(record({"series_id": "pump-7", "ts": 1, "features": {"rpm": 1500, "temp": 20.5}}))
    assert isinstance(by_order, Event) and isinstance(by_name, Event)
    assert by_order.values.tolist() == by_name.values.tolist() == [20.5, 1500.0]


@pytest.mark.parametrize("ts, expected", [
    ("2025-11-24T00:00:00Z", 1763942400000),
    ("2025-11-24T01:00:00.250+01:00", 1763942400250),
    ("2025-11-24T00:00:00", 1763942400000),
])
def test_iso_timestamps_become_epoch_ms_and_naive_means_utc(ts: str, expected: int) -> None:
    event = UNIVARIATE.parse(record({"series_id": "pump-7", "ts": ts, "value": 1}))
    assert isinstance(event, Event) and event.ts_ms == expected


def test_missing_key_is_accepted() -> None:
    assert isinstance(UNIVARIATE.parse(record({"series_id": "s", "ts": 1, "value": 1}, key=None)), Event)


@pytest.mark.parametrize("raw, key, reason", [
    (None, b"pump-7", InvalidReason.EMPTY),
    (b"", b"pump-7", InvalidReason.EMPTY),
    (b"{" + b" " * 300 + b"}", b"pump-7", InvalidReason.OVERSIZED),
    (b"\xff\xfe{}", b"pump-7", InvalidReason.NOT_UTF8),
    (b"{not json", b"pump-7", InvalidReason.NOT_JSON),
    ([1, 2], b"pump-7", InvalidReason.NOT_OBJECT),
    ({"ts": 1, "values": [1, 2]}, b"pump-7", InvalidReason.MISSING_FIELD),
    ({"series_id": "pump-7", "values": [1, 2]}, b"pump-7", InvalidReason.MISSING_FIELD),
    ({"series_id": "pump-7", "ts": 1}, b"pump-7", InvalidReason.MISSING_FIELD),
    ({"series_id": 7, "ts": 1, "values": [1, 2]}, b"pump-7", InvalidReason.WRONG_TYPE),
    ({"series_id": "pump-7", "ts": 1, "values": "1,2"}, b"pump-7", InvalidReason.WRONG_TYPE),
    ({"series_id": "pump-7", "ts": 1, "values": [1, "2"]}, b"pump-7", InvalidReason.WRONG_TYPE),
    ({"series_id": "pump-7", "ts": 1, "values": [1, True]}, b"pump-7", InvalidReason.WRONG_TYPE),
    ({"series_id": "pump-7", "ts": 1, "features": [1, 2]}, b"pump-7", InvalidReason.WRONG_TYPE),
    ({"series_id": "  ", "ts": 1, "values": [1, 2]}, b"  ", InvalidReason.BAD_SERIES_ID),
    ({"series_id": "x" * 17, "ts": 1, "values": [1, 2]}, None, InvalidReason.SERIES_ID_TOO_LONG),
    ({"series_id": "pump-8", "ts": 1, "values": [1, 2]}, b"pump-7", InvalidReason.KEY_MISMATCH),
    ({"series_id": "pump-7", "ts": "yesterday", "values": [1, 2]}, b"pump-7", InvalidReason.BAD_TIMESTAMP),
    ({"series_id": "pump-7", "ts": 1.5, "values": [1, 2]}, b"pump-7", InvalidReason.BAD_TIMESTAMP),
    ({"series_id": "pump-7", "ts": -1, "values": [1, 2]}, b"pump-7", InvalidReason.BAD_TIMESTAMP),
    ({"series_id": "pump-7", "ts": 2**60, "values": [1, 2]}, b"pump-7", InvalidReason.BAD_TIMESTAMP),
    ({"series_id": "pump-7", "ts": 1, "values": [1, 2], "value": 3}, b"pump-7", InvalidReason.AMBIGUOUS_VALUES),
    ({"series_id": "pump-7", "ts": 1, "values": [1, 2, 3]}, b"pump-7", InvalidReason.WRONG_FEATURE_COUNT),
    ({"series_id": "pump-7", "ts": 1, "value": 1}, b"pump-7", InvalidReason.WRONG_FEATURE_COUNT),
    ({"series_id": "pump-7", "ts": 1, "features": {"temp": 1, "rpm": 2, "x": 3}}, b"pump-7",
     InvalidReason.UNKNOWN_FEATURE),
    ({"series_id": "pump-7", "ts": 1, "features": {"temp": 1}}, b"pump-7", InvalidReason.MISSING_FEATURE),
    ({"series_id": "pump-7", "ts": 1, "values": [1, 1e39]}, b"pump-7", InvalidReason.NON_FINITE),
    (b'{"series_id": "pump-7", "ts": 1, "values": [1, NaN]}', b"pump-7", InvalidReason.NON_FINITE),
    (b'{"series_id": "pump-7", "ts": 1, "values": [1, Infinity]}', b"pump-7", InvalidReason.NON_FINITE),
    (b'{"series_id": "pump-7", "ts": 1, "values": [1, 1e400]}', b"pump-7", InvalidReason.NON_FINITE),
])
def test_every_invalid_event_gets_its_reason(raw: object, key: bytes | None, reason: InvalidReason) -> None:
    parsed = PARSER.parse(record(raw, key=key))
    assert isinstance(parsed, Invalid)
    assert parsed.reason == reason
    assert parsed.detail and "\n" not in parsed.detail


def test_every_reason_is_covered_by_a_test() -> None:
    source = open(__file__).read()
    assert all(f"InvalidReason.{reason.name}" in source for reason in InvalidReason)


def test_events_of_new_series_beyond_the_limit_are_dead_lettered_and_never_tracked() -> None:
    """The series limit is the state store's decision, taken after parsing; its dead letters say so."""
    from worker.checkpoint import Checkpoint
    from worker.metrics import Metrics
    from worker.pipeline import Pipeline, Topics
    from worker.scorer import ModelInfo, Scores
    from worker.state.memory import MemoryStateStore
    from worker.testing import ListSink, ListSource, run_batch
    from worker.windows import WindowSpec

    class Zeros:
        info = ModelInfo(name="z", version="1", sha256="0" * 64, window=2, features=("value",), threshold=0.5)

        def score(self, windows: np.ndarray) -> Scores:
            return Scores(np.zeros(len(windows), np.float32), np.zeros(len(windows), np.float32),
                          np.ones((len(windows), 1), np.float32))

    store, sink, metrics = MemoryStateStore(WindowSpec(window=2, n_features=1), max_series=2), ListSink(), Metrics()
    pipeline = Pipeline(UNIVARIATE, store, Zeros(), metrics, Topics(alerts="alerts", dead_letters="dlq"))
    records = [SourceRecord("events", 0, i, s.encode(), json.dumps({"series_id": s, "ts": 1000 * (i + 1),
                                                                     "value": 1}).encode())
               for i, s in enumerate(["a", "b", "c", "a", "c"])]
    report = run_batch(pipeline, Checkpoint(sink, ListSource([]), metrics), records)
    assert [(item.reason, item.record.offset) for item in report.invalid] == \
        [(InvalidReason.SERIES_LIMIT, 2), (InvalidReason.SERIES_LIMIT, 4)]
    assert [dict(m.headers)["error"] for m in sink.on("dlq")] == [b"series_limit", b"series_limit"]
    assert len(store) == 2 and report.windows == 1
    assert metrics.registry.get_sample_value("vrae_series_tracked") == 2


def test_a_record_whose_handling_raised_becomes_an_internal_dead_letter_naming_the_exception() -> None:
    from worker.metrics import Metrics
    from worker.pipeline import Pipeline, Topics
    from worker.state.memory import MemoryStateStore
    from worker.windows import WindowSpec

    pipeline = Pipeline(UNIVARIATE, MemoryStateStore(WindowSpec(window=2, n_features=1)), None, Metrics(),
                        Topics(alerts="alerts", dead_letters="dlq"))
    poison = record({"series_id": "pump-7", "ts": 1, "value": 1})
    quarantined = pipeline.quarantine(poison, UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"))
    assert [item.reason for item in quarantined.report.invalid] == [InvalidReason.INTERNAL]
    (message,) = quarantined.messages
    assert message.value == poison.value and dict(message.headers)["error"] == b"internal"
    assert dict(message.headers)["error_detail"].startswith(b"UnicodeEncodeError:")
    assert quarantined.report.offsets == {("events", 0): 6} and not quarantined.state.windows


ROOMY = EventParser(feature_names=FEATURES)  # the default size limit: deeply nested JSON fits in it


@pytest.mark.parametrize("poison", [pytest.param(poison, id=poison.name) for poison in POISON])
def test_poison_records_become_invalid_instead_of_raising(poison: Poison) -> None:
    parsed = ROOMY.parse(record(poison.value, key=poison.key))
    assert isinstance(parsed, Invalid)
    assert parsed.reason == poison.reason
    assert parsed.detail and "\n" not in parsed.detail


def test_an_unexpected_error_while_parsing_is_an_internal_invalid_naming_the_exception(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: EventParser, payload: dict) -> np.ndarray:
        raise ZeroDivisionError("a bug\nover two lines")

    monkeypatch.setattr(EventParser, "_values", broken)
    parsed = PARSER.parse(record({"series_id": "pump-7", "ts": 1, "values": [1, 2]}))
    assert isinstance(parsed, Invalid)
    assert parsed.reason == InvalidReason.INTERNAL
    assert parsed.detail == "ZeroDivisionError: a bug over two lines"


def test_a_record_of_an_unexpected_type_is_internal_not_a_crash() -> None:
    parsed = PARSER.parse(SourceRecord(topic="events", partition=0, offset=5, key=None, value=12345))  # type: ignore[arg-type]
    assert isinstance(parsed, Invalid) and parsed.reason == InvalidReason.INTERNAL
    assert parsed.detail.startswith("TypeError: ")
