"""Thin kafka-python wrappers: a source that polls/commits/rewinds and a sink that confirms delivery."""

import logging
from collections.abc import Callable, Sequence

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from worker.config import KafkaSettings
from worker.events import SourceRecord
from worker.exceptions import DeliveryError
from worker.metrics import Metrics
from worker.records import OutboundMessage

log = logging.getLogger("worker.kafka")


class _LogRebalance(ConsumerRebalanceListener):
    # kafka-python 3.x runs listeners on its IO thread, where a blocking commit() raises; committing
    # happens only at the end of a batch, for the partitions still owned, so this only logs.
    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        log.info("partitions revoked", extra={"partitions": sorted(f"{tp.topic}-{tp.partition}" for tp in revoked)})

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned", extra={"partitions": sorted(f"{tp.topic}-{tp.partition}" for tp in assigned)})


def build_consumer(settings: KafkaSettings) -> KafkaConsumer:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers.split(","),
        group_id=settings.group_id,
        client_id=settings.client_id,
        enable_auto_commit=False,
        auto_offset_reset=settings.auto_offset_reset,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_poll_interval_ms=settings.max_poll_interval_ms,
        max_poll_records=settings.max_poll_records,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        bootstrap_timeout_ms=settings.bootstrap_timeout_ms,
        **settings.security_config(),
    )
    consumer.subscribe([settings.input_topic], listener=_LogRebalance())
    return consumer


def build_producer(settings: KafkaSettings) -> KafkaProducer:
    # A record the broker has not confirmed within delivery_timeout_s fails inside the client too (its
    # own default is 2 minutes): no record of a failed batch lingers to be sent late, and close() finds
    # nothing pending once a batch has failed.
    delivery_timeout_ms = max(round(settings.delivery_timeout_s * 1000), settings.producer_linger_ms + 1)
    return KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers.split(","),
        client_id=f"{settings.client_id}-producer",
        acks="all",
        linger_ms=settings.producer_linger_ms,
        max_request_size=settings.producer_max_request_bytes,
        delivery_timeout_ms=delivery_timeout_ms,
        request_timeout_ms=min(30_000, delivery_timeout_ms - settings.producer_linger_ms),
        max_block_ms=delivery_timeout_ms,
        bootstrap_timeout_ms=settings.bootstrap_timeout_ms,
        **settings.security_config(),
    )


class KafkaSource:
    """Polls records, reports lag, commits only partitions still owned, rewinds a failed batch."""

    def __init__(self, consumer: KafkaConsumer, metrics: Metrics, poll_timeout_ms: int = 500,
                 commit_timeout_ms: int = 30_000) -> None:
        self._consumer = consumer
        self._metrics = metrics
        self._poll_timeout_ms = poll_timeout_ms
        # Without a bound a commit to a hung broker waits the consumer's request timeout (5 minutes).
        self._commit_timeout_ms = commit_timeout_ms

    def poll(self) -> list[SourceRecord]:
        batches = self._consumer.poll(timeout_ms=self._poll_timeout_ms)
        records = [
            SourceRecord(topic=r.topic, partition=r.partition, offset=r.offset, key=r.key, value=r.value,
                         timestamp_ms=r.timestamp)
            for partition_records in batches.values()
            for r in partition_records
        ]
        self._report_lag()
        return records

    def _report_lag(self) -> None:
        # highwater() comes with each fetch response; end_offsets() would be an extra (and, on Tansu,
        # wrong) round trip. Never raises: the records of this poll are already taken from the consumer.
        for tp in self._consumer.assignment():
            try:
                highwater = self._consumer.highwater(tp)
                position = self._consumer.position(tp, timeout_ms=0) if highwater is not None else None
            except KafkaError:  # revoked between assignment() and here
                continue
            if highwater is not None and position is not None:
                self._metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(highwater - position, 0))

    def assigned(self) -> set[tuple[str, int]]:
        """Partitions this consumer owns now (empty until the group has been joined)."""
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def commit(self, offsets: dict[tuple[str, int], int]) -> bool:
        """Commit the batch's offsets for partitions still assigned; False (and counted) on failure."""
        owned = self._consumer.assignment()
        to_commit = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in offsets.items()
            if TopicPartition(topic, partition) in owned
        }
        if not to_commit:
            return True
        try:
            self._consumer.commit(offsets=to_commit, timeout_ms=self._commit_timeout_ms)
        except (CommitFailedError, KafkaError) as error:
            # Safe: the batch will be consumed again and the window store recognises the replay.
            self._metrics.commit_failures.inc()
            log.warning("offset commit failed; the batch will be replayed", extra={"error": repr(error)})
            return False
        return True

    def rewind(self, records: Sequence[SourceRecord]) -> None:
        """Seek owned partitions back to the first record of a batch that could not be finished."""
        first: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            first[tp] = min(first.get(tp, record.offset), record.offset)
        owned = self._consumer.assignment()
        for tp, offset in first.items():
            if tp in owned:
                self._consumer.seek(tp, offset)

    def close(self, timeout_ms: int = 5000) -> None:
        self._consumer.close(autocommit=False, timeout_ms=timeout_ms)


