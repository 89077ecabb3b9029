"""The `vrae` CLI driven through main([...]) on tiny data and a tiny, untrained but real artifact."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vrae_model.artifact import load_artifact, save_artifact
from vrae_model.cli import main
from vrae_model.data import Scaler, fingerprint, load_windows
from vrae_model.model import VRAE, VRAEConfig
from vrae_model.scoring import artifact_metadata, calibrate, score_windows
from vrae_model.synth import generate, write_csv
from vrae_model.windowing import due_positions

WINDOW = 8
FEATURES = ["temp", "pressure", "vibration"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def events_csv(workdir: Path) -> Path:
    return write_csv(generate(n_series=2, length=160, anomalies_per_series=1, seed=3), workdir / "events.csv")


@pytest.fixture(scope="module")
def model_path(workdir: Path, events_csv: Path) -> Path:
    """An untrained VRAE calibrated on the data: every CLI path runs on a real artifact in ~1 s."""
    torch.manual_seed(0)
    windows = load_windows(events_csv, window=WINDOW, features=FEATURES)
    config = VRAEConfig(n_features=3, sequence_length=WINDOW, hidden_size=4, hidden_layer_depth=1, latent_length=3, dropout=0.0)
    model = VRAE(config).eval()
    calibrated = calibrate(model, Scaler.fit(windows.windows), windows.windows, threshold_method="quantile",
                           quantile=0.9)
    metadata = artifact_metadata(calibrated, features=FEATURES, stride=1, training_config={"preset": "test"},
                                 data_fingerprint=fingerprint(windows.windows))
    path = workdir / "model.pt"
    save_artifact(calibrated.module, metadata, path)
    return path


@pytest.fixture(scope="module")
def windows_npy(workdir: Path, events_csv: Path) -> Path:
    path = workdir / "windows.npy"
    np.save(path, load_windows(events_csv, window=WINDOW, stride=5, features=FEATURES).windows)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(result: tuple[int, str, str], *fragments: str) -> None:
    code, _, err = result
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------- synth


def test_synth_writes_labelled_long_csv_deterministically(capsys, tmp_path: Path) -> None:
    args = ["synth", "--series", 2, "--length", 300, "--anomalies", 2, "--seed", 5]
    assert run(capsys, *args, "--out", tmp_path / "a.csv")[0] == 0
    assert run(capsys, *args, "--out", tmp_path / "b.csv")[0] == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    rows = read_rows(tmp_path / "a.csv")
    assert list(rows[0]) == ["series_id", "timestamp", "temp", "pressure", "vibration", "label", "anomaly_kind"]
    assert len(rows) == 600
    assert {r["anomaly_kind"] for r in rows if r["label"] == "1"} and all(r["anomaly_kind"] == "" for r in rows if r["label"] == "0")


def test_synth_accepts_feature_names_start_and_clean(capsys, tmp_path: Path) -> None:
    out = tmp_path / "clean.csv"
    code, printed, _ = run(
        capsys, "synth", "--series", 1, "--length", 50, "--features", "a,b", "--clean", "--start", "1970-01-01T00:00:01Z",
        "--interval-ms", 500, "--out", out,
    )  # fmt: skip
    assert code == 0 and "0 anomalies" in printed
    rows = read_rows(out)
    assert list(rows[0])[2:4] == ["a", "b"]
    assert [int(r["timestamp"]) for r in rows[:2]] == [1000, 1500]
    assert {r["label"] for r in rows} == {"0"}


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--clean", "--anomalies", "2"], "--clean"),
        (["--kinds", "meteor"], "meteor"),
        (["--start", "yesterday"], "--start"),
        (["--series", "0"], "n_series"),
        (["--anomaly-rate", "0.1", "--anomalies", "1"], "not allowed with"),
        (["--length", "ten"], "invalid int value"),
    ],
)
def test_synth_bad_flags_are_one_line_errors(capsys, tmp_path: Path, extra: list[str], fragment: str) -> None:
    assert_user_error(run(capsys, "synth", "--out", tmp_path / "x.csv", *extra), fragment)


def test_synth_kind_writes_an_operations_stream_type(capsys, tmp_path: Path) -> None:
    out = tmp_path / "edges.csv"
    code, printed, _ = run(capsys, "synth", "--kind", "periodic-edges", "--series", 2, "--seed", 3, "--out", out)
    assert code == 0 and "benign" in printed
    rows = read_rows(out)
    assert list(rows[0]) == ["series_id", "timestamp", "value", "label", "anomaly_kind"]
    assert len(rows) == 2 * 4032
    assert int(rows[1]["timestamp"]) - int(rows[0]["timestamp"]) == 300_000
    assert {r["anomaly_kind"] for r in rows if r["label"] == "1"} <= {"pulse_higher", "pulse_lower", "pulse_missing",
                                                                      "spike"}


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--kinds", "spike"], "--kind machines only"),
        (["--regime-changes", "2"], "--kind machines only"),
        (["--features", "a,b"], "count"),
        (["--clean", "--anomalies", "2"], "--clean"),
        (["--kind", "meteor-shower"], "invalid choice"),
    ],
)
def test_synth_kind_bad_flags_are_one_line_errors(capsys, tmp_path: Path, extra: list[str], fragment: str) -> None:
    kind = [] if "--kind" in extra else ["--kind", "counts-bursts"]
    assert_user_error(run(capsys, "synth", *kind, "--out", tmp_path / "x.csv", *extra), fragment)


# ---------------------------------------------------------------- score


def test_score_long_csv_scores_exactly_the_due_windows(capsys, tmp_path: Path, model_path: Path, events_csv: Path) -> None:
    out = tmp_path / "scores.csv"
    code, printed, _ = run(capsys, "score", "--model", model_path, "--data", events_csv, "--stride", 3, "--out", out)
    assert code == 0 and "against labels" in printed
    rows = read_rows(out)
    assert list(rows[0]) == ["series_id", "timestamp", "score", "anomaly_score", "surprise", "is_anomaly"]
    source = read_rows(events_csv)
    for series_id in ("sensor-000", "sensor-001"):
        stamps = [int(r["timestamp"]) for r in source if r["series_id"] == series_id]
        expected = [stamps[n] for n in due_positions(len(stamps), WINDOW, 3)]
        assert [int(r["timestamp"]) for r in rows if r["series_id"] == series_id] == expected
    threshold = load_artifact(model_path).metadata["threshold"]
    assert all((float(r["anomaly_score"]) >= threshold) == (r["is_anomaly"] == "1") for r in rows)
    assert any(r["is_anomaly"] == "1" for r in rows)


def test_score_npy_gives_one_row_per_window_in_input_order(capsys, tmp_path: Path, model_path: Path, windows_npy: Path) -> None:
    out = tmp_path / "scores.csv"
    assert run(capsys, "score", "--model", model_path, "--data", windows_npy, "--out", out)[0] == 0
    rows = read_rows(out)
    expected = score_windows(load_artifact(model_path), np.load(windows_npy))["score"]
    assert [int(r["window"]) for r in rows] == list(range(len(expected)))
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected, rtol=1e-6)


def test_score_reports_missing_feature_columns(capsys, tmp_path: Path, model_path: Path) -> None:
    data = tmp_path / "partial.csv"
    data.write_text("series_id,timestamp,temp,pressure\n" + "".join(f"s,{i},1.0,2.0\n" for i in range(20)))
    assert_user_error(run(capsys, "score", "--model", model_path, "--data", data, "--out", tmp_path / "s.csv"), "vibration")


def test_score_reports_nan_values(capsys, tmp_path: Path, model_path: Path) -> None:
    data = tmp_path / "nan.csv"
    rows = "".join(f"s,{i},1.0,{'nan' if i == 5 else 2.0},3.0\n" for i in range(20))
    data.write_text("series_id,timestamp,temp,pressure,vibration\n" + rows)
    assert_user_error(run(capsys, "score", "--model", model_path, "--data", data, "--out", tmp_path / "s.csv"), "NaN")


def test_score_reports_too_short_series(capsys, tmp_path: Path, model_path: Path) -> None:
    data = tmp_path / "short.csv"
    data.write_text("series_id,timestamp,temp,pressure,vibration\n" + "".join(f"s,{i},1,2,3\n" for i in range(WINDOW - 1)))
    assert_user_error(run(capsys, "score", "--model", model_path, "--data", data, "--out", tmp_path / "s.csv"), "fewer than")


def test_score_reports_empty_data(capsys, tmp_path: Path, model_path: Path) -> None:
    data = tmp_path / "empty.csv"
    data.write_text("series_id,timestamp,temp,pressure,vibration\n")
    assert_user_error(run(capsys, "score", "--model", model_path, "--data", data, "--out", tmp_path / "s.csv"), "no data")


def test_score_reports_missing_data_file(capsys, tmp_path: Path, model_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    assert_user_error(run(capsys, "score", "--model", model_path, "--data", missing, "--out", tmp_path / "s.csv"), "nope.csv")


def test_score_reports_a_bad_artifact(capsys, tmp_path: Path, events_csv: Path) -> None:
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"not a model")
    assert_user_error(run(capsys, "score", "--model", fake, "--data", events_csv, "--out", tmp_path / "s.csv"), "fake.pt")


def test_score_rejects_windows_of_the_wrong_shape(capsys, tmp_path: Path, model_path: Path) -> None:
    data = tmp_path / "wrong.npy"
    np.save(data, np.zeros((4, WINDOW + 1, 3), dtype=np.float32))
    assert_user_error(run(capsys, "score", "--model", model_path, "--data", data, "--out", tmp_path / "s.csv"), "expects 8 x 3")


def test_score_rejects_stride_for_npy_windows(capsys, tmp_path: Path, model_path: Path, windows_npy: Path) -> None:
    result = run(capsys, "score", "--model", model_path, "--data", windows_npy, "--stride", 2, "--out", tmp_path / "s.csv")
    assert_user_error(result, "--stride")


def test_unknown_flag_missing_flag_and_no_command_are_one_line_errors(capsys, tmp_path: Path, model_path: Path) -> None:
    result = run(capsys, "score", "--model", model_path, "--data", "d.csv", "--out", tmp_path / "s.csv", "--bogus", 1)
    assert_user_error(result, "--bogus")
    assert_user_error(run(capsys, "embed", "--model", model_path), "--data")
    assert_user_error(run(capsys), "choose a command")
    assert_user_error(run(capsys, "fly"), "invalid choice")


def test_help_exits_zero(capsys) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "score" in out and "synth" in out


# ---------------------------------------------------------------- analysis commands


def test_embed_writes_latent_means_as_npy_or_csv(capsys, tmp_path: Path, model_path: Path, events_csv: Path) -> None:
    assert run(capsys, "embed", "--model", model_path, "--data", events_csv, "--out", tmp_path / "z.npy")[0] == 0
    latents = np.load(tmp_path / "z.npy")
    assert latents.shape == (2 * (160 - WINDOW + 1), 3)
    assert run(capsys, "embed", "--model", model_path, "--data", events_csv, "--out", tmp_path / "z.csv")[0] == 0
    rows = read_rows(tmp_path / "z.csv")
    assert list(rows[0]) == ["series_id", "timestamp", "z0", "z1", "z2"]
    np.testing.assert_allclose([float(r["z1"]) for r in rows], latents[:, 1], rtol=1e-6, atol=1e-7)


def test_embed_rejects_unknown_output_format(capsys, tmp_path: Path, model_path: Path, events_csv: Path) -> None:
    assert_user_error(run(capsys, "embed", "--model", model_path, "--data", events_csv, "--out", tmp_path / "z.parquet"), ".npy")


def test_cluster_labels_every_window_and_draws_a_map(capsys, tmp_path: Path, model_path: Path, windows_npy: Path) -> None:
    out, plot = tmp_path / "clusters.csv", tmp_path / "map.png"
    code, printed, _ = run(capsys, "cluster", "--model", model_path, "--data", windows_npy, "--k", 3, "--out", out, "--plot", plot)
    assert code == 0 and "3 clusters" in printed
    rows = read_rows(out)
    assert len(rows) == len(np.load(windows_npy))
    assert {r["cluster"] for r in rows} == {"0", "1", "2"}
    assert plot.read_bytes().startswith(PNG_MAGIC)


def test_cluster_rejects_more_clusters_than_windows(capsys, tmp_path: Path, model_path: Path, windows_npy: Path) -> None:
    result = run(capsys, "cluster", "--model", model_path, "--data", windows_npy, "--k", 10_000, "--out", tmp_path / "c.csv")
    assert_user_error(result, "--k")


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_reduce_draws_a_map_and_writes_coordinates(capsys, tmp_path: Path, model_path: Path, events_csv: Path, method: str) -> None:
    image, coords = tmp_path / "map.png", tmp_path / "coords.csv"
    result = run(
        capsys, "reduce", "--model", model_path, "--data", events_csv, "--method", method, "--out", image,
        "--csv", coords, "--max-points", 60,
    )  # fmt: skip
    assert result[0] == 0
    assert image.read_bytes().startswith(PNG_MAGIC)
    rows = read_rows(coords)
    assert len(rows) == 60 and list(rows[0]) == ["series_id", "timestamp", "x", "y"]


def test_generate_from_prior_and_posterior(capsys, tmp_path: Path, model_path: Path, events_csv: Path) -> None:
    assert run(capsys, "generate", "--model", model_path, "--n", 5, "--out", tmp_path / "g.npy")[0] == 0
    assert np.load(tmp_path / "g.npy").shape == (5, WINDOW, 3)
    out, plot = tmp_path / "g.csv", tmp_path / "g.png"
    result = run(
        capsys, "generate", "--model", model_path, "--n", 3, "--source", "posterior", "--data", events_csv,
        "--out", out, "--plot", plot,
    )  # fmt: skip
    assert result[0] == 0
    rows = read_rows(out)
    assert len(rows) == 3 * WINDOW and list(rows[0]) == ["series_id", "timestamp", *FEATURES]
    assert plot.read_bytes().startswith(PNG_MAGIC)


def test_generated_csv_can_be_scored(capsys, tmp_path: Path, model_path: Path) -> None:
    assert run(capsys, "generate", "--model", model_path, "--n", 2, "--out", tmp_path / "g.csv")[0] == 0
    assert run(capsys, "score", "--model", model_path, "--data", tmp_path / "g.csv", "--out", tmp_path / "s.csv")[0] == 0
    assert len(read_rows(tmp_path / "s.csv")) == 2


def test_generate_flag_combinations_are_checked(capsys, tmp_path: Path, model_path: Path, events_csv: Path) -> None:
    out = tmp_path / "g.npy"
    assert_user_error(run(capsys, "generate", "--model", model_path, "--source", "posterior", "--out", out), "--data")
    assert_user_error(run(capsys, "generate", "--model", model_path, "--data", events_csv, "--out", out), "--source posterior")


@pytest.mark.parametrize("kind", ["reconstruction", "timeline"])
def test_plot_kinds_write_images(capsys, tmp_path: Path, model_path: Path, events_csv: Path, kind: str) -> None:
    image = tmp_path / f"{kind}.png"
    assert run(capsys, "plot", "--model", model_path, "--data", events_csv, "--kind", kind, "--out", image)[0] == 0
    assert image.read_bytes().startswith(PNG_MAGIC)


def test_plot_timeline_of_npy_windows_and_of_a_chosen_series(capsys, tmp_path: Path, model_path: Path, windows_npy: Path, events_csv: Path) -> None:
    assert run(capsys, "plot", "--model", model_path, "--data", windows_npy, "--kind", "timeline", "--out", tmp_path / "a.png")[0] == 0
    code, printed, _ = run(
        capsys, "plot", "--model", model_path, "--data", events_csv, "--kind", "timeline", "--series", "sensor-001",
        "--out", tmp_path / "b.png",
    )  # fmt: skip
    assert code == 0 and "sensor-001" in printed


def test_plot_rejects_unknown_series(capsys, tmp_path: Path, model_path: Path, events_csv: Path) -> None:
    result = run(
        capsys, "plot", "--model", model_path, "--data", events_csv, "--kind", "timeline", "--series", "sensor-999",
        "--out", tmp_path / "t.png",
    )  # fmt: skip
    assert_user_error(result, "sensor-999", "sensor-000")


def test_info_prints_metadata_parameters_and_sha256(capsys, model_path: Path) -> None:
    code, out, _ = run(capsys, "info", model_path)
    artifact = load_artifact(model_path)
    assert code == 0
    assert artifact.sha256 in out and f"total {artifact.metadata['param_counts']['total']:,}" in out
    code, out, _ = run(capsys, "info", model_path, "--json")
    assert code == 0 and json.loads(out)["sha256"] == artifact.sha256


def test_info_reports_a_missing_artifact(capsys, tmp_path: Path) -> None:
    assert_user_error(run(capsys, "info", tmp_path / "absent.pt"), "absent.pt")


# ---------------------------------------------------------------- train / export


def test_train_rejects_bad_values_before_training(capsys, tmp_path: Path, events_csv: Path) -> None:
    assert_user_error(run(capsys, "train", "--data", events_csv, "--lr", -1, "--out", tmp_path / "m.pt"), "lr")
    assert_user_error(run(capsys, "train", "--data", events_csv, "--preset", "huge", "--out", tmp_path / "m.pt"), "huge")
    assert_user_error(run(capsys, "train", "--data", events_csv, "--features", "temp,humidity", "--out", tmp_path / "m.pt"), "humidity")


@pytest.mark.slow
def test_train_then_export_then_score(capsys, tmp_path: Path, events_csv: Path) -> None:
    model = tmp_path / "out" / "model.pt"
    code, printed, _ = run(
        capsys, "train", "--data", events_csv, "--window", WINDOW, "--stride", 2, "--preset", "seed", "--epochs", 1,
        "--window-level", "remove", "--quiet", "--out", model,
    )  # fmt: skip
    assert code == 0 and "artifact" in printed and "window levels removed" in printed
    checkpoint = model.with_suffix(".ckpt")
    assert checkpoint.is_file()
    exported = tmp_path / "exported.pt"
    assert run(capsys, "export", "--checkpoint", checkpoint, "--out", exported)[0] == 0
    for path, out in ((model, tmp_path / "a.csv"), (exported, tmp_path / "b.csv")):
        assert run(capsys, "score", "--model", path, "--data", events_csv, "--out", out)[0] == 0
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_export_reports_a_missing_checkpoint(capsys, tmp_path: Path) -> None:
    assert_user_error(run(capsys, "export", "--checkpoint", tmp_path / "none.ckpt", "--out", tmp_path / "m.pt"), "none.ckpt")
