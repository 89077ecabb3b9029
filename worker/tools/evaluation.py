"""Detections against labelled anomalies (pure): the quality harness and `vrae-worker tune-levels` share it.

A detection is an incident OPENING (the record an alert consumer acts on). Each labelled anomaly is a
span of events; its NAB window is that span extended by window - 1 events, i.e. every window that
still contains part of it. An opening inside a NAB window detects that anomaly (the first one counts;
later ones inside the same window are neither reward nor false alarm); any other opening is a false
alarm.

    precision = detected / (detected + false alarms)     recall = detected / anomalies

NAB score (Lavin & Ahmad 2015, standard profile A_TP = 1, A_FP = -0.11, A_FN = -1; the low-false-positive
profile doubles A_FP to -0.22): a detection earns
A_TP * sigma(y), y = -(events left in the NAB window) / (its length), sigma(y) = 2 / (1 + e^{5y}) - 1,
so an early detection earns almost 1 and one at the window's end almost 0. A false alarm after an
anomaly costs -A_FP * sigma(distance past it / its length) (about A_FP soon after, less further on),
elsewhere A_FP. Each miss costs A_FN. Normalised: 100 = every anomaly caught at once, 0 = silence.

Levels are chosen from the statistic's own quantiles (`level_grid`), so the same grid serves a
z-score, a reconstruction error or the worker's surprise.
"""

import bisect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


A_TP, A_FP, A_FN = 1.0, -0.11, -1.0
A_FP_LOW = -0.22  # NAB's reward-low-false-positives profile: a false alarm costs twice as much
# Open levels: the statistic's quantiles for tail shares 0.2 down to 1e-4, ten per decade. A coarser
# grid (12 hand-picked quantiles) skipped whole ranges of a statistic with a gap between normal and
# anomalous windows (benchmarks/QUALITY.md).
QUANTILES = tuple(float(q) for q in 1.0 - np.logspace(math.log10(0.2), -4.0, 34))
CLOSE_RATIOS = (1.0, 3.0, 10.0, 30.0)  # close at the quantile 1, 3, 10 or 30 times as frequent
Levels = tuple[float, float]  # (open, close)


@dataclass
class Stats:
    """One detector's statistic (higher = more anomalous) at every scored window, keyed by series."""

    values: dict[str, np.ndarray]  # series -> (n,) statistic
    due: dict[str, np.ndarray]  # series -> (n,) index of the event ending each window


@dataclass
class EventScore:
    nab: float
    nab_low_fp: float
    precision: float
    recall: float
    f1: float
    delay: float  # mean events from an anomaly's first event to its detection; NaN if none detected
    false_alarms_per_10k: float  # per 10,000 scored windows
    anomalies: int
    detected: int
    false_alarms: int


