"""Shared fixtures: real redis-server and Tansu broker on free ports, and a tiny trained artifact.

Services are session-scoped (started once, seconds); every test gets its own Redis database flush and
its own topics and consumer group, so tests never see each other's data.
"""

import itertools
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from fixtures import make_tiny_model
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from worker.config import (DetectionSettings, EventSettings, KafkaSettings, ModelSettings, RedisSettings,
                           ServiceSettings, Settings, WindowSettings)
from worker.tools import local_services

# kafka-python settings that join a consumer group in ~3 s on Tansu (the defaults take ~23 s).
FAST_CONSUMER = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 5000,
                 "poll_timeout_ms": 200, "producer_linger_ms": 0, "delivery_timeout_s": 10.0}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_services.LocalProcess]:
    try:
        service = local_services.start_redis(log_dir=tmp_path_factory.mktemp("redis-log"))
    except local_services.ServiceError as error:
        pytest.fail(str(error))
    with service:
        yield service


@pytest.fixture
def redis_url(redis_server: local_services.LocalProcess) -> str:
    """A flushed database on the session's redis-server."""
    url = local_services.redis_url(redis_server)
    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()
    return url


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_services.LocalProcess]:
    with local_services.start_tansu(log_dir=tmp_path_factory.mktemp("tansu-log")) as service:
        yield service


@pytest.fixture(scope="session")
def bootstrap_servers(kafka_broker: local_services.LocalProcess) -> str:
    return local_services.bootstrap(kafka_broker)


@dataclass(frozen=True)
class KafkaTools:
    """Produce to, read back from, and inspect consumer groups on the test broker."""

    bootstrap: str

    def produce(self, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> int:
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        futures = [producer.send(topic, key=key, value=value) for key, value in records]
        producer.flush()
        for future in futures:
            future.get(timeout=10)
        producer.close()
        return len(futures)

    def produce_events(self, topic: str, events: Iterable[tuple[str, int, list[float]]]) -> int:
        """Produce JSON events given as (series_id, ts_ms, values), keyed by series id."""
        return self.produce(topic, [(series.encode(), json.dumps({"series_id": series, "ts": ts,
                                                                  "values": values}).encode())
                                    for series, ts, values in events])

    def read(self, topic: str, done: Callable[[list], bool], timeout_s: float = 60.0) -> list:
        """Records of partition 0 of `topic` from the beginning, until `done(records)` or the timeout."""
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False)
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        records: list = []
        deadline = time.monotonic() + timeout_s
        try:
            while not done(records) and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=200).values():
                    records.extend(batch)
        finally:
            consumer.close()
        return records

    def committed(self, group_id: str) -> dict[tuple[str, int], int]:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            offsets = admin.list_group_offsets(group_id).get(group_id, {})
        finally:
            admin.close()
        return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


@pytest.fixture(scope="session")
def kafka_tools(bootstrap_servers: str) -> KafkaTools:
    return KafkaTools(bootstrap_servers)


@dataclass(frozen=True)
class TinyModel:
    path: Path
    sha256: str
    window: int
    features: tuple[str, ...]
    threshold: float
    clean_csv: Path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A real trained VRAE (2 features, window 16): the committed tests/fixtures/tiny-model.pt, so that no
    test run trains it (its recipe: tests/fixtures/make_tiny_model.py), and the clean history it was
    trained on. Copied, so a test that replaces model files never touches the committed one."""
    from vrae_model.artifact import load_artifact

    root = tmp_path_factory.mktemp("tiny-model")
    path = Path(shutil.copyfile(make_tiny_model.ARTIFACT, root / "model.pt"))
    artifact = load_artifact(path)
    return TinyModel(path=path, sha256=artifact.sha256, window=make_tiny_model.WINDOW,
                     features=make_tiny_model.FEATURES, threshold=float(artifact.metadata["threshold"]),
                     clean_csv=make_tiny_model.history_csv(root / "clean.csv"))


_unique = itertools.count()


def _model_settings(request: pytest.FixtureRequest) -> ModelSettings:
    tiny_model: TinyModel = request.getfixturevalue("tiny_model")
    return ModelSettings(path=tiny_model.path, sha256=tiny_model.sha256)


@pytest.fixture
def make_settings(request: pytest.FixtureRequest, tmp_path: Path, bootstrap_servers: str,
                  redis_url: str) -> Callable[..., Settings]:
    """Settings for a worker on the test services, with fresh topics and group (created on the broker).

    The tiny model is trained on first use only, so Kafka-only tests do not pay for it.
    """

    def make(*, stride: int = 1, mode: str | None = None, create: bool = True, with_model: bool = True,
             **kafka: object) -> Settings:
        suffix = f"{next(_unique)}-{uuid.uuid4().hex[:6]}"
        kafka_settings = KafkaSettings(
            bootstrap_servers=bootstrap_servers, input_topic=f"events-{suffix}", alert_topic=f"alerts-{suffix}",
            dlq_topic=f"dlq-{suffix}", group_id=f"group-{suffix}", **{**FAST_CONSUMER, **kafka})
        if create:
            local_services.create_topics(bootstrap_servers, [kafka_settings.input_topic, kafka_settings.alert_topic,
                                                             kafka_settings.dlq_topic])
        return Settings(
            _env_file=None,
            kafka=kafka_settings,
            redis=RedisSettings(url=redis_url),
            model=_model_settings(request) if with_model else ModelSettings(),
            window=WindowSettings(stride=stride),
            detection=DetectionSettings(mode=mode) if mode else DetectionSettings(),
            events=EventSettings(),
            service=ServiceSettings(metrics_port=0, heartbeat_file=tmp_path / f"heartbeat-{suffix}",
                                    backoff_initial_s=0.1, backoff_max_s=1.0),
        )

    return make
