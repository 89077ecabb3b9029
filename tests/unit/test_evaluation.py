"""Detections against labels (worker.tools.evaluation): NAB normalisation, event matching, the level grid."""

import math

import numpy as np
import pytest

from worker.tools.evaluation import (Stats, anomaly_windows, best_levels, incident_openings, level_grid,
                               score_detections, sigmoid)


def two_anomalies(n: int = 400) -> dict[str, np.ndarray]:
    labels = np.zeros(n, np.int8)
    labels[100:110] = 1
    labels[300:305] = 1
    return {"s": labels}


def test_perfect_detector_scores_100_and_silent_one_0() -> None:
    labels = two_anomalies()
    assert anomaly_windows(labels["s"], 4) == [(100, 112), (300, 307)]
    perfect = score_detections(labels, {"s": [100, 300]}, 4, n_windows=397)
    silent = score_detections(labels, {"s": []}, 4, n_windows=397)
    assert perfect.nab == pytest.approx(100.0) and perfect.f1 == 1.0 and perfect.delay == 0.0
    assert silent.nab == pytest.approx(0.0) and silent.recall == 0.0 and silent.anomalies == 2


def test_late_detection_earns_less_and_false_alarms_cost() -> None:
    labels = two_anomalies()
    early = score_detections(labels, {"s": [100, 300]}, 4, n_windows=397).nab
    late = score_detections(labels, {"s": [110, 306]}, 4, n_windows=397)
    noisy = score_detections(labels, {"s": [50, 100, 200, 300]}, 4, n_windows=397)
    assert late.nab < early and late.delay == 8.0
    assert noisy.nab < early and noisy.precision == 0.5 and noisy.recall == 1.0 and noisy.false_alarms == 2
    assert noisy.false_alarms_per_10k == pytest.approx(1e4 * 2 / 397)


def test_a_second_opening_inside_one_anomaly_is_neither_reward_nor_false_alarm() -> None:
    labels = two_anomalies()
    twice = score_detections(labels, {"s": [100, 105, 300]}, 4, n_windows=397)
    assert twice.nab == pytest.approx(100.0) and twice.false_alarms == 0 and twice.detected == 2


def test_without_labelled_anomalies_nab_is_undefined_not_a_division_error() -> None:
    score = score_detections({"s": np.zeros(50, np.int8)}, {"s": [10]}, 4, n_windows=47)
    assert np.isnan(score.nab) and score.false_alarms == 1 and score.recall == 0.0


def test_every_detector_goes_through_the_same_incident_machine() -> None:
    stats = Stats({"s": np.array([0, 5, 5, 5, 0, 0, 0, 0, 0, 0, 5, 0], float)}, {"s": np.arange(12)})
    assert incident_openings(stats, (4.0, 1.0), close_after=5) == {"s": [1, 10]}
    assert incident_openings(stats, (4.0, 1.0), close_after=7) == {"s": [1]}  # 6 normal windows: still open


def stepped_openings(values: np.ndarray, levels: tuple[float, float], close_after: int) -> list[int]:
    """The plain incident machine, window by window: closed, it opens at a value not below the open level
    (NaN opens); open, it closes after `close_after` windows in a row below the close level."""
    found, is_open, run = [], False, 0
    for i, value in enumerate(values):
        if not is_open:
            if not value < levels[0]:
                found.append(i)
                is_open, run = True, 0
        else:
            run = run + 1 if value < levels[1] else 0
            is_open = run < close_after
    return found


