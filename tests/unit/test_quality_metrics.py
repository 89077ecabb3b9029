"""The quality harness (benchmarks/quality.py): its own metrics, the ablation, seeds, the model cache.

The event metrics it shares with `vrae-worker tune-levels` are tested in test_evaluation.py."""

import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def quality() -> Iterator[object]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import quality

        yield quality
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_scorecard_adds_auc_pr_of_the_window_statistic_to_the_event_metrics(quality) -> None:
    labels = np.zeros(40, np.int8)
    labels[20:22] = 1
    series = quality.Series("s", np.arange(40, dtype=np.int64), np.zeros((40, 1), np.float32), labels)
    due = np.arange(3, 40)
    ranked = quality.Stats({"s": np.where((due >= 20) & (due <= 24), 5.0, 0.0)}, {"s": due})
    card = quality.scorecard([series], {"s": [20]}, ranked, 4)
    assert card.f1 == 1.0 and card.auc_pr == pytest.approx(1.0)
    assert card.false_alarms_per_10k == 0.0


def test_scorecard_counts_false_alarms_opened_at_an_unlabelled_level_change(quality) -> None:
    labels = np.zeros(80, np.int8)
    labels[20:22] = 1  # NAB window 20-24 with window 4
    series = quality.Series("s", np.arange(80, dtype=np.int64), np.zeros((80, 1), np.float32), labels,
                            level_changes=np.array([40, 60]))
    due = np.arange(3, 80)
    stats = quality.Stats({"s": np.zeros(len(due))}, {"s": due})
    # 21 detects; 10 is a plain false alarm; 43 opens within a window (4 events) of the change at 40,
    # 64 one event too late for the change at 60
    card = quality.scorecard([series], {"s": [10, 21, 43, 64]}, stats, 4)
    assert (card.false_alarms, card.false_alarms_at_level_changes) == (3, 1)
    assert card.anomalies_by_kind == {} == card.missed_by_kind  # no kinds named: nothing to break down


def test_scorecard_and_summary_say_which_kinds_of_anomaly_were_missed(quality) -> None:
    labels = np.zeros(80, np.int8)
    labels[20:22] = labels[50:53] = labels[70:71] = 1
    kinds = np.full(80, "", dtype="<U16")
    kinds[20:22], kinds[50:53], kinds[70:71] = "spike", "stuck", "spike"
    series = quality.Series("s", np.arange(80, dtype=np.int64), np.zeros((80, 1), np.float32), labels,
                            kinds=kinds)
    due = np.arange(3, 80)
    card = quality.scorecard([series], {"s": [21, 60]}, quality.Stats({"s": np.zeros(len(due))}, {"s": due}), 4)
    assert card.anomalies_by_kind == {"spike": 2, "stuck": 1}
    assert card.missed_by_kind == {"spike": 1, "stuck": 1}  # 60 is past the stuck span's window (50-55)
    text = quality.summary("toy", {1: {"VRAE static": card}, 2: {"VRAE static": card}})
    assert "of 4 spike, 2 stuck" in text and "| VRAE static | 2 | 2 |" in text


def test_ablation_caps_each_window_at_its_overlapping_predecessor(quality) -> None:
    stats = quality.Stats({"s": np.array([1, 9, 2, 8, 8, 3], float)}, {"s": np.arange(6)})
    overlapping = SimpleNamespace(window=24, stride=1)
    disjoint = SimpleNamespace(window=24, stride=12)
    np.testing.assert_array_equal(quality.confirmed(stats, overlapping).values["s"], [1, 1, 2, 2, 8, 3])
    assert quality.confirmed(stats, disjoint) is stats


def test_seeds_parse_as_lists_and_ranges_and_bad_ones_say_why(quality) -> None:
    assert quality.parse_seeds("0") == (0,)
    assert quality.parse_seeds("0,201-203, 1,0") == (0, 201, 202, 203, 1)
    for bad, message in (("", "no seeds"), ("a", "not a seed"), ("5-3", "empty range"), ("-1", "not a seed")):
        with pytest.raises(ValueError, match=message):
            quality.parse_seeds(bad)


