"""Hot model swap: verified on the side, swapped between batches, old model kept on any failure."""

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from vrae_model.artifact import ARTIFACT_FORMAT_VERSION, load_artifact, save_artifact
from vrae_model.calibration import fit_calibration
from vrae_model.data import Scaler, read_long_csv
from vrae_model.model import VRAE, VRAEConfig
from vrae_model.scoring import ScoringModule, score_arrays
from worker.checkpoint import Checkpoint
from worker.detection.detector import Detector
from worker.events import Event, EventParser, SourceRecord
from worker.health import Heartbeat
from worker.loop import Backoff
from worker.metrics import Metrics
from worker.model_reload import ReloadingScorer, ReloadOutcome, expected_sha256
from worker.pipeline import Pipeline, Topics
from worker.scorer import Scorer
from worker.state.memory import MemoryStateStore
from worker.testing import ListSink, ListSource, memory_loop, run_batch
from worker.tools.history_export import write_history_csv
from worker.windows import WindowSpec

FEATURES = ("temp", "pressure")


def write_model(path: Path, seed: int, window: int = 8, features: tuple[str, ...] = FEATURES,
                feature_calibration: object = None) -> str:
    torch.manual_seed(seed)
    config = VRAEConfig(n_features=len(features), sequence_length=window, hidden_size=4, hidden_layer_depth=1,
                        latent_length=2)
    model = VRAE(config).eval()
    windows = np.random.default_rng(seed).normal(size=(32, window, len(features))).astype(np.float32)
    scaler = Scaler.fit(windows)
    scores = score_arrays(ScoringModule(model, scaler, fit_calibration(np.zeros(1))), windows)["score"]
    metadata = {
        "format_version": ARTIFACT_FORMAT_VERSION, "model_name": "vrae", "model_version": f"v{seed}",
        "window": window, "stride": 1, "features": list(features), "scaler": scaler.to_dict(), "threshold": 0.99,
        "score_threshold": 1.0, "threshold_method": "quantile:0.99", "calibration": {}, "model_config": {},
        "training_config": {}, "param_counts": {}, "data_fingerprint": "0" * 64, "library_version": "test",
        "torch_version": torch.__version__, "created_at": "2026-11-24T00:00:00Z",
    }
    if feature_calibration is not None:
        metadata["feature_calibration"] = feature_calibration
    return save_artifact(ScoringModule(model, scaler, fit_calibration(scores, 0.9)), metadata, path)


def load(path: Path, sha256: str | None) -> Scorer:
    return Scorer(load_artifact(path, expected_sha256=sha256))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    paths = {"old": root / "old.pt", "new": root / "new.pt", "wide": root / "wide.pt"}
    write_model(paths["old"], seed=1)
    write_model(paths["new"], seed=2)
    write_model(paths["wide"], seed=3, window=12)
    return paths


def reloading(models: dict[str, Path], tmp_path: Path, **options: object) -> tuple[ReloadingScorer, Path, Clock]:
    live = tmp_path / "model.pt"
    shutil.copy(models["old"], live)
    clock = Clock()
    scorer = ReloadingScorer(load(live, None), live, load, check_interval_s=1.0, clock=clock, **options)
    return scorer, live, clock


def replace_file(source: Path, live: Path) -> None:
    staged = live.with_suffix(".staged")
    shutil.copy(source, staged)
    staged.replace(live)


def test_new_file_is_swapped_in_after_the_check_interval(models: dict[str, Path], tmp_path: Path) -> None:
    scorer, live, clock = reloading(models, tmp_path)
    replace_file(models["new"], live)
    assert scorer.maybe_reload().outcome is ReloadOutcome.UNCHANGED  # interval not elapsed yet
    clock.now = 1.5
    reload = scorer.maybe_reload()
    assert reload.outcome is ReloadOutcome.SWAPPED
    assert (reload.previous.version, reload.current.version) == ("v1", "v2")
    assert scorer.info.version == "v2"
    clock.now = 3.0
    assert scorer.maybe_reload().outcome is ReloadOutcome.UNCHANGED


