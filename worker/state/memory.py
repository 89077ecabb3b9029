"""The in-memory store: the reference implementation of the window policy and the detector state.

Unit tests, the backtest and single-process runs use it; the Redis store (`redis_store.py`) follows
exactly the same rules, which tests/integration pins event for event.
"""

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vrae_model.windowing import is_gap, next_interval
from worker.events import Event
from worker.state.codec import last_end_ms
from worker.windows import DueWindow, Outcome, Peek, WindowSpec, group_by_series


@dataclass
class _Series:
    n: int = 0
    last_offset: int = -1
    last_ts: int = 0
    segment: int = 0
    interval_ms: int = 0
    registered_until: int = 0
    timestamps: deque[int] = field(default_factory=deque)
    values: deque[np.ndarray] = field(default_factory=deque)

    def copy(self) -> "_Series":
        return replace(self, timestamps=deque(self.timestamps), values=deque(self.values))


class MemoryStateStore:
    def __init__(self, spec: WindowSpec, *, max_series: int = 0) -> None:
        self.spec = spec
        self._max_series = max_series
        self._series: dict[str, _Series] = {}
        self._detector: dict[str, bytes] = {}
        self._registry: dict[str, int] = {}  # series -> registered until (epoch ms)

    def __len__(self) -> int:
        return len(self._series)

    def detector_raw(self, series_id: str) -> bytes | None:
        return self._detector.get(series_id)

    def peek(self, events: Sequence[Event], *, detector: bool, now_ms: int) -> Peek:
        result = Peek(outcomes=[Outcome.ACCEPTED] * len(events))
        for series_id, indices in group_by_series(events).items():
            state = self._series.get(series_id)
            if state is None:
                result.new_series.append(series_id)
            elif self._refresh_due(state, now_ms):
                result.refresh.append(series_id)
            pending = state.copy() if state else self._new()
            changed = self._advance(series_id, pending, events, indices, result)
            if self._refresh_due(pending, now_ms):
                pending.registered_until = now_ms + self.spec.ttl_s * 1000
                changed = True
            if changed:
                result.pending[series_id] = pending
            if detector and series_id in self._detector:
                result.detector_states[series_id] = self._detector[series_id]
        return result

    def admit(self, new: Sequence[str], refresh: Sequence[str], now_ms: int) -> tuple[set[str], int | None]:
        if not self._max_series:
            return set(new), None
        until = now_ms + self.spec.ttl_s * 1000
        self._registry = {sid: t for sid, t in self._registry.items() if t > now_ms}
        self._registry.update({sid: until for sid in refresh})
        admitted = set()
        for series_id in new:
            if series_id in self._registry or len(self._registry) < self._max_series:
                self._registry[series_id] = until
                admitted.add(series_id)
        return admitted, len(self._registry)

    def write(self, windows: dict[str, Any], detector_states: dict[str, bytes], now_ms: int) -> None:
        for series_id, pending in windows.items():
            stored = self._series.get(series_id)
            if stored is None or stored.last_offset <= pending.last_offset:
                self._series[series_id] = pending.copy()
        for series_id, raw in detector_states.items():
            old = self._detector.get(series_id)
            if old is None or last_end_ms(old) < last_end_ms(raw):
                self._detector[series_id] = raw

    def _new(self) -> _Series:
        return _Series(interval_ms=self.spec.gaps.interval_ms)

    def _refresh_due(self, state: _Series, now_ms: int) -> bool:
        return bool(self._max_series) and state.registered_until < now_ms + self.spec.ttl_s * 1000 / 2

    def _advance(self, series_id: str, state: _Series, events: Sequence[Event], indices: list[int],
                 into: Peek) -> bool:
        """Apply one series' events to `state` in place, recording outcomes and due windows in `into`;
        whether the state changed."""
        spec = self.spec
        changed = False
        for index in indices:
            event = events[index]
            offset, ts = event.record.offset, event.ts_ms
            if offset <= state.last_offset:
                outcome = Outcome.REPLAYED
            elif state.n > 0 and ts <= state.last_ts:
                outcome = Outcome.LATE if ts < state.last_ts else Outcome.DUPLICATE
                state.last_offset = offset
                changed = True
            else:
                changed = True
                outcome = Outcome.ACCEPTED
                if state.n > 0:
                    step = ts - state.last_ts
                    if is_gap(step, state.interval_ms, spec.gaps):
                        outcome = Outcome.GAP
                        state.segment = state.n
                        state.timestamps.clear()
                        state.values.clear()
                    state.interval_ms = next_interval(state.interval_ms, step)
                state.timestamps.append(ts)
                state.values.append(event.values)
                state.n += 1
                state.last_ts, state.last_offset = ts, offset
                self._window(series_id, state, event, into)
                while len(state.timestamps) > spec.capacity:
                    state.timestamps.popleft()
                    state.values.popleft()
            into.outcomes[index] = outcome
        return changed

    def _window(self, series_id: str, state: _Series, event: Event, into: Peek) -> None:
        """The window the event just appended ends, if it is due."""
        spec = self.spec
        position = state.n - 1 - state.segment - (spec.window - 1)
        if position < 0 or position % spec.stride or len(state.timestamps) < spec.window:
            return
        first = len(state.timestamps) - spec.window
        values = np.stack([state.values[i] for i in range(first, len(state.values))]).astype(np.float32, copy=False)
        into.windows.append(DueWindow(series_id=series_id, start_ms=state.timestamps[first], end_ms=event.ts_ms,
                                      values=values, event=event))