def test_paired_interval_is_students_t_of_the_per_seed_differences(quality) -> None:
    mean, low, high = quality.paired_interval([1.0, 2.0, 3.0])
    # sd 1, n 3: half width t(0.975, 2) / sqrt(3) = 4.303 / 1.732
    assert mean == 2.0 and (low, high) == pytest.approx((2.0 - 2.4843, 2.0 + 2.4843), abs=1e-3)
    one = quality.paired_interval([4.0])
    assert one[0] == 4.0 and np.isnan(one[1]) and np.isnan(one[2])


def test_summary_pairs_each_worker_row_with_every_other_row_by_seed(quality) -> None:
    def card(nab: float, f1: float) -> object:
        return quality.Scorecard(nab=nab, precision=f1, recall=f1, f1=f1, delay=0.0, false_alarms_per_10k=0.0,
                                 auc_pr=0.5)

    per_seed = {
        1: {"VRAE static": card(80.0, 0.8), "VRAE worker (defaults)": card(90.0, 0.9)},
        2: {"VRAE static": card(70.0, 0.9), "VRAE worker (defaults)": card(75.0, 0.7)},
    }
    text = quality.summary("toy", per_seed)
    assert "2 seeds (1, 2)" in text
    assert "| VRAE static | 75.0 | 70.0-80.0 | 0.85 | 0.80-0.90 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| VRAE worker (defaults) | VRAE static |"))
    assert "+7.5 [" in row and "+0.00 [" not in row and row.endswith("| 1 of 2 |")


