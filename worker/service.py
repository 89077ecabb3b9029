"""The composition root: wires settings, model, store, Kafka and metrics, then runs the loop.

The loop is the README sentence: poll a batch, process it (windows, scores, alerts, dead letters,
delivery confirmed), commit its offsets, beat the heartbeat; with overlap, the next batch is polled
and parsed while one is processed (see `Worker`). When Redis or the broker is down the batch is
rewound and retried after an exponential, capped back-off; a stop request finishes the batch first.
"""

import logging
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import redis
from kafka.errors import KafkaError

from vrae_model.artifact import load_artifact
from worker.config import DetectionSettings, ModelSettings, Settings
from worker.detection import Detector, settings_from
from worker.events import EventParser, SourceRecord
from worker.health import Heartbeat
from worker.kafka_io import DeliveryError, KafkaSink, KafkaSource, build_consumer, build_producer
from worker.metrics import Metrics
from worker.model_reload import ReloadingScorer, ReloadOutcome, log_reload
from worker.pipeline import BatchProcessor, BatchReport, PreparedBatch, Topics
from worker.redis_store import RedisClient, RedisDetectorStore, RedisWindowStore, connect
from worker.scorer import Scorer
from worker.windows import WindowSpec

log = logging.getLogger("worker")

GIL_SWITCH_INTERVAL_S = 0.0005  # with overlap_batches; see build_service

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


@dataclass
class InFlight:
    """A batch handed to the scoring thread; its records are what a failure rewinds."""

    records: list[SourceRecord]
    report: "Future[BatchReport]"


