"""The due-window rule shared by `vrae score` and the worker, so both score exactly the same windows.

Event n (0-based, per series, timestamp order) ends a full window iff n >= window - 1; that window is
due iff (n - (window - 1)) % stride == 0. Pure Python/numpy: the worker imports this without torch.
"""

import numpy as np


def _check(window: int, stride: int) -> None:
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")


def is_due(n: int, window: int, stride: int) -> bool:
    """Whether the event with 0-based index `n` in its series ends a window that must be scored."""
    _check(window, stride)
    first = window - 1
    return n >= first and (n - first) % stride == 0


def due_positions(n_events: int, window: int, stride: int) -> np.ndarray:
    """Indices of the events that end a due window in a series of `n_events` events (int64)."""
    _check(window, stride)
    return np.arange(window - 1, max(n_events, 0), stride, dtype=np.int64)
