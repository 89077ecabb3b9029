"""Poison records (tests/poison_records.py) on the real broker, consumed by the real worker: each one is
dead-lettered with its reason, and the partition keeps moving past it."""

import hashlib
import json
import time
from collections.abc import Iterable

import pytest
from kafka import KafkaProducer
from kafka.serializer import Serializer
from poison_records import POISON

from worker.app import BackgroundWorker, build_service

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

_NULL = object()  # stands for a null value, which kafka-python's send() refuses next to a null key


class _NullMarker(Serializer):
    def serialize(self, topic: str, value: object) -> bytes | None:
        return None if value is _NULL else value  # type: ignore[return-value]


def produce_raw(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    """Produce what other clients can and ours refuses: no key and no value (the value serializer turns the
    marker into None after send()'s check), and records up to 8 MB."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=8_000_000,
                             value_serializer=_NullMarker())
    futures = [producer.send(topic, key=key, value=_NULL if value is None else value) for key, value in records]
    producer.flush()
    for future in futures:
        future.get(timeout=30)
    producer.close()
    return len(futures)


def event(series: str, i: int) -> tuple[bytes, bytes]:
    document = {"series_id": series, "ts": 1_763_942_400_000 + 1000 * i, "values": [20.0 + (i % 5) * 0.1, 5.0]}
    return series.encode(), json.dumps(document).encode()


def test_every_poison_record_is_dead_lettered_and_the_partition_moves_past_it(make_settings, kafka_tools,
                                                                                tiny_model) -> None:
    settings = make_settings(mode="windows")
    settings.model.threshold = 0.0  # every due window alerts: the events after the poison show up as alerts
    before = [event("pump-1", i) for i in range(tiny_model.window)]  # the first window is due at the last one
    after = [event("pump-1", i) for i in range(tiny_model.window, tiny_model.window + 10)]
    produced = produce_raw(kafka_tools.bootstrap, settings.kafka.input_topic,
                           [*before, *[(poison.key, poison.value) for poison in POISON], *after])
    started = time.monotonic()
    with BackgroundWorker(build_service(settings)) as running:
        alerts = kafka_tools.read(settings.kafka.alert_topic, lambda got: len(got) >= 1 + len(after))
        dead = kafka_tools.read(settings.kafka.dlq_topic, lambda got: len(got) >= len(POISON))
        committed = None
        while committed != produced and time.monotonic() - started < 60:
            committed = kafka_tools.committed(settings.kafka.group_id).get((settings.kafka.input_topic, 0))
            time.sleep(0.2)
    assert running.committed is True
    assert committed == produced

    window_ends = [json.loads(record.value)["window_end"] for record in alerts]
    assert window_ends == [json.loads(value)["ts"] for _, value in [before[-1], *after]]

    assert len(dead) == len(POISON)
    for poison, offset, letter in zip(POISON, range(len(before), len(before) + len(POISON)), dead):
        headers = dict(letter.headers)
        assert headers["error"] == poison.reason.value.encode(), poison.name
        assert headers["source_offset"] == str(offset).encode(), poison.name
        for part, original, delivered in (("key", poison.key, letter.key), ("value", poison.value, letter.value)):
            if original is None:
                assert delivered in (None, b""), poison.name
            elif f"original_{part}_size" in headers:
                assert original.startswith(delivered) and len(delivered) >= (1024 if part == "key" else 1_040_000)
                assert headers[f"original_{part}_size"] == str(len(original)).encode(), poison.name
                assert headers[f"original_{part}_sha256"] == hashlib.sha256(original).hexdigest().encode()
            else:
                assert delivered == original, poison.name
        assert ("value_null" in headers) is (poison.value is None), poison.name
