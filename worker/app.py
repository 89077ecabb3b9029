"""The composition root: wires settings, model, stores, Kafka and metrics into a running loop.

Everything else receives its collaborators; only this module reads `Settings` and builds clients.
"""

import logging
import math
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from vrae_model.artifact import load_artifact
from vrae_model.windowing import DEFAULT_GAP_FACTOR, GapPolicy
from worker.checkpoint import Checkpoint
from worker.config import DetectionSettings, ModelSettings, Settings
from worker.detection.calibration import CalibrationSettings
from worker.detection.detector import Detector, DetectorSettings
from worker.events import EventParser
from worker.health import Heartbeat
from worker.kafka_io import KafkaSink, KafkaSource, build_consumer, build_producer
from worker.loop import TRANSIENT_ERRORS, Backoff, Loop, Runner, Sequential, TwoStage, process_and_seal
from worker.metrics import Metrics
from worker.model_reload import ReloadingScorer
from worker.pipeline import Pipeline, Topics
from worker.scorer import ModelInfo, Scorer
from worker.state.codec import state_layout
from worker.state.redis_store import RedisStateStore, connect
from worker.windows import WindowSpec

log = logging.getLogger("worker")

GIL_SWITCH_INTERVAL_S = 0.0005  # with overlap_batches; see build_service


@dataclass
class Service:
    """A built worker and what must be closed after it ran."""

    loop: Loop
    pipeline: Pipeline
    checkpoint: Checkpoint
    source: KafkaSource
    sink: KafkaSink
    heartbeat: Heartbeat
    metrics: Metrics
    scorer: Scorer | ReloadingScorer
    store: RedisStateStore

    def run(self, stop: threading.Event) -> bool:
        """Runs until `stop`; False when the last batch could not be committed (see Loop.run)."""
        log.info("worker started", extra={"model": self.scorer.info.version, "sha256": self.scorer.info.sha256})
        try:
            committed = self.loop.run(stop)
        finally:
            self.close()
        if not committed:
            log.error("the last batch could not be committed; its records will be consumed again")
        log.info("worker stopped", extra={"last_batch_committed": committed})
        return committed

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
    client = connect(settings.redis)
    detector = build_detector(settings)
    store = RedisStateStore(client, window_spec(settings, scorer.info), key_prefix=settings.redis.key_prefix,
                            max_series=settings.window.max_series,
                            detector_cache_bytes=int(settings.redis.detector_cache_mb * 2**20),
                            detector_layout=(state_layout(len(scorer.info.features), detector.settings.calibration)
                                             if detector is not None else None))
    parser = EventParser(feature_names=scorer.info.features, max_bytes=settings.events.max_bytes,
                         max_series_id_length=settings.events.max_series_id_length)
    sink = KafkaSink(build_producer(settings.kafka), timeout_s=settings.kafka.delivery_timeout_s,
                     reconnect=lambda: build_producer(settings.kafka))
    source = KafkaSource(build_consumer(settings.kafka), metrics, poll_timeout_ms=settings.kafka.poll_timeout_ms,
                         commit_timeout_ms=round(settings.kafka.delivery_timeout_s * 1000))
    topics = Topics(alerts=settings.kafka.alert_topic, dead_letters=settings.kafka.dlq_topic,
                    max_message_bytes=settings.kafka.producer_max_request_bytes)
    pipeline = Pipeline(parser, store, model or scorer, metrics, topics, top_k=settings.model.top_features,
                        detector=detector)
    checkpoint = Checkpoint(sink, source, metrics)
    heartbeat = Heartbeat(settings.service.heartbeat_file)
    backoff = Backoff(settings.service.backoff_initial_s, settings.service.backoff_max_s)
    loop = Loop(source, pipeline, checkpoint, build_runner(settings, pipeline, checkpoint), heartbeat, backoff,
                metrics, model=model)
    return Service(loop=loop, pipeline=pipeline, checkpoint=checkpoint, source=source, sink=sink, heartbeat=heartbeat, metrics=metrics,
                   scorer=model or scorer, store=store)


def build_runner(settings: Settings, pipeline: Pipeline, checkpoint: Checkpoint) -> Runner:
    stage = process_and_seal(pipeline, checkpoint)
    if not settings.service.overlap_batches:
        return Sequential(stage)
    # The scoring thread wakes from the forward pass and from Redis and broker replies several times
    # a batch and must win the GIL back from the polling thread each time. At Python's default 5 ms
    # switch interval those waits ate the overlap (28.8-32.7k events/s against 30.4-31.3k without
    # it); at 0.5 ms the overlap drains 35-37k (benchmarks/RESULTS.md). Process-wide, set once here.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    return TwoStage(stage)


def reloading_scorer(scorer: Scorer, settings: ModelSettings) -> ReloadingScorer:
    def load(path: Path, sha256: str | None) -> Scorer:
        return Scorer(load_artifact(path, expected_sha256=sha256), max_batch_size=settings.max_batch_size,
                      threshold=settings.threshold)

    return ReloadingScorer(scorer, settings.path, load, sha256=settings.sha256,
                           check_interval_s=settings.reload_interval_s)


def window_spec(settings: Settings, model: ModelInfo) -> WindowSpec:
    """The window policy for a model: its window and features, the configured stride and gap factor,
    and the training data's interval as every new series' first estimate of its own."""
    return WindowSpec(window=model.window, n_features=len(model.features), stride=settings.window.stride,
                      gaps=GapPolicy(factor=settings.window.gap_factor, interval_ms=model.interval_ms),
                      ttl_s=settings.window.ttl_s)


def build_detector(settings: Settings) -> Detector | None:
    """The per-series calibration + incident detector, when VRAE_DETECTION__MODE=incidents."""
    config: DetectionSettings = settings.detection
    if config.mode != "incidents":
        return None
    return Detector(detector_settings(config, settings.window.gap_factor, settings.window.stride),
                    top_k=settings.model.top_features, scores_topic=config.scores_topic)


def detector_settings(config: DetectionSettings, gap_factor: float = DEFAULT_GAP_FACTOR,
                      stride: int = 1) -> DetectorSettings:
    """The detector's settings from the worker's configuration (VRAE_DETECTION__*, and the window gap
    factor: a window spanning an outage opens nothing; the stride: the events new in each window)."""
    return DetectorSettings(CalibrationSettings(
        open_surprise=config.open_surprise, close_surprise=config.close_surprise, close_after=config.close_after,
        halflife=config.memory_windows, settle_ms=int(config.settle_hours * 3_600_000),
        skip_daily_recurrences=config.skip_daily_recurrences,
        gap_factor=gap_factor if gap_factor > 0 else math.inf, stride=stride))


class BackgroundWorker:
    """A service running on a thread of this process (the demo, tests, benchmarks); `stop()` joins it."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vrae-worker", daemon=True)
        self.error: BaseException | None = None
        self.committed: bool | None = None  # after stop(): did the last batch get committed (Service.run)

    def _run(self) -> None:
        try:
            self.committed = self.service.run(self._stop)
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
