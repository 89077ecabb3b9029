"""The window policy on the memory store (the Redis store is pinned to it in tests/integration)."""

import numpy as np
import pytest

from vrae_model.windowing import GapPolicy, due_ends, next_interval
from worker.events import Event, SourceRecord
from worker.state.memory import MemoryStateStore
from worker.windows import Outcome, Peek, WindowSpec

NOW_MS = 1_764_000_000_000


def event(ts: int, offset: int, series: str = "s", value: float | None = None) -> Event:
    values = np.array([ts if value is None else value], dtype=np.float32)
    return Event(series_id=series, ts_ms=ts, values=values, record=SourceRecord("events", 0, offset, None, b""))


def stream(n: int, series: str = "s", start_offset: int = 0, step_ms: int = 1000) -> list[Event]:
    return [event(step_ms * (i + 1), start_offset + i, series) for i in range(n)]


def apply(store: MemoryStateStore, events: list[Event]) -> Peek:
    """What the pipeline and the checkpoint do with a batch: peek, then (after delivery) write."""
    peek = store.peek(events, detector=False, now_ms=NOW_MS)
    store.write(peek.pending, {}, NOW_MS)
    return peek


def test_windows_come_due_by_the_shared_rule() -> None:
    store = MemoryStateStore(WindowSpec(window=4, n_features=1, stride=3))
    result = apply(store, stream(12))
    assert [w.end_ms for w in result.windows] == [4000, 7000, 10000]
    first = result.windows[0]
    assert first.start_ms == 1000 and first.values[:, 0].tolist() == [1000, 2000, 3000, 4000]
    assert result.outcomes == [Outcome.ACCEPTED] * 12 and result.new_series == ["s"]


def test_late_and_duplicate_events_are_dropped_without_changing_windows() -> None:
    store = MemoryStateStore(WindowSpec(window=3, n_features=1))
    events = [event(1000, 0), event(2000, 1), event(1500, 2), event(2000, 3, value=99), event(3000, 4)]
    result = apply(store, events)
    assert result.outcomes == [Outcome.ACCEPTED, Outcome.ACCEPTED, Outcome.LATE, Outcome.DUPLICATE, Outcome.ACCEPTED]
    assert [w.values[:, 0].tolist() for w in result.windows] == [[1000, 2000, 3000]]


def test_series_are_independent() -> None:
    store = MemoryStateStore(WindowSpec(window=2, n_features=1))
    result = apply(store, [event(1000, 0, "a"), event(1000, 1, "b"), event(2000, 2, "a")])
    assert [(w.series_id, w.end_ms) for w in result.windows] == [("a", 2000)]
    assert result.new_series == ["a", "b"]


def test_peek_writes_nothing_so_a_batch_peeked_again_gives_the_same_windows() -> None:
    store = MemoryStateStore(WindowSpec(window=3, n_features=1))
    apply(store, stream(4))
    batch = stream(8)[4:]
    first = store.peek(batch, detector=False, now_ms=NOW_MS)  # ... the worker dies before the write
    again = store.peek(batch, detector=False, now_ms=NOW_MS)
    assert [(w.start_ms, w.end_ms) for w in first.windows] == [(w.start_ms, w.end_ms) for w in again.windows]
    assert len(first.windows) == 4 and first.outcomes == again.outcomes == [Outcome.ACCEPTED] * 4


@pytest.mark.parametrize("events_per_batch", [1, 7, 300])
def test_replayed_events_after_the_write_change_nothing_however_many_per_series(events_per_batch: int) -> None:
    """A crash between the state write and the offset commit: the batch comes again. Whatever its size,
    its events are recognised and the next event continues exactly where the stream was."""
    spec = WindowSpec(window=3, n_features=1)
    store, reference = MemoryStateStore(spec), MemoryStateStore(spec)
    events = stream(2 * events_per_batch + 1)
    apply(store, events[:events_per_batch])
    replay = apply(store, events[:events_per_batch])
    assert replay.outcomes == [Outcome.REPLAYED] * events_per_batch and replay.windows == []
    rest = apply(store, events[events_per_batch:])
    apply(reference, events[:events_per_batch])
    expected = apply(reference, events[events_per_batch:])
    assert [(w.start_ms, w.values[:, 0].tolist()) for w in rest.windows] == \
           [(w.start_ms, w.values[:, 0].tolist()) for w in expected.windows]


def test_a_write_repeated_after_a_timeout_changes_nothing() -> None:
    store = MemoryStateStore(WindowSpec(window=3, n_features=1))
    events = stream(10)
    pending = store.peek(events, detector=False, now_ms=NOW_MS).pending
    store.write(pending, {}, NOW_MS)
    apply(store, stream(12)[10:])  # the stream moved on ...
    store.write(pending, {}, NOW_MS)  # ... when the first write, which timed out on the client, ran late
    peek = store.peek([event(11_000, 10)], detector=False, now_ms=NOW_MS)
    assert peek.outcomes == [Outcome.REPLAYED] and peek.windows == []
    after = store.peek([event(13_000, 12)], detector=False, now_ms=NOW_MS)
    assert [w.values[:, 0].tolist() for w in after.windows] == [[11_000, 12_000, 13_000]]


