import numpy as np
import pytest

from worker.events import Event, SourceRecord
from worker.state.memory import MemoryWindowStore
from worker.windows import Outcome, WindowSpec


def event(ts: int, offset: int, series: str = "s", value: float | None = None) -> Event:
    values = np.array([ts if value is None else value], dtype=np.float32)
    return Event(series_id=series, ts_ms=ts, values=values, record=SourceRecord("events", 0, offset, None, b""))


def stream(n: int, series: str = "s", start_offset: int = 0) -> list[Event]:
    return [event(1000 * (i + 1), start_offset + i, series) for i in range(n)]


def test_windows_come_due_by_the_shared_rule() -> None:
    store = MemoryWindowStore(WindowSpec(window=4, n_features=1, stride=3))
    result = store.apply(stream(12))
    assert [w.end_ms for w in result.windows] == [4000, 7000, 10000]
    first = result.windows[0]
    assert first.start_ms == 1000 and first.values[:, 0].tolist() == [1000, 2000, 3000, 4000]
    assert result.outcomes == [Outcome.ACCEPTED] * 12 and result.new_series == 1


def test_late_and_duplicate_events_are_dropped_without_changing_windows() -> None:
    store = MemoryWindowStore(WindowSpec(window=3, n_features=1))
    events = [event(1000, 0), event(2000, 1), event(1500, 2), event(2000, 3, value=99), event(3000, 4)]
    result = store.apply(events)
    assert result.outcomes == [Outcome.ACCEPTED, Outcome.ACCEPTED, Outcome.LATE, Outcome.DUPLICATE, Outcome.ACCEPTED]
    assert [w.values[:, 0].tolist() for w in result.windows] == [[1000, 2000, 3000]]


def test_series_are_independent() -> None:
    store = MemoryWindowStore(WindowSpec(window=2, n_features=1))
    result = store.apply([event(1000, 0, "a"), event(1000, 1, "b"), event(2000, 2, "a")])
    assert [(w.series_id, w.end_ms) for w in result.windows] == [("a", 2000)]
    assert result.new_series == 2


def test_replayed_event_does_not_change_window_and_reemits_its_window() -> None:
    store = MemoryWindowStore(WindowSpec(window=3, n_features=1, replay_margin=4))
    first = store.apply(stream(6))
    replay = store.apply(stream(6)[3:])
    assert replay.outcomes == [Outcome.REPLAYED] * 3
    assert [(w.start_ms, w.end_ms) for w in replay.windows] == [(w.start_ms, w.end_ms) for w in first.windows[-3:]]
    after = store.apply([event(7000, 6)])
    assert after.windows[0].values[:, 0].tolist() == [5000, 6000, 7000]


def test_replay_older_than_the_margin_is_counted_unrecoverable() -> None:
    store = MemoryWindowStore(WindowSpec(window=3, n_features=1, replay_margin=2))
    store.apply(stream(10))
    replay = store.apply(stream(10))
    assert replay.outcomes.count(Outcome.REPLAYED) == 2
    assert replay.outcomes.count(Outcome.REPLAY_UNRECOVERABLE) == 8
    assert len(replay.windows) == 2


def test_replay_of_an_event_that_was_never_due_emits_nothing() -> None:
    store = MemoryWindowStore(WindowSpec(window=5, n_features=1))
    store.apply(stream(3))
    replay = store.apply(stream(3))
    assert replay.outcomes == [Outcome.REPLAYED] * 3 and replay.windows == []


@pytest.mark.parametrize("window, margin, expected", [(64, 8, 71), (1, 0, 1), (4, 0, 3)])
def test_capacity_keeps_window_minus_one_plus_margin(window: int, margin: int, expected: int) -> None:
    assert WindowSpec(window=window, n_features=1, replay_margin=margin).capacity == expected


def test_window_of_one_with_no_margin_scores_every_event() -> None:
    store = MemoryWindowStore(WindowSpec(window=1, n_features=1, replay_margin=0))
    assert len(store.apply(stream(5)).windows) == 5
