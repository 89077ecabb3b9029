"""Incidents instead of alert storms: what an incident record is and how it is named (pure).

A run of unusual windows of one series is ONE incident: `opened` when a window reaches the open level,
`closed` when the stream is back to normal ("recovered") or has settled into a new normal ("settled");
the policy itself is part of the per-series calibration (worker.detection.calibration.step).

The incident id is uuid5(series_id, end of the opening window): a replay that re-opens the same
incident re-emits the same id, and downstream deduplicates on it.
"""

import uuid
from dataclasses import dataclass
from enum import StrEnum

from worker.windows import DueWindow

# Fixed namespace: incident ids must be identical across processes, restarts and versions.
INCIDENT_NAMESPACE = uuid.UUID("0b8f3c2e-5a41-4d7e-9f0c-2d6a1e7b4c93")


class Phase(StrEnum):
    OPENED = "opened"
    CLOSED = "closed"


class CloseReason(StrEnum):
    RECOVERED = "recovered"  # back inside the series' normal, as it was before the incident
    SETTLED = "settled"  # open for a day: the process settled into a new normal, which the series now learns


def incident_id(series_id: str, opened_end_ms: int) -> str:
    return str(uuid.uuid5(INCIDENT_NAMESPACE, f"{series_id}\x1f{opened_end_ms}"))


@dataclass(frozen=True)
class IncidentEvent:
    """An incident opened or closed, as of the window that did it."""

    phase: Phase
    incident_id: str
    window: DueWindow  # the window that opened or closed it
    score: float  # that window's reconstruction error
    surprise: float  # and its surprise
    opened_ms: int  # end of the opening window: the incident's identity
    last_anomalous_ms: int  # end of its last window at or above the close level
    windows: int  # windows judged while it was open
    peak_end_ms: int
    peak_surprise: float
    peak_score: float
    peak_shares: tuple[float, ...]
    close_reason: CloseReason | None = None
