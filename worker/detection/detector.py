"""From scored windows to incidents (pure): per-series online calibration, then the incident machine.

Each series has one small state (`DetectorState`: its score history and its incident) that a
`DetectorStore` (worker.state) keeps next to the window state. One batch:

    states  = store.load(series with due windows)
    result  = detect(windows, scores, states, ...)   # judge each window against its series' history,
                                                     # then fold it in; advance the incident machine
    deliver the records of result (worker.records), confirmed
    store.save(result.states)                        # only after delivery: worker.checkpoint

Why save after delivery: if the worker dies between the two, the replayed batch is judged from the
old state again and re-emits the same records with the same ids (downstream deduplicates). If it dies
after the save, the replayed windows end at or before the state's `last_end_ms`, are skipped, and
their records were already delivered. Either way a replay leaves the score history as it was, and the
store refuses to overwrite a state with an older one.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from worker.detection.calibration import (AdaptiveSettings, Judgement, ScoreHistory, feature_errors, fold, for_model,
                                          judge, model_key)
from worker.detection.incidents import IncidentSettings, IncidentState, Observation, Transition, step
from worker.scorer import ModelInfo, Scores
from worker.windows import DueWindow

if TYPE_CHECKING:  # the store's interface names this module's state: import it for type checks only
    from worker.state.interfaces import DetectorStore


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
    """Incidents mode as the pipeline runs it: load the states, detect, and save them after delivery."""

    store: "DetectorStore"
    settings: DetectorSettings = DetectorSettings()
    top_k: int = 3
    scores_topic: str | None = None  # every judged window also goes here, for dashboards

    def detect(self, windows: Sequence[DueWindow], scores: Scores, model: ModelInfo) -> DetectionResult:
        if not windows:
            return DetectionResult()
        states = self.store.load(list(dict.fromkeys(window.series_id for window in windows)))
        return detect(windows, scores, states, model, self.settings)

    def save(self, result: DetectionResult) -> None:
        """Persist the new states; only once the batch's records are confirmed delivered (worker.checkpoint)."""
        if result.states:
            self.store.save(result.states)
