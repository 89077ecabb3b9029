"""The Kafka wrappers against the real (Tansu) broker."""

import gc
import threading
import time

import pytest
from kafka import KafkaProducer

from worker.kafka_io import DeliveryError, KafkaSink, KafkaSource, build_consumer, build_producer
from worker.metrics import Metrics
from worker.records import OutboundMessage
from worker.tools import local_services

pytestmark = pytest.mark.integration


def test_sink_returns_only_after_the_broker_confirmed_every_message(make_settings, kafka_tools) -> None:
    settings = make_settings(with_model=False)
    sink = KafkaSink(build_producer(settings.kafka), timeout_s=10)
    headers = (("error", b"not_json"), ("source_offset", b"3"))
    sink.send([OutboundMessage(settings.kafka.dlq_topic, b"k\xff", b"\x00raw", headers),
               OutboundMessage(settings.kafka.dlq_topic, None, b"second")])
    sink.close()
    records = kafka_tools.read(settings.kafka.dlq_topic, lambda got: len(got) >= 2, timeout_s=10)
    assert [(r.key, r.value) for r in records] == [(b"k\xff", b"\x00raw"), (None, b"second")]
    assert list(records[0].headers) == list(headers)


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_sink_raises_when_delivery_is_not_confirmed_and_close_still_releases_the_producer(tmp_path) -> None:
    with local_services.start_tansu(log_dir=tmp_path) as broker:
        producer = KafkaProducer(bootstrap_servers=local_services.bootstrap(broker), client_id="unconfirmed",
                                 request_timeout_ms=1000, max_block_ms=1000, retries=0)
        local_services.create_topics(local_services.bootstrap(broker), ["alerts"])
        sink = KafkaSink(producer, timeout_s=1)
        sink.send([OutboundMessage("alerts", b"k", b"v")])
        broker.stop()
        with pytest.raises(DeliveryError):
            sink.send([OutboundMessage("alerts", b"k", b"v")])
        sink.close(timeout_s=1)
    # The undelivered record made kafka-python's close() give up before it stopped its I/O thread; the
    # thread lived on and the producer's __del__ raised when it was collected.
    assert "unconfirmed-network-thread" not in {thread.name for thread in threading.enumerate()}
    del sink, producer
    gc.collect()


def test_producer_built_from_settings_expires_what_it_could_not_deliver(make_settings) -> None:
    """The client gives up on a record when the worker does (VRAE_KAFKA__DELIVERY_TIMEOUT_S), not 2 minutes
    later: nothing of a failed batch is sent late, and max_request_size is the dead letters' limit."""
    settings = make_settings(with_model=False, delivery_timeout_s=4.0, producer_max_request_bytes=500_000)
    producer = build_producer(settings.kafka)
    try:
        assert producer.config["delivery_timeout_ms"] == 4000
        assert producer.config["request_timeout_ms"] + producer.config["linger_ms"] <= 4000
        assert producer.config["max_block_ms"] == 4000
        assert producer.config["max_request_size"] == 500_000
    finally:
        producer.close()


def test_source_reports_lag_and_commits_only_partitions_it_owns(make_settings, kafka_tools) -> None:
    settings = make_settings(with_model=False)
    kafka_tools.produce(settings.kafka.input_topic, [(b"s", b"%d" % i) for i in range(5)])
    metrics = Metrics()
    source = KafkaSource(build_consumer(settings.kafka), metrics, poll_timeout_ms=200)
    records = []
    deadline = time.monotonic() + 30
    while len(records) < 5 and time.monotonic() < deadline:
        records += source.poll()
    assert [r.value for r in records] == [b"%d" % i for i in range(5)]
    lag = metrics.registry.get_sample_value("vrae_consumer_lag", {"topic": settings.kafka.input_topic,
                                                                   "partition": "0"})
    assert lag == 0
    assert source.commit({(settings.kafka.input_topic, 0): 5, ("not-mine", 0): 7})
    source.close()
    assert kafka_tools.committed(settings.kafka.group_id) == {(settings.kafka.input_topic, 0): 5}
