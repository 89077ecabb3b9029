"""Detection per stream type, by the protocol the project is judged by: default settings, nothing tuned.

    python benchmarks/stream_types.py                                   # seeds 0-2, 3 streams a type
    python benchmarks/stream_types.py --seeds 900-902 --jobs 2          # fresh seeds
    python benchmarks/quality.py                                        # the headline (1 stream a type)

Per stream (benchmarks/stream_outputs.py): a VRAE trained by `vrae train --window 32` with every
default on the stream's first 15 % of events (the long CSV a user would export). The whole stream,
training part included, then goes through each detector; a detection is an incident OPENING.

    VRAE worker        THE WORKER: the stream's events through worker.tools.backtest (the service's
                       pipeline in memory: parsing, window store, scoring, per-series calibration,
                       incidents) with the worker's default configuration (worker.config: stride 1,
                       gap factor, open 3 / close below 2 for 5 windows, memory, settle time)
    VRAE static        -log10 of the model's own calibrated tail probability of each window's score
    rolling z-score    max over features of |x - mean| / sd of the previous 288 events
    PCA T2+Q (windows) Hotelling T2 and residual Q of the standardised, flattened window (PCA fitted on
                       the training windows, 90 % of the variance), combined as 2 min(p_T2, p_Q)
    PCA T2+Q (rows)    the same on single rows (multivariate streams only: SKAB's own baseline)

The baselines get a label-free surprise the same way: their statistic's tail probability by its
distribution on the training part (empirical body, generalised Pareto tail: vrae_model.calibration),
through a plain incident machine with the worker's default levels (open at 3, close after 5 windows
below 2: worker.tools.evaluation.incident_positions, which also says where each closes).

Scores per stream type, pooled over the streams and seeds (worker.tools.evaluation.score_detections):
NAB standard (A_FP -0.11) and low-FP (A_FP -0.22) profiles (an anomaly's NAB window is its labelled span
plus window - 1 events; openings in the training part count as false alarms), event F1, false incidents
per 10k judged windows, mean detection delay in events; beside them the false openings on the training
part and within a window after a benign (unlabelled) event, and how the worker's incidents closed:
"recovered" (back to the series' normal) or "settled" (open for the settle time, 24 h = 288 windows).
"""

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stream_outputs import DEFAULT_CACHE, WINDOW, Stream, count_windows, load, parse_seeds
from vrae_model.calibration import fit_calibration, surprises
from vrae_model.synth import STREAM_INTERVAL_MS, STREAM_KINDS, STREAM_LENGTH
from worker.tools.evaluation import anomaly_windows, incident_positions, matches, score_detections

Z_WINDOW = 288
WORKER = "VRAE worker"


# ------------------------------------------------------------------------------------------- runs


@dataclass
class Run:
    """One detector on one stream."""

    openings: list[int]  # event index ending each opening window
    open_rows: np.ndarray  # (n,) bool: an incident is open after the window ending at this event
    windows: int  # windows judged
    closings: list[tuple[int, str]] = field(default_factory=list)  # (event index, "recovered" | "settled")


def _open_rows(n: int, openings: Sequence[int], closings: Sequence[int]) -> np.ndarray:
    """Open from each opening's event up to (not including) its closing's, or to the end."""
    rows = np.zeros(n, bool)
    for k, start in enumerate(openings):
        rows[start:closings[k] if k < len(closings) else n] = True
    return rows


def plain_incidents(stream: Stream, surprise: np.ndarray, due: np.ndarray | None = None, open_level: float = 3.0,
                    close_level: float = 2.0, close_after: int = 5) -> Run:
    """The incident machine without per-series learning on any per-window surprise (NaN opens): the one
    tune-levels screens with (worker.tools.evaluation.incident_positions)."""
    due = stream.due if due is None else due
    opened, closed = incident_positions(surprise, (open_level, close_level), close_after)
    openings, closings = due[opened].tolist(), due[closed].tolist()
    return Run(openings, _open_rows(len(stream.timestamps), openings, closings), len(due),
               [(c, "recovered") for c in closings])


def worker_settings() -> tuple[object, int, float]:
    """(detector settings, stride, gap factor) of the worker's default configuration."""
    from worker.app import detector_settings
    from worker.config import DetectionSettings, WindowSettings

    window = WindowSettings()
    return detector_settings(DetectionSettings(), window.gap_factor), window.stride, window.gap_factor


