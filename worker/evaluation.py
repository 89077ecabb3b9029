"""Detections against labelled anomalies (pure): the quality harness and `vrae-worker tune-levels` share it.

A detection is an incident OPENING (the record an alert consumer acts on). Each labelled anomaly is a
span of events; its NAB window is that span extended by window - 1 events, i.e. every window that
still contains part of it. An opening inside a NAB window detects that anomaly (the first one counts;
later ones inside the same window are neither reward nor false alarm); any other opening is a false
alarm.

    precision = detected / (detected + false alarms)     recall = detected / anomalies

NAB score (Lavin & Ahmad 2015, standard profile A_TP = 1, A_FP = -0.11, A_FN = -1): a detection earns
A_TP * sigma(y), y = -(events left in the NAB window) / (its length), sigma(y) = 2 / (1 + e^{5y}) - 1,
so an early detection earns almost 1 and one at the window's end almost 0. A false alarm after an
anomaly costs -A_FP * sigma(distance past it / its length) (about A_FP soon after, less further on),
elsewhere A_FP. Each miss costs A_FN. Normalised: 100 = every anomaly caught at once, 0 = silence.

Levels are chosen from the statistic's own quantiles (`level_grid`), so the same grid serves a
z-score, a reconstruction error or the worker's surprise.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from worker.incidents import IncidentSettings, IncidentState, Observation, Phase, step

A_TP, A_FP, A_FN = 1.0, -0.11, -1.0
# Open levels: the statistic's quantiles for tail shares 0.2 down to 1e-4, ten per decade. A coarser
# grid (12 hand-picked quantiles) skipped whole ranges of a statistic with a gap between normal and
# anomalous windows (README: the quality harness).
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


def score_detections(labels: Mapping[str, np.ndarray], openings: Mapping[str, Sequence[int]], window: int,
                     n_windows: int) -> EventScore:
    """Score incident openings (event indices per series) against each series' 0/1 event labels."""
    raw = perfect = null = 0.0
    detected = missed = false_alarms = 0
    delays: list[int] = []
    for sid, series_labels in labels.items():
        areas = anomaly_windows(series_labels, window)
        hit = [False] * len(areas)
        for d in sorted(openings.get(sid, [])):
            inside = next((k for k, (a, b) in enumerate(areas) if a <= d <= b), None)
            if inside is not None:
                if not hit[inside]:
                    a, b = areas[inside]
                    hit[inside] = True
                    raw += A_TP * sigmoid(-(b - d + 1) / (b - a + 1))
                    delays.append(d - a)
                continue
            false_alarms += 1
            before = [(a, b) for a, b in areas if b < d]
            if before:
                a, b = before[-1]
                raw += -A_FP * sigmoid(abs(d - b) / max(b - a, 1))
            else:
                raw += A_FP
        detected += sum(hit)
        missed += len(hit) - sum(hit)
        raw += A_FN * (len(hit) - sum(hit))
        perfect += A_TP * sigmoid(-1.0) * len(areas)
        null += A_FN * len(areas)
    precision = detected / max(detected + false_alarms, 1)
    recall = detected / max(detected + missed, 1)
    return EventScore(
        nab=100.0 * (raw - null) / (perfect - null) if perfect > null else math.nan,
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
    """The worker's incident machine (worker.incidents) applied to any detector's statistic."""
    settings = IncidentSettings(open_surprise=levels[0], close_surprise=levels[1], close_after=close_after)
    openings: dict[str, list[int]] = {}
    no_shares = np.zeros(1)
    for sid, values in stats.values.items():
        state, found = IncidentState(), []
        for n, value in zip(stats.due[sid].tolist(), values.tolist(), strict=True):
            state, transition = step(sid, state, Observation(0, n, 0.0, value, no_shares), settings)
            if transition is not None and transition.phase is Phase.OPENED:
                found.append(n)
        openings[sid] = found
    return openings


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


def judge_grid(labels: Mapping[str, np.ndarray], stats: Stats, window: int,
               close_after: int) -> list[tuple[Levels, EventScore]]:
    """Every pair of `level_grid(stats)` with its score; judged once, whatever objectives pick from it."""
    n_windows = sum(len(values) for values in stats.values.values())
    return [(levels, score_detections(labels, incident_openings(stats, levels, close_after), window, n_windows))
            for levels in level_grid(stats)]


def best_of(judged: Sequence[tuple[Levels, EventScore]],
            objective: Callable[[EventScore], float]) -> tuple[Levels, EventScore]:
    """The pair that maximises `objective` (the first of equals: the lowest open level, as the grid runs
    from frequent to rare)."""
    if not judged:
        raise ValueError("no finite statistic to choose levels from")
    return max(judged, key=lambda pair: objective(pair[1]))


def best_levels(labels: Mapping[str, np.ndarray], stats: Stats, window: int, close_after: int,
                objective: Callable[[EventScore], float]) -> tuple[Levels, EventScore]:
    """The grid's levels that maximise `objective`, and their score."""
    return best_of(judge_grid(labels, stats, window, close_after), objective)
