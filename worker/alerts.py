"""Deciding alerts from scored windows (pure): ids, thresholds, top features, the alert document."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from worker.scorer import ModelInfo, Scores
from worker.windows import DueWindow

# Fixed namespace: alert ids must be identical across processes, restarts and versions.
ALERT_NAMESPACE = uuid.UUID("6f1d7a52-3c1e-4f57-9a51-8f0e2b6c9d41")
FLOAT32_MAX = float(np.finfo(np.float32).max)


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
    threshold: float
    top_features: tuple[tuple[str, float], ...]
    model: ModelInfo
    detected_at: datetime
    source_partition: int
    source_offset: int

    def to_json(self) -> dict[str, Any]:
        """The alert document (schema: worker/schemas/alert.schema.json)."""
        return {
            "alert_id": self.alert_id,
            "series_id": self.series_id,
            "window_start": self.window_start_ms,
            "window_end": self.window_end_ms,
            "window_start_iso": iso_from_ms(self.window_start_ms),
            "window_end_iso": iso_from_ms(self.window_end_ms),
            "score": self.score,
            "anomaly_score": self.anomaly_score,
            "threshold": self.threshold,
            "top_features": [{"name": name, "share": share} for name, share in self.top_features],
            "model": {"name": self.model.name, "version": self.model.version, "sha256": self.model.sha256},
            "detected_at": iso(self.detected_at),
            "source": {"partition": self.source_partition, "offset": self.source_offset},
        }


def decide_alerts(windows: Sequence[DueWindow], scores: Scores, model: ModelInfo, *, top_k: int,
                  now: datetime) -> list[Alert]:
    """One alert per window whose anomaly_score reaches the model's threshold."""
    # Extreme (finite) inputs can overflow the model to inf/NaN: that is the most anomalous window there
    # is, and it must still serialise as JSON.
    anomaly = np.nan_to_num(scores.anomaly_score, nan=1.0)
    raw = np.nan_to_num(scores.score, nan=FLOAT32_MAX, posinf=FLOAT32_MAX)
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
            threshold=model.threshold,
            top_features=top_features(scores.feature_scores[index], model.features, top_k),
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


def iso(moment: datetime) -> str:
    """UTC, millisecond precision, `Z` suffix: the one timestamp format of every record we produce."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_from_ms(epoch_ms: int) -> str:
    return iso(datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc))
