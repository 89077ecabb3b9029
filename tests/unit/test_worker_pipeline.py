"""The batch loop with the memory store and in-memory source/sink (Redis and Kafka are tested for real
in tests/integration and tests/e2e)."""

import json
import threading

import numpy as np
import pytest
import redis

from worker.checkpoint import Checkpoint
from worker.events import EventParser, SourceRecord
from worker.health import Heartbeat, heartbeat_age_s
from worker.loop import Backoff
from worker.metrics import Metrics
from worker.pipeline import Pipeline, Topics, next_offsets
from worker.scorer import ModelInfo, Scores
from worker.state.memory import MemoryStateStore
from worker.testing import ListSink, ListSource, memory_loop, run_batch
from worker.windows import WindowSpec

WINDOW = 3


class SpikeScorer:
    """Anomaly score 1 when any value of the window exceeds 10, else 0: easy to reason about."""

    info = ModelInfo(name="spike", version="1", sha256="0" * 64, window=WINDOW, features=("value",), threshold=0.5)

    def score(self, windows: np.ndarray) -> Scores:
        peak = np.abs(windows).max(axis=(1, 2)) if len(windows) else np.zeros(0, np.float32)
        return Scores(score=peak.astype(np.float32), anomaly_score=(peak > 10).astype(np.float32),
                      feature_shares=np.ones((len(windows), 1), np.float32))


def records(values: list[float | str], start_offset: int = 0, series: str = "s") -> list[SourceRecord]:
    out = []
    for i, value in enumerate(values):
        offset = start_offset + i
        body = value if isinstance(value, str) else json.dumps({"series_id": series, "ts": 1000 * (offset + 1),
                                                                 "value": value})
        out.append(SourceRecord("events", 0, offset, series.encode(), body.encode()))
    return out


def pipeline(metrics: Metrics, store: MemoryStateStore | None = None) -> Pipeline:
    store = store if store is not None else MemoryStateStore(WindowSpec(window=WINDOW, n_features=1))
    return Pipeline(EventParser(("value",)), store,
                    SpikeScorer(), metrics, Topics(alerts="alerts", dead_letters="dlq"))


def value(metrics: Metrics, name: str, labels: dict | None = None) -> float:
    return metrics.registry.get_sample_value(name, labels or {}) or 0.0


def test_batch_alerts_on_spiky_windows_and_dead_letters_bad_records() -> None:
    sink, metrics = ListSink(), Metrics()
    report = run_batch(pipeline(metrics), Checkpoint(sink, ListSource([]), metrics),
                       records([1, 2, 50, 3, "not json", 4, 5, 6]))
    alerts = [json.loads(m.value) for m in sink.sent if m.topic == "alerts"]
    # Windows end at offsets 2..7 (one per valid event from the third); 50 sits in the first three.
    assert [a["window_end"] for a in alerts] == [3000, 4000, 6000]
    assert [m.value for m in sink.sent if m.topic == "dlq"] == [b"not json"]
    assert report.offsets == {("events", 0): 8} and report.windows == 5
    assert value(metrics, "vrae_invalid_events_total", {"reason": "not_json"}) == 1
    assert value(metrics, "vrae_events_total", {"outcome": "accepted"}) == 7
    assert value(metrics, "vrae_alerts_total") == 3


def test_next_offsets_is_one_past_the_highest_per_partition() -> None:
    batch = [SourceRecord("t", 0, 5, None, b""), SourceRecord("t", 1, 9, None, b""), SourceRecord("t", 0, 7, None, b"")]
    assert next_offsets(batch) == {("t", 0): 8, ("t", 1): 10}


