"""KafkaSink's contract with the producer: every send confirmed, and a producer that failed a batch retired."""

import pytest
from kafka.errors import KafkaError

from worker.exceptions import DeliveryError
from worker.kafka_io import KafkaSink
from worker.records import OutboundMessage


class Sent:
    """A delivery report, as kafka-python's send() returns one."""

    def __init__(self, error: KafkaError | None) -> None:
        self.error = error

    def get(self, timeout: float) -> None:
        if self.error is not None:
            raise self.error


class FatalProducer:
    """Stands in for kafka-python's producer after a fatal error: every send fails, for good."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.broken = False
        self.closed = False

    def send(self, topic: str, key: bytes, value: bytes, headers: list) -> Sent:
        if self.broken:
            return Sent(KafkaError("Unexpected error in InitProducerIdResponse"))
        self.sent.append(value)
        return Sent(None)

    def flush(self, timeout: float) -> None:
        pass

    def close(self, timeout: float) -> None:
        self.closed = True


def message(value: bytes) -> OutboundMessage:
    return OutboundMessage(topic="alerts", key=b"pump-1", value=value)


def test_a_producer_that_failed_a_batch_is_replaced_and_the_retry_delivers() -> None:
    made: list[FatalProducer] = []

    def connect() -> FatalProducer:
        made.append(FatalProducer())
        return made[-1]

    sink = KafkaSink(None, timeout_s=1.0, reconnect=connect)
    sink.send([message(b"1")])
    made[0].broken = True
    with pytest.raises(DeliveryError):
        sink.send([message(b"2")])
    assert made[0].closed  # retired: a producer in a fatal state would fail every later batch
    sink.send([message(b"2")])  # the batch's retry
    assert [p.sent for p in made] == [[b"1"], [b"2"]]
    sink.close()
    assert made[1].closed


def test_without_a_way_to_reconnect_the_producer_is_kept() -> None:
    producer = FatalProducer()
    sink = KafkaSink(producer, timeout_s=1.0)
    producer.broken = True
    with pytest.raises(DeliveryError):
        sink.send([message(b"1")])
    assert not producer.closed


def test_a_broker_that_cannot_be_reached_is_a_delivery_error() -> None:
    def unreachable() -> FatalProducer:
        raise KafkaError("NoBrokersAvailable")

    with pytest.raises(DeliveryError):
        KafkaSink(None, reconnect=unreachable).send([message(b"1")])