def test_a_cached_model_is_reused_only_for_the_same_inputs(quality, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import vrae_model.training

    trained: list[Path] = []

    def fake_train(windows, preset, *, out, **_) -> None:  # training itself is tested elsewhere
        trained.append(Path(out))
        Path(out).write_bytes(b"model")

    monkeypatch.setattr(vrae_model.training, "train", fake_train)
    data = quality.DataSet(name="toy set", features=["a"], window=4, stride=1,
                           train_windows=np.zeros((8, 4, 1), np.float32), train_stride=1, tune=[], test=[],
                           z_window=8)
    first = quality.train_vrae(data, tmp_path / "toy.pt", quick=True, seed=0, models=tmp_path / "models")
    again = quality.train_vrae(data, tmp_path / "toy.pt", quick=True, seed=0, models=tmp_path / "models")
    other_seed = quality.train_vrae(data, tmp_path / "toy.pt", quick=True, seed=1, models=tmp_path / "models")
    data.train_windows = np.ones((8, 4, 1), np.float32)
    other_data = quality.train_vrae(data, tmp_path / "toy.pt", quick=True, seed=0, models=tmp_path / "models")
    assert first == again and trained == [first, other_seed, other_data]
    assert len({first, other_seed, other_data}) == 3 and first.parent == tmp_path / "models"


def test_recalibrated_set_changes_one_sensors_gain_per_machine_for_good_unlabelled(quality) -> None:
    base, changed = quality.synth_data(True, 3), quality.recalibrated_data(True, 3)
    np.testing.assert_array_equal(changed.train_windows, base.train_windows)  # same history, same model
    for before, after in zip(base.test, changed.test, strict=True):
        np.testing.assert_array_equal(after.labels, before.labels)
        moved = np.any(after.values != before.values, axis=0)
        rows = np.flatnonzero(np.any(after.values != before.values, axis=1))
        assert moved.sum() == 1 and rows[-1] == len(before.values) - 1  # one feature, to the end of the split
        f, at = int(np.flatnonzero(moved)[0]), int(rows[0])
        assert 0 < at < 0.6 * len(before.values)
        centre = before.values[:at, f].astype(np.float64).mean()
        offset = before.values[at:, f] - centre
        away = np.abs(offset) > 0.1 * np.std(offset)  # float32 rounding dominates the ratio near the centre
        gain = (after.values[at:, f] - centre)[away] / offset[away]
        assert np.allclose(gain, np.median(gain), rtol=1e-3) and 1.29 < max(gain[0], 1 / gain[0]) < 2.01


@pytest.mark.parametrize("argv, message", [
    (["--seed", "3-1"], "quality.py: empty range of seeds: '3-1'"),
    (["--datasets", "synth,weather"], "quality.py: unknown data set(s) weather; use streams, skab, synth, ecg, recalibrated"),
    (["--jobs", "0"], "quality.py: --jobs and --series must be at least 1"),
])
def test_bad_arguments_are_one_line_and_exit_code_2(quality, argv: list[str], message: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert quality.main(argv) == 2
    assert capsys.readouterr().err.strip() == message


@pytest.fixture(scope="module")
def stream_bench() -> Iterator[tuple[object, object]]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import skab
        import stream_types

        yield stream_types, skab
    finally:
        sys.path.remove(str(BENCHMARKS))


def toy_stream(stream_types, labels: np.ndarray, train_events: int = 40,
               benign: list[tuple[int, int, str]] | None = None) -> object:
    from stream_outputs import Stream

    n = len(labels)
    edges = np.flatnonzero(np.diff(np.r_[0, labels, 0]))
    return Stream(name="toy", kind="toy", seed=0, features=["value"],
                  timestamps=1_000 * np.arange(n, dtype=np.int64), values=np.zeros((n, 1), np.float32),
                  labels=labels.astype(np.int8), train_events=train_events, train_rows=(np.zeros(0), np.zeros((0, 1))),
                  benign=benign or [], anomaly_kinds=[(int(a), int(b), "spike") for a, b in zip(edges[::2], edges[1::2])])


def test_plain_incidents_open_at_3_and_close_after_5_windows_below_2(stream_bench) -> None:
    stream_types, _ = stream_bench
    stream = toy_stream(stream_types, np.zeros(60, np.int8))
    surprise = np.zeros(len(stream.due))
    surprise[[3, 6]] = 3.0  # the second comes while the first incident is open: it restarts the count
    surprise[20] = 2.5  # between the levels, while closed: opens nothing
    run = stream_types.plain_incidents(stream, surprise)
    first, last = int(stream.due[3]), int(stream.due[11])  # windows 7-11 are five in a row below 2
    assert run.openings == [first] and run.closings == [(last, "recovered")]
    assert run.open_rows[first:last].all() and run.open_rows.sum() == last - first


def test_event_card_counts_false_openings_in_training_and_after_benign_events(stream_bench) -> None:
    stream_types, _ = stream_bench
    labels = np.zeros(200, np.int8)
    labels[150:152] = 1
    stream = toy_stream(stream_types, labels, train_events=40, benign=[(90, 95, "gap")])
    run = stream_types.Run(openings=[10, 100, 151], open_rows=np.zeros(200, bool), windows=100,
                           closings=[(20, "recovered"), (140, "settled")])
    card = stream_types.event_card([stream], [run])
    assert (card.detected, card.false_alarms, card.train_openings, card.benign_openings) == (1, 2, 1, 1)
    assert card.closed == {"recovered": 1, "settled": 1, "open at end": 1}
    assert card.false_per_10k == 200.0 and card.delay == 1.0


def test_skab_confusion_counts_only_rows_after_the_training_rows(stream_bench) -> None:
    stream_types, skab = stream_bench
    labels = np.zeros(600, np.int8)
    labels[500:] = 1
    stream = toy_stream(stream_types, labels)
    predicted = np.zeros(600, bool)
    predicted[:10] = predicted[450:460] = predicted[550:] = True  # the training rows' flags do not count
    c = skab.Confusion.of([stream], [predicted])
    assert (c.tp, c.fp, c.fn, c.tn) == (50, 10, 50, 90)
    run = skab.pointwise(stream, predicted, np.arange(600))
    assert run.openings == [0, 450, 550]  # a point-wise detector's detections: each run's first row
