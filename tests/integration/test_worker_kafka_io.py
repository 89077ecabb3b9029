"""The Kafka wrappers against the real (Tansu) broker."""

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


def test_sink_raises_when_delivery_is_not_confirmed(tmp_path) -> None:
    with local_services.start_tansu(log_dir=tmp_path) as broker:
        producer = KafkaProducer(bootstrap_servers=local_services.bootstrap(broker), request_timeout_ms=1000,
                                 max_block_ms=1000, retries=0)
        local_services.create_topics(local_services.bootstrap(broker), ["alerts"])
        sink = KafkaSink(producer, timeout_s=1)
        sink.send([OutboundMessage("alerts", b"k", b"v")])
        broker.stop()
        with pytest.raises(DeliveryError):
            sink.send([OutboundMessage("alerts", b"k", b"v")])
        sink.close(timeout_s=1)


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