def anomaly_windows(labels: np.ndarray, window: int) -> list[tuple[int, int]]:
    """(first, last) event index, inclusive, of each labelled span extended by window - 1 events."""
    padded = np.concatenate([[0], (np.asarray(labels) != 0).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    spans = zip(edges[::2], edges[1::2], strict=True)
    return [(int(a), min(int(b) - 1 + window - 1, len(labels) - 1)) for a, b in spans]


def sigmoid(y: float) -> float:
    """NAB's scaled sigmoid; y is capped where it has long reached -1 (a false alarm far after an
    anomaly: exp(5 y) would overflow)."""
    return 2.0 / (1.0 + math.exp(min(5.0 * y, 700.0))) - 1.0


def matches(areas: Sequence[tuple[int, int]], openings: Iterable[int]) -> Iterator[tuple[int, int]]:
    """(opening, k) in time order: k is the index of the area holding the opening, or -1 - j for a false
    alarm, where j is the index of the first area after it (so areas[j - 1] is the last one before it).

    Labelled spans are disjoint and in order, so both ends of their areas rise with k (areas may
    overlap): the first area ending at or after d is the first that can hold it, and every area before
    it ended before d."""
    ends = [b for _, b in areas]
    for d in sorted(openings):
        k = bisect.bisect_left(ends, d)
        yield d, (k if k < len(areas) and areas[k][0] <= d else -1 - k)


def score_detections(labels: Mapping[str, np.ndarray], openings: Mapping[str, Sequence[int]], window: int,
                     n_windows: int) -> EventScore:
    """Score incident openings (event indices per series) against each series' 0/1 event labels."""
    rewards = penalties = perfect = null = 0.0  # penalties: the false alarms' weights, before A_FP
    detected = missed = false_alarms = 0
    delays: list[int] = []
    for sid, series_labels in labels.items():
        areas = anomaly_windows(series_labels, window)
        hit = [False] * len(areas)
        for d, k in matches(areas, openings.get(sid, [])):
            if k >= 0:
                if not hit[k]:
                    a, b = areas[k]
                    hit[k] = True
                    rewards += A_TP * sigmoid(-(b - d + 1) / (b - a + 1))
                    delays.append(d - a)
                continue
            false_alarms += 1
            if k < -1:  # an area ended before it
                a, b = areas[-k - 2]
                penalties -= sigmoid(abs(d - b) / max(b - a, 1))
            else:
                penalties += 1.0
        detected += sum(hit)
        missed += len(hit) - sum(hit)
        rewards += A_FN * (len(hit) - sum(hit))
        perfect += A_TP * sigmoid(-1.0) * len(areas)
        null += A_FN * len(areas)
    precision = detected / max(detected + false_alarms, 1)
    recall = detected / max(detected + missed, 1)

    def normalised(a_fp: float) -> float:
        return 100.0 * (rewards + a_fp * penalties - null) / (perfect - null) if perfect > null else math.nan

    return EventScore(
        nab=normalised(A_FP),
        nab_low_fp=normalised(A_FP_LOW),
        precision=precision,
        recall=recall,
        f1=2 * precision * recall / max(precision + recall, 1e-12),
        delay=float(np.mean(delays)) if delays else math.nan,
        false_alarms_per_10k=1e4 * false_alarms / max(n_windows, 1),
        anomalies=detected + missed,
        detected=detected,
        false_alarms=false_alarms,
    )


def incident_openings(stats: Stats, levels: Levels, close_after: int) -> dict[str, list[int]]:
    """A plain incident machine (open at the open level, close after `close_after` windows in a row below
    the close level) applied to any detector's statistic: how the baselines' incidents are judged, and
    how tune-levels screens a grid of levels on one replay of the worker (the worker's own machine also
    learns a series' normal only outside incidents, so a pair it keeps is checked by a real backtest).

    Computed per incident, not per window: a level grid judges ~130 pairs, and stepping window by window
    in Python took 20 s to minutes per grid (tests/unit/test_evaluation.py pins the two equal)."""
    if levels[1] > levels[0] or close_after < 1:
        raise ValueError("levels need close <= open and close_after >= 1")
    return {sid: stats.due[sid][incident_positions(values, levels, close_after)[0]].tolist()
            for sid, values in stats.values.items()}


def incident_positions(values: np.ndarray, levels: Levels, close_after: int) -> tuple[np.ndarray, np.ndarray]:
    """(openings, closings): positions in `values` where `step` would open an incident, and where each
    closes (the last window of its run below the close level; one fewer when the last stays open).

    Closed, the machine opens at the first window that is not below the open level (NaN opens, as in
    `step`). Open, it closes at the first window that ends `close_after` windows in a row below the
    close level, counting only windows after the opening one; the next window may open again."""
    values = np.asarray(values, dtype=np.float64)
    can_open = np.flatnonzero(~(values < levels[0]))
    normal = np.concatenate([[0], np.cumsum(values < levels[1])])
    run_ends = np.arange(close_after, len(values) + 1)  # one past the last window of each full run
    run_ends = run_ends[normal[run_ends] - normal[run_ends - close_after] == close_after] - 1
    found: list[int] = []
    closed: list[int] = []
    position = 0
    while (k := int(np.searchsorted(can_open, position))) < len(can_open):
        opened = int(can_open[k])
        found.append(opened)
        e = int(np.searchsorted(run_ends, opened + close_after))  # the run must start after the opening
        if e == len(run_ends):
            break
        closed.append(int(run_ends[e]))
        position = closed[-1] + 1
    return np.asarray(found, dtype=np.int64), np.asarray(closed, dtype=np.int64)


def level_grid(stats: Stats) -> list[Levels]:
    """(open, close) pairs from the statistic itself: open at its quantile q, close at the quantile
    r times as frequent (r = 1: no hysteresis)."""
    pooled = np.concatenate(list(stats.values.values()))
    pooled = pooled[np.isfinite(pooled)]
    if len(pooled) == 0:
        return []
    pairs = ((float(np.quantile(pooled, q)), float(np.quantile(pooled, max(1.0 - r * (1.0 - q), 0.5))))
             for q in QUANTILES for r in CLOSE_RATIOS)
    return list(dict.fromkeys(pairs))  # tied quantiles give the same pair: judge it once


def judge_levels(labels: Mapping[str, np.ndarray], stats: Stats, window: int, close_after: int,
                 pairs: Iterable[Levels]) -> list[tuple[Levels, EventScore]]:
    """Each (open, close) pair with the score of the incidents it opens on `stats`."""
    n_windows = sum(len(values) for values in stats.values.values())
    return [(levels, score_detections(labels, incident_openings(stats, levels, close_after), window, n_windows))
            for levels in pairs]


def judge_grid(labels: Mapping[str, np.ndarray], stats: Stats, window: int,
               close_after: int) -> list[tuple[Levels, EventScore]]:
    """Every pair of `level_grid(stats)` with its score; judged once, whatever objectives pick from it."""
    return judge_levels(labels, stats, window, close_after, level_grid(stats))


def best_of(judged: Sequence[tuple[Levels, EventScore]],
            objective: Callable[[EventScore], float]) -> tuple[Levels, EventScore]:
    """The pair that maximises `objective`; the first of equals in `judged` (on the grid: the lowest
    open level, as it runs from frequent to rare)."""
    if not judged:
        raise ValueError("no finite statistic to choose levels from")
    return max(judged, key=lambda pair: objective(pair[1]))


def best_levels(labels: Mapping[str, np.ndarray], stats: Stats, window: int, close_after: int,
                objective: Callable[[EventScore], float]) -> tuple[Levels, EventScore]:
    """The grid's levels that maximise `objective`, and their score."""
    return best_of(judge_grid(labels, stats, window, close_after), objective)