def worker_run(stream: Stream) -> Run:
    """THE worker on the stream: worker.tools.backtest with the stream's model and default settings."""
    from vrae_model.artifact import load_artifact
    from worker.scorer import Scorer
    from worker.tools.backtest import backtest

    settings, stride, gap_factor = worker_settings()
    result = backtest([stream], Scorer(load_artifact(stream.model_path)), stride, settings, gap_factor=gap_factor)
    openings, closed = result.openings[stream.name], result.closings[stream.name]
    closings = list(zip(closed, result.close_reasons[stream.name], strict=True))
    return Run(openings, _open_rows(len(stream.timestamps), openings, closed), result.windows, closings)


# ------------------------------------------------------------------------------------------ baselines


def rolling_z(stream: Stream) -> np.ndarray:
    return rolling_z_at(stream.values, stream.due, Z_WINDOW)


def rolling_z_at(values: np.ndarray, due: np.ndarray, window: int) -> np.ndarray:
    """max_f |x_f - mean_f| / sd_f over the previous `window` events, at each due event (cumulative sums:
    O(n)). The rolling z-score baseline of every data set (benchmarks/quality.py too)."""
    x = values.astype(np.float64)
    c1 = np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    c2 = np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x * x, axis=0)])
    lo = np.maximum(due - window, 0)
    count = np.maximum(due - lo, 1)[:, None]
    mean = (c1[due] - c1[lo]) / count
    var = np.maximum((c2[due] - c2[lo]) / count - mean * mean, 1e-12)
    return np.max(np.abs(x[due] - mean) / np.sqrt(var), axis=1)


def calibrated(statistic: np.ndarray, n_train: int) -> np.ndarray:
    """Surprise of a statistic by its own distribution on its first n_train values (the training part)."""
    train = statistic[:max(n_train, 8)]
    return surprises(fit_calibration(train[np.isfinite(train)]), np.nan_to_num(statistic, nan=np.inf))


