"""Untrained but complete artifacts for the speed benchmarks.

Speed does not depend on what the weights learned, so the benchmarks skip training: a VRAE of the
preset's shape with seeded random weights, a scaler and calibration fitted on sample windows, and a
threshold at a chosen quantile of those windows' scores (so the alert rate is realistic and known).
The artifact goes through `save_artifact`, so the worker loads exactly what production would.
"""

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import vrae_model
from vrae_model.artifact import ARTIFACT_FORMAT_VERSION, save_artifact
from vrae_model.calibration import choose_threshold, fit_calibration
from vrae_model.data import Scaler, fingerprint
from vrae_model.model import VRAE, VRAEConfig
from vrae_model.presets import get_preset
from vrae_model.scoring import ScoringModule, score_arrays


def sample_windows(n: int, window: int, n_features: int, seed: int = 0) -> np.ndarray:
    """Noisy sinusoids shaped like the benchmark stream: (n, T, F) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(window, dtype=np.float64)[None, :, None]
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, n_features))
    values = np.sin(2 * np.pi * t / 60.0 + phase) + 0.1 * rng.standard_normal((n, window, n_features))
    return values.astype(np.float32)


def build_module(preset_name: str, window: int, n_features: int, calibration_windows: np.ndarray,
                 seed: int = 0) -> tuple[ScoringModule, VRAEConfig, Scaler]:
    """An eager ScoringModule with the preset's architecture and seeded random weights."""
    preset = get_preset(preset_name)
    config = VRAEConfig.from_dict({**preset.model.to_dict(), "n_features": n_features, "sequence_length": window})
    torch.manual_seed(seed)
    model = VRAE(config).eval()
    scaler = Scaler.fit(calibration_windows)
    provisional = ScoringModule(model, scaler, fit_calibration(np.zeros(1)))
    scores = score_arrays(provisional, calibration_windows)["score"]
    return ScoringModule(model, scaler, fit_calibration(scores)), config, scaler


def write_artifact(path: Path, preset_name: str, window: int, n_features: int, *, alert_quantile: float = 0.999,
                   n_calibration: int = 2000) -> Path:
    """Write a loadable artifact whose threshold flags about `1 - alert_quantile` of normal windows."""
    windows = sample_windows(n_calibration, window, n_features)
    module, config, scaler = build_module(preset_name, window, n_features, windows)
    scores = score_arrays(module, windows)["score"]
    calibration = fit_calibration(scores)
    threshold = choose_threshold(calibration, scores, "quantile", quantile=alert_quantile)
    created_at = datetime.now(timezone.utc).replace(microsecond=0)
    data_fingerprint = fingerprint(windows)
    metadata = {
        "format_version": ARTIFACT_FORMAT_VERSION,
        "model_name": f"vrae-bench-{preset_name}",
        "model_version": f"{created_at.strftime('%Y%m%dT%H%M%SZ')}-{data_fingerprint[:8]}",
        "window": window,
        "stride": 1,
        "features": [f"f{i}" for i in range(n_features)],
        "scaler": scaler.to_dict(),
        "threshold": threshold.threshold,
        "score_threshold": threshold.score_threshold,
        "threshold_method": threshold.method,
        "calibration": calibration.to_dict(),
        "model_config": config.to_dict(),
        "training_config": {"preset": preset_name, "note": "untrained weights: speed benchmark only"},
        "param_counts": module.model.param_counts(),
        "data_fingerprint": data_fingerprint,
        "library_version": vrae_model.__version__,
        "torch_version": torch.__version__,
        "created_at": created_at.isoformat().replace("+00:00", "Z"),
    }
    save_artifact(module, metadata, path)
    return path