def test_half_written_file_is_refused_and_the_old_model_keeps_scoring(models: dict[str, Path], tmp_path: Path) -> None:
    scorer, live, clock = reloading(models, tmp_path)
    windows = np.random.default_rng(0).normal(size=(3, 8, 2)).astype(np.float32)
    before = scorer.score(windows).score
    live.write_bytes(models["new"].read_bytes()[:1000])  # a copy caught half way
    clock.now = 2.0
    reload = scorer.maybe_reload()
    assert reload.outcome is ReloadOutcome.REJECTED and "TorchScript" in reload.detail
    assert scorer.info.version == "v1"
    np.testing.assert_array_equal(scorer.score(windows).score, before)
    clock.now = 4.0
    assert scorer.maybe_reload().outcome is ReloadOutcome.UNCHANGED  # the same broken file is not retried
    replace_file(models["new"], live)
    clock.now = 6.0
    assert scorer.maybe_reload().outcome is ReloadOutcome.SWAPPED


def test_malformed_feature_calibration_is_refused_and_the_old_model_keeps_scoring(models: dict[str, Path],
                                                                                  tmp_path: Path) -> None:
    scorer, live, clock = reloading(models, tmp_path)
    assert scorer.info.feature_calibration is None  # exported before it was recorded: judged without it
    good = {"log_error_median": [-2.0, -1.5], "log_error_scale": [0.3, 0.4]}
    for number, (calibration, detail) in enumerate([
        ({"log_error_median": [-2.0], "log_error_scale": [0.3]}, "1/1 entries for 2 features"),
        ({"log_error_median": [-2.0, -1.5], "log_error_scale": [0.3, -1.0]}, "negative scale"),
        ({"log_error_median": [-2.0, -1.5]}, "log_error_scale"),
    ]):
        write_model(tmp_path / "bad.pt", seed=3, feature_calibration=calibration)
        replace_file(tmp_path / "bad.pt", live)
        clock.now = 2.0 * (number + 1)
        reload = scorer.maybe_reload()
        assert reload.outcome is ReloadOutcome.REJECTED and detail in reload.detail
        assert scorer.info.version == "v1"
    write_model(tmp_path / "good.pt", seed=3, feature_calibration=good)
    replace_file(tmp_path / "good.pt", live)
    clock.now = 10.0
    assert scorer.maybe_reload().outcome is ReloadOutcome.SWAPPED
    assert scorer.info.feature_calibration.median == (-2.0, -1.5)
    assert scorer.info.feature_calibration.scale == (0.3, 0.4)


def test_model_with_another_window_is_refused(models: dict[str, Path], tmp_path: Path) -> None:
    scorer, live, clock = reloading(models, tmp_path)
    replace_file(models["wide"], live)
    clock.now = 2.0
    reload = scorer.maybe_reload()
    assert reload.outcome is ReloadOutcome.REJECTED and "restart the worker" in reload.detail
    assert scorer.info.version == "v1"


def test_sha256_sidecar_is_checked(models: dict[str, Path], tmp_path: Path) -> None:
    scorer, live, clock = reloading(models, tmp_path)
    sidecar = live.with_name("model.pt.sha256")
    sidecar.write_text("0" * 64 + "  model.pt\n")
    replace_file(models["new"], live)
    clock.now = 2.0
    assert scorer.maybe_reload().outcome is ReloadOutcome.REJECTED
    assert expected_sha256(live, None) == "0" * 64
    sidecar.write_text(load_artifact(models["new"]).sha256)  # the sidecar catches up with the model
    clock.now = 4.0
    assert scorer.maybe_reload().outcome is ReloadOutcome.SWAPPED


def test_pinned_sha256_without_sidecar_refuses_other_files(models: dict[str, Path], tmp_path: Path) -> None:
    pinned = load_artifact(models["old"]).sha256
    scorer, live, clock = reloading(models, tmp_path, sha256=pinned)
    replace_file(models["new"], live)
    clock.now = 2.0
    assert scorer.maybe_reload().outcome is ReloadOutcome.REJECTED
    assert scorer.info.version == "v1"


