"""Windows mode (pure): one alert per window over the model's threshold, with its id and top features.

The alert document these become is rendered by `worker.records`."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from worker.events import FLOAT32_MAX
from worker.scorer import ModelInfo, Scores
from worker.windows import DueWindow

# Fixed namespace: alert ids must be identical across processes, restarts and versions.
ALERT_NAMESPACE = uuid.UUID("6f1d7a52-3c1e-4f57-9a51-8f0e2b6c9d41")


def alert_id(series_id: str, window_start_ms: int, window_end_ms: int) -> str:
    """The same window always gets the same id, so a replayed alert can be deduplicated downstream."""
    return str(uuid.uuid5(ALERT_NAMESPACE, f"{series_id}\x1f{window_start_ms}\x1f{window_end_ms}"))


@dataclass(frozen=True)
class Alert:
    alert_id: str
    series_id: str
    window_start_ms: int
    window_end_ms: int
    score: float
    anomaly_score: float
    surprise: float
    threshold: float
    top_features: tuple[tuple[str, float], ...]
    model: ModelInfo
    detected_at: datetime
    source_partition: int
    source_offset: int


def decide_alerts(windows: Sequence[DueWindow], scores: Scores, model: ModelInfo, *, top_k: int,
                  now: datetime) -> list[Alert]:
    """One alert per window whose anomaly_score reaches the model's threshold."""
    # Extreme (finite) inputs can overflow the model to inf/NaN: that is the most anomalous window there
    # is, and it must still serialise as JSON.
    anomaly = np.nan_to_num(scores.anomaly_score, nan=1.0)
    raw = np.nan_to_num(scores.score, nan=FLOAT32_MAX, posinf=FLOAT32_MAX)
    surprise = np.nan_to_num(scores.surprise, nan=FLOAT32_MAX, posinf=FLOAT32_MAX)
    alerts = []
    for index in np.flatnonzero(anomaly >= model.threshold):
        window = windows[index]
        alerts.append(Alert(
            alert_id=alert_id(window.series_id, window.start_ms, window.end_ms),
            series_id=window.series_id,
            window_start_ms=window.start_ms,
            window_end_ms=window.end_ms,
            score=float(raw[index]),
            anomaly_score=float(anomaly[index]),
            surprise=float(surprise[index]),
            threshold=model.threshold,
            top_features=top_features(scores.feature_shares[index], model.features, top_k),
            model=model,
            detected_at=now,
            source_partition=window.event.record.partition,
            source_offset=window.event.record.offset,
        ))
    return alerts


def top_features(shares: np.ndarray, names: Sequence[str], k: int) -> tuple[tuple[str, float], ...]:
    """The k features with the largest share of the reconstruction error, largest first."""
    order = np.argsort(-np.nan_to_num(shares, nan=0.0), kind="stable")[:k]
    return tuple((names[i], round(float(np.nan_to_num(shares[i], nan=0.0)), 6)) for i in order)
