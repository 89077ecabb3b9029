"""Per-series sliding windows: the policy, the store interface, and the in-memory store.

Policy (the Redis store's Lua script implements exactly the same, see `redis_store.py`):
- Per series, timestamps must strictly increase. `ts < last` is `late`, `ts == last` (with a new offset)
  is `duplicate`; both are dropped and counted, never dead-lettered.
- Accepted events are numbered n = 0, 1, ... and a window is returned when event n ends a due window
  (`vrae_model.windowing.is_due`).
- Replays: an event whose offset is <= the last offset applied to its series was applied before (a
  crash happened between the store update and the offset commit). It does not change the state; it is
  located by its timestamp among the buffered events, and if the window it ended was due, that window
  is returned again so the replay re-emits the same alert ids. The buffer keeps `window - 1 +
  replay_margin` events, so the last `replay_margin` events of a series are recoverable; an older due
  one is counted as `replay_unrecoverable`.
"""

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple, Protocol

import numpy as np

from vrae_model.windowing import is_due
from worker.events import Event


class Outcome(StrEnum):
    """What the store did with one event; the value is a metrics label."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"
    REPLAYED = "replayed"
    REPLAY_UNRECOVERABLE = "replay_unrecoverable"


@dataclass(frozen=True)
class WindowSpec:
    """The shape of the state: everything a store needs besides the events."""

    window: int
    n_features: int
    stride: int = 1
    replay_margin: int = 8
    ttl_s: int = 7 * 24 * 3600

    @property
    def capacity(self) -> int:
        """Events kept per series after an update: the previous window - 1 plus the replay margin."""
        return max(self.window - 1 + self.replay_margin, 1)


class DueWindow(NamedTuple):
    """A full window that must be scored, and the event that ended it (a NamedTuple: one per event)."""

    series_id: str
    start_ms: int
    end_ms: int
    values: np.ndarray  # (T, F) float32, raw units
    event: Event


@dataclass
class ApplyResult:
    """`outcomes[i]` belongs to `events[i]` of the call; windows are in event order per series."""

    outcomes: list[Outcome]
    windows: list[DueWindow] = field(default_factory=list)
    new_series: int = 0


class WindowStore(Protocol):
    """Applies a batch of events (any order across series, offset order within one) atomically per series."""

    spec: WindowSpec

    def apply(self, events: Sequence[Event]) -> ApplyResult: ...


def group_by_series(events: Sequence[Event]) -> dict[str, list[int]]:
    """Indices of `events` per series, in arrival order, so each series is updated in one step."""
    groups: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        groups.setdefault(event.series_id, []).append(index)
    return groups


@dataclass
class _SeriesState:
    n: int
    last_offset: int
    last_ts: int
    timestamps: deque[int]
    values: deque[np.ndarray]


class MemoryWindowStore:
    """The reference implementation of the window policy; used by unit tests and single-process runs."""

    def __init__(self, spec: WindowSpec) -> None:
        self.spec = spec
        self._series: dict[str, _SeriesState] = {}

    def apply(self, events: Sequence[Event]) -> ApplyResult:
        result = ApplyResult(outcomes=[Outcome.ACCEPTED] * len(events))
        for series_id, indices in group_by_series(events).items():
            for index in indices:
                outcome, window = self._apply_one(series_id, events[index], result)
                result.outcomes[index] = outcome
                if window is not None:
                    result.windows.append(window)
        return result

    def _apply_one(self, series_id: str, event: Event, result: ApplyResult) -> tuple[Outcome, DueWindow | None]:
        offset, ts = event.record.offset, event.ts_ms
        state = self._series.get(series_id)
        if state is None:
            state = _SeriesState(n=0, last_offset=offset, last_ts=ts, timestamps=deque(), values=deque())
            self._series[series_id] = state
            result.new_series += 1
            return Outcome.ACCEPTED, self._append(series_id, state, event)
        if offset <= state.last_offset:
            return self._replay(series_id, state, event)
        if ts <= state.last_ts:
            state.last_offset = offset
            return (Outcome.LATE if ts < state.last_ts else Outcome.DUPLICATE), None
        return Outcome.ACCEPTED, self._append(series_id, state, event)

    def _append(self, series_id: str, state: _SeriesState, event: Event) -> DueWindow | None:
        state.timestamps.append(event.ts_ms)
        state.values.append(event.values)
        state.n += 1
        state.last_ts, state.last_offset = event.ts_ms, event.record.offset
        window = self._window_at(series_id, state, len(state.timestamps) - 1, event)
        while len(state.timestamps) > self.spec.capacity:
            state.timestamps.popleft()
            state.values.popleft()
        return window

    def _replay(self, series_id: str, state: _SeriesState, event: Event) -> tuple[Outcome, DueWindow | None]:
        try:
            index = list(state.timestamps).index(event.ts_ms)
        except ValueError:
            trimmed = state.n > len(state.timestamps)
            lost = trimmed and event.ts_ms < state.timestamps[0]
            return (Outcome.REPLAY_UNRECOVERABLE if lost else Outcome.REPLAYED), None
        n_at = state.n - (len(state.timestamps) - 1 - index)
        if not is_due(n_at - 1, self.spec.window, self.spec.stride):
            return Outcome.REPLAYED, None
        if index < self.spec.window - 1:
            return Outcome.REPLAY_UNRECOVERABLE, None
        return Outcome.REPLAYED, self._window_at(series_id, state, index, event)

    def _window_at(self, series_id: str, state: _SeriesState, index: int, event: Event) -> DueWindow | None:
        """The window ending at buffer position `index`, if the event there ends a due window."""
        n_at = state.n - (len(state.timestamps) - 1 - index) - 1
        if not is_due(n_at, self.spec.window, self.spec.stride) or index < self.spec.window - 1:
            return None
        first = index - self.spec.window + 1
        values = np.stack([state.values[i] for i in range(first, index + 1)]).astype(np.float32, copy=False)
        return DueWindow(series_id=series_id, start_ms=state.timestamps[first], end_ms=state.timestamps[index],
                         values=values, event=event)
