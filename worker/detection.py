"""From scored windows to incidents (pure): per-series online calibration, then the incident machine.

Each series has one small state (`DetectorState`: its score history and its incident) that a
`DetectorStore` keeps next to the window state. One batch:

    states  = store.load(series with due windows)
    result  = detect(windows, scores, states, ...)   # judge each window against its series' history,
                                                     # then fold it in; advance the incident machine
    deliver result.messages (opened/closed records, optional per-window scores), confirmed
    store.save(result.states)                        # only after delivery: see below

Why save after delivery: if the worker dies between the two, the replayed batch is judged from the
old state again and re-emits the same records with the same ids (downstream deduplicates). If it dies
after the save, the replayed windows end at or before the state's `last_end_ms`, are skipped, and
their records were already delivered. Either way a replay leaves the score history as it was, and the
store refuses to overwrite a state with an older one.
"""

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import numpy as np

from worker.adaptive import (AdaptiveSettings, Judgement, ScoreHistory, feature_errors, fold, for_model, judge,
                             model_key, state_bytes)
from worker.alerts import FLOAT32_MAX, iso, iso_from_ms, top_features
from worker.config import DetectionSettings
from worker.incidents import IncidentSettings, IncidentState, Observation, Phase, Transition, step
from worker.incidents import state_bytes as incident_state_bytes
from worker.outbound import OutboundMessage, json_message
from worker.scorer import ModelInfo, Scores
from worker.windows import DueWindow


class DetectorState(NamedTuple):
    """Everything the detector remembers about one series; bytes start with `last_end_ms` (int64 LE),
    which the Redis store compares so an older state never overwrites a newer one."""

    history: ScoreHistory
    incident: IncidentState = IncidentState()

    def to_bytes(self) -> bytes:
        """history | incident | the history's length (uint16), so both parts can be found again."""
        history = self.history.to_bytes()
        return history + self.incident.to_bytes() + struct.pack("<H", len(history))

    @classmethod
    def from_bytes(cls, raw: bytes) -> "DetectorState":
        (split,) = struct.unpack("<H", raw[-2:])
        return cls(ScoreHistory.from_bytes(raw[:split]), IncidentState.from_bytes(raw[split:-2]))


def detector_state_bytes(n_features: int) -> int:
    """The most one series' detector state takes in the store: it depends on F only."""
    return state_bytes(n_features) + incident_state_bytes(n_features) + 2


def last_end_ms(raw: bytes) -> int:
    """The replay mark of a stored state: its first 8 bytes (what the Redis script compares)."""
    return struct.unpack_from("<q", raw)[0]


class DetectorStore(Protocol):
    def load(self, series_ids: Sequence[str]) -> dict[str, DetectorState]: ...

    def save(self, states: dict[str, DetectorState]) -> None: ...


class MemoryDetectorStore:
    """The reference store (unit tests, the quality benchmark): same newer-wins rule as Redis."""

    def __init__(self) -> None:
        self._states: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._states)

    def raw(self, series_id: str) -> bytes | None:
        return self._states.get(series_id)

    def load(self, series_ids: Sequence[str]) -> dict[str, DetectorState]:
        return {sid: DetectorState.from_bytes(self._states[sid]) for sid in series_ids if sid in self._states}

    def save(self, states: dict[str, DetectorState]) -> None:
        for series_id, state in states.items():
            old = self._states.get(series_id)
            if old is None or last_end_ms(old) < state.history.last_end_ms:
                self._states[series_id] = state.to_bytes()


@dataclass(frozen=True)
class Verdict:
    """One window judged against its series' history (windows of a replay get none)."""

    window: DueWindow
    index: int  # position in the batch's scores
    judgement: Judgement


@dataclass(frozen=True)
class IncidentEvent:
    """An incident transition together with the window that caused it."""

    transition: Transition
    window: DueWindow


@dataclass
class DetectionResult:
    verdicts: list[Verdict] = field(default_factory=list)
    events: list[IncidentEvent] = field(default_factory=list)
    states: dict[str, DetectorState] = field(default_factory=dict)  # changed states, to save after delivery
    skipped: int = 0  # replayed windows, already folded into their series' history


@dataclass(frozen=True)
class DetectorSettings:
    adaptive: AdaptiveSettings = AdaptiveSettings()
    incidents: IncidentSettings = IncidentSettings()


def settings_from(config: DetectionSettings) -> DetectorSettings:
    """The detector's settings from the worker's configuration (VRAE_DETECTION__*)."""
    return DetectorSettings(
        adaptive=AdaptiveSettings(long_halflife=config.long_halflife, short_halflife=config.short_halflife,
                                  warmup=config.warmup, history_weight=config.history_weight),
        incidents=IncidentSettings(open_surprise=config.open_surprise, close_surprise=config.close_surprise,
                                   close_after=config.close_after),
    )