@pytest.mark.parametrize("overlap", [False, True])
def test_worker_retries_a_failed_batch_and_commits_only_after_delivery(tmp_path, overlap: bool) -> None:
    stop = threading.Event()
    sink, metrics = ListSink(failures=2, error=redis.exceptions.ConnectionError), Metrics()
    source = ListSource([records([1, 2, 50]), records([4, 5], start_offset=3)], stop)
    heartbeat = Heartbeat(tmp_path / "hb", interval_s=0)
    memory_loop(source, pipeline(metrics), sink, metrics, heartbeat, Backoff(0.001, 0.002), overlap=overlap).run(stop)
    assert source.rewinds == 2
    assert source.committed == {("events", 0): 5}
    assert [json.loads(m.value)["window_end"] for m in sink.sent] == [3000, 4000, 5000]
    assert value(metrics, "vrae_batch_failures_total", {"cause": "redis"}) == 2
    assert heartbeat_age_s(tmp_path / "hb") < 5


class FlakyStore(MemoryStateStore):
    """Fails the state read of one chosen call, as Redis going away mid-stream would."""

    def __init__(self, fail_call: int) -> None:
        super().__init__(WindowSpec(window=WINDOW, n_features=1))
        self.calls = 0
        self._fail_call = fail_call

    def peek(self, events, *, detector, now_ms):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == self._fail_call:
            raise redis.exceptions.ConnectionError("redis away")
        return super().peek(events, detector=detector, now_ms=now_ms)


def test_overlap_commits_in_order_and_a_failure_rewinds_the_batch_polled_behind_it(tmp_path) -> None:
    """Batch 2's window update fails while batch 3 was already polled: batch 1 is committed, batches 2
    and 3 are rewound together, and the alerts are those of a worker that never failed."""
    stop = threading.Event()
    sink, metrics = ListSink(), Metrics()
    batches = [records([1, 2, 50]), records([4, 5], start_offset=3), records([6, 7], start_offset=5)]
    source = ListSource(batches, stop)
    memory_loop(source, pipeline(metrics, FlakyStore(fail_call=2)), sink, metrics,
                Heartbeat(tmp_path / "hb", interval_s=0), Backoff(0.001, 0.002), overlap=True).run(stop)
    assert source.rewound == [3]
    assert source.commits == [{("events", 0): 3}, {("events", 0): 7}]
    assert [json.loads(m.value)["window_end"] for m in sink.sent] == [3000, 4000, 5000]
    assert value(metrics, "vrae_batch_failures_total", {"cause": "redis"}) == 1


def test_overlap_stop_finishes_and_commits_the_batch_in_flight(tmp_path) -> None:
    stop = threading.Event()
    sink, metrics = ListSink(), Metrics()

    class StopAfterFirst(ListSource):
        def poll(self) -> list[SourceRecord]:
            batch = super().poll()
            self._stop.set()  # SIGTERM arrives while batch 1 is being scored
            return batch

    source = StopAfterFirst([records([1, 2, 50, 4])], stop)
    memory_loop(source, pipeline(metrics), sink, metrics, Heartbeat(tmp_path / "hb", interval_s=0),
                Backoff(0.001, 0.002), overlap=True).run(stop)
    assert source.committed == {("events", 0): 4}
    assert [json.loads(m.value)["window_end"] for m in sink.sent] == [3000, 4000]


class FailingCommits(ListSource):
    """A source whose commits fail, as they do when the broker hangs."""

    def commit(self, offsets: dict[tuple[str, int], int]) -> bool:
        return False


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("broken, committed", [(None, True), ("delivery", False), ("commit", False)])
def test_loop_reports_whether_its_last_batch_was_committed(tmp_path, overlap: bool, broken: str | None,
                                                          committed: bool) -> None:
    """What `vrae-worker run` turns into its exit code: a stop with the last batch undelivered (the broker
    hangs) or its offsets uncommitted is not a clean stop, though the batch is consumed again."""
    stop = threading.Event()
    metrics = Metrics()
    sink = ListSink(failures=10**9 if broken == "delivery" else 0)
    source = (FailingCommits if broken == "commit" else ListSource)([records([1, 2, 50])], stop)
    timer = threading.Timer(0.5, stop.set)  # the delivery never succeeds: stop while it is being retried
    timer.start()
    try:
        result = memory_loop(source, pipeline(metrics), sink, metrics, Heartbeat(tmp_path / "hb", interval_s=0),
                             Backoff(0.001, 0.002), overlap=overlap).run(stop)
    finally:
        timer.cancel()
    assert result is committed


