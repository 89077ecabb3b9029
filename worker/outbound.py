"""Messages the worker produces: alerts and dead letters, as transport-neutral records (pure)."""

import json
from dataclasses import dataclass
from typing import Any

from worker.alerts import Alert
from worker.events import Invalid


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


def alert_message(alert: Alert, topic: str) -> OutboundMessage:
    return json_message(topic, alert.series_id, alert.to_json())


def dead_letter_message(invalid: Invalid, topic: str) -> OutboundMessage:
    """The original key and value, untouched, with headers saying why and where from."""
    record = invalid.record
    headers = (
        ("error", invalid.reason.value.encode("utf-8")),
        ("error_detail", invalid.detail.encode("utf-8", errors="replace")[:1024]),
        ("source_topic", record.topic.encode("utf-8")),
        ("source_partition", str(record.partition).encode("ascii")),
        ("source_offset", str(record.offset).encode("ascii")),
    )
    return OutboundMessage(topic=topic, key=record.key, value=record.value, headers=headers)
