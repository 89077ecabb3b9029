"""The composition root: wires settings, model, store, Kafka and metrics, then runs the loop.

The loop is the README sentence: poll a batch, process it (windows, scores, alerts, dead letters,
delivery confirmed), commit its offsets, beat the heartbeat. When Redis or the broker is down the batch
is rewound and retried after an exponential, capped back-off; a stop request finishes the batch first.
"""

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import redis
from kafka.errors import KafkaError

from worker.config import Settings
from worker.events import EventParser, SourceRecord
from worker.health import Heartbeat
from worker.kafka_io import DeliveryError, KafkaSink, KafkaSource, build_consumer, build_producer
from worker.metrics import Metrics
from worker.pipeline import BatchProcessor, Topics
from worker.redis_store import RedisWindowStore, connect
from worker.scorer import Scorer
from worker.windows import WindowSpec

log = logging.getLogger("worker")

# Failures that mean "a dependency is unavailable": retry the batch later, never crash-loop.
TRANSIENT_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                    redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError, KafkaError, DeliveryError)


class Source(Protocol):
    def poll(self) -> list[SourceRecord]: ...

    def commit(self, offsets: dict[tuple[str, int], int]) -> bool: ...

    def rewind(self, records: Sequence[SourceRecord]) -> None: ...


@dataclass
class Backoff:
    """Exponential back-off, capped, reset by the first success."""

    initial_s: float
    max_s: float
    _next_s: float = 0.0

    def next(self) -> float:
        self._next_s = min(self.max_s, self._next_s * 2 if self._next_s else self.initial_s)
        return self._next_s

    def reset(self) -> None:
        self._next_s = 0.0


class Worker:
    """Runs batches until `stop` is set; every piece is injected so tests can run it in-process."""

    def __init__(self, source: Source, processor: BatchProcessor, heartbeat: Heartbeat, backoff: Backoff,
                 metrics: Metrics) -> None:
        self._source = source
        self._processor = processor
        self._heartbeat = heartbeat
        self._backoff = backoff
        self._metrics = metrics

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._heartbeat.beat()
            records: list[SourceRecord] = []
            try:
                records = self._source.poll()
                if records:
                    report = self._processor.process(records)
                    self._source.commit(report.offsets)
                self._backoff.reset()
            except TRANSIENT_ERRORS as error:
                self._retry_later(records, error, stop)

    def _retry_later(self, records: list[SourceRecord], error: Exception, stop: threading.Event) -> None:
        cause = "redis" if isinstance(error, redis.exceptions.RedisError) else "kafka"
        self._metrics.batch_failures.labels(cause).inc()
        delay_s = self._backoff.next()
        log.warning("dependency unavailable; retrying the batch", extra={
            "cause": cause, "error": repr(error), "retry_in_s": delay_s, "records": len(records)})
        if records:
            try:
                self._source.rewind(records)
            except KafkaError as rewind_error:
                log.warning("rewind failed", extra={"error": repr(rewind_error)})
        stop.wait(delay_s)


@dataclass
class Service:
    """A built worker and what must be closed after it ran."""

    worker: Worker
    processor: BatchProcessor
    source: KafkaSource
    sink: KafkaSink
    heartbeat: Heartbeat
    metrics: Metrics
    scorer: Scorer
    store: RedisWindowStore

    def run(self, stop: threading.Event) -> None:
        log.info("worker started", extra={"model": self.scorer.info.version, "sha256": self.scorer.info.sha256})
        try:
            self.worker.run(stop)
        finally:
            self.close()
            log.info("worker stopped")

    def close(self) -> None:
        try:
            self.source.close()
        finally:
            self.sink.close()
            self.store.close()
            self.heartbeat.clear()


def build_service(settings: Settings, metrics: Metrics | None = None) -> Service:
    """Load the model, connect Redis and Kafka, and assemble the worker (raises on bad config)."""
    metrics = metrics or Metrics()
    scorer = Scorer.from_settings(settings.model)
    spec = WindowSpec(window=scorer.info.window, n_features=len(scorer.info.features),
                      stride=settings.window.stride, replay_margin=settings.window.replay_margin,
                      ttl_s=settings.window.ttl_s)
    store = RedisWindowStore(connect(settings.redis), spec, key_prefix=settings.redis.key_prefix)
    parser = EventParser(feature_names=scorer.info.features, max_bytes=settings.events.max_bytes,
                         max_series_id_length=settings.events.max_series_id_length)
    sink = KafkaSink(build_producer(settings.kafka), timeout_s=settings.kafka.delivery_timeout_s)
    source = KafkaSource(build_consumer(settings.kafka), metrics, poll_timeout_ms=settings.kafka.poll_timeout_ms)
    topics = Topics(alerts=settings.kafka.alert_topic, dead_letters=settings.kafka.dlq_topic)
    processor = BatchProcessor(parser, store, scorer, sink, metrics, topics, top_k=settings.model.top_features)
    heartbeat = Heartbeat(settings.service.heartbeat_file)
    backoff = Backoff(settings.service.backoff_initial_s, settings.service.backoff_max_s)
    worker = Worker(source, processor, heartbeat, backoff, metrics)
    return Service(worker=worker, processor=processor, source=source, sink=sink, heartbeat=heartbeat,
                   metrics=metrics, scorer=scorer, store=store)


class BackgroundWorker:
    """A service running on a thread of this process (the demo, tests, benchmarks); `stop()` joins it."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vrae-worker", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.service.run(self._stop)
        except BaseException as error:  # surfaced to the owner by stop(), never lost in the thread
            self.error = error

    def start(self) -> "BackgroundWorker":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 20.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"worker did not stop within {timeout_s} s")
        if self.error is not None:
            raise self.error

    def __enter__(self) -> "BackgroundWorker":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def build_with_retry(settings: Settings, metrics: Metrics, stop: threading.Event) -> Service | None:
    """Start even while the broker or Redis is still coming up: back off and retry, never crash-loop.

    A bad model or setting (VraeError) is not transient: it propagates for the caller to report.
    """
    backoff = Backoff(settings.service.backoff_initial_s, settings.service.backoff_max_s)
    while not stop.is_set():
        try:
            return build_service(settings, metrics)
        except TRANSIENT_ERRORS as error:
            delay_s = backoff.next()
            log.warning("cannot reach a dependency at startup; retrying",
                        extra={"error": repr(error), "retry_in_s": delay_s})
            stop.wait(delay_s)
    return None