def detect(windows: Sequence[DueWindow], scores: Scores, states: dict[str, DetectorState], model: ModelInfo,
           settings: DetectorSettings) -> DetectionResult:
    """Judge, fold and advance every series in window order; `states` is what the store loaded."""
    key, n_features = model_key(model.sha256), len(model.features)
    result = DetectionResult()
    current: dict[str, DetectorState] = {}
    # Plain floats, converted once per batch: indexing numpy per window costs more than the judgement.
    raw_scores, anomaly_scores = scores.score.tolist(), scores.anomaly_score.tolist()
    for index, window in enumerate(windows):
        sid = window.series_id
        if sid not in current:
            loaded = states.get(sid)
            current[sid] = DetectorState(for_model(loaded.history if loaded else None, key, n_features),
                                         loaded.incident if loaded else IncidentState())
        state = current[sid]
        if window.end_ms <= state.history.last_end_ms:
            result.skipped += 1
            continue
        score, anomaly = raw_scores[index], anomaly_scores[index]
        errors = feature_errors(score, scores.feature_scores[index])
        judgement = judge(state.history, errors, anomaly, settings.adaptive, start_ms=window.start_ms,
                          end_ms=window.end_ms, reference=model.feature_calibration)
        seen = Observation(window.start_ms, window.end_ms, score, judgement.surprise, scores.feature_scores[index])
        incident, transition = step(sid, state.incident, seen, settings.incidents)
        history = fold(state.history, errors, settings.adaptive, start_ms=window.start_ms, end_ms=window.end_ms,
                       anomaly_score=anomaly, surprise=judgement.surprise)
        current[sid] = DetectorState(history, incident)
        result.verdicts.append(Verdict(window, index, judgement))
        if transition is not None:
            result.events.append(IncidentEvent(transition, window))
        result.states[sid] = current[sid]
    return result


@dataclass(frozen=True)
class Detector:
    """The pipeline's view: load states, detect, turn the result into messages, save after delivery."""

    store: DetectorStore
    settings: DetectorSettings = DetectorSettings()
    top_k: int = 3
    scores_topic: str | None = None  # every judged window also goes here, for dashboards

    def detect(self, windows: Sequence[DueWindow], scores: Scores, model: ModelInfo) -> DetectionResult:
        if not windows:
            return DetectionResult()
        states = self.store.load(list(dict.fromkeys(window.series_id for window in windows)))
        return detect(windows, scores, states, model, self.settings)

    def messages(self, result: DetectionResult, scores: Scores, model: ModelInfo, alert_topic: str,
                 now: datetime) -> list[OutboundMessage]:
        messages = [json_message(alert_topic, event.window.series_id,
                                 incident_document(event, model, top_k=self.top_k, now=now))
                    for event in result.events]
        if self.scores_topic is not None:
            messages += [json_message(self.scores_topic, verdict.window.series_id,
                                      score_document(verdict, scores, model)) for verdict in result.verdicts]
        return messages

    def commit(self, result: DetectionResult) -> None:
        """Persist the new states; call only once the batch's messages are confirmed delivered."""
        if result.states:
            self.store.save(result.states)


def incident_document(event: IncidentEvent, model: ModelInfo, *, top_k: int, now: datetime) -> dict[str, Any]:
    """The `opened` / `closed` record (schema: worker/schemas/incident.schema.json)."""
    transition, window = event.transition, event.window
    state = transition.state
    document: dict[str, Any] = {
        "type": "incident",
        "phase": transition.phase.value,
        "incident_id": transition.incident_id,
        "series_id": window.series_id,
        "opened_at": state.opened_end_ms,
        "opened_at_iso": iso_from_ms(state.opened_end_ms),
        "window_start": window.start_ms,
        "window_end": window.end_ms,
        "score": _finite(transition.at.score),
        "surprise": _finite(transition.at.surprise),
        "peak": {"score": _finite(state.peak_score), "surprise": _finite(state.peak_surprise),
                 "window_end": state.peak_end_ms},
        "top_features": [{"name": name, "share": share}
                         for name, share in top_features(np.asarray(state.peak_shares), model.features, top_k)],
        "windows": state.windows,
        "model": {"name": model.name, "version": model.version, "sha256": model.sha256},
        "detected_at": iso(now),
        "source": {"partition": window.event.record.partition, "offset": window.event.record.offset},
    }
    if transition.phase is Phase.CLOSED:
        document["closed_at"] = state.last_anomalous_end_ms
        document["closed_at_iso"] = iso_from_ms(state.last_anomalous_end_ms)
        document["duration_ms"] = state.last_anomalous_end_ms - state.opened_end_ms
    return document


def score_document(verdict: Verdict, scores: Scores, model: ModelInfo) -> dict[str, Any]:
    """One window's scores for dashboards (the optional scores topic)."""
    judgement = verdict.judgement
    return {
        "series_id": verdict.window.series_id,
        "window_start": verdict.window.start_ms,
        "window_end": verdict.window.end_ms,
        "score": _finite(float(scores.score[verdict.index])),
        "model_anomaly_score": _finite(float(scores.anomaly_score[verdict.index]), 1.0),
        "anomaly_score": judgement.anomaly_score,
        "surprise": _finite(judgement.surprise),
        "model_version": model.version,
    }


def _finite(value: float, nan: float = FLOAT32_MAX) -> float:
    if math.isnan(value):
        return nan
    return min(max(value, -FLOAT32_MAX), FLOAT32_MAX)

