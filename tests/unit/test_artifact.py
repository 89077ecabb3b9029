import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vrae_model import __version__
from vrae_model.artifact import ARTIFACT_FORMAT_VERSION, Artifact, REQUIRED_KEYS, load_artifact, save_artifact
from vrae_model.calibration import fit_calibration
from vrae_model.data import Scaler
from vrae_model.exceptions import ArtifactError, DataError
from vrae_model.model import VRAE, VRAEConfig
from vrae_model.scoring import ScoringModule, score_arrays, score_windows

WINDOW, FEATURES = 12, 2


def make_module(decoder_input: str = "zeros", window_level: str = "keep") -> tuple[ScoringModule, np.ndarray]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    config = VRAEConfig(
        n_features=FEATURES, sequence_length=WINDOW, hidden_size=6, hidden_layer_depth=2, latent_length=4,
        decoder_input=decoder_input, window_level=window_level,
    )
    model = VRAE(config).eval()
    windows = (rng.normal(size=(64, WINDOW, FEATURES)) * [1.0, 5.0] + [0.0, 20.0]).astype(np.float32)
    scaler = Scaler.fit(windows)
    uncalibrated = ScoringModule(model, scaler, fit_calibration(np.zeros(1)))
    scores = score_arrays(uncalibrated, windows)["score"]
    return ScoringModule(model, scaler, fit_calibration(scores, 0.9)), windows


