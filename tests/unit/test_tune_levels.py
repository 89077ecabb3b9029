"""`vrae-worker tune-levels`: levels chosen on labelled history, judged as the worker would act on them."""

import csv
from pathlib import Path

import pytest

from vrae_model.artifact import load_artifact
from vrae_model.exceptions import DataError
from vrae_model.synth import SynthConfig, generate, write_csv
from worker.__main__ import main
from worker.detection.detector import DetectorSettings
from worker.scorer import Scorer
from worker.tools.backtest import backtest
from worker.tools.evaluation import anomaly_windows, matches
from worker.tools.tune_levels import load_labelled, tune_levels, with_levels


def labelled_csv(path: Path, features: tuple[str, ...], seed: int) -> Path:
    config = SynthConfig(n_series=3, length=700, features=features, anomalies_per_series=3, seed=seed)
    return write_csv(generate(config), path)


@pytest.fixture(scope="module")
def scorer(tiny_model) -> Scorer:
    return Scorer(load_artifact(tiny_model.path))


def test_chosen_levels_are_what_the_worker_does_at_those_levels(tiny_model, scorer, tmp_path: Path) -> None:
    """The grid is screened on one replay; the pair each objective keeps is backtested at its own levels,
    and a worker configured with them opens exactly the incidents its score counts."""
    data = labelled_csv(tmp_path / "labelled.csv", tiny_model.features, seed=5)
    tuning = tune_levels(data, scorer, 2, DetectorSettings(), "f1")
    assert tuning.series == 3 and tuning.events == 2100 and tuning.windows > 0
    assert set(tuning.best) == {"f1", "nab"} and tuning.chosen == tuning.best["f1"]
    assert tuning.chosen.score.anomalies == 9
    # The grid holds the surprise's quantiles, not 3 / 2: the configuration is a candidate too, so no
    # "best" scores below what is already deployed.
    for name, best in tuning.best.items():
        assert getattr(best.score, name) >= getattr(tuning.configured.score, name)

    series = load_labelled(data, tiny_model.features, tiny_model.window)
    configured = backtest(series, scorer, 2, with_levels(DetectorSettings(), tuning.chosen.levels))
    # Every opening is a detection, a false alarm, or a repeat inside an anomaly already caught.
    pairs = [(s.series_id, k) for s in series
             for _, k in matches(anomaly_windows(s.labels, tiny_model.window), configured.openings[s.series_id])]
    assert len({pair for pair in pairs if pair[1] >= 0}) == tuning.chosen.score.detected
    assert sum(k < 0 for _, k in pairs) == tuning.chosen.score.false_alarms


def test_cli_prints_the_settings_to_deploy_and_checks_them_on_other_data(tiny_model, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    choose = labelled_csv(tmp_path / "choose.csv", tiny_model.features, seed=6)
    check = labelled_csv(tmp_path / "check.csv", tiny_model.features, seed=7)
    code = main(["tune-levels", "--data", str(choose), "--check", str(check), "--model", str(tiny_model.path),
                 "--objective", "nab"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"on {check} (levels chosen without its labels)" in out and "chosen (nab)" in out
    lines = dict(line.split("=", 1) for line in out.splitlines() if line.startswith("VRAE_DETECTION__"))
    assert lines["VRAE_DETECTION__MODE"] == "incidents"
    assert float(lines["VRAE_DETECTION__CLOSE_SURPRISE"]) <= float(lines["VRAE_DETECTION__OPEN_SURPRISE"])


def unlabelled(path: Path, labelled: Path) -> Path:
    with labelled.open() as source, path.open("w", newline="") as target:
        rows = list(csv.DictReader(source))
        fields = [name for name in rows[0] if name not in ("label", "anomaly_kind")]
        writer = csv.DictWriter(target, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("problem", ["no label column", "no labelled anomalies", "unknown feature column",
                                     "no such file"])
def test_data_it_cannot_tune_on_is_one_line_and_exit_2(problem: str, tiny_model, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    labelled = labelled_csv(tmp_path / "labelled.csv", tiny_model.features, seed=8)
    if problem == "no label column":
        data = unlabelled(tmp_path / "unlabelled.csv", labelled)
    elif problem == "no labelled anomalies":
        data = write_csv(generate(SynthConfig(n_series=2, length=200, features=tiny_model.features, clean=True)),
                         tmp_path / "clean.csv")
    elif problem == "unknown feature column":
        data = write_csv(generate(SynthConfig(n_series=2, length=200, features=("humidity",), seed=1)),
                         tmp_path / "other.csv")
    else:
        data = tmp_path / "missing.csv"
    code = main(["tune-levels", "--data", str(data), "--model", str(tiny_model.path)])
    err = capsys.readouterr().err
    assert code == 2 and problem in err and len(err.strip().splitlines()) == 1


def test_no_series_long_enough_for_a_window_is_a_clear_error(tiny_model, tmp_path: Path) -> None:
    short = write_csv(generate(SynthConfig(n_series=2, length=tiny_model.window - 1, features=tiny_model.features,
                                           anomalies_per_series=1, seed=2)), tmp_path / "short.csv")
    with pytest.raises(DataError, match="no series has a full window"):
        load_labelled(short, tiny_model.features, tiny_model.window)
