"""What the worker produces, as transport-neutral records (pure): the alert, incident and score
documents (schemas in worker/schemas) and dead letters. Rendering lives here only, so every record
shares one timestamp format, one way of writing non-finite numbers and one top-features ranking.
"""

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from worker.detection.alerts import Alert, top_features
from worker.detection.detector import DetectionResult, Verdict
from worker.detection.incidents import IncidentEvent, Phase
from worker.events import FLOAT32_MAX, Invalid
from worker.scorer import ModelInfo, Scores


@dataclass(frozen=True)
class OutboundMessage:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def json_message(topic: str, series_id: str, document: dict[str, Any]) -> OutboundMessage:
    """A compact JSON document keyed by its series, so a series' records stay in order on one partition."""
    value = json.dumps(document, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return OutboundMessage(topic=topic, key=series_id.encode("utf-8"), value=value,
                           headers=(("content-type", b"application/json"),))


def alert_document(alert: Alert) -> dict[str, Any]:
    """The alert document (schema: worker/schemas/alert.schema.json)."""
    return {
        "alert_id": alert.alert_id,
        "series_id": alert.series_id,
        "window_start": alert.window_start_ms,
        "window_end": alert.window_end_ms,
        "window_start_iso": iso_from_ms(alert.window_start_ms),
        "window_end_iso": iso_from_ms(alert.window_end_ms),
        "score": alert.score,
        "anomaly_score": alert.anomaly_score,
        "surprise": alert.surprise,
        "threshold": alert.threshold,
        "top_features": [{"name": name, "share": share} for name, share in alert.top_features],
        "model": {"name": alert.model.name, "version": alert.model.version, "sha256": alert.model.sha256},
        "detected_at": iso(alert.detected_at),
        "source": {"partition": alert.source_partition, "offset": alert.source_offset},
    }


def alert_message(alert: Alert, topic: str) -> OutboundMessage:
    return json_message(topic, alert.series_id, alert_document(alert))


def detection_messages(result: DetectionResult, scores: Scores, model: ModelInfo, *, alert_topic: str,
                       scores_topic: str | None, top_k: int, now: datetime) -> list[OutboundMessage]:
    """Incident records for the alert topic and, with a scores topic, every judged window's scores."""
    messages = [json_message(alert_topic, event.window.series_id,
                             incident_document(event, model, top_k=top_k, now=now)) for event in result.events]
    if scores_topic is not None:
        messages += [json_message(scores_topic, verdict.window.series_id, score_document(verdict, scores, model))
                     for verdict in result.verdicts]
    return messages


def incident_document(event: IncidentEvent, model: ModelInfo, *, top_k: int, now: datetime) -> dict[str, Any]:
    """The `opened` / `closed` record (schema: worker/schemas/incident.schema.json)."""
    window = event.window
    document: dict[str, Any] = {
        "type": "incident",
        "phase": event.phase.value,
        "incident_id": event.incident_id,
        "series_id": window.series_id,
        "opened_at": event.opened_ms,
        "opened_at_iso": iso_from_ms(event.opened_ms),
        "window_start": window.start_ms,
        "window_end": window.end_ms,
        "score": _finite(event.score),
        "surprise": _finite(event.surprise),
        "peak": {"score": _finite(event.peak_score), "surprise": _finite(event.peak_surprise),
                 "window_end": event.peak_end_ms},
        "top_features": [{"name": name, "share": share}
                         for name, share in top_features(np.asarray(event.peak_shares), model.features, top_k)],
        "windows": event.windows,
        "model": {"name": model.name, "version": model.version, "sha256": model.sha256},
        "detected_at": iso(now),
        "source": {"partition": window.event.record.partition, "offset": window.event.record.offset},
    }
    if event.phase is Phase.CLOSED:
        document["closed_at"] = event.last_anomalous_ms
        document["closed_at_iso"] = iso_from_ms(event.last_anomalous_ms)
        document["duration_ms"] = event.last_anomalous_ms - event.opened_ms
        document["close_reason"] = event.close_reason.value if event.close_reason else "recovered"
    return document


def score_document(verdict: Verdict, scores: Scores, model: ModelInfo) -> dict[str, Any]:
    """One window's scores for dashboards (the optional scores topic).

    The model's figures keep the names they have in alerts (`score`, `anomaly_score`: the global
    calibration); the series' judgement is `surprise` (-log10 of the tail probability), which never
    saturates where `anomaly_score` reads 1.0."""
    return {
        "series_id": verdict.window.series_id,
        "window_start": verdict.window.start_ms,
        "window_end": verdict.window.end_ms,
        "score": _finite(float(scores.score[verdict.index])),
        "anomaly_score": _finite(float(scores.anomaly_score[verdict.index]), 1.0),
        "surprise": _finite(verdict.surprise),
        "model_version": model.version,
    }


def _finite(value: float, nan: float = FLOAT32_MAX) -> float:
    if math.isnan(value):
        return nan
    return min(max(value, -FLOAT32_MAX), FLOAT32_MAX)


# kafka-python's default max_request_size: the largest record the producer accepts unless configured.
DEFAULT_MAX_MESSAGE_BYTES = 1_048_576
# What a record costs on top of its key, value and header bytes: the batch header (61 bytes) and the
# record's varint lengths (a few bytes per field and header). A dead letter cut to the limit minus this
# always fits, whatever the producer's own estimate adds.
RECORD_OVERHEAD_BYTES = 1024
# A dead letter's key picks its partition through kafka-python's pure-Python murmur2, about a second per
# megabyte: a stream of 1 MB keys would cost a second each. No series id is this long at the default
# limit (256 characters are at most 1 KiB of UTF-8), so a longer key matches none anyway.
MAX_DEAD_LETTER_KEY_BYTES = 1024
# Room for the headers a cut of the value adds: names, a size of up to 20 digits and a sha256 in hex.
_CUT_HEADERS_BYTES = len("original_value_size") + 20 + len("original_value_sha256") + 64


def dead_letter_message(invalid: Invalid, topic: str,
                        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> OutboundMessage:
    """The original key and value with headers saying why and where from, always in a form Kafka accepts.

    A dead letter the producer refuses would be retried forever and stop its partition, so:
    - a null value is sent empty, with the header `value_null: true` (Kafka refuses a record with
      neither key nor value);
    - a key over `MAX_DEAD_LETTER_KEY_BYTES`, and a value that would make the record larger than
      `max_bytes` (the producer's max request size), are cut, with headers `original_<part>_size` and
      `original_<part>_sha256` of the original bytes (`<part>` is `key` or `value`).
    """
    record = invalid.record
    headers = [
        ("error", invalid.reason.value.encode("utf-8")),
        ("error_detail", invalid.detail.encode("utf-8", errors="replace")[:1024]),
        ("source_topic", record.topic.encode("utf-8")),
        ("source_partition", str(record.partition).encode("ascii")),
        ("source_offset", str(record.offset).encode("ascii")),
    ]
    value = record.value
    if value is None:
        value = b""
        headers.append(("value_null", b"true"))
    key = _cut("key", record.key, MAX_DEAD_LETTER_KEY_BYTES, headers)
    room = (max_bytes - RECORD_OVERHEAD_BYTES - _CUT_HEADERS_BYTES - len(key or b"")
            - sum(len(name) + len(data) for name, data in headers))
    value = _cut("value", value, room, headers)
    return OutboundMessage(topic=topic, key=key, value=value, headers=tuple(headers))


def _cut(part: str, data: bytes | None, room: int, headers: list[tuple[str, bytes]]) -> bytes | None:
    """`data` cut to `room` bytes; when cut, headers with the original's size and sha256 are appended."""
    if data is None or len(data) <= room:
        return data
    headers.append((f"original_{part}_size", str(len(data)).encode("ascii")))
    headers.append((f"original_{part}_sha256", hashlib.sha256(data).hexdigest().encode("ascii")))
    return data[:max(room, 0)]


def iso(moment: datetime) -> str:
    """UTC, millisecond precision, `Z` suffix: the one timestamp format of every record we produce."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_from_ms(epoch_ms: int) -> str:
    return iso(datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc))
