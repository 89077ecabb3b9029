"""The scripts the images run: fast checks of their edges (a full training run lives in the scale-out
and e2e suites; the simulator's stream is what the scale-out tests send)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from vrae_model.synth import SynthConfig
from worker.events import Event, EventParser, SourceRecord


def load_script(repo: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"vrae_deploy_{name}", repo / "deploy" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def simulator(repo: Path) -> ModuleType:
    return load_script(repo, "simulator")


@pytest.fixture(scope="module")
def alert_printer(repo: Path) -> ModuleType:
    return load_script(repo, "alert_printer")


def test_simulated_events_parse_as_valid_worker_events(simulator: ModuleType) -> None:
    config = SynthConfig(n_series=3, length=50, features=("temp", "pressure"), anomaly_rate=0.0, start_ms=0)
    parser = EventParser(feature_names=("temp", "pressure"))
    for offset, event in enumerate(simulator.stream(config, laps=1)):
        parsed = parser.parse(SourceRecord("t", 0, offset, event.key, event.value))
        assert isinstance(parsed, Event), parsed
        assert parsed.series_id == event.series_id and parsed.ts_ms == event.ts_ms


def test_event_values_keep_their_short_float32_form(simulator: ModuleType) -> None:
    _, value = simulator.encode_event("s", 1, np.array([18.46, 4.8716], dtype=np.float32), ["temp", "pressure"])
    assert value == b'{"series_id":"s","ts":1,"features":{"temp":18.46,"pressure":4.8716}}'


def test_laps_continue_event_time_without_overlap(simulator: ModuleType) -> None:
    config = SynthConfig(n_series=2, length=30, anomaly_rate=0.0, interval_ms=1000, start_ms=0)
    events = list(simulator.stream(config, laps=2))
    per_series = {}
    for event in events:
        per_series.setdefault(event.series_id, []).append(event.ts_ms)
    for stamps in per_series.values():
        assert stamps == list(range(0, 60_000, 1000))


def test_injected_anomalies_are_labelled_in_the_stream(simulator: ModuleType) -> None:
    config = SynthConfig(n_series=2, length=400, anomalies_per_series=2, start_ms=0)
    kinds = {event.anomaly_kind for event in simulator.stream(config, laps=1)}
    assert "" in kinds and len(kinds) > 1


def test_injection_times_print_like_the_alert_printer(simulator: ModuleType) -> None:
    assert simulator.iso_utc(1_767_225_600_000) == "2026-01-01T00:00:00.000Z"


def test_pacer_holds_the_rate_and_catches_up_after_a_stall(simulator: ModuleType) -> None:
    now, slept = [0.0], []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = simulator.Pacer(10.0, clock=lambda: now[0], sleep=sleep)
    pacer.wait()
    pacer.wait()
    assert slept == [pytest.approx(0.1)]
    now[0] += 1.0  # a slow send: the next events go out at once until the schedule is met
    pacer.wait()
    assert len(slept) == 1


def test_simulator_rejects_a_non_positive_rate(simulator: ModuleType) -> None:
    with pytest.raises(SystemExit) as exit_info:
        simulator.parse_args(["--rate", "0"])
    assert exit_info.value.code == 2


def test_alert_line_shows_time_series_score_and_top_features(alert_printer: ModuleType) -> None:
    alert = {"alert_id": "a1", "series_id": "pump-7", "window_end_iso": "2026-01-01T00:10:00.000Z",
             "anomaly_score": 0.99993, "top_features": [{"name": "temp", "share": 0.7}, {"name": "rpm", "share": 0.2}]}
    assert alert_printer.format_alert(alert) == (
        "2026-01-01T00:10:00.000Z  pump-7  anomaly_score=0.9999  top: temp=70% rpm=20%  id=a1")


def test_alert_printer_skips_records_that_are_not_json_objects(alert_printer: ModuleType) -> None:
    assert alert_printer.decode_alert(b"\xff") is None
    assert alert_printer.decode_alert(b"[1, 2]") is None
    assert alert_printer.decode_alert(b'{"series_id": "x"}') == {"series_id": "x"}


def test_train_script_refuses_a_missing_csv_with_exit_2(repo: Path, tmp_path: Path) -> None:
    env = {**os.environ, "MODEL_PATH": str(tmp_path / "model.pt"), "TRAIN_CSV": str(tmp_path / "missing.csv")}
    result = subprocess.run(["bash", str(repo / "deploy/train-model.sh")], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("set TRAIN_CSV=/data/<name>.csv")
    assert not (tmp_path / "model.pt").exists()