def metadata_for(module: ScoringModule) -> dict:
    return {
        "format_version": ARTIFACT_FORMAT_VERSION,
        "model_name": "vrae",
        "model_version": "test",
        "window": WINDOW,
        "stride": 1,
        "features": ["a", "b"],
        "scaler": {"mean": module.mean.tolist(), "std": module.std.tolist()},
        "threshold": 0.99,
        "score_threshold": 1.0,
        "threshold_method": "quantile:0.99",
        "calibration": {},
        "model_config": module.model.config.to_dict(),
        "training_config": {},
        "param_counts": module.model.param_counts(),
        "data_fingerprint": "0" * 64,
        "library_version": __version__,
        "torch_version": str(torch.__version__),
        "created_at": "2026-01-01T00:00:00Z",
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[ScoringModule, np.ndarray, Path, str]:
    """Scripting and saving take a second or two: do it once for the read-only tests of this file."""
    module, windows = make_module()
    path = tmp_path_factory.mktemp("artifact") / "model.pt"
    sha256 = save_artifact(module, metadata_for(module), path)
    return module, windows, path, sha256


@pytest.fixture(scope="module")
def loaded(saved) -> Artifact:
    return load_artifact(saved[2])


def test_round_trip_keeps_metadata_and_reports_the_file_hash(saved) -> None:
    module, _, path, sha256 = saved
    artifact = load_artifact(path, expected_sha256=sha256)
    assert artifact.sha256 == sha256
    assert artifact.metadata == metadata_for(module)
    assert set(REQUIRED_KEYS) <= set(artifact.metadata)
    assert not artifact.module.training
    assert path.stat().st_mode & 0o044 == 0o044  # readable by a worker running as another user


@pytest.mark.parametrize("batch", [1, 4096])
def test_scripted_artifact_scores_equal_the_eager_module(saved, loaded: Artifact, batch: int) -> None:
    module = saved[0]
    artifact = loaded
    x = torch.from_numpy((np.random.default_rng(batch).normal(size=(batch, WINDOW, FEATURES)) * 3 + 10).astype(np.float32))
    with torch.inference_mode():
        eager, scripted = module(x), artifact.module(x)
    for key in ("score", "anomaly_score", "feature_shares"):
        assert torch.allclose(eager[key], scripted[key], atol=1e-5), key
    assert scripted["score"].shape == (batch,)
    assert scripted["feature_shares"].shape == (batch, FEATURES)
    assert torch.allclose(scripted["feature_shares"].sum(dim=1), torch.ones(batch), atol=1e-5)
    assert bool(((scripted["anomaly_score"] >= 0) & (scripted["anomaly_score"] <= 1)).all())


def test_module_calibration_matches_numpy_calibration() -> None:
    from vrae_model.calibration import anomaly_scores, surprises

    rng = np.random.default_rng(3)
    scores = rng.gamma(2.0, size=2000)
    calibration = fit_calibration(scores, 0.95)
    module, _ = make_module()
    module = ScoringModule(module.model, Scaler(module.mean.numpy(), module.std.numpy()), calibration)
    probe = np.concatenate([np.linspace(-1, scores.max() * 2, 500), scores[:100]])
    got, surprise = module._calibrate(torch.from_numpy(probe))
    assert np.allclose(got.numpy(), anomaly_scores(calibration, probe), atol=1e-12)
    assert np.allclose(surprise.numpy(), surprises(calibration, probe), atol=1e-9)


def test_surprise_keeps_ranking_where_the_anomaly_score_saturates(tmp_path: Path) -> None:
    """Far past the calibration's range anomaly_score is exactly 1.0 in float32; the surprise still orders."""
    from vrae_model.calibration import anomaly_scores, surprises

    calibration = fit_calibration(np.random.default_rng(4).gamma(2.0, size=2000), 0.95)
    far = np.array([40.0, 80.0, 160.0, 1e6])
    assert (anomaly_scores(calibration, far).astype(np.float32) == 1.0).all()
    assert np.all(np.diff(surprises(calibration, far)) > 0) and np.isfinite(surprises(calibration, far)).all()
    module, _ = make_module()
    module = ScoringModule(module.model, Scaler(module.mean.numpy(), module.std.numpy()), calibration)
    save_artifact(module, metadata_for(module), tmp_path / "m.pt")
    _, surprise = load_artifact(tmp_path / "m.pt").module._calibrate(torch.from_numpy(far))
    assert np.all(np.diff(surprise.numpy()) > 0)


def test_exported_methods_work_in_raw_units(saved, loaded: Artifact) -> None:
    windows, artifact = saved[1], loaded
    x = torch.from_numpy(windows[:3])
    z = artifact.module.embed(x)
    assert z.shape == (3, 4)
    assert artifact.module.reconstruct(x).shape == (3, WINDOW, FEATURES)
    decoded = artifact.module.decode(z)
    assert torch.allclose(decoded, artifact.module.reconstruct(x), atol=1e-6)
    assert abs(decoded[..., 1].mean().item() - 20.0) < 5.0  # back in the feature's own units


def test_a_model_that_removes_levels_exports_exactly_and_scores_shapes_only(tmp_path: Path) -> None:
    module, windows = make_module("latent", window_level="remove")
    path = tmp_path / "shapes.pt"
    save_artifact(module, metadata_for(module), path)
    loaded = load_artifact(path).module
    x = torch.from_numpy(windows[:4])
    shifted = x + torch.tensor([3.0, -40.0])  # a level the scaler never saw, e.g. after a recalibration
    with torch.inference_mode():
        assert torch.allclose(module(x)["score"], loaded(x)["score"], atol=1e-5)
        assert torch.allclose(loaded(shifted)["score"], loaded(x)["score"], rtol=1e-4, atol=1e-6)
        assert torch.allclose(loaded.embed(shifted), loaded.embed(x), atol=1e-4)
        assert torch.allclose(loaded.reconstruct(shifted), loaded.reconstruct(x) + torch.tensor([3.0, -40.0]), atol=1e-3)


def test_latent_fed_decoder_also_exports_exactly(tmp_path: Path) -> None:
    module, windows = make_module("latent")
    path = tmp_path / "latent.pt"
    save_artifact(module, metadata_for(module), path)
    x = torch.from_numpy(windows[:1])
    with torch.inference_mode():
        assert torch.allclose(module(x)["score"], load_artifact(path).module(x)["score"], atol=1e-5)


def test_score_windows_adds_alert_flags_from_the_threshold(saved, loaded: Artifact) -> None:
    windows, artifact = saved[1], loaded
    result = score_windows(artifact, windows, batch_size=7)
    assert result["score"].shape == (len(windows),)
    assert np.array_equal(result["is_anomaly"], result["anomaly_score"] >= 0.99)
    with pytest.raises(DataError, match="window length"):
        score_windows(artifact, windows[:, :5])


def test_sha256_mismatch_is_refused(saved) -> None:
    _, _, path, _ = saved
    with pytest.raises(ArtifactError, match="does not match"):
        load_artifact(path, expected_sha256="0" * 64)


def test_missing_or_foreign_file_is_an_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no such artifact"):
        load_artifact(tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="not a TorchScript"):
        load_artifact(tmp_path / "junk.pt")


def _rewrite_metadata(path: Path, metadata: dict | str) -> None:
    """Replace metadata.json inside the TorchScript zip, as a hand-edited or old artifact would have."""
    with zipfile.ZipFile(path) as source:
        entries = [(info, source.read(info)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w") as target:
        for info, data in entries:
            if info.filename.endswith("extra/metadata.json"):
                data = (metadata if isinstance(metadata, str) else json.dumps(metadata)).encode()
            target.writestr(info, data)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda m: {**m, "format_version": 99}, "not supported"),
        (lambda m: {k: v for k, v in m.items() if k != "threshold"}, "threshold"),
        (lambda m: "{not json", "does not parse"),
    ],
)
def test_bad_metadata_is_refused(saved, tmp_path: Path, change, message: str) -> None:
    module, _, original, _ = saved
    path = tmp_path / "edited.pt"
    path.write_bytes(original.read_bytes())
    _rewrite_metadata(path, change(metadata_for(module)))
    with pytest.raises(ArtifactError, match=message):
        load_artifact(path)


def test_save_refuses_incomplete_metadata(tmp_path: Path) -> None:
    module, _ = make_module()
    with pytest.raises(ArtifactError, match="data_fingerprint"):
        save_artifact(module, {k: v for k, v in metadata_for(module).items() if k != "data_fingerprint"}, tmp_path / "m.pt")
    assert not list(tmp_path.iterdir())
