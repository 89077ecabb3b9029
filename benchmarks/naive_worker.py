"""The baseline the worker's batching is measured against: one event at a time.

It uses the worker's own parser, Redis store (same Lua script), scorer and alert code, so the only
difference is the shape of the loop: per event one Redis round trip (a one-command pipeline) and one
forward pass of batch size 1. Offsets are committed once per poll, like the real worker, so commits
are not what the comparison measures.
"""

import time
from dataclasses import dataclass
from datetime import datetime, timezone

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from worker.detection.alerts import decide_alerts
from worker.events import Event, EventParser, SourceRecord
from worker.kafka_io import KafkaSink
from worker.records import alert_message, dead_letter_message
from worker.scorer import Scorer
from worker.state.redis_store import RedisStateStore


@dataclass(frozen=True)
class NaiveRun:
    events: int
    windows: int
    alerts: int
    seconds: float
    cpu_seconds: float  # this process, all threads (the Kafka client's IO thread included)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


class NaiveWorker:
    def __init__(self, parser: EventParser, store: RedisStateStore, scorer: Scorer, sink: KafkaSink,
                 alert_topic: str, dlq_topic: str) -> None:
        self._parser = parser
        self._store = store
        self._scorer = scorer
        self._sink = sink
        self._alert_topic = alert_topic
        self._dlq_topic = dlq_topic

    def warm_up(self, records: list[SourceRecord]) -> None:
        """Fill the series' windows in one batched call, so the timed part is all steady state."""
        events = [item for item in (self._parser.parse(r) for r in records) if isinstance(item, Event)]
        now_ms = int(time.time() * 1000)
        self._store.write(self._store.peek(events, detector=False, now_ms=now_ms).pending, {}, now_ms)

    def handle(self, record: SourceRecord) -> tuple[int, int]:
        """One event end to end; returns (windows scored, alerts sent)."""
        item = self._parser.parse(record)
        if not isinstance(item, Event):
            self._sink.send([dead_letter_message(item, self._dlq_topic)])
            return 0, 0
        now_ms = int(time.time() * 1000)
        peek = self._store.peek([item], detector=False, now_ms=now_ms)  # one pipeline, one EVALSHA: a round trip
        if not peek.windows:
            self._store.write(peek.pending, {}, now_ms)
            return 0, 0
        window = peek.windows[0]
        scores = self._scorer.score(window.values[None])  # (1, T, F): one forward pass
        alerts = decide_alerts(peek.windows, scores, self._scorer.info, top_k=3, now=datetime.now(timezone.utc))
        self._sink.send([alert_message(alert, self._alert_topic) for alert in alerts])
        self._store.write(peek.pending, {}, now_ms)  # after delivery, as the worker does: a second round trip
        return 1, len(alerts)


def run_naive(naive: NaiveWorker, consumer: KafkaConsumer, topic: str, warm_up_events: int,
              timed_events: int, timeout_s: float = 600.0) -> NaiveRun:
    """Consume `warm_up_events` untimed (batched), then time `timed_events` handled one by one."""
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, 0)
    deadline = time.monotonic() + timeout_s
    warm: list[SourceRecord] = []
    pending: list[SourceRecord] = []
    while len(warm) < warm_up_events:
        records = _poll(consumer, deadline)
        take = warm_up_events - len(warm)
        warm += records[:take]
        pending += records[take:]
    naive.warm_up(warm)
    windows = alerts = handled = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    while handled < timed_events:
        records = pending or _poll(consumer, deadline)
        pending = []
        for record in records[: timed_events - handled]:
            scored, sent = naive.handle(record)
            windows += scored
            alerts += sent
            handled += 1
        consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})
    return NaiveRun(events=handled, windows=windows, alerts=alerts, seconds=time.perf_counter() - started,
                    cpu_seconds=time.process_time() - cpu_started)


def _poll(consumer: KafkaConsumer, deadline: float) -> list[SourceRecord]:
    while time.monotonic() < deadline:
        batches = consumer.poll(timeout_ms=500)
        records = [SourceRecord(topic=r.topic, partition=r.partition, offset=r.offset, key=r.key, value=r.value,
                                timestamp_ms=r.timestamp)
                   for partition_records in batches.values() for r in partition_records]
        if records:
            return records
    raise TimeoutError("the naive worker ran out of records before its quota")
