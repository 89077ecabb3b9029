"""From scored windows to incidents (pure): per-series online calibration, then the incident machine.

Each series has one small state (`DetectorState`: its score history and its incident) that the state
store (worker.state) keeps next to its window state. One batch:

    states  = what the store's peek read for the batch's series
    result  = detect(windows, scores, states, ...)   # judge each window against its series' history,
                                                     # then fold it in; advance the incident machine
    deliver the records of result (worker.records), confirmed
    write result.states with the window state        # only after delivery: worker.checkpoint

A window ending at or before a state's `last_end_ms` was folded in already and is skipped, and the
store never replaces a state with an older one, so a repeated write or a slower worker after a
rebalance cannot roll a series' history back.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from worker.detection.calibration import (AdaptiveSettings, Judgement, ScoreHistory, feature_errors, fold, for_model,
                                          judge, model_key)
from worker.detection.incidents import IncidentSettings, IncidentState, Observation, Transition, step
from worker.scorer import ModelInfo, Scores
from worker.windows import DueWindow


class DetectorState(NamedTuple):
    """Everything the detector remembers about one series (stored by worker.state, laid out by its codec)."""

    history: ScoreHistory
    incident: IncidentState = IncidentState()


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
        errors = feature_errors(score, scores.feature_shares[index])
        judgement = judge(state.history, errors, anomaly, settings.adaptive, start_ms=window.start_ms,
                          end_ms=window.end_ms, reference=model.feature_calibration)
        seen = Observation(window.start_ms, window.end_ms, score, judgement.surprise, scores.feature_shares[index])
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
    """Incidents mode as the pipeline runs it: the settings, and where every judged window may also go."""

    settings: DetectorSettings = DetectorSettings()
    top_k: int = 3
    scores_topic: str | None = None  # every judged window also goes here, for dashboards

    def detect(self, windows: Sequence[DueWindow], scores: Scores, model: ModelInfo,
               states: dict[str, DetectorState]) -> DetectionResult:
        """`states`: what the store holds for the series of `windows` (none for a new series)."""
        if not windows:
            return DetectionResult()
        return detect(windows, scores, states, model, self.settings)
