"""The run loop: poll -> process -> checkpoint, until stopped.

    while not stopped:
        records = source.poll()
        batch   = pipeline.prepare(records)        # parse: no state, no I/O
        for sealed in runner.run(batch):           # pipeline.process + checkpoint.seal (deliver, write)
            checkpoint.commit(sealed)              # offsets, on this thread, in batch order

Two runners. `Sequential` processes each batch on the loop's thread. `TwoStage` (the service's default,
VRAE_SERVICE__OVERLAP_BATCHES) processes batch k on a second thread while this one polls and parses
batch k+1: the Kafka client and the parser are pure Python and hold the GIL, while the Redis round
trip and the forward pass release it, so on two cores they hide behind the next poll. The window store
still sees one batch at a time, in order (batch k+1 is peeked at only after batch k was written), and
offsets are committed in order, each after its own batch was sealed: the guarantees are those of one
batch at a time (worker.checkpoint).

When Redis or the broker is down, the failed batch (with two stages, also the one polled behind it)
is rewound and retried after an exponential, capped back-off. A hot model swap happens between two
batches, never while one is processed. A stop request finishes the batch in flight first.
"""

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import redis
from kafka.errors import (CorruptRecordError, InvalidRecordError, KafkaError, MessageSizeTooLargeError,
                          RecordListTooLargeError, UnsupportedForMessageFormatError)

from worker.checkpoint import Checkpoint, SealedBatch
from worker.events import SourceRecord
from worker.exceptions import BatchFailed, DeliveryError
from worker.health import Heartbeat
from worker.metrics import Metrics
from worker.model_reload import ReloadingScorer, ReloadOutcome, log_reload
from worker.pipeline import Pipeline, PreparedBatch, merged

log = logging.getLogger("worker")

# Failures that mean "a dependency is unavailable": retry the batch later, never crash-loop.
TRANSIENT_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                    redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError, KafkaError, DeliveryError)
# Broker errors about one record, not about the broker: retrying the batch would fail the same way forever.
RECORD_ERRORS = (CorruptRecordError, InvalidRecordError, MessageSizeTooLargeError, RecordListTooLargeError,
                 UnsupportedForMessageFormatError)

Stage = Callable[[PreparedBatch], SealedBatch]


def is_transient(error: BaseException) -> bool:
    """Whether a dependency is unavailable (retry the whole batch later), rather than something in the
    batch being wrong (find the record and dead-letter it)."""
    if isinstance(error, DeliveryError) and error.__cause__ is not None:
        return is_transient(error.__cause__)
    return isinstance(error, TRANSIENT_ERRORS) and not isinstance(error, RECORD_ERRORS)


def process_and_seal(pipeline: Pipeline, checkpoint: Checkpoint) -> Stage:
    """What a runner does with each parsed batch: process it, deliver its records and write its state
    (worker.checkpoint); only the offset commit is left to the loop.

    No record can stop a partition: when anything but an unavailable dependency fails a batch, the batch
    is split in halves and each is processed again, down to the record that fails alone, which becomes
    a dead letter (reason `internal`, naming the exception). A part that went through before another
    failed is replayed harmlessly (worker.checkpoint), so a poison record costs about log2(batch)
    re-runs and is tried at most once on its own."""
    def stage(batch: PreparedBatch) -> SealedBatch:
        try:
            return checkpoint.seal(pipeline.process(batch))
        except Exception as error:
            if is_transient(error):
                raise
            return isolate(batch.records, error)

    def isolate(records: Sequence[SourceRecord], error: Exception) -> SealedBatch:
        if len(records) == 1:
            record = records[0]
            log.warning("a record failed on its own; dead-lettered",
                        extra={"error": repr(error), "partition": record.partition, "offset": record.offset})
            try:
                return checkpoint.seal(pipeline.quarantine(record, error))
            except Exception as dead_letter_error:
                if is_transient(dead_letter_error):
                    raise
                # Even its dead letter is refused: send one without the original bytes, headers only.
                log.error("the dead letter was refused; sending it without the record's key and value",
                          extra={"error": repr(dead_letter_error), "offset": record.offset})
                return checkpoint.seal(pipeline.quarantine(record._replace(key=None, value=b""), error))
        log.warning("a batch failed on a record; processing it in parts",
                    extra={"error": repr(error), "records": len(records)})
        half = len(records) // 2
        parts = [stage(pipeline.prepare(part)) for part in (records[:half], records[half:])]
        return SealedBatch(records, merged([part.report for part in parts]))

    return stage


