"""Per-series sliding windows: the policy and its types (pure). The stores that keep the state live in
`worker.state` (memory and Redis side by side); both implement exactly this policy:

- Per series, timestamps must strictly increase. `ts < last` is `late`, `ts == last` (a repeated
  timestamp, as a DST change or a producer retry makes them) is `duplicate`; both are dropped and
  counted, never dead-lettered.
- Accepted events are numbered k = 0, 1, ... and a window is returned when event k ends a due window
  (`vrae_model.windowing`). Windows count events, not time: a step longer than `gap_factor` times the
  series' usual interval (learned per series) starts a fresh segment, counted as `gap`, and no window
  ever spans it, so the first window after an outage holds only events after it.
- Replays: an event whose offset is at or below the last offset applied to its series was applied
  before (a crash, a retry or a rebalance happened between the state write and the offset commit).
  It changes nothing and ends no window: the state is written only after the batch's records were
  delivered (worker/checkpoint.py), so its windows' records are out already. Nothing to size: the
  state keeps only the `window - 1` events the next window needs.
- A store peeks at a batch (outcomes, due windows, and the window states the batch leads to) and
  writes those states later, each only if it is not older than the stored one: a series' window state
  is a function of its events up to its last applied offset, so the newest is right whoever made it.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

import numpy as np

from vrae_model.windowing import NO_GAPS, GapPolicy
from worker.events import Event


class Outcome(StrEnum):
    """What the store does with one event; the value is a metrics label."""

    ACCEPTED = "accepted"
    GAP = "gap"  # accepted, after an outage: it starts a fresh window
    DUPLICATE = "duplicate"
    LATE = "late"
    REPLAYED = "replayed"


ACCEPTED_OUTCOMES = frozenset({Outcome.ACCEPTED, Outcome.GAP})


@dataclass(frozen=True)
class WindowSpec:
    """The shape and policy of the state: everything a store needs besides the events."""

    window: int
    n_features: int
    stride: int = 1
    gaps: GapPolicy = NO_GAPS
    ttl_s: int = 7 * 24 * 3600

    @property
    def capacity(self) -> int:
        """Events kept per series after an update: what the next window needs besides its last event."""
        return max(self.window - 1, 1)


class DueWindow(NamedTuple):
    """A full window that must be scored, and the event that ended it (a NamedTuple: one per event)."""

    series_id: str
    start_ms: int
    end_ms: int
    values: np.ndarray  # (T, F) float32, raw units
    event: Event


@dataclass
class Peek:
    """What a batch would do to the state, read without writing it.

    `outcomes[i]` belongs to `events[i]` of the call; windows are in event order per series."""

    outcomes: list[Outcome]
    windows: list[DueWindow] = field(default_factory=list)
    new_series: list[str] = field(default_factory=list)  # series without state yet
    refresh: list[str] = field(default_factory=list)  # series whose registration is due for a refresh
    detector_states: dict[str, bytes] = field(default_factory=dict)  # raw, for the series that have one
    detector_cached: int = 0  # of them, the ones the store took from the worker's own copy, not read back
    pending: dict[str, Any] = field(default_factory=dict)  # the window states to write, in the store's own form


def group_by_series(events: Sequence[Event]) -> dict[str, list[int]]:
    """Indices of `events` per series, in arrival order, so each series is updated in one step."""
    groups: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        groups.setdefault(event.series_id, []).append(index)
    return groups