class Worker:
    """Runs batches until `stop` is set; every piece is injected so tests can run it in-process.

    With `overlap` (the service's default) a second thread completes one batch (window store, forward
    pass, alerts, delivery) while this one polls and parses the next. The Kafka client and the parser
    are pure Python and hold the GIL; the Redis round trip and the forward pass release it, so on two
    cores they hide behind the next poll. The window store still sees one batch at a time, in order,
    and offsets are committed in order, each after its own batch was delivered: the delivery
    guarantees are those of one batch at a time. A failure rewinds the failed batch and the one
    polled behind it.
    """

    def __init__(self, source: Source, processor: BatchProcessor, heartbeat: Heartbeat, backoff: Backoff,
                 metrics: Metrics, model: ReloadingScorer | None = None, *, overlap: bool = False) -> None:
        self._source = source
        self._processor = processor
        self._heartbeat = heartbeat
        self._backoff = backoff
        self._metrics = metrics
        self._model = model
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vrae-score") if overlap else None
        self._in_flight: InFlight | None = None

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self._heartbeat.beat()
                try:
                    records = self._source.poll()
                except TRANSIENT_ERRORS as error:
                    # The batch in flight may still succeed; if it fails, it is rewound.
                    if self._finish_in_flight(stop):
                        self._retry_later([], error, stop)
                    continue
                prepared = self._processor.prepare(records) if records else None
                if not self._finish_in_flight(stop, later=records):
                    continue
                if not records:
                    self._backoff.reset()  # the broker answered and nothing is failing
                self._reload_model()  # nothing is being scored now, and the next batch is not yet
                if prepared is not None:
                    self._in_flight = InFlight(records, self._start(prepared))
                    if self._pool is None:
                        self._finish_in_flight(stop)
        finally:
            try:
                self._finish_in_flight(stop)  # a stop request finishes the batch in flight first
            finally:
                if self._pool is not None:
                    self._pool.shutdown(wait=True)

    def _start(self, prepared: PreparedBatch) -> "Future[BatchReport]":
        if self._pool is not None:
            return self._pool.submit(self._processor.complete, prepared)
        report: Future[BatchReport] = Future()
        try:
            report.set_result(self._processor.complete(prepared))
        except Exception as error:  # re-raised by result(), in the same place as with overlap
            report.set_exception(error)
        return report

    def _finish_in_flight(self, stop: threading.Event, later: Sequence[SourceRecord] = ()) -> bool:
        """Wait for the batch in flight and commit it.

        False when it failed on an unavailable dependency: it and `later` (records polled since) were
        rewound, to be replayed after a back-off.
        """
        batch, self._in_flight = self._in_flight, None
        if batch is not None:
            try:
                report = batch.report.result()
                self._source.commit(report.offsets)
            except TRANSIENT_ERRORS as error:
                self._retry_later([*batch.records, *later], error, stop)
                return False
            self._backoff.reset()
        return True

    def _reload_model(self) -> None:
        """Between batches: swap in a new model file if there is a valid one (see model_reload.py)."""
        if self._model is None:
            return
        reload = self._model.maybe_reload()
        if reload.outcome is not ReloadOutcome.UNCHANGED:
            self._metrics.model_reloads.labels(reload.outcome.value).inc()
            log_reload(reload)

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
    scorer: Scorer | ReloadingScorer
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
    model = reloading_scorer(scorer, settings.model) if settings.model.reload_interval_s > 0 else None
    spec = WindowSpec(window=scorer.info.window, n_features=len(scorer.info.features),
                      stride=settings.window.stride, replay_margin=settings.window.replay_margin,
                      ttl_s=settings.window.ttl_s)
    client = connect(settings.redis)
    store = RedisWindowStore(client, spec, key_prefix=settings.redis.key_prefix)
    parser = EventParser(feature_names=scorer.info.features, max_bytes=settings.events.max_bytes,
                         max_series_id_length=settings.events.max_series_id_length)
    sink = KafkaSink(build_producer(settings.kafka), timeout_s=settings.kafka.delivery_timeout_s)
    source = KafkaSource(build_consumer(settings.kafka), metrics, poll_timeout_ms=settings.kafka.poll_timeout_ms)
    topics = Topics(alerts=settings.kafka.alert_topic, dead_letters=settings.kafka.dlq_topic)
    processor = BatchProcessor(parser, store, model or scorer, sink, metrics, topics, top_k=settings.model.top_features,
                               detector=build_detector(settings, client))
    heartbeat = Heartbeat(settings.service.heartbeat_file)
    backoff = Backoff(settings.service.backoff_initial_s, settings.service.backoff_max_s)
    if settings.service.overlap_batches:
        # The scoring thread wakes from the forward pass and from Redis and broker replies several times
        # a batch and must win the GIL back from the polling thread each time. At Python's default 5 ms
        # switch interval those waits ate the overlap (28.8-32.7k events/s against 30.4-31.3k without
        # it); at 0.5 ms the overlap drains 35-37k (benchmarks/RESULTS.md). Process-wide, set once here.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    worker = Worker(source, processor, heartbeat, backoff, metrics, model=model,
                    overlap=settings.service.overlap_batches)
    return Service(worker=worker, processor=processor, source=source, sink=sink, heartbeat=heartbeat,
                   metrics=metrics, scorer=model or scorer, store=store)


def reloading_scorer(scorer: Scorer, settings: ModelSettings) -> ReloadingScorer:
    def load(path: Path, sha256: str | None) -> Scorer:
        return Scorer(load_artifact(path, expected_sha256=sha256), max_batch_size=settings.max_batch_size,
                      threshold=settings.threshold)

    return ReloadingScorer(scorer, settings.path, load, sha256=settings.sha256,
                           check_interval_s=settings.reload_interval_s)


def build_detector(settings: Settings, client: RedisClient) -> Detector | None:
    """The per-series calibration + incident detector, when VRAE_DETECTION__MODE=incidents."""
    config: DetectionSettings = settings.detection
    if config.mode != "incidents":
        return None
    detector_settings = settings_from(config)
    store = RedisDetectorStore(client, key_prefix=settings.redis.key_prefix, ttl_s=settings.window.ttl_s)
    return Detector(store, detector_settings, top_k=settings.model.top_features, scores_topic=config.scores_topic)


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
