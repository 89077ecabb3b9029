from pathlib import Path

import numpy as np
import pytest

from vrae_model.artifact import load_artifact
from vrae_model.calibration import FeatureCalibration
from vrae_model.data import WindowSet
from vrae_model.exceptions import ArtifactError, ConfigError, DataError
from vrae_model.scoring import score_windows
from vrae_model.training import TrainConfig, export_from_checkpoint, kl_weight, split_indices, train

TINY = {"hidden_size": 4, "hidden_layer_depth": 1, "latent_length": 3, "epochs": 2, "batch_size": 16}


def sine_windows(n: int = 48, window: int = 8) -> WindowSet:
    rng = np.random.default_rng(0)
    t = np.arange(n + window)[:, None]
    stream = np.hstack([np.sin(t / 3.0), 10 + np.cos(t / 5.0)]) + rng.normal(0, 0.05, (n + window, 2))
    windows = np.lib.stride_tricks.sliding_window_view(stream, window, axis=0)[:n].transpose(0, 2, 1)
    return WindowSet(
        windows=np.ascontiguousarray(windows, dtype=np.float32),
        feature_names=["s", "c"],
        series_ids=np.full(n, "m"),
        end_timestamps=np.arange(n, dtype=np.int64),
        stride=1,
    )


@pytest.mark.parametrize(
    "epoch,schedule,warmup,expected",
    [
        (0, "none", 10, 1.0),
        (0, "linear", 0, 1.0),
        (0, "linear", 4, 0.0),
        (2, "linear", 4, 0.5),
        (9, "linear", 4, 1.0),
        (0, "cyclical", 4, 0.0),
        (1, "cyclical", 4, 0.5),
        (3, "cyclical", 4, 1.0),
        (4, "cyclical", 4, 0.0),
    ],
)
def test_kl_weight_schedules(epoch: int, schedule: str, warmup: int, expected: float) -> None:
    assert kl_weight(epoch, schedule, warmup) == pytest.approx(expected)


def test_split_is_seeded_disjoint_and_about_seventy_thirty() -> None:
    train_a, val_a = split_indices(100, 0.3, seed=1)
    train_b, val_b = split_indices(100, 0.3, seed=1)
    assert np.array_equal(train_a, train_b) and np.array_equal(val_a, val_b)
    assert len(val_a) == 30
    assert not set(train_a) & set(val_a)
    assert not np.array_equal(val_a, split_indices(100, 0.3, seed=2)[1])


def test_overlapping_windows_are_split_in_whole_blocks() -> None:
    train_index, val = split_indices(100, 0.3, seed=0, block=10)
    val_blocks, counts = np.unique(val // 10, return_counts=True)
    assert len(val_blocks) == 3 and set(counts.tolist()) == {10}
    assert not set(val_blocks.tolist()) & set((train_index // 10).tolist())


def test_too_few_windows_is_a_data_error(tmp_path: Path) -> None:
    data = sine_windows(n=3)
    with pytest.raises(DataError, match="at least"):
        train(data, "seed", out=tmp_path / "m.pt", progress_bar=False)


def test_artifact_named_like_its_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="checkpoint"):
        train(sine_windows(), "seed", out=tmp_path / "model.ckpt", progress_bar=False)


def test_checkpoint_without_calibration_cannot_be_exported(tmp_path: Path) -> None:
    import torch

    torch.save({"state_dict": {}}, tmp_path / "bare.ckpt")
    with pytest.raises(ArtifactError, match="re-run vrae train"):
        export_from_checkpoint(tmp_path / "bare.ckpt", tmp_path / "m.pt")


@pytest.mark.slow
def test_a_constant_stream_trains_a_level_free_model_that_still_sees_a_glitch_after_a_step(tmp_path: Path) -> None:
    """A flat line (a limit, a replica count) steps to a new level that stays, then glitches: the model
    must judge the new flat level like the old one, and the glitch as a glitch."""
    flat = WindowSet(windows=np.full((48, 8, 1), 4.0, np.float32), feature_names=["limit"],
                     series_ids=np.full(48, "m"), end_timestamps=np.arange(48, dtype=np.int64), stride=1)
    result = train(flat, "default", out=tmp_path / "model.pt", progress_bar=False, overrides=TINY)
    assert result.metrics["window_level"] == "remove"
    stepped = np.full((3, 8, 1), 4.0, np.float32)
    stepped[1:] = 5.5
    stepped[2, 5] = 6.5  # one event off the new level
    score = score_windows(load_artifact(result.artifact_path), stepped)["score"]
    assert score[1] == pytest.approx(score[0], rel=1e-4)  # the new level is as flat as the old
    assert score[2] > 100 * score[1]


@pytest.mark.slow
def test_tiny_training_run_writes_a_calibrated_artifact_and_reexport_scores_identically(tmp_path: Path) -> None:
    data = sine_windows()
    result = train(data, "default", out=tmp_path / "model.pt", progress_bar=False, overrides=TINY)
    assert result.artifact_path.is_file() and result.checkpoint_path == tmp_path / "model.ckpt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt", "model.pt"]  # no Lightning litter
    artifact = load_artifact(result.artifact_path)
    meta = artifact.metadata
    assert meta["window"] == 8 and meta["features"] == ["s", "c"] and meta["stride"] == 1
    assert meta["training_config"]["preset"] == "default" and meta["training_config"]["epochs"] == 2
    assert meta["model_config"]["hidden_size"] == 4
    # The default preset decides the window level from the data (two slow waves in 8-step windows: levels).
    assert result.metrics["level_share"] > 0.3
    assert meta["model_config"]["window_level"] == result.metrics["window_level"] == "remove"
    default_risk = TrainConfig().risk
    assert meta["threshold_method"] == f"pot:risk={default_risk:g}"
    assert meta["threshold"] == pytest.approx(1 - default_risk)
    assert meta["model_version"].endswith(meta["data_fingerprint"][:8])
    # Each feature's normal error on the held-out windows, for the worker's per-feature judgement.
    features = FeatureCalibration.from_dict(meta["feature_calibration"], 2)
    assert all(scale > 0 for scale in features.scale)
    history = result.metrics["history"]
    assert len(history) == 2
    assert {"train_loss_epoch", "train_recon", "train_kl", "train_active_units", "val_loss"} <= set(history[0])
    assert result.metrics["n_train_windows"] + result.metrics["n_val_windows"] == 48

    original = score_windows(artifact, data.windows)
    reexported = load_artifact(export_from_checkpoint(result.checkpoint_path, tmp_path / "again.pt"))
    again = score_windows(reexported, data.windows)
    for key in ("score", "anomaly_score", "feature_shares"):
        assert np.array_equal(original[key], again[key]), key
    assert reexported.metadata["model_version"] == meta["model_version"]
    assert reexported.metadata["feature_calibration"] == meta["feature_calibration"]


@pytest.mark.slow
def test_training_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    data = sine_windows()
    first = train(data, "seed", out=tmp_path / "a.pt", progress_bar=False, overrides={**TINY, "epochs": 1})
    second = train(data, "seed", out=tmp_path / "b.pt", progress_bar=False, overrides={**TINY, "epochs": 1})
    scores = [score_windows(load_artifact(r.artifact_path), data.windows)["score"] for r in (first, second)]
    assert np.array_equal(scores[0], scores[1])
