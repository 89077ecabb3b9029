"""What the pipeline needs from state, whatever keeps it: one store for each series' window and detector state.

Two implementations sit side by side: `memory.py` (the reference, for unit tests and the backtest) and
`redis_store.py` (the service). Both follow the window policy of `worker.windows`, write a series'
window and detector state together, and skip what was applied before, so a test against one pins the
other (tests/integration/test_worker_redis_store.py).
"""

from collections.abc import Sequence
from typing import Any, Protocol

from worker.events import Event
from worker.windows import Peek, WindowSpec


class StateStore(Protocol):
    spec: WindowSpec

    def peek(self, events: Sequence[Event], *, detector: bool, now_ms: int) -> Peek:
        """Outcomes and due windows of a batch (any order across series, offset order within one), the
        window states it leads to (`Peek.pending`), and with `detector` each series' stored detector
        state, all read without writing anything."""
        ...

    def admit(self, new: Sequence[str], refresh: Sequence[str], now_ms: int) -> tuple[set[str], int | None]:
        """The new series that may be tracked (all of them without a series cap), and the number of
        series tracked (None without a cap); `refresh` renews the registration of tracked series."""
        ...

    def write(self, windows: dict[str, Any], detector_states: dict[str, bytes], now_ms: int) -> None:
        """Store the window states a peek computed and the detector states, atomically per series, each
        only if it is not older than the stored one; so writing twice, or late, changes nothing."""
        ...