def test_swap_mid_stream_loses_no_window_and_each_batch_uses_one_model(models: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    scorer, live, clock = reloading(models, tmp_path)
    sink = ListSink()
    detector = Detector(scores_topic="scores")
    pipeline = Pipeline(EventParser(FEATURES), MemoryStateStore(WindowSpec(window=8, n_features=2)), scorer,
                        Metrics(), Topics(alerts="alerts", dead_letters="dlq"), detector=detector)
    checkpoint = Checkpoint(sink, ListSource([]), Metrics())
    rng = np.random.default_rng(1)
    records = [SourceRecord("events", 0, i, b"s", json.dumps({"series_id": "s", "ts": 1000 * (i + 1),
                                                             "values": rng.normal(size=2).tolist()}).encode())
               for i in range(60)]
    for start in range(0, 60, 10):
        if start == 30:
            replace_file(models["new"], live)
            clock.now = 2.0
            assert scorer.maybe_reload().outcome is ReloadOutcome.SWAPPED
        run_batch(pipeline, checkpoint, records[start:start + 10])
    scored = [json.loads(m.value) for m in sink.sent if m.topic == "scores"]
    assert [d["window_end"] for d in scored] == [1000 * (i + 1) for i in range(7, 60)]
    versions = {d["window_end"]: d["model_version"] for d in scored}
    assert {v for end, v in versions.items() if end <= 30_000} == {"v1"}
    assert {v for end, v in versions.items() if end > 30_000} == {"v2"}


def test_exported_history_is_a_long_csv_that_vrae_train_reads(tmp_path: Path) -> None:
    def event(series: str, ts: int, values: list[float]) -> Event:
        return Event(series, ts, np.array(values, np.float32), SourceRecord("events", 0, ts, None, b""))

    events = [event("b", 2000, [2.0, 20.0]), event("a", 1000, [1.0, 10.0]), event("b", 1000, [1.5, 15.0]),
              event("b", 2000, [9.0, 90.0])]  # a duplicate of (b, 2000): the first one wins
    summary = write_history_csv(events, FEATURES, tmp_path / "history.csv")
    assert (summary.rows, summary.series, summary.duplicates) == (3, 2, 1)
    data = read_long_csv(tmp_path / "history.csv")
    assert data.feature_names == list(FEATURES)
    np.testing.assert_array_equal(data.series["b"].timestamps, [1000, 2000])
    np.testing.assert_allclose(data.series["b"].values, [[1.5, 15.0], [2.0, 20.0]])


class NewModelOnSecondPoll(ListSource):
    """Serves batches in order; before the second batch a new model file lands."""

    def __init__(self, batches: list[list[SourceRecord]], stop: threading.Event, on_second_poll) -> None:
        super().__init__(batches, stop)
        self._on_second_poll, self.polls = on_second_poll, 0

    def poll(self) -> list[SourceRecord]:
        self.polls += 1
        if self.polls == 2:
            self._on_second_poll()
        return super().poll()


@pytest.mark.parametrize("overlap", [False, True])
def test_worker_loop_swaps_between_batches_and_counts_it(models: dict[str, Path], tmp_path: Path,
                                                         overlap: bool) -> None:
    scorer, live, clock = reloading(models, tmp_path)
    sink, metrics, stop = ListSink(), Metrics(), threading.Event()

    def new_model_lands() -> None:
        replace_file(models["new"], live)
        clock.now = 2.0

    batches = [[SourceRecord("events", 0, i, b"s", json.dumps({"series_id": "s", "ts": 1000 * (i + 1),
                                                               "values": [0.0, 1.0]}).encode())
                for i in range(first, first + 10)] for first in (0, 10, 20)]
    source = NewModelOnSecondPoll(batches, stop, new_model_lands)
    pipeline = Pipeline(EventParser(FEATURES), MemoryStateStore(WindowSpec(window=8, n_features=2)), scorer,
                        Metrics(), Topics(alerts="alerts", dead_letters="dlq"), detector=Detector(scores_topic="scores"))
    memory_loop(source, pipeline, sink, metrics, Heartbeat(tmp_path / "hb", interval_s=0), Backoff(0.001, 0.002),
                overlap=overlap, model=scorer).run(stop)
    versions = [json.loads(m.value)["model_version"] for m in sink.sent if m.topic == "scores"]
    # Windows end at events 7..29. The file landed while batch 2 was polled, so the check between
    # batch 1's commit and batch 2's scoring swapped: batch 1 (windows ending at events 7..9) is v1
    # only, batches 2-3 v2 only.
    assert versions == ["v1"] * 3 + ["v2"] * 20
    assert metrics.registry.get_sample_value("vrae_model_reloads_total", {"outcome": "swapped"}) == 1
    assert source.committed == {("events", 0): 30}