def test_capacity_is_what_the_next_window_needs() -> None:
    assert [WindowSpec(window=w, n_features=1).capacity for w in (64, 4, 1)] == [63, 3, 1]


def test_window_of_one_scores_every_event() -> None:
    store = MemoryStateStore(WindowSpec(window=1, n_features=1))
    assert len(apply(store, stream(5)).windows) == 5


# --- time-aware windows ---------------------------------------------------------------------------------

GAPS = GapPolicy(factor=5.0, interval_ms=1000)


def test_a_gap_starts_a_fresh_window_and_is_counted() -> None:
    store = MemoryStateStore(WindowSpec(window=3, n_features=1, gaps=GAPS))
    before = stream(5)
    after = [event(5000 + 10 * 1000 + 1000 * i, 5 + i) for i in range(5)]  # 10x the usual interval later
    result = apply(store, before + after)
    assert result.outcomes[5] == Outcome.GAP and result.outcomes.count(Outcome.GAP) == 1
    ends = [w.end_ms for w in result.windows]
    assert ends == [3000, 4000, 5000, 17_000, 18_000, 19_000]  # none spans the outage
    assert result.windows[3].start_ms == 15_000


def test_the_first_window_after_an_outage_holds_only_events_after_it() -> None:
    store = MemoryStateStore(WindowSpec(window=4, n_features=1, gaps=GAPS))
    apply(store, stream(10))
    returned = apply(store, [event(10_000 + 15 * 3_600_000 + 1000 * i, 10 + i) for i in range(4)])
    assert returned.outcomes[0] == Outcome.GAP
    assert len(returned.windows) == 1 and returned.windows[0].start_ms > 10_000 + 15 * 3_600_000 - 1


def test_irregular_sampling_within_the_factor_is_no_gap() -> None:
    rng = np.random.default_rng(0)
    stamps = np.cumsum(rng.integers(500, 2500, size=300)).tolist()  # 0.5x to 2.5x of about 1.5 s
    store = MemoryStateStore(WindowSpec(window=8, n_features=1, gaps=GapPolicy(factor=5.0, interval_ms=0)))
    result = apply(store, [event(ts, i) for i, ts in enumerate(stamps)])
    assert Outcome.GAP not in result.outcomes and len(result.windows) == 300 - 7


def test_the_usual_interval_is_learned_per_series_and_one_outage_barely_moves_it() -> None:
    assert next_interval(0, 60_000) == 60_000
    assert next_interval(60_000, 3_600_000) == 60_000 + 3 * 60_000 // 8  # clipped at 4x, 1/8 of the way
    interval = 1000
    for _ in range(40):
        interval = next_interval(interval, 60_000)  # a series sending every minute, model trained at 1 s
    assert interval == pytest.approx(60_000, rel=0.05)


def test_vrae_score_cuts_the_same_windows_as_the_store_around_gaps() -> None:
    stamps = [1000 * i for i in range(1, 11)] + [60_000 + 1000 * i for i in range(10)] + [61_000 + 9000 + 1000 * i
                                                                                           for i in range(3)]
    store = MemoryStateStore(WindowSpec(window=4, n_features=1, stride=2, gaps=GAPS))
    windows = apply(store, [event(ts, i) for i, ts in enumerate(stamps)]).windows
    assert [w.end_ms for w in windows] == [stamps[k] for k in due_ends(stamps, 4, 2, GAPS)]


def test_a_duplicate_timestamp_and_a_backward_step_are_counted_not_gaps() -> None:
    store = MemoryStateStore(WindowSpec(window=2, n_features=1, gaps=GAPS))
    events = [event(1000, 0), event(2000, 1), event(2000, 2), event(1500, 3), event(3000, 4)]
    result = apply(store, events)
    assert result.outcomes == [Outcome.ACCEPTED, Outcome.ACCEPTED, Outcome.DUPLICATE, Outcome.LATE, Outcome.ACCEPTED]
    assert [w.end_ms for w in result.windows] == [2000, 3000]


# --- bounded cardinality --------------------------------------------------------------------------------

def test_new_series_beyond_the_limit_are_not_admitted_until_others_expire() -> None:
    store = MemoryStateStore(WindowSpec(window=2, n_features=1, ttl_s=60), max_series=2)
    admitted, tracked = store.admit(["a", "b", "c"], [], NOW_MS)
    assert admitted == {"a", "b"} and tracked == 2
    assert store.admit(["a"], [], NOW_MS)[0] == {"a"}  # a retry of an admitted series
    assert store.admit(["c"], [], NOW_MS + 61_000) == ({"c"}, 1)  # a and b expired


def test_without_a_limit_every_series_is_admitted() -> None:
    store = MemoryStateStore(WindowSpec(window=2, n_features=1))
    assert store.admit(["a", "b"], [], NOW_MS) == ({"a", "b"}, None)
