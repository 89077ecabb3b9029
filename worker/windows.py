"""Per-series sliding windows: the policy and its types (pure). The stores that keep the state live in
`worker.state` (memory and Redis side by side); both implement exactly this policy:
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

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

import numpy as np

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


def group_by_series(events: Sequence[Event]) -> dict[str, list[int]]:
    """Indices of `events` per series, in arrival order, so each series is updated in one step."""
    groups: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        groups.setdefault(event.series_id, []).append(index)
    return groups
