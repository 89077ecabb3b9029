"""In-memory stores: the reference implementations of the window policy and the detector state.

Unit tests, the backtest and single-process runs use them; the Redis stores (`redis_store.py`) follow
exactly the same rules, which tests/integration pins side by side.
"""

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vrae_model.windowing import is_due
from worker.detection.detector import DetectorState
from worker.events import Event
from worker.state.codec import decode_detector_state, encode_detector_state, last_end_ms
from worker.windows import ApplyResult, DueWindow, Outcome, WindowSpec, group_by_series


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


class MemoryDetectorStore:
    """Per-series detector state as bytes, with the same newer-wins rule as Redis."""

    def __init__(self) -> None:
        self._states: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._states)

    def raw(self, series_id: str) -> bytes | None:
        return self._states.get(series_id)

    def load(self, series_ids: Sequence[str]) -> dict[str, DetectorState]:
        return {sid: decode_detector_state(self._states[sid]) for sid in series_ids if sid in self._states}

    def save(self, states: dict[str, DetectorState]) -> None:
        for series_id, state in states.items():
            old = self._states.get(series_id)
            if old is None or last_end_ms(old) < state.history.last_end_ms:
                self._states[series_id] = encode_detector_state(state)
