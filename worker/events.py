"""Input events: raw Kafka records in, validated `Event`s or `Invalid` reasons out (pure, no I/O).

An event is `{"series_id": "pump-7", "ts": 1763942400000, "value": 0.42}`; `ts` is epoch ms or an
ISO-8601 string (naive means UTC); multivariate events carry `"values": [...]` in the model's feature
order or `"features": {"temp": ..}` by name. Anything else becomes an `Invalid` with a stable reason
code, which the pipeline turns into a dead letter.
"""

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from typing import NamedTuple

import numpy as np

# 2**47 ms is the year 6429: far past any real sensor, small enough for the window store's 6-byte field.
MAX_TS_MS = 2**47 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)


class InvalidReason(StrEnum):
    """Why an event was dead-lettered; the value is the DLQ `error` header and a metrics label."""

    EMPTY = "empty"
    OVERSIZED = "oversized"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    BAD_SERIES_ID = "bad_series_id"
    SERIES_ID_TOO_LONG = "series_id_too_long"
    KEY_MISMATCH = "key_mismatch"
    BAD_TIMESTAMP = "bad_timestamp"
    NON_FINITE = "non_finite"
    WRONG_FEATURE_COUNT = "wrong_feature_count"
    UNKNOWN_FEATURE = "unknown_feature"
    MISSING_FEATURE = "missing_feature"
    AMBIGUOUS_VALUES = "ambiguous_values"
    SERIES_LIMIT = "series_limit"  # a new series beyond VRAE_WINDOW__MAX_SERIES (decided by the state store)
    INTERNAL = "internal"  # handling the record failed unexpectedly (a bug): the detail names the exception


class SourceRecord(NamedTuple):
    """One consumed record, independent of the Kafka client so the pipeline can be tested without it.

    A NamedTuple, like the event and window records: the worker makes one per record on its hottest
    path, and a frozen dataclass costs three times as much to build.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


class Event(NamedTuple):
    """A valid event: values are float32 in the model's feature order."""

    series_id: str
    ts_ms: int
    values: np.ndarray  # (F,) float32
    record: SourceRecord


@dataclass(frozen=True)
class Invalid:
    """A record that cannot become an event, with the reason code and a one-line detail."""

    reason: InvalidReason
    detail: str
    record: SourceRecord