@dataclass
class PCA:
    mean: np.ndarray
    std: np.ndarray
    components: np.ndarray  # (k, D)
    eigenvalues: np.ndarray  # (k,)
    centre: np.ndarray

    @classmethod
    def fit(cls, rows: np.ndarray, explained: float = 0.9) -> "PCA":
        mean, std = rows.mean(axis=0), rows.std(axis=0) + 1e-8
        flat = (rows - mean) / std
        centre = flat.mean(axis=0)
        _, sv, vt = np.linalg.svd(flat - centre, full_matrices=False)
        share = np.cumsum(sv**2) / max(float(np.sum(sv**2)), 1e-300)  # constant training rows: share 0
        k = int(min(np.searchsorted(share, explained) + 1, len(sv)))
        return cls(mean, std, vt[:k], np.maximum(sv[:k] ** 2 / max(len(rows) - 1, 1), 1e-12), centre)

    def t2_q(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flat = (rows - self.mean) / self.std - self.centre
        scores = flat @ self.components.T
        residual = flat - scores @ self.components
        return np.sum(scores**2 / self.eigenvalues, axis=1), np.sum(residual**2, axis=1)


def pca_surprise(rows: np.ndarray, n_train: int) -> np.ndarray:
    t2, q = PCA.fit(rows[:n_train]).t2_q(rows)
    return np.maximum(calibrated(t2, n_train), calibrated(q, n_train)) - math.log10(2.0)


def pca_windows(stream: Stream) -> np.ndarray:
    flat = count_windows(stream).astype(np.float64).reshape(len(stream.due), -1)
    return pca_surprise(flat, stream.train_events - WINDOW + 1)


def pca_rows(stream: Stream) -> np.ndarray:
    return pca_surprise(stream.values.astype(np.float64), stream.train_events)[stream.due]


BASELINES: dict[str, Callable[[Stream], np.ndarray]] = {
    "VRAE static": lambda s: s.surprise.astype(np.float64),
    "rolling z-score": lambda s: calibrated(rolling_z(s), s.train_events - WINDOW + 1),
    "PCA T2+Q (windows)": pca_windows,
}


def detectors(stream: Stream) -> dict[str, Run]:
    """Every detector's run on one stream, the worker first."""
    runs = {WORKER: worker_run(stream)}
    runs.update({name: plain_incidents(stream, surprise_of(stream)) for name, surprise_of in BASELINES.items()})
    if stream.values.shape[1] > 1:
        runs["PCA T2+Q (rows)"] = plain_incidents(stream, pca_rows(stream))
    return runs


# ------------------------------------------------------------------------------------------- scoring


@dataclass
class Card:
    nab: float
    nab_low_fp: float
    f1: float
    precision: float
    recall: float
    false_per_10k: float
    false_alarms: int
    detected: int
    anomalies: int
    windows: int
    delay: float  # events from an anomaly's first event to its detection
    train_openings: int  # false openings in the training part
    benign_openings: int  # false openings within a window after a benign event starts
    missed_by_kind: dict[str, int] = field(default_factory=dict)
    closed: dict[str, int] = field(default_factory=dict)  # "recovered" / "settled" / "open at end"
    median_hours_open: dict[str, float] = field(default_factory=dict)  # of the incidents closed, by reason
    settled_detections: int = 0  # settled incidents that opened inside an anomaly's NAB window
    missed_while_open: int = 0  # anomalies missed that began while an incident of the series was open
    skab: dict[str, float] = field(default_factory=dict)


def event_card(streams: Sequence[Stream], runs: Sequence[Run]) -> Card:
    """NAB (both profiles), event F1 and false incidents over a set of streams, pooled."""
    score = score_detections({s.name: s.labels for s in streams}, {s.name: r.openings for s, r in zip(streams, runs)},
                             WINDOW, sum(r.windows for r in runs))
    train_open = benign_open = 0
    missed: dict[str, int] = {}
    closed = {"recovered": 0, "settled": 0, "open at end": 0}
    hours: dict[str, list[float]] = {"recovered": [], "settled": []}
    settled_detections = missed_while_open = 0
    for stream, run in zip(streams, runs, strict=True):
        areas = anomaly_windows(stream.labels, WINDOW)
        hit = [False] * len(areas)
        matched = list(matches(areas, run.openings))
        for d, k in matched:
            if k >= 0:
                hit[k] = True
            else:
                train_open += d < stream.train_events
                benign_open += any(a <= d < b + WINDOW for a, b, _ in stream.benign)
        for (a, _), h in zip(areas, hit, strict=True):
            missed_while_open += not h and bool(run.open_rows[max(a - 1, 0)])
            if not h:
                kind = next((kd for lo, _, kd in stream.anomaly_kinds if lo == a), "?")
                missed[kind] = missed.get(kind, 0) + 1
        detections = {d for d, k in matched if k >= 0}
        for opened, (at, reason) in zip(run.openings, run.closings, strict=False):
            closed[reason] += 1
            hours[reason].append((stream.timestamps[at] - stream.timestamps[opened]) / 3_600_000)
            settled_detections += reason == "settled" and opened in detections
        closed["open at end"] += len(run.openings) - len(run.closings)
    return Card(nab=score.nab, nab_low_fp=score.nab_low_fp, f1=score.f1, precision=score.precision,
                recall=score.recall, false_per_10k=score.false_alarms_per_10k, false_alarms=score.false_alarms,
                detected=score.detected, anomalies=score.anomalies, windows=sum(r.windows for r in runs),
                delay=score.delay, train_openings=train_open, benign_openings=benign_open, missed_by_kind=missed,
                closed=closed, median_hours_open={k: float(np.median(v)) if v else math.nan for k, v in hours.items()},
                settled_detections=settled_detections, missed_while_open=missed_while_open)


ALL = "all types"


def evaluate(streams: Sequence[Stream]) -> dict[str, dict[str, Card]]:
    """{stream kind: {detector: card}}, plus ALL pooled over the synthetic types (for the detectors that
    judged every synthetic stream: the row PCA judges the multivariate ones only)."""
    runs = [detectors(s) for s in streams]
    by_kind: dict[str, list[int]] = {}
    for i, s in enumerate(streams):
        by_kind.setdefault(s.kind, []).append(i)
    result: dict[str, dict[str, Card]] = {}
    for kind, members in by_kind.items():
        names = list(dict.fromkeys(n for i in members for n in runs[i]))
        result[kind] = {n: event_card([streams[i] for i in members if n in runs[i]],
                                      [runs[i][n] for i in members if n in runs[i]]) for n in names}
    synthetic = [i for i, s in enumerate(streams) if s.kind != "skab-valve1"]
    if synthetic:
        names = [n for n in runs[synthetic[0]] if all(n in runs[i] for i in synthetic)]
        result[ALL] = {n: event_card([streams[i] for i in synthetic], [runs[i][n] for i in synthetic]) for n in names}
    return result


def cell(c: Card) -> str:
    return f"{c.nab:.1f} / {c.nab_low_fp:.1f} / {c.f1:.2f} / {c.false_per_10k:.1f} / {c.delay:.0f}"


def headline(result: dict[str, dict[str, Card]], title: str) -> str:
    """One row per stream type: the worker beside every baseline (NAB std / low-FP / F1 / false per 10k /
    delay)."""
    kinds = [k for k in (*STREAM_KINDS, ALL) if k in result]
    names = list(dict.fromkeys(n for k in kinds for n in result[k]))
    lines = [f"{title}: NAB std / NAB low-FP / event F1 / false incidents per 10k windows / delay (events)", "",
             "| stream type | anomalies | " + " | ".join(names) + " |", "|---|---:|" + "---|" * len(names)]
    for kind in kinds:
        cards = result[kind]
        first = next(iter(cards.values()))
        lines.append(f"| {kind} | {first.anomalies} | "
                     + " | ".join(cell(cards[n]) if n in cards else "" for n in names) + " |")
    return "\n".join(lines)


def incidents(result: dict[str, dict[str, Card]]) -> str:
    """How the worker's incidents ended, per stream type: back to normal, or settled after settle_ms."""
    lines = ["The worker's incidents: how they closed, and their median length in hours", "",
             "| stream type | incidents | recovered | settled (of them true detections) | open at end "
             "| hours open: recovered | settled | anomalies missed while one was open |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for kind in (k for k in (*STREAM_KINDS, ALL) if k in result and WORKER in result[k]):
        c = result[kind][WORKER]
        lines.append(f"| {kind} | {sum(c.closed.values())} | {c.closed['recovered']} | {c.closed['settled']} "
                     f"({c.settled_detections}) | {c.closed['open at end']} | {c.median_hours_open['recovered']:.1f} "
                     f"| {c.median_hours_open['settled']:.1f} | {c.missed_while_open} of {c.anomalies - c.detected} |")
    return "\n".join(lines)


def details(result: dict[str, dict[str, Card]]) -> str:
    parts = []
    for kind, cards in result.items():
        first = next(iter(cards.values()))
        lines = [f"#### {kind}: {first.anomalies} anomalies, {first.windows} windows", "",
                 ("| detector | NAB std | NAB low-FP | F1 | precision | recall | false / 10k | false (train, benign) "
                 "| delay | missed, by kind |"),
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for name, c in cards.items():
            missed = ", ".join(f"{k} {v}" for k, v in sorted(c.missed_by_kind.items())) or "-"
            lines.append(f"| {name} | {c.nab:.1f} | {c.nab_low_fp:.1f} | {c.f1:.2f} | {c.precision:.2f} | {c.recall:.2f} "
                         f"| {c.false_per_10k:.1f} | {c.false_alarms} ({c.train_openings}, {c.benign_openings}) "
                         f"| {c.delay:.0f} | {missed} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def run(seeds: Sequence[int], n_series: int, kinds: Sequence[str] = STREAM_KINDS, cache: Path = DEFAULT_CACHE,
        jobs: int = 1, log: Callable[[str], None] = print, length: int = STREAM_LENGTH,
        interval_ms: int = STREAM_INTERVAL_MS) -> dict[str, dict[str, Card]]:
    streams = load(kinds, seeds, n_series, cache, skab=False, jobs=jobs, log=log, length=length,
                   interval_ms=interval_ms)
    return evaluate(streams)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0-2", help="0-2 are the development seeds; e.g. 900-902 are fresh")
    parser.add_argument("--kinds", default=",".join(STREAM_KINDS))
    parser.add_argument("--series", type=int, default=3, help="streams of each type per seed")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="trained models and their outputs")
    parser.add_argument("--jobs", type=int, default=1, help="models trained side by side")
    parser.add_argument("--details", action="store_true", help="also every detector's full table per type")
    parser.add_argument("--length", type=int, default=STREAM_LENGTH,
                        help="events a stream (a shape the defaults were not chosen on: e.g. 16128, 8 weeks)")
    parser.add_argument("--interval-s", type=int, default=STREAM_INTERVAL_MS // 1000,
                        help="seconds between events (e.g. 3600: hourly, a day shorter than a window)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = run(parse_seeds(args.seeds), args.series, [k for k in args.kinds.split(",") if k], args.cache,
                 args.jobs, log=lambda line: print(line, flush=True), length=args.length,
                 interval_ms=1000 * args.interval_s)
    shape = f", {args.length} events at {args.interval_s} s" if args.length != STREAM_LENGTH or \
        args.interval_s != STREAM_INTERVAL_MS // 1000 else ""
    print(headline(result, f"seeds {args.seeds}, {args.series} streams a type{shape}") + "\n\n" + incidents(result))
    if args.details:
        print("\n" + details(result))
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
