"""The module that gets exported: raw windows in, reconstruction scores and calibrated scores out.

Scaling and calibration live inside it as buffers, so the worker needs nothing but the artifact.
The calibration arithmetic runs in float64 so that scores far in the tail still differ.
"""

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

import vrae_model
from vrae_model.artifact import ARTIFACT_FORMAT_VERSION, forward_outputs
from vrae_model.calibration import (Calibration, FeatureCalibration, Threshold, choose_threshold, fit_calibration,
                                    fit_feature_calibration)
from vrae_model.data import Scaler
from vrae_model.exceptions import DataError
from vrae_model.model import VRAE

if TYPE_CHECKING:
    from vrae_model.artifact import Artifact

SCORING_BATCH_SIZE = 4096


class ScoringModule(nn.Module):
    def __init__(self, model: VRAE, scaler: Scaler, calibration: Calibration) -> None:
        super().__init__()
        self.model = model.eval()
        self.register_buffer("mean", torch.as_tensor(scaler.mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(scaler.std, dtype=torch.float32))
        self.register_buffer("knots_score", torch.as_tensor(calibration.knots_score, dtype=torch.float64))
        self.register_buffer("knots_prob", torch.as_tensor(calibration.knots_prob, dtype=torch.float64))
        self.register_buffer("u", torch.tensor(calibration.u, dtype=torch.float64))
        self.register_buffer("q_u", torch.tensor(calibration.q_u, dtype=torch.float64))
        self.register_buffer("gpd_shape", torch.tensor(calibration.gpd_shape, dtype=torch.float64))
        self.register_buffer("gpd_scale", torch.tensor(calibration.gpd_scale, dtype=torch.float64))

    def _scale(self, x: Tensor) -> Tensor:
        return (x.float() - self.mean) / self.std  # (B, T, F)

    def _calibrate(self, score: Tensor) -> tuple[Tensor, Tensor]:
        """(anomaly_score, surprise): the empirical CDF (linear between knots) below u, 1 - (1 - q_u) * GPD
        survival above it; and -log10 of the tail probability 1 - anomaly_score, computed in log space so
        that it keeps ranking where anomaly_score has rounded to 1 (vrae_model.calibration.surprises)."""
        s = score.double()  # (B,)
        xs, ps = self.knots_score, self.knots_prob
        right = torch.searchsorted(xs, s, right=True).clamp(1, xs.shape[0] - 1)
        left = right - 1
        x0, x1, p0, p1 = xs[left], xs[right], ps[left], ps[right]
        width = x1 - x0
        fraction = torch.where(width > 0, (s - x0) / torch.where(width > 0, width, torch.ones_like(width)), torch.ones_like(s))
        body = p0 + fraction.clamp(0.0, 1.0) * (p1 - p0)
        body = torch.where(s < xs[0], torch.zeros_like(s), body)
        body = torch.where(s >= xs[-1], ps[-1].expand_as(s), body)
        y = (s - self.u).clamp_min(0.0) / self.gpd_scale
        shape = self.gpd_shape
        safe_shape = torch.where(shape > 1e-6, shape, torch.ones_like(shape))
        log_survival = torch.where(shape > 1e-6, -torch.log1p(safe_shape * y) / safe_shape, -y)
        tail = 1.0 - (1.0 - self.q_u) * torch.exp(log_survival)
        in_tail = s >= self.u
        tail_surprise = -(torch.log10(1.0 - self.q_u) + log_survival / 2.302585092994046)
        surprise = torch.where(in_tail, tail_surprise, -torch.log10(1.0 - body))
        return torch.where(in_tail, tail, body), surprise

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Raw windows -> (posterior mean, scaled shape, scaled level): what every method starts from."""
        shape, level = self.model.split_level(self._scale(x))
        mu, _ = self.model.encode(shape)
        return mu, shape, level

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        mu, shape, _ = self._encode(x)
        error = (self.model.decode(mu) - shape).pow(2)  # (B, T, F); a removed level cancels out
        score = error.mean(dim=(1, 2))  # (B,)
        per_feature = error.mean(dim=1)  # (B, F)
        total = per_feature.sum(dim=1, keepdim=True)
        uniform = torch.full_like(per_feature, 1.0 / per_feature.shape[1])
        feature_shares = torch.where(total > 0, per_feature / total.clamp_min(1e-30), uniform)
        anomaly_score, surprise = self._calibrate(score)
        return {"score": score, "anomaly_score": anomaly_score.float(), "surprise": surprise.float(),
                "feature_shares": feature_shares}

    @torch.jit.export
    def embed(self, x: Tensor) -> Tensor:
        return self._encode(x)[0]  # (B, L)

    @torch.jit.export
    def decode(self, z: Tensor) -> Tensor:
        """(B, L) -> (B, T, F) raw units. A model that removes levels generates shapes around the
        training data's mean level."""
        return self.model.decode(z.float()) * self.std + self.mean

    @torch.jit.export
    def reconstruct(self, x: Tensor) -> Tensor:
        mu, _, level = self._encode(x)
        return (self.model.decode(mu) + level) * self.std + self.mean  # (B, T, F) raw units


def score_arrays(module: nn.Module, windows: np.ndarray, batch_size: int = SCORING_BATCH_SIZE) -> dict[str, np.ndarray]:
    """Run an eager or scripted ScoringModule over many windows in chunks; numpy in, numpy out."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    data = np.ascontiguousarray(windows, dtype=np.float32)
    chunks: dict[str, list[np.ndarray]] = {"score": [], "anomaly_score": [], "surprise": [], "feature_shares": []}
    with torch.inference_mode():
        for start in range(0, data.shape[0], batch_size):
            out = forward_outputs(module(torch.from_numpy(data[start : start + batch_size])))
            for key in chunks:
                chunks[key].append(out[key].numpy())
    if data.shape[0] == 0:
        return {
            "score": np.zeros(0, np.float32),
            "anomaly_score": np.zeros(0, np.float32),
            "surprise": np.zeros(0, np.float32),
            "feature_shares": np.zeros((0, data.shape[-1]), np.float32),
        }
    return {key: np.concatenate(parts) for key, parts in chunks.items()}


def score_windows(artifact: "Artifact", windows: np.ndarray, batch_size: int = SCORING_BATCH_SIZE) -> dict[str, np.ndarray]:
    """Score raw windows with a loaded artifact; adds `is_anomaly` from the artifact's threshold."""
    expected = (artifact.metadata["window"], len(artifact.metadata["features"]))
    if windows.ndim != 3 or tuple(windows.shape[1:]) != expected:
        raise DataError(
            f"windows of shape {tuple(windows.shape)} do not fit the model's (N, {expected[0]}, {expected[1]}); "
            "use the window length and features the model was trained with"
        )
    result = score_arrays(artifact.module, windows, batch_size)
    result["is_anomaly"] = result["anomaly_score"] >= float(artifact.metadata["threshold"])
    return result


@dataclass(frozen=True)
class Calibrated:
    """A model made ready for export: its scoring module, calibration and alert threshold."""

    module: ScoringModule
    scaler: Scaler
    calibration: Calibration
    threshold: Threshold
    scores: np.ndarray  # raw scores of the calibration windows
    feature_calibration: FeatureCalibration


def calibrate(model: VRAE, scaler: Scaler, windows: np.ndarray, *, threshold_method: str, risk: float | None = None,
              quantile: float | None = None, tail_quantile: float = 0.98) -> Calibrated:
    """Score held-out raw windows, fit the calibration to their scores and choose the threshold."""
    # Raw scores do not depend on the calibration, so a placeholder one serves to compute them.
    placeholder = ScoringModule(model, scaler, fit_calibration(np.zeros(1)))
    raw = score_arrays(placeholder, windows)
    scores = raw["score"]
    calibration = fit_calibration(scores, tail_quantile)
    threshold = choose_threshold(calibration, scores, threshold_method, risk=risk, quantile=quantile)
    # Each feature's mean squared error: the window's mean times F times that feature's share.
    per_feature = scores[:, None].astype(np.float64) * raw["feature_shares"].shape[1] * raw["feature_shares"]
    return Calibrated(ScoringModule(model, scaler, calibration), scaler, calibration, threshold, scores,
                      fit_feature_calibration(per_feature))


def artifact_metadata(calibrated: Calibrated, *, features: list[str], stride: int, training_config: dict[str, Any],
                      data_fingerprint: str, model_name: str = "vrae", interval_ms: int = 0) -> dict[str, Any]:
    """Every key of the artifact's metadata.json, with its version stamps, for `save_artifact`."""
    model = calibrated.module.model
    created_at = datetime.now(timezone.utc).replace(microsecond=0)
    return {
        "format_version": ARTIFACT_FORMAT_VERSION,
        "model_name": model_name,
        "model_version": f"{created_at.strftime('%Y%m%dT%H%M%SZ')}-{data_fingerprint[:8]}",
        "window": model.config.sequence_length,
        "stride": stride,
        "interval_ms": int(interval_ms),
        "features": list(features),
        "scaler": calibrated.scaler.to_dict(),
        "threshold": calibrated.threshold.threshold,
        "score_threshold": calibrated.threshold.score_threshold,
        "threshold_method": calibrated.threshold.method,
        "calibration": calibrated.calibration.to_dict(),
        "feature_calibration": calibrated.feature_calibration.to_dict(),
        "model_config": model.config.to_dict(),
        "training_config": training_config,
        "param_counts": model.param_counts(),
        "data_fingerprint": data_fingerprint,
        "library_version": vrae_model.__version__,
        "torch_version": str(torch.__version__),
        "created_at": created_at.isoformat().replace("+00:00", "Z"),
    }