class _Reject(Exception):
    def __init__(self, reason: InvalidReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class EventParser:
    """Parses records for one model: it knows the feature names and the input limits."""

    feature_names: tuple[str, ...]
    max_bytes: int = 65_536
    max_series_id_length: int = 256

    def parse(self, record: SourceRecord) -> Event | Invalid:
        """An `Event`, or an `Invalid` for anything else: never raises, so one record cannot stop a partition."""
        try:
            return self._parse(record)
        except _Reject as reject:
            return Invalid(reject.reason, reject.detail, record)
        except Exception as error:  # whatever we failed to foresee becomes a dead letter, not a crash loop
            return Invalid(InvalidReason.INTERNAL, internal_detail(error), record)

    def _parse(self, record: SourceRecord) -> Event:
        payload = self._decode(record.value)
        series_id = self._series_id(payload, record.key)
        ts_ms = payload.get("ts", _MISSING)
        if type(ts_ms) is not int or not 0 <= ts_ms <= MAX_TS_MS:  # the common case, checked inline
            ts_ms = parse_timestamp(_require(payload, "ts"))
        return Event(series_id, ts_ms, self._values(payload), record)

    def _decode(self, value: bytes | None) -> dict:
        if not value:
            raise _Reject(InvalidReason.EMPTY, "record value is empty")
        if len(value) > self.max_bytes:
            raise _Reject(InvalidReason.OVERSIZED, f"{len(value)} bytes > limit {self.max_bytes}")
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as error:
            raise _Reject(InvalidReason.NOT_UTF8, f"invalid UTF-8 at byte {error.start}") from None
        try:
            payload = _JSON.decode(text)
        except ValueError as error:
            raise _Reject(InvalidReason.NOT_JSON, f"not JSON: {error}") from None
        except RecursionError:
            # The decoder recurses once per nesting level: `[` x 5000 exhausts the interpreter's stack.
            raise _Reject(InvalidReason.NOT_JSON, "not JSON: nested deeper than the decoder allows") from None
        if type(payload) is not dict:
            raise _Reject(InvalidReason.NOT_OBJECT, f"expected a JSON object, got {type(payload).__name__}")
        return payload

    def _series_id(self, payload: dict, key: bytes | None) -> str:
        series_id = _require(payload, "series_id")
        if not isinstance(series_id, str):
            raise _Reject(InvalidReason.WRONG_TYPE, "series_id must be a string")
        if not series_id.strip():
            raise _Reject(InvalidReason.BAD_SERIES_ID, "series_id is empty")
        if len(series_id) > self.max_series_id_length:
            raise _Reject(InvalidReason.SERIES_ID_TOO_LONG,
                          f"series_id has {len(series_id)} chars > limit {self.max_series_id_length}")
        try:
            # JSON's `\ud800` escape gives a lone surrogate, which has no UTF-8 form: the Redis key, the
            # record key and the alert id of such a series could never be written.
            encoded = series_id.encode("utf-8")
        except UnicodeEncodeError as error:
            raise _Reject(InvalidReason.BAD_SERIES_ID,
                          f"series_id is not encodable as UTF-8 (lone surrogate at char {error.start})") from None
        # The key picks the partition; a key other than the series id would split one series across
        # partitions and break per-series ordering, which the window store relies on.
        if key is not None and key != encoded:
            raise _Reject(InvalidReason.KEY_MISMATCH, "Kafka key must equal series_id")
        return series_id

    def _values(self, payload: dict) -> np.ndarray:
        present = ("value" in payload) + ("values" in payload) + ("features" in payload)
        if present != 1:
            names = [name for name in ("value", "values", "features") if name in payload]
            if not names:
                raise _Reject(InvalidReason.MISSING_FIELD, "missing field: one of value, values, features")
            raise _Reject(InvalidReason.AMBIGUOUS_VALUES, f"give exactly one of {', '.join(names)}")
        if "value" in payload:
            raw = [payload["value"]]
        elif "values" in payload:
            raw = payload["values"]
            if type(raw) is not list:
                raise _Reject(InvalidReason.WRONG_TYPE, "values must be a list of numbers")
        else:
            raw = self._by_name(payload["features"])
        if len(raw) != len(self.feature_names):
            raise _Reject(InvalidReason.WRONG_FEATURE_COUNT,
                          f"{len(raw)} values, model expects {len(self.feature_names)} "
                          f"({', '.join(self.feature_names)})")
        for item in raw:
            # JSON gives int or float; a finite float32 is checked without a call per value.
            if type(item) is not float or not -FLOAT32_MAX <= item <= FLOAT32_MAX:
                _number(item)
        return np.array(raw, dtype=np.float32)

    def _by_name(self, features: object) -> list:
        if not isinstance(features, dict):
            raise _Reject(InvalidReason.WRONG_TYPE, "features must be an object of name: number")
        unknown = sorted(set(features) - set(self.feature_names))
        if unknown:
            raise _Reject(InvalidReason.UNKNOWN_FEATURE, f"unknown feature(s): {', '.join(unknown)}")
        missing = [name for name in self.feature_names if name not in features]
        if missing:
            raise _Reject(InvalidReason.MISSING_FEATURE, f"missing feature(s): {', '.join(missing)}")
        return [features[name] for name in self.feature_names]


def internal_detail(error: BaseException, limit: int = 200) -> str:
    """One line naming an unexpected exception (its type first), for the `internal` dead-letter reason."""
    try:
        message = str(error)
    except Exception:  # an exception whose own __str__ fails must not escape either
        message = "(no message)"
    return " ".join(f"{type(error).__name__}: {message}".split())[:limit]


def parse_timestamp(raw: object) -> int:
    """Epoch milliseconds from an integer or an ISO-8601 string; naive times are UTC."""
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise _Reject(InvalidReason.BAD_TIMESTAMP, "ts must be epoch milliseconds (integer) or ISO-8601")
    if isinstance(raw, str):
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            raise _Reject(InvalidReason.BAD_TIMESTAMP, f"ts is not ISO-8601: {raw[:40]!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        raw = round(moment.timestamp() * 1000)
    if not 0 <= raw <= MAX_TS_MS:
        raise _Reject(InvalidReason.BAD_TIMESTAMP, f"ts {raw} out of range [0, {MAX_TS_MS}]")
    return raw


def _require(payload: dict, name: str) -> object:
    if name not in payload:
        raise _Reject(InvalidReason.MISSING_FIELD, f"missing field: {name}")
    return payload[name]


def _number(item: object) -> float:
    if isinstance(item, bool) or not isinstance(item, (int, float)):
        raise _Reject(InvalidReason.WRONG_TYPE, f"feature values must be numbers, got {type(item).__name__}")
    try:
        value = float(item)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise _Reject(InvalidReason.NON_FINITE, f"value {item!r} is not a finite float32")
    return value


_MISSING = object()


def _reject_constant(name: str) -> float:
    raise _Reject(InvalidReason.NON_FINITE, f"{name} is not a finite number")


# Built once: `json.loads(..., parse_constant=...)` builds a new decoder per call, which was a fifth
# of the parse cost. A decoder holds no state between calls.
_JSON = json.JSONDecoder(parse_constant=_reject_constant)