def test_dead_letters_are_cut_to_the_producers_max_request_size() -> None:
    sink, metrics = ListSink(), Metrics()
    limited = Pipeline(EventParser(("value",)), MemoryStateStore(WindowSpec(window=WINDOW, n_features=1)),
                       SpikeScorer(), metrics, Topics(alerts="alerts", dead_letters="dlq", max_message_bytes=20_000))
    big = SourceRecord("events", 0, 0, b"s", b"x" * 50_000)  # under the event size limit: it is `not_json`
    run_batch(limited, Checkpoint(sink, ListSource([]), metrics), [big])
    [dead] = sink.on("dlq")
    assert len(dead.value) < 20_000 and dict(dead.headers)["original_value_size"] == b"50000"


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(initial_s=0.5, max_s=2.0)
    assert [backoff.next() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    backoff.reset()
    assert backoff.next() == 0.5


@pytest.mark.parametrize("beat_age_s, healthy", [(1.0, True), (120.0, False)])
def test_heartbeat_age(tmp_path, beat_age_s: float, healthy: bool) -> None:
    path = tmp_path / "hb"
    Heartbeat(path).beat()
    age = heartbeat_age_s(path, now=float(path.read_text()) + beat_age_s)
    assert (age <= 60) is healthy


class PoisonStore(MemoryStateStore):
    """Raises on any batch holding an event of the series `poison`, as a store bug on odd input would."""

    def __init__(self) -> None:
        super().__init__(WindowSpec(window=WINDOW, n_features=1))

    def peek(self, events, *, detector, now_ms):  # type: ignore[no-untyped-def]
        if any(event.series_id == "poison" for event in events):
            raise ValueError("cannot handle this series")
        return super().peek(events, detector=detector, now_ms=now_ms)


@pytest.mark.parametrize("overlap", [False, True])
def test_a_record_that_fails_after_parsing_is_dead_lettered_and_the_partition_moves_on(tmp_path,
                                                                                       overlap: bool) -> None:
    stop = threading.Event()
    sink, metrics = ListSink(), Metrics()
    batch = records([1, 2, 50, 3, 4]) + records([7], start_offset=5, series="poison") + records([5, 6], start_offset=6)
    source = ListSource([batch], stop)
    memory_loop(source, pipeline(metrics, PoisonStore()), sink, metrics, Heartbeat(tmp_path / "hb", interval_s=0),
                Backoff(0.001, 0.002), overlap=overlap).run(stop)
    dead = sink.on("dlq")
    assert [m.value for m in dead] == [batch[5].value]
    headers = dict(dead[0].headers)
    assert headers["error"] == b"internal" and b"ValueError" in headers["error_detail"]
    assert source.committed == {("events", 0): 8} and source.rewinds == 0
    assert [json.loads(m.value)["window_end"] for m in sink.on("alerts")] == [3000, 4000, 5000]
    assert value(metrics, "vrae_invalid_events_total", {"reason": "internal"}) == 1


def test_is_transient_tells_an_unavailable_dependency_from_a_bad_record() -> None:
    from kafka.errors import KafkaConnectionError, MessageSizeTooLargeError

    from worker.exceptions import DeliveryError
    from worker.loop import is_transient

    def delivery(cause: Exception) -> DeliveryError:
        try:
            raise DeliveryError("not confirmed") from cause
        except DeliveryError as error:
            return error

    assert is_transient(redis.exceptions.ConnectionError()) and is_transient(delivery(KafkaConnectionError()))
    assert not is_transient(delivery(MessageSizeTooLargeError())) and not is_transient(ValueError("odd input"))
