"""What the pipeline needs from state, whatever keeps it: the window store and the detector store.

Two implementations of each sit side by side: `memory.py` (the reference, for unit tests and the
backtest) and `redis_store.py` (the service). Both follow the window policy of `worker.windows` and
the newer-wins rule of the detector state, so a test against one pins the other.
"""

from collections.abc import Sequence
from typing import Protocol

from worker.detection.detector import DetectorState
from worker.events import Event
from worker.windows import ApplyResult, WindowSpec


class WindowStore(Protocol):
    """Applies a batch of events (any order across series, offset order within one) atomically per series."""

    spec: WindowSpec

    def apply(self, events: Sequence[Event]) -> ApplyResult: ...


class DetectorStore(Protocol):
    """Per-series detector state; `save` never replaces a state with an older one (see codec.last_end_ms)."""

    def load(self, series_ids: Sequence[str]) -> dict[str, DetectorState]: ...

    def save(self, states: dict[str, DetectorState]) -> None: ...
