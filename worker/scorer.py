"""Loads the artifact once and scores every window that came due in a batch in one forward pass."""

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vrae_model.artifact import Artifact, forward_outputs, load_artifact
from vrae_model.calibration import FeatureCalibration
from vrae_model.exceptions import ArtifactError
from worker.config import ModelSettings
from worker.detection.calibration import Reference


@dataclass(frozen=True)
class ModelInfo:
    """What alerts say about the model that produced them."""

    name: str
    version: str
    sha256: str
    window: int
    features: tuple[str, ...]
    threshold: float
    # each feature's normal error, for judging a young series feature by feature (worker.detection.calibration);
    # None for an artifact exported before it was recorded
    feature_calibration: FeatureCalibration | None = None
    interval_ms: int = 0  # the training data's usual step between events; 0: not recorded
    # what the per-series calibration needs of the artifact (normal errors, scaler, levels, training size)
    reference: Reference | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Scores:
    score: np.ndarray  # (B,) mean squared error, scaled units
    anomaly_score: np.ndarray  # (B,) calibrated, [0, 1]
    feature_shares: np.ndarray  # (B, F) rows sum to 1
    surprise: np.ndarray | None = None  # (B,) -log10(1 - anomaly_score), unsaturated; derived when not given

    def __post_init__(self) -> None:
        if self.surprise is None:
            tail = np.maximum(1.0 - np.nan_to_num(np.asarray(self.anomaly_score, np.float64), nan=1.0), 2.0**-24)
            object.__setattr__(self, "surprise", (-np.log10(tail)).astype(np.float32))


class Scorer:
    """The TorchScript module behind a small numpy interface, chunked by `max_batch_size`."""

    def __init__(self, artifact: Artifact, max_batch_size: int = 1024, threshold: float | None = None) -> None:
        metadata = artifact.metadata
        self._module = artifact.module
        self._max_batch_size = max_batch_size
        self.info = ModelInfo(
            name=str(metadata["model_name"]),
            version=str(metadata["model_version"]),
            sha256=artifact.sha256,
            window=int(metadata["window"]),
            features=tuple(metadata["features"]),
            threshold=float(metadata["threshold"] if threshold is None else threshold),
            feature_calibration=_feature_calibration(metadata),
            interval_ms=int(metadata.get("interval_ms") or 0),
            reference=Reference.from_metadata(metadata),
        )
        self._warm_up()

    def _warm_up(self) -> None:
        """TorchScript profiles and optimises its graph on the first calls (~100 ms here): pay that now,
        at start-up or while a new model loads, not in the first batch's alert latency."""
        for batch_size in (1, 2, 3):
            self.score(np.zeros((batch_size, self.info.window, len(self.info.features)), np.float32))

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> "Scorer":
        """Load (and verify the sha256 of) the configured artifact; sets torch's thread count."""
        torch.set_num_threads(settings.torch_threads)
        artifact = load_artifact(settings.path, expected_sha256=settings.sha256)
        return cls(artifact, max_batch_size=settings.max_batch_size, threshold=settings.threshold)

    def score(self, windows: np.ndarray) -> Scores:
        """Score raw windows (B, T, F); B may be 0."""
        n_features = len(self.info.features)
        if len(windows) == 0:
            empty = np.zeros(0, np.float32)
            return Scores(empty, empty, np.zeros((0, n_features), np.float32), empty)
        data = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        parts: dict[str, list[np.ndarray]] = {"score": [], "anomaly_score": [], "feature_shares": [], "surprise": []}
        with torch.inference_mode():
            for chunk in torch.split(data, self._max_batch_size):
                out = forward_outputs(self._module(chunk))
                for key, collected in parts.items():
                    collected.append(out[key].numpy())
        merged = {key: np.concatenate(collected) for key, collected in parts.items()}
        return Scores(**merged)


def _feature_calibration(metadata: dict[str, Any]) -> FeatureCalibration | None:
    """The artifact's per-feature calibration, checked: a malformed one refuses the artifact (a model
    swap then keeps the old model) rather than mis-judging every young series."""
    raw = metadata.get("feature_calibration")
    if raw is None:
        return None
    try:
        return FeatureCalibration.from_dict(raw, len(metadata["features"]))
    except (KeyError, TypeError, ValueError) as error:
        raise ArtifactError(f"metadata feature_calibration is malformed: {error}; re-export the model") from error
