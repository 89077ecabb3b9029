"""`vrae-worker backtest`: what the worker would have done with a history, per event, and the summary.

    vrae-worker backtest --model model.pt --data history.csv --out events.csv [--plot timeline.png]

The history is a long CSV (`series_id,timestamp,<features...>[,label]`, what `vrae synth` and
`vrae-worker export-history` write). It is replayed through the worker's own pipeline with the
configured settings (VRAE_*: gap factor, stride, detection levels) by `worker.tools.backtest`. Per event
the output says whether a window was judged there, its surprise (the series' judgement) and the
model's, and whether an incident was open, opened or closed. The summary counts incidents, per 10,000
windows and per series; with a `label` column it adds the scorecard: NAB (standard and low false
positive profiles), event precision / recall / F1 (a detection is an incident opening), and the
point-wise F1 of the rows inside an incident. The plot shows each series with its incidents shaded and
the surprise below: the picture an operator wants before switching alerts on.
"""

import argparse
import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vrae_model.artifact import load_artifact
from vrae_model.data import read_long_csv
from vrae_model.exceptions import DataError, VraeError
from worker.app import detector_settings
from worker.config import Settings
from worker.exceptions import UsageError
from worker.scorer import Scorer
from worker.tools.backtest import Backtest, backtest
from worker.tools.evaluation import EventScore, score_detections


@dataclass(frozen=True)
class History:
    series_id: str
    timestamps: np.ndarray  # (n,) int64 epoch ms
    values: np.ndarray  # (n, F) float32
    labels: np.ndarray | None  # (n,) 0/1 when the file has a label column


@dataclass(frozen=True)
class Trace:
    """One series as the worker would have seen it: per event, what happened."""

    history: History
    window: np.ndarray  # (n,) bool: a due window ended here and was judged
    surprise: np.ndarray  # (n,) the series' judgement (NaN without a window)
    model_surprise: np.ndarray  # (n,) the model's own, from its training calibration
    incident: np.ndarray  # (n,) bool: from an opening to its closed_at (or the end, still open)
    opened: np.ndarray  # (n,) bool
    closed: np.ndarray  # (n,) bool


@dataclass(frozen=True)
class PointScore:
    precision: float
    recall: float
    f1: float


def load_history(path: Path, features: tuple[str, ...], window: int) -> list[History]:
    data = read_long_csv(path, list(features))
    series = [History(sid, events.timestamps, events.values, data.labels[sid] if data.labels is not None else None)
              for sid, events in data.series.items()]
    if not any(len(s.timestamps) >= window for s in series):
        raise DataError(f"{path}: no series has a full window ({window} events); give longer series")
    return series


def traces_of(histories: Sequence[History], run: Backtest) -> list[Trace]:
    traces = []
    for history in histories:
        sid, n = history.series_id, len(history.timestamps)
        due = run.surprise.due[sid]
        window = np.zeros(n, bool)
        window[due] = True
        surprise, model = np.full(n, np.nan), np.full(n, np.nan)
        surprise[due] = run.surprise.values[sid]
        if run.model_surprise is not None:
            model[due] = run.model_surprise.values[sid]
        opened, closed, incident = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
        opened[run.openings[sid]] = True
        closed[run.closings.get(sid, [])] = True
        ends = np.searchsorted(history.timestamps, run.closed_at.get(sid, []))
        for k, start in enumerate(run.openings[sid]):
            incident[start:(ends[k] + 1 if k < len(ends) else n)] = True
        traces.append(Trace(history, window, surprise, model, incident, opened, closed))
    return traces


def write_events(traces: Sequence[Trace], path: Path) -> None:
    labelled = any(trace.history.labels is not None for trace in traces)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["series_id", "timestamp", *(["label"] if labelled else []), "window", "surprise",
                         "model_surprise", "incident", "opened", "closed"])
        for trace in traces:
            h = trace.history
            labels = h.labels.tolist() if h.labels is not None else [""] * len(h.timestamps)
            for i, ts in enumerate(h.timestamps.tolist()):
                writer.writerow([h.series_id, ts, *([labels[i]] if labelled else []), int(trace.window[i]),
                                 _number(trace.surprise[i]), _number(trace.model_surprise[i]),
                                 int(trace.incident[i]), int(trace.opened[i]), int(trace.closed[i])])


def _number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4f}"


def point_score(traces: Sequence[Trace]) -> PointScore:
    """Rows inside an incident against labelled rows, over every series (one confusion matrix)."""
    predicted = np.concatenate([t.incident for t in traces if t.history.labels is not None])
    truth = np.concatenate([t.history.labels != 0 for t in traces if t.history.labels is not None])
    hits = float(np.sum(predicted & truth))
    precision, recall = hits / max(int(predicted.sum()), 1), hits / max(int(truth.sum()), 1)
    return PointScore(precision, recall, 2 * precision * recall / max(precision + recall, 1e-12))


def event_score(traces: Sequence[Trace], run: Backtest, window: int) -> EventScore:
    labelled = [t for t in traces if t.history.labels is not None]
    return score_detections({t.history.series_id: t.history.labels for t in labelled}, run.openings, window,
                            run.windows)


