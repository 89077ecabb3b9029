"""`vrae-worker backtest`: a history replayed through the worker's logic, per event, with its summary."""

import csv
from pathlib import Path

import numpy as np
import pytest

from vrae_model.synth import SynthConfig, generate, write_csv
from worker.__main__ import main


@pytest.fixture
def history(tiny_model, tmp_path: Path) -> Path:
    config = SynthConfig(n_series=2, length=600, features=tiny_model.features, anomalies_per_series=2, seed=11)
    return write_csv(generate(config), tmp_path / "history.csv")


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_backtest_writes_what_the_worker_did_at_every_event_and_the_scorecard(tiny_model, history: Path,
                                                                             tmp_path: Path, capsys) -> None:
    out, plot = tmp_path / "events.csv", tmp_path / "timeline.png"
    code = main(["backtest", "--model", str(tiny_model.path), "--data", str(history), "--out", str(out),
                 "--plot", str(plot)])
    printed = capsys.readouterr().out
    assert code == 0
    events = rows(out)
    assert len(events) == 2 * 600
    assert list(events[0]) == ["series_id", "timestamp", "label", "window", "surprise", "model_surprise", "incident",
                               "opened", "closed"]
    for series in ("sensor-000", "sensor-001"):
        mine = [e for e in events if e["series_id"] == series]
        judged = [e for e in mine if e["window"] == "1"]
        assert len(judged) == 600 - tiny_model.window + 1  # one window per event once full, no gaps in synth
        assert all(e["surprise"] and e["model_surprise"] for e in judged)
        assert not any(e["surprise"] for e in mine if e["window"] == "0")
        opened = [i for i, e in enumerate(mine) if e["opened"] == "1"]
        assert all(mine[i]["incident"] == "1" for i in opened)
    assert "incidents opened" in printed and "per 10,000 windows" in printed
    assert "against the labels: NAB" in printed and "rows inside an incident" in printed
    assert plot.stat().st_size > 10_000


def test_incident_column_runs_from_each_opening_to_its_last_anomalous_window(tiny_model, history: Path,
                                                                            tmp_path: Path) -> None:
    out = tmp_path / "events.csv"
    assert main(["backtest", "--model", str(tiny_model.path), "--data", str(history), "--out", str(out)]) == 0
    for series in ("sensor-000", "sensor-001"):
        mine = [e for e in rows(out) if e["series_id"] == series]
        incident = np.array([e["incident"] == "1" for e in mine])
        starts = np.flatnonzero(np.diff(np.concatenate([[0], incident.astype(int)])) == 1)
        assert [i for i, e in enumerate(mine) if e["opened"] == "1"] == starts.tolist()
        closes = [i for i, e in enumerate(mine) if e["closed"] == "1"]
        assert all(not incident[i] or i == len(mine) - 1 for i in closes)  # closed_at lies before the close


@pytest.mark.parametrize("problem", ["no such file", "too short"])
def test_history_it_cannot_replay_is_one_line_and_exit_2(problem: str, tiny_model, tmp_path: Path, capsys) -> None:
    data = tmp_path / "missing.csv"
    if problem == "too short":
        data = write_csv(generate(SynthConfig(n_series=1, length=tiny_model.window - 1, features=tiny_model.features,
                                              clean=True)), tmp_path / "short.csv")
    code = main(["backtest", "--model", str(tiny_model.path), "--data", str(data), "--out", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vrae-worker:") and len(err.strip().splitlines()) == 1


def test_backtest_reports_why_each_incident_closed(tiny_model) -> None:
    """A spike ends in `recovered`; a step that stays keeps its incident open until the settle time."""
    from dataclasses import dataclass, replace

    from vrae_model.artifact import load_artifact
    from worker.detection.detector import DetectorSettings
    from worker.scorer import Scorer
    from worker.tools.backtest import backtest

    @dataclass
    class Stream:
        series_id: str
        timestamps: np.ndarray
        values: np.ndarray

    n, interval_ms = 1600, 60_000
    rng = np.random.default_rng(3)
    t = np.arange(n)
    base = np.stack([np.sin(2 * np.pi * t / 48), np.cos(2 * np.pi * t / 48)], axis=1)
    base += 0.05 * rng.normal(size=(n, 2))
    spike, step = base.copy(), base.copy()
    spike[1200:1203] += 25.0
    step[1200:] += 25.0
    timestamps = 1_767_225_600_000 + interval_ms * t.astype(np.int64)
    streams = [Stream("spike", timestamps, spike.astype(np.float32)),
               Stream("step", timestamps, step.astype(np.float32))]
    settings = DetectorSettings()
    settle_ms = 120 * interval_ms
    settings = replace(settings, calibration=replace(settings.calibration, settle_ms=settle_ms))
    result = backtest(streams, Scorer(load_artifact(tiny_model.path)), 1, settings)
    assert result.openings["spike"] and result.openings["step"]
    assert result.close_reasons["spike"][0] == "recovered"
    assert result.close_reasons["step"][0] == "settled"
    opened, closed = result.openings["step"][0], result.closings["step"][0]
    assert timestamps[closed] - timestamps[opened] >= settle_ms
