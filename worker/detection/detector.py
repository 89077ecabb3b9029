"""From scored windows to incidents (pure): every due window of a batch judged against its series' own
history, round by round (worker.detection.calibration), and the incident transitions they cause.

Each series has one fixed-size detector state that the state store keeps next to its window state. One
batch:

    raw     = what the store's peek read for the batch's series
    result  = detect(windows, scores, raw, model, settings)   # judge, learn, advance the incident
    deliver the records of result (worker.records), confirmed
    write result.states with the window state                   # only after delivery: worker.checkpoint

A window ending at or before a state's `last_end_ms` was judged already and is skipped, and the store
never replaces a state with an older one, so a repeated write or a slower worker after a rebalance
cannot roll a series' history back.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from worker.detection.calibration import (Batch, CalibrationSettings, Close, Reference, Spike, rounds, step,
                                          window_level, window_spike)
from worker.detection.incidents import CloseReason, IncidentEvent, Phase, incident_id
from worker.scorer import ModelInfo, Scores
from worker.state.codec import decode_states, encode_states
from worker.windows import DueWindow

_CLOSE_REASONS = {Close.RECOVERED: CloseReason.RECOVERED, Close.SETTLED: CloseReason.SETTLED}


@dataclass(frozen=True)
class DetectorSettings:
    calibration: CalibrationSettings = CalibrationSettings()


class Verdict(NamedTuple):
    """One window judged against its series' history (windows of a replay get none); a tuple: a batch
    makes one per window."""

    window: DueWindow
    index: int  # position in the batch's scores
    surprise: float  # -log10 of the window's tail probability for its series


@dataclass
class DetectionResult:
    events: list[IncidentEvent] = field(default_factory=list)
    states: dict[str, bytes] = field(default_factory=dict)  # changed states, to write after delivery
    skipped: int = 0  # replayed windows, judged before
    windows: Sequence[DueWindow] = ()  # the batch's windows
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # those judged, in judging order,
    surprise: np.ndarray = field(default_factory=lambda: np.zeros(0))  # and their surprise

    @property
    def verdicts(self) -> list[Verdict]:
        """One per judged window; built on demand (only a scores topic and the backtest ask)."""
        return [Verdict(self.windows[p], p, s) for p, s in zip(self.positions.tolist(), self.surprise.tolist())]


def model_key(sha256: str) -> int:
    """A signed 64-bit tag of the model's sha256: a history kept for another model is not comparable."""
    return int.from_bytes(bytes.fromhex(sha256[:16]), "little", signed=True)


def reference_of(model: ModelInfo) -> Reference:
    """What the calibration needs of the model; for a model that records none, a neutral one."""
    if model.reference is not None:
        return model.reference
    f = len(model.features)
    return Reference(median=np.zeros(f), scale=np.ones(f), mean=np.zeros(f), std=np.ones(f), window=model.window)


def detect(windows: Sequence[DueWindow], scores: Scores, raw_states: dict[str, bytes], model: ModelInfo,
           settings: DetectorSettings, values: np.ndarray | None = None) -> DetectionResult:
    """Judge every window in order per series; `raw_states` is what the store holds for their series, `values`
    the windows' values stacked (B, T, F) as the scorer had them (None: stacked here)."""
    result = DetectionResult(windows=windows)
    if not windows:
        return result
    calibration, reference = settings.calibration, reference_of(model)
    row: dict[str, int] = {}  # each series' row, in order of first appearance: one pass over the windows
    codes = np.fromiter((row.setdefault(window.series_id, len(row)) for window in windows), np.int64, len(windows))
    series = list(row)
    batch = decode_states([raw_states.get(sid) for sid in series], model_key(model.sha256), len(model.features),
                          calibration, reference.wander)
    stacked = np.stack([w.values for w in windows]) if values is None else values
    levels, spikes = window_level(stacked, reference, calibration), window_spike(stacked, reference, calibration)
    starts = np.array([w.start_ms for w in windows], np.int64)
    ends = np.array([w.end_ms for w in windows], np.int64)
    touched = np.zeros(len(batch), bool)
    judged: list[np.ndarray] = []
    surprises: list[np.ndarray] = []
    for positions in rounds(codes):
        rows = codes[positions]
        fresh = ends[positions] > batch.last_end_ms[rows]
        result.skipped += int((~fresh).sum())
        positions, rows = positions[fresh], rows[fresh]
        if not len(positions):
            continue
        whole = len(rows) == len(batch) and bool((rows == np.arange(len(batch))).all())
        part = batch if whole else batch.take(rows)  # steady state: every series has a window in the round
        verdict = step(part, scores.score[positions], scores.feature_shares[positions],
                       starts[positions], ends[positions], levels[positions], reference, calibration,
                       None if spikes is None else Spike(*(field[positions] for field in spikes)))
        if not whole:
            batch.put(rows, part)
        touched[rows] = True
        judged.append(positions)
        surprises.append(verdict.surprise)
        for k in np.flatnonzero(verdict.opened | (verdict.closed != Close.NONE)).tolist():
            p = int(positions[k])
            phase, reason = ((Phase.OPENED, None) if verdict.opened[k]
                             else (Phase.CLOSED, _CLOSE_REASONS[Close(int(verdict.closed[k]))]))
            result.events.append(_event(phase, windows[p], part, k, float(scores.score[p]),
                                        float(verdict.surprise[k]), reason))
    if judged:
        result.positions, result.surprise = np.concatenate(judged), np.concatenate(surprises)
    changed = np.flatnonzero(touched)
    encoded = encode_states(batch if len(changed) == len(batch) else batch.take(changed))
    result.states = {series[i]: raw for i, raw in zip(changed.tolist(), encoded)}
    return result


def _event(phase: Phase, window: DueWindow, part: Batch, k: int, score: float, surprise: float,
           reason: CloseReason | None) -> IncidentEvent:
    """The transition of row k of `part` (the series' state after the window)."""
    opened_ms = int(part.opened_ms[k])
    return IncidentEvent(
        phase=phase, incident_id=incident_id(window.series_id, opened_ms), window=window, score=score,
        surprise=surprise, opened_ms=opened_ms, last_anomalous_ms=int(part.last_anomalous_ms[k]),
        windows=int(part.open_windows[k]), peak_end_ms=int(part.peak_end_ms[k]),
        peak_surprise=float(part.peak_surprise[k]), peak_score=float(part.peak_score[k]),
        peak_shares=tuple(float(x) for x in part.peak_shares[k]), close_reason=reason)


@dataclass(frozen=True)
class Detector:
    """Incidents mode as the pipeline runs it: the settings, and where every judged window may also go."""

    settings: DetectorSettings = DetectorSettings()
    top_k: int = 3
    scores_topic: str | None = None  # every judged window also goes here, for dashboards

    def detect(self, windows: Sequence[DueWindow], scores: Scores, model: ModelInfo,
               raw_states: dict[str, bytes], values: np.ndarray | None = None) -> DetectionResult:
        """`raw_states`: what the store holds for the series of `windows` (none for a new series); `values`:
        the windows' values as the scorer had them, (B, T, F)."""
        return detect(windows, scores, raw_states, model, self.settings, values)