class KafkaSink:
    """Sends messages and waits for every delivery report (flush() alone never raises).

    With `reconnect`, a batch that fails to deliver retires the producer and the next send starts a new
    one. kafka-python's idempotent producer can enter a fatal state after a broker stall (a failed
    InitProducerId after an out-of-order sequence, seen against a real broker in the fault tests) in
    which it fails every later send: kept, it would hold the partition back for good. A new producer
    costs one connection per failed batch, which is retried anyway."""

    def __init__(self, producer: KafkaProducer | None, timeout_s: float = 30.0,
                 reconnect: Callable[[], KafkaProducer] | None = None) -> None:
        if producer is None and reconnect is None:
            raise ValueError("a producer or a way to make one is needed")
        self._producer = producer
        self._timeout_s = timeout_s
        self._reconnect = reconnect

    def send(self, messages: Sequence[OutboundMessage]) -> None:
        if not messages:
            return
        try:
            if self._producer is None:
                self._producer = self._reconnect()
            futures = [self._producer.send(m.topic, key=m.key, value=m.value, headers=list(m.headers))
                       for m in messages]
            self._producer.flush(timeout=self._timeout_s)
            for future in futures:
                future.get(timeout=self._timeout_s)
        except KafkaError as error:
            if self._reconnect is not None:
                self._retire()
            raise DeliveryError(f"{len(messages)} messages not confirmed: {error!r}") from error

    def _retire(self) -> None:
        """Drop the producer of a failed batch: its records are produced again when the batch replays."""
        producer, self._producer = self._producer, None
        if producer is not None:
            self._close(producer, timeout_s=1.0)

    def close(self, timeout_s: float = 5.0) -> None:
        """Release the producer, always: pending messages get `timeout_s` to be delivered, then are dropped.

        Only messages of uncommitted batches can be pending here: they are produced again on replay."""
        if self._producer is not None:
            self._close(self._producer, timeout_s)

    @staticmethod
    def _close(producer: KafkaProducer, timeout_s: float) -> None:
        try:
            producer.close(timeout=timeout_s)
        except KafkaError as error:
            # close() flushes first and gives up on the flush's timeout before it stops the client's I/O
            # thread: the thread would live on, and the producer's __del__ would raise later. Failing the
            # pending records (the client's own force-close) lets close() finish.
            log.warning("producer closed with undelivered messages", extra={"error": repr(error)})
            producer._sender.force_close()
            try:
                producer.close(timeout=timeout_s)
            except KafkaError as still:  # its I/O thread did not stop in time: nothing more to do at exit
                log.warning("producer did not close", extra={"error": repr(still)})