def summary(traces: Sequence[Trace], run: Backtest, window: int) -> list[str]:
    incidents = sum(int(t.opened.sum()) for t in traces)
    events = sum(len(t.history.timestamps) for t in traces)
    lines = [f"{events} events of {len(traces)} series, {run.windows} windows judged; "
             f"{incidents} incidents opened ({1e4 * incidents / max(run.windows, 1):.2f} per 10,000 windows)",
             f"{'series':<24} {'windows':>8} {'incidents':>9} {'per 10k':>8} {'in incident':>11} {'max surprise':>12}"]
    busiest = sorted(traces, key=lambda t: -int(t.opened.sum()))
    for trace in busiest[:10]:
        windows = int(trace.window.sum())
        opened = int(trace.opened.sum())
        peak = np.nanmax(trace.surprise) if windows else math.nan
        lines.append(f"{trace.history.series_id[:24]:<24} {windows:>8} {opened:>9} "
                     f"{1e4 * opened / max(windows, 1):>8.2f} {trace.incident.mean():>10.1%} {peak:>12.2f}")
    if len(busiest) > 10:
        lines.append(f"... and {len(busiest) - 10} more series")
    if any(t.history.labels is not None for t in traces):
        score, points = event_score(traces, run, window), point_score(traces)
        lines += ["", f"against the labels: NAB {score.nab:.1f} (low false positive profile {score.nab_low_fp:.1f}); "
                      f"{score.detected}/{score.anomalies} anomalies caught, {score.false_alarms} false incidents "
                      f"({score.false_alarms_per_10k:.2f} per 10,000 windows); event precision "
                      f"{score.precision:.2f} recall {score.recall:.2f} F1 {score.f1:.2f}; rows inside an incident: "
                      f"precision {points.precision:.2f} recall {points.recall:.2f} F1 {points.f1:.2f}"]
    return lines


def plot(traces: Sequence[Trace], path: Path, open_level: float, close_level: float, max_series: int = 6) -> Path:
    """Each series (those with the most incidents first): its values with incidents shaded (labels in grey
    below them), and the surprise with the open and close levels."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'vrae-stream[analysis]'") from None
    shown = sorted(traces, key=lambda t: -int(t.opened.sum()))[:max_series]
    figure, axes = plt.subplots(2 * len(shown), 1, figsize=(12, 3.2 * len(shown)), squeeze=False,
                                gridspec_kw={"height_ratios": [2, 1] * len(shown)})
    for k, trace in enumerate(shown):
        top, bottom = axes[2 * k][0], axes[2 * k + 1][0]
        h = trace.history
        x = (h.timestamps - h.timestamps[0]) / 3_600_000
        values = h.values.astype(np.float64)
        spread = values.std(axis=0)
        top.plot(x, (values - values.mean(axis=0)) / np.where(spread > 0, spread, 1.0), linewidth=0.7)
        _shade(top, x, trace.incident, "tab:red", 0.25)
        if h.labels is not None:
            _shade(top, x, h.labels != 0, "0.5", 0.2)
        top.set_title(f"{h.series_id}: {int(trace.opened.sum())} incidents", loc="left", fontsize=9)
        top.set_ylabel("standardised")
        bottom.plot(x, trace.surprise, color="tab:purple", linewidth=0.7)
        bottom.axhline(open_level, color="tab:red", linewidth=0.6, linestyle="--")
        bottom.axhline(close_level, color="tab:green", linewidth=0.6, linestyle=":")
        _shade(bottom, x, trace.incident, "tab:red", 0.15)
        bottom.set_ylabel("surprise")
    axes[-1][0].set_xlabel("hours since the series' first event")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _shade(axis, x: np.ndarray, mask: np.ndarray, color: str, alpha: float) -> None:  # type: ignore[no-untyped-def]
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    for start, stop in zip(edges[::2], edges[1::2]):
        axis.axvspan(x[start], x[stop - 1], color=color, alpha=alpha, linewidth=0)


def command(args: argparse.Namespace, settings: Settings) -> int:
    model_path = Path(args.model) if args.model else settings.model.path
    detector = detector_settings(settings.detection, settings.window.gap_factor)
    try:
        scorer = Scorer(load_artifact(model_path, expected_sha256=None if args.model else settings.model.sha256))
        histories = load_history(Path(args.data), scorer.info.features, scorer.info.window)
    except VraeError as error:
        raise UsageError(str(error)) from None
    run = backtest(histories, scorer, settings.window.stride, detector, gap_factor=settings.window.gap_factor)
    traces = traces_of(histories, run)
    write_events(traces, Path(args.out))
    info = scorer.info
    print(f"{args.data}: model {info.name} {info.version} (window {info.window}), "
          f"open at surprise {detector.calibration.open_surprise:g}, "
          f"close below {detector.calibration.close_surprise:g}")
    print("\n".join(summary(traces, run, info.window)))
    print(f"\nper event: {args.out}")
    if args.plot:
        drawn = plot(traces, Path(args.plot), detector.calibration.open_surprise, detector.calibration.close_surprise)
        print(f"timeline:  {drawn}")
    return 0