@pytest.mark.parametrize("seed", range(40))
def test_incident_openings_are_the_plain_machine_window_for_window(seed: int) -> None:
    """Computed per incident, the openings equal stepping the machine over every window: runs, re-openings
    right after a close, open incidents at the end, NaN and infinite statistics."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    values = np.where(rng.random(n) < 0.3, rng.normal(3.0, 2.0, n), rng.normal(0.0, 1.0, n))
    values[rng.random(n) < 0.02] = np.nan
    values[rng.random(n) < 0.02] = np.inf
    close = float(rng.uniform(-1.0, 2.0))
    levels = (close + float(rng.uniform(0.0, 3.0)), close)
    close_after = int(rng.integers(1, 8))
    due = np.arange(n) * 3 + 7  # openings are reported as the due events, not positions
    got = incident_openings(Stats({"s": values}, {"s": due}), levels, close_after)["s"]
    assert got == [int(due[i]) for i in stepped_openings(values, levels, close_after)]


@pytest.mark.parametrize("seed", range(40))
def test_detections_match_each_anomaly_by_the_definition(seed: int) -> None:
    """Against a literal reading of the rules (the first area holding an opening; a false alarm is
    charged by the last area that ended before it), with areas that overlap: spans closer than a window."""
    rng = np.random.default_rng(seed)
    n, window = 600, int(rng.integers(1, 40))
    labels = np.zeros(n, np.int8)
    for start in np.sort(rng.choice(n - 5, size=int(rng.integers(1, 12)), replace=False)):
        labels[start:start + int(rng.integers(1, 5))] = 1
    openings = sorted(rng.choice(n, size=int(rng.integers(0, 40)), replace=False).tolist())
    areas = anomaly_windows(labels, window)
    raw, hit, false_alarms = 0.0, set(), 0
    for d in openings:
        inside = [k for k, (a, b) in enumerate(areas) if a <= d <= b]
        if inside:
            if inside[0] not in hit:
                hit.add(inside[0])
                a, b = areas[inside[0]]
                raw += sigmoid(-(b - d + 1) / (b - a + 1))
            continue
        false_alarms += 1
        before = [(a, b) for a, b in areas if b < d]
        raw += 0.11 * sigmoid((d - before[-1][1]) / max(before[-1][1] - before[-1][0], 1)) if before else -0.11
    raw -= len(areas) - len(hit)
    expected = 100.0 * (raw + len(areas)) / (sigmoid(-1.0) * len(areas) + len(areas))
    score = score_detections({"s": labels}, {"s": openings}, window, n_windows=n)
    assert (score.detected, score.false_alarms) == (len(hit), false_alarms)
    assert score.nab == pytest.approx(expected)


def test_level_grid_has_no_holes_a_gapped_statistic_could_hide_in() -> None:
    """The open levels step through the statistic's tail share by at most 1.35x from 0.2 down to 1e-4:
    a hand-picked grid once jumped from 0.1 to 0.05, over the range where the static VRAE's best level
    was. Tied quantiles are judged once."""
    values = np.arange(100_000, dtype=np.float64)
    grid = level_grid(Stats({"s": values}, {"s": np.arange(len(values))}))
    tails = np.array(sorted({1.0 - open_level / (len(values) - 1) for open_level, _ in grid}, reverse=True))
    assert tails[0] == pytest.approx(0.2, rel=1e-3) and tails[-1] == pytest.approx(1e-4, rel=1e-2)
    assert np.max(tails[:-1] / tails[1:]) < 1.35
    assert len(grid) == len(set(grid))
    assert level_grid(Stats({"s": np.zeros(1000)}, {"s": np.arange(1000)})) == [(0.0, 0.0)]
    assert level_grid(Stats({"s": np.full(5, np.nan)}, {"s": np.arange(5)})) == []


def test_best_levels_open_between_normal_windows_and_anomalies() -> None:
    """Normal windows spread over 0-2, the anomaly's windows reach 6: the best open level lies above
    every normal window and at or below the anomaly, whichever objective."""
    rng = np.random.default_rng(0)
    labels = two_anomalies(2000)
    values = rng.uniform(0.0, 2.0, 1997)
    due = np.arange(3, 2000)
    values[(due >= 100) & (due <= 112)] = 6.0
    values[(due >= 300) & (due <= 307)] = 6.0
    stats = Stats({"s": values}, {"s": due})
    for objective in (lambda score: score.nab, lambda score: score.f1):
        (open_level, close_level), score = best_levels(labels, stats, 4, 5, objective)
        assert 2.0 < open_level <= 6.0 and close_level <= open_level
        assert score.f1 == 1.0 and score.false_alarms == 0
    with pytest.raises(ValueError, match="no finite statistic"):
        best_levels(labels, Stats({"s": np.full(3, np.nan)}, {"s": np.arange(3)}), 4, 5, lambda s: s.nab)


def test_a_false_alarm_long_after_a_short_anomaly_costs_a_false_alarm_not_an_overflow() -> None:
    labels = {"s": np.zeros(100_000, np.int8)}
    labels["s"][10] = 1
    score = score_detections(labels, {"s": [10, 99_000]}, 1, n_windows=100_000)
    caught = 2.0 / (1.0 + math.exp(-5.0)) - 1.0  # detected at the anomaly's first event
    assert score.false_alarms == 1
    assert score.nab == pytest.approx(100.0 * (caught - 0.11 + 1.0) / (caught + 1.0))
