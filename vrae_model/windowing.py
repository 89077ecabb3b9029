"""The due-window rule shared by `vrae score`, `vrae train` and the worker, so all cut exactly the same windows.

Per series, events are numbered k = 0, 1, 2, ... in timestamp order. Windows count events, not time,
so a window must never span an outage: a step between two events longer than `factor` times the
series' usual interval starts a fresh *segment*, and windows live inside one segment. With s the
number of the segment's first event, event k ends a full window iff k - s >= window - 1, and that
window is DUE (scored) iff (k - s - (window - 1)) % stride == 0.

The usual interval is learned per series, in whole milliseconds, from the steps themselves: each step
moves it 1/8 of the way towards the step, clipped at 4x the interval (so one outage barely moves it).
It starts at the training data's interval where the model records one, else at the series' first
step. Integer arithmetic and power-of-two divisions, so the worker's Lua script computes exactly the
same numbers (worker/state/scripts.py). Pure Python/numpy: the worker imports this without torch.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_GAP_FACTOR = 5.0
INTERVAL_CLIP = 4  # a step counts at most this many usual intervals towards the estimate
INTERVAL_RATE = 8  # each step moves the estimate 1/8 of the way (a power of two: exact in Lua's doubles)


@dataclass(frozen=True)
class GapPolicy:
    """When a step in time starts a fresh window (`factor` 0 disables: windows then count events only)."""

    factor: float = DEFAULT_GAP_FACTOR
    interval_ms: int = 0  # the interval a new series starts from; 0: its first step

    def __post_init__(self) -> None:
        if self.factor < 0:
            raise ValueError(f"gap factor must be >= 0, got {self.factor}")
        if self.interval_ms < 0:
            raise ValueError(f"interval_ms must be >= 0, got {self.interval_ms}")


NO_GAPS = GapPolicy(factor=0.0)


def _check(window: int, stride: int) -> None:
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")


def is_due(k: int, window: int, stride: int, segment_start: int = 0) -> bool:
    """Whether the event numbered `k` in its series ends a window that must be scored."""
    _check(window, stride)
    position = k - segment_start - (window - 1)
    return position >= 0 and position % stride == 0


def next_interval(interval_ms: int, step_ms: int) -> int:
    """The usual interval after one more step (0: none yet, the step becomes it)."""
    if interval_ms <= 0:
        return max(step_ms, 1)
    clipped = min(step_ms, INTERVAL_CLIP * interval_ms)
    return max(interval_ms + (clipped - interval_ms) // INTERVAL_RATE, 1)


def is_gap(step_ms: int, interval_ms: int, policy: GapPolicy) -> bool:
    """Whether a step is an outage: longer than `factor` usual intervals (never while none is known)."""
    return policy.factor > 0 and interval_ms > 0 and step_ms > policy.factor * interval_ms


def segment_starts(timestamps: Sequence[int] | np.ndarray, policy: GapPolicy) -> np.ndarray:
    """Index of the first event of each segment of a series with strictly increasing `timestamps`."""
    stamps = np.asarray(timestamps, dtype=np.int64).tolist()
    starts = [0] if stamps else []
    interval = policy.interval_ms
    for k in range(1, len(stamps)):
        step = stamps[k] - stamps[k - 1]
        if is_gap(step, interval, policy):
            starts.append(k)
        interval = next_interval(interval, step)
    return np.asarray(starts, dtype=np.int64)


def due_positions(n_events: int, window: int, stride: int) -> np.ndarray:
    """Indices of the events that end a due window in one segment of `n_events` events (int64)."""
    _check(window, stride)
    return np.arange(window - 1, max(n_events, 0), stride, dtype=np.int64)


def due_ends(timestamps: Sequence[int] | np.ndarray, window: int, stride: int,
             policy: GapPolicy = NO_GAPS) -> np.ndarray:
    """Indices of the events that end a due window in a series, segment by segment (int64)."""
    _check(window, stride)
    n = len(timestamps)
    starts = segment_starts(timestamps, policy) if policy.factor > 0 else np.zeros(1 if n else 0, np.int64)
    stops = np.append(starts[1:], n)
    parts = [start + due_positions(int(stop - start), window, stride) for start, stop in zip(starts, stops)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def median_interval_ms(series: Iterable[Sequence[int] | np.ndarray]) -> int:
    """The typical step between events over several series' timestamps (0 without two events in one):
    what an artifact records of its training data."""
    steps = np.concatenate([np.diff(np.asarray(stamps, dtype=np.int64)) for stamps in series] or [np.zeros(0, np.int64)])
    steps = steps[steps > 0]
    return int(np.median(steps)) if len(steps) else 0
