"""Incidents instead of alert storms (pure): consecutive unusual windows of one series are ONE incident.

With a stride of 1, one spike sits in `window` consecutive windows, and a fault that lasts an hour sits
in hundreds; one alert per window buries the operator. The state machine per series:

    closed --(surprise >= open_surprise)--> open                         emits `opened`
    open   --(close_after windows in a row with surprise < close_surprise)--> closed   emits `closed`

The gap between the two levels is hysteresis: a score wobbling around one level neither flaps nor
closes early. While open the state tracks the peak window (score, surprise, feature shares), so the
`closed` record says how bad it got, how long it lasted and which features drove it.

The incident id is uuid5(series_id, end of the opening window): a replay that re-opens the same
incident re-emits the same id, and downstream deduplicates on it.
"""

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import numpy as np

# Fixed namespace: incident ids must be identical across processes, restarts and versions.
INCIDENT_NAMESPACE = uuid.UUID("0b8f3c2e-5a41-4d7e-9f0c-2d6a1e7b4c93")


@dataclass(frozen=True)
class IncidentSettings:
    open_surprise: float = 3.0  # -log10 tail probability that opens an incident (1 in 1000)
    close_surprise: float = 2.0  # below this a window counts as normal again (1 in 100)
    close_after: int = 5  # that many normal windows in a row close the incident

    def __post_init__(self) -> None:
        if self.close_surprise > self.open_surprise:
            raise ValueError("close_surprise must not exceed open_surprise (hysteresis needs close <= open)")
        if self.close_after < 1:
            raise ValueError("close_after must be at least 1")


class Phase(StrEnum):
    OPENED = "opened"
    CLOSED = "closed"


class Observation(NamedTuple):
    """One judged window of one series."""

    start_ms: int
    end_ms: int
    score: float  # the model's raw score
    surprise: float  # -log10 of the blended tail probability (worker.detection.calibration)
    shares: np.ndarray  # (F,) each feature's share of the reconstruction error


class IncidentState(NamedTuple):
    """Per-series incident state; `open` False means every other field is meaningless. A NamedTuple:
    one is decoded per series and batch, and built per window while an incident is open."""

    open: bool = False
    opened_start_ms: int = 0  # start of the window that opened the incident
    opened_end_ms: int = 0  # end of that window: the incident's identity
    last_anomalous_end_ms: int = 0  # end of the last window at or above close_surprise
    peak_end_ms: int = 0
    windows: int = 0  # windows seen while open
    normal_run: int = 0  # consecutive normal windows at the end
    peak_surprise: float = 0.0
    peak_score: float = 0.0
    opening_surprise: float = 0.0
    peak_shares: tuple[float, ...] = ()


@dataclass(frozen=True)
class Transition:
    """An incident opened or closed; `state` is the incident as of this window."""

    phase: Phase
    incident_id: str
    state: IncidentState
    at: Observation


def incident_id(series_id: str, opened_end_ms: int) -> str:
    return str(uuid.uuid5(INCIDENT_NAMESPACE, f"{series_id}\x1f{opened_end_ms}"))


def step(series_id: str, state: IncidentState, seen: Observation,
         settings: IncidentSettings) -> tuple[IncidentState, Transition | None]:
    """Advance one series' incident state by one window (in window order)."""
    if not state.open:
        if seen.surprise < settings.open_surprise:
            return state, None
        opened = IncidentState(
            open=True, opened_start_ms=seen.start_ms, opened_end_ms=seen.end_ms,
            last_anomalous_end_ms=seen.end_ms, peak_end_ms=seen.end_ms, windows=1, normal_run=0,
            peak_surprise=seen.surprise, peak_score=seen.score, opening_surprise=seen.surprise,
            peak_shares=_shares(seen.shares),
        )
        return opened, Transition(Phase.OPENED, incident_id(series_id, seen.end_ms), opened, seen)
    grown = _grow(state, seen, settings)
    if grown.normal_run < settings.close_after:
        return grown, None
    return IncidentState(), Transition(Phase.CLOSED, incident_id(series_id, state.opened_end_ms), grown, seen)


def _grow(state: IncidentState, seen: Observation, settings: IncidentSettings) -> IncidentState:
    normal = seen.surprise < settings.close_surprise
    peak = seen.surprise > state.peak_surprise
    return IncidentState(
        open=True, opened_start_ms=state.opened_start_ms, opened_end_ms=state.opened_end_ms,
        last_anomalous_end_ms=state.last_anomalous_end_ms if normal else seen.end_ms,
        peak_end_ms=seen.end_ms if peak else state.peak_end_ms,
        windows=state.windows + 1,
        normal_run=state.normal_run + 1 if normal else 0,
        peak_surprise=seen.surprise if peak else state.peak_surprise,
        peak_score=max(state.peak_score, seen.score),
        opening_surprise=state.opening_surprise,
        peak_shares=_shares(seen.shares) if peak else state.peak_shares,
    )


def _shares(shares: np.ndarray) -> tuple[float, ...]:
    return tuple(float(x) for x in np.nan_to_num(np.asarray(shares, dtype=np.float64), nan=0.0))
