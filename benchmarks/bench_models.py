"""Untrained but complete artifacts for the speed benchmarks.

Speed does not depend on what the weights learned, so the benchmarks skip training: a VRAE of the
preset's shape with seeded random weights, a scaler and calibration fitted on sample windows, and a
threshold at a chosen quantile of those windows' scores (so the alert rate is realistic and known).
The artifact goes through `save_artifact`, so the worker loads exactly what production would.
"""

from pathlib import Path

import numpy as np
import torch

from vrae_model.artifact import save_artifact
from vrae_model.data import Scaler, fingerprint
from vrae_model.model import VRAE, VRAEConfig
from vrae_model.presets import get_preset
from vrae_model.scoring import Calibrated, artifact_metadata, calibrate


def sample_windows(n: int, window: int, n_features: int, seed: int = 0) -> np.ndarray:
    """Noisy sinusoids shaped like the benchmark stream: (n, T, F) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(window, dtype=np.float64)[None, :, None]
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, n_features))
    values = np.sin(2 * np.pi * t / 60.0 + phase) + 0.1 * rng.standard_normal((n, window, n_features))
    return values.astype(np.float32)


def build_module(preset_name: str, window: int, n_features: int, calibration_windows: np.ndarray, *,
                 alert_quantile: float = 0.999, seed: int = 0) -> Calibrated:
    """The preset's architecture with seeded random weights, calibrated on `calibration_windows`."""
    preset = get_preset(preset_name)
    config = VRAEConfig.from_dict({**preset.model.to_dict(), "n_features": n_features, "sequence_length": window})
    torch.manual_seed(seed)
    model = VRAE(config).eval()
    return calibrate(model, Scaler.fit(calibration_windows), calibration_windows, threshold_method="quantile",
                     quantile=alert_quantile)


def write_artifact(path: Path, preset_name: str, window: int, n_features: int, *, alert_quantile: float = 0.999,
                   n_calibration: int = 2000) -> Path:
    """Write a loadable artifact whose threshold flags about `1 - alert_quantile` of normal windows."""
    windows = sample_windows(n_calibration, window, n_features)
    calibrated = build_module(preset_name, window, n_features, windows, alert_quantile=alert_quantile)
    metadata = artifact_metadata(
        calibrated, features=[f"f{i}" for i in range(n_features)], stride=1, data_fingerprint=fingerprint(windows),
        training_config={"preset": preset_name, "note": "untrained weights: speed benchmark only"},
        model_name=f"vrae-bench-{preset_name}",
    )
    save_artifact(calibrated.module, metadata, path)
    return path