class Source(Protocol):
    def poll(self) -> list[SourceRecord]: ...

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


class Sequential:
    """Processes and seals each batch on the loop's thread, as soon as it is parsed."""

    def __init__(self, stage: Stage) -> None:
        self._stage = stage

    def run(self, batch: PreparedBatch | None, between: Callable[[], None]) -> list[SealedBatch]:
        """The batches sealed by this call: `batch` itself. `between` runs first (no batch is in flight)."""
        between()
        if batch is None:
            return []
        try:
            return [self._stage(batch)]
        except Exception as error:
            if not is_transient(error):
                raise
            raise BatchFailed(batch.records, error) from error

    def drain(self) -> list[SealedBatch]:
        return []

    def close(self) -> None:
        pass


class TwoStage:
    """Processes and seals batch k on a second thread while the loop polls and parses batch k+1."""

    def __init__(self, stage: Stage) -> None:
        self._stage = stage
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vrae-score")
        self._in_flight: tuple[PreparedBatch, Future[SealedBatch]] | None = None

    def run(self, batch: PreparedBatch | None, between: Callable[[], None]) -> list[SealedBatch]:
        """Waits for the batch in flight, runs `between` while nothing is in flight, then starts `batch`.

        Returns the batch that was in flight, now sealed. If it failed, raises BatchFailed with its
        records and those of `batch`, which was polled behind it and must be replayed after it."""
        done = self._wait(behind=batch.records if batch is not None else ())
        between()
        if batch is not None:
            self._in_flight = (batch, self._pool.submit(self._stage, batch))
        return done

    def drain(self) -> list[SealedBatch]:
        return self._wait(behind=())

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def _wait(self, behind: Sequence[SourceRecord]) -> list[SealedBatch]:
        if self._in_flight is None:
            return []
        batch, sealed = self._in_flight
        self._in_flight = None
        try:
            return [sealed.result()]
        except Exception as error:
            if not is_transient(error):
                raise
            raise BatchFailed([*batch.records, *behind], error) from error


Runner = Sequential | TwoStage


class Loop:
    """Runs batches until `stop` is set; every piece is injected so tests can run it in-process."""

    def __init__(self, source: Source, pipeline: Pipeline, checkpoint: Checkpoint, runner: Runner,
                 heartbeat: Heartbeat, backoff: Backoff, metrics: Metrics,
                 model: ReloadingScorer | None = None) -> None:
        self._source = source
        self._pipeline = pipeline
        self._checkpoint = checkpoint
        self._runner = runner
        self._heartbeat = heartbeat
        self._backoff = backoff
        self._metrics = metrics
        self._model = model

    def run(self, stop: threading.Event) -> bool:
        """Runs until `stop`; True when the worker stopped with every batch it took committed.

        False when the last batch could not be delivered or committed (say the broker hangs at shutdown):
        its records are consumed again by the partition's next owner, and the caller should say so
        (`vrae-worker run` exits 1)."""
        committed = True
        try:
            while not stop.is_set():
                self._heartbeat.beat()
                records, poll_error = self._poll()
                batch = self._pipeline.prepare(records) if records else None
                try:
                    sealed = self._runner.run(batch, between=self._reload_model)
                except BatchFailed as failure:
                    committed = False
                    self._retry_later(failure.records, failure.error, stop)
                    continue
                if sealed:
                    committed = self._commit(sealed)
                if poll_error is not None:
                    self._retry_later([], poll_error, stop)  # the batch in flight is committed first
                elif sealed or not records:
                    self._backoff.reset()  # a batch went through, or the broker answered and nothing fails
        finally:
            try:
                drained = self._runner.drain()  # a stop request finishes the batch in flight first
                if drained:
                    committed = self._commit(drained)
            except BatchFailed as failure:
                committed = False
                log.warning("the batch in flight failed at shutdown; it will be replayed",
                            extra={"error": repr(failure.error), "records": len(failure.records)})
            finally:
                self._runner.close()
        return committed

    def _poll(self) -> tuple[list[SourceRecord], Exception | None]:
        try:
            return self._source.poll(), None
        except Exception as error:
            if not is_transient(error):
                raise
            return [], error

    def _commit(self, sealed: list[SealedBatch]) -> bool:
        """Commit each batch in order; False when the last commit failed (a later one covers earlier ones)."""
        committed = True
        for batch in sealed:
            committed = self._checkpoint.commit(batch)
        return committed

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
