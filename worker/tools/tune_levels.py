"""`vrae-worker tune-levels --data labelled.csv`: choose the incident levels on labelled history.

The default levels (open at surprise 3, close below 2) mean "one window in a thousand for this
series". Where anomalies are not rare for a series they do not fit: on ECG5000, one beat in seven is
abnormal, the series' own history learns that, and abnormal beats rarely reach 3 (benchmarks/QUALITY.md).
This command backtests a labelled long CSV (`series_id,timestamp,<features>,label`, the format
`vrae synth` writes and `export-history` writes without labels) through the worker's own pipeline in
memory (worker.tools.backtest: the configured model, stride and detection settings), scores every (open,
close) pair of a grid over the surprise's own quantiles against the labels (worker.tools.evaluation: NAB and
event F1), and prints the best pair as the settings to deploy.

Levels chosen and judged on the same labels flatter themselves; `--check other.csv` reports them on a
second labelled file, which is the figure to trust.
"""

import argparse
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vrae_model.artifact import load_artifact
from vrae_model.data import read_long_csv
from vrae_model.exceptions import DataError, VraeError
from worker.app import detector_settings
from worker.config import Settings
from worker.detection.detector import DetectorSettings
from worker.exceptions import UsageError
from worker.scorer import Scorer
from worker.tools.backtest import Backtest, backtest
from worker.tools.evaluation import EventScore, Levels, best_of, judge_grid, score_detections

OBJECTIVES: dict[str, Callable[[EventScore], float]] = {
    "f1": lambda score: score.f1,  # alerts people act on: misses and false alarms both count
    "nab": lambda score: score.nab,  # the quality harness's: rewards early detection, false alarms cheap
}


@dataclass(frozen=True)
class LabelledSeries:
    series_id: str
    timestamps: np.ndarray  # (n,) int64 epoch ms
    values: np.ndarray  # (n, F) float32
    labels: np.ndarray  # (n,) 0/1


@dataclass(frozen=True)
class Judged:
    """Levels and how they did on one labelled file."""

    levels: Levels
    score: EventScore


@dataclass(frozen=True)
class Tuning:
    events: int
    series: int
    windows: int
    configured: Judged
    best: dict[str, Judged]  # objective -> the best levels for it, of the grid and the configured ones
    chosen: Judged


def load_labelled(path: Path, features: tuple[str, ...], window: int) -> list[LabelledSeries]:
    """The file's series, with a clear error when it cannot tune anything."""
    data = read_long_csv(path, list(features))
    if data.labels is None:
        raise DataError(f"{path}: no label column; add `label` (1 inside an anomaly, 0 elsewhere)")
    series = [LabelledSeries(sid, events.timestamps, events.values, data.labels[sid])
              for sid, events in data.series.items()]
    if not any(len(s.timestamps) >= window for s in series):
        raise DataError(f"{path}: no series has a full window ({window} events); give longer series")
    if not any(s.labels.any() for s in series):
        raise DataError(f"{path}: no labelled anomalies (label = 1); levels cannot be chosen without any")
    return series


def judge(series: list[LabelledSeries], scorer: Scorer, stride: int, settings: DetectorSettings,
          levels: list[Levels], *, grid: bool) -> tuple[int, list[Judged], dict[str, Judged]]:
    """Each pair of `levels` judged by a backtest at those levels, and with `grid` the best pair per
    objective: (windows, judged levels, best per objective).

    The worker's surprise depends a little on the levels (a series learns its normal only outside
    incidents), so the grid over the surprise's quantiles is screened on the first pair's replay and
    each objective's pick is then backtested at its own levels; the figures printed are those. The
    configured pair comes first among the candidates: a "best" pair never scores below it, and on a
    tie the configuration stays."""
    labels = {s.series_id: s.labels for s in series}
    window = scorer.info.window
    runs: dict[Levels, Backtest] = {}  # one replay per pair, however many objectives pick it

    def judged_at(pair: Levels) -> Judged:
        if pair not in runs:
            runs[pair] = backtest(series, scorer, stride, with_levels(settings, pair))
        return Judged(pair, score_detections(labels, runs[pair].openings, window, runs[pair].windows))

    judged = [judged_at(pair) for pair in levels]
    first = runs[levels[0]]
    best: dict[str, Judged] = {}
    if grid:
        screened = judge_grid(labels, first.surprise, window, settings.calibration.close_after)
        for name, objective in OBJECTIVES.items():
            checked = judged_at(best_of(screened, objective)[0])
            best[name] = max([judged[0], checked], key=lambda candidate: objective(candidate.score))
    return first.windows, judged, best


def tune_levels(path: Path, scorer: Scorer, stride: int, settings: DetectorSettings, objective: str) -> Tuning:
    series = load_labelled(path, scorer.info.features, scorer.info.window)
    configured = (settings.calibration.open_surprise, settings.calibration.close_surprise)
    windows, (as_configured,), best = judge(series, scorer, stride, settings, [configured], grid=True)
    return Tuning(events=sum(len(s.timestamps) for s in series), series=len(series), windows=windows,
                  configured=as_configured, best=best, chosen=best[objective])


def check_levels(path: Path, scorer: Scorer, stride: int, settings: DetectorSettings,
                 levels: list[Levels]) -> list[Judged]:
    """The given levels on a second labelled file."""
    series = load_labelled(path, scorer.info.features, scorer.info.window)
    return judge(series, scorer, stride, settings, levels, grid=False)[1]


def with_levels(settings: DetectorSettings, levels: Levels) -> DetectorSettings:
    return replace(settings, calibration=replace(settings.calibration, open_surprise=levels[0],
                                                 close_surprise=levels[1]))


def row(name: str, judged: Judged) -> str:
    s = judged.score
    return (f"{name:<16} {judged.levels[0]:>7.3f} {judged.levels[1]:>7.3f} {s.nab:>6.1f} {s.f1:>5.2f} "
            f"{s.precision:>9.2f} {s.recall:>6.2f} {s.detected:>4}/{s.anomalies:<4} {s.false_alarms:>12} "
            f"{s.delay:>8.1f}")


HEADER = (f"{'levels':<16} {'open':>7} {'close':>7} {'NAB':>6} {'F1':>5} {'precision':>9} {'recall':>6} "
          f"{'caught':>9} {'false alarms':>12} {'delay':>8}")


def command(args: argparse.Namespace, settings: Settings) -> int:
    """`vrae-worker tune-levels`: choose the levels on `--data`, print them as settings to deploy."""
    model_path = Path(args.model) if args.model else settings.model.path
    detector = detector_settings(settings.detection, settings.window.gap_factor)
    stride = settings.window.stride
    try:
        scorer = Scorer(load_artifact(model_path, expected_sha256=None if args.model else settings.model.sha256))
        tuning = tune_levels(Path(args.data), scorer, stride, detector, args.objective)
        checked = (check_levels(Path(args.check), scorer, stride, detector,
                                [tuning.chosen.levels, tuning.configured.levels]) if args.check else None)
    except VraeError as error:
        raise UsageError(str(error)) from None
    info = scorer.info
    print(f"{args.data}: {tuning.events} events of {tuning.series} series, {tuning.windows} windows "
          f"(model {info.name} {info.version}, window {info.window}, stride {stride})\n")
    print(HEADER)
    print(row("configured", tuning.configured))
    for name, judged in tuning.best.items():
        print(row(f"best {name.upper() if name == 'nab' else name.capitalize()}", judged))
    if checked is not None:
        print(f"\non {args.check} (levels chosen without its labels):\n")
        print(HEADER)
        print(row(f"chosen ({args.objective})", checked[0]))
        print(row("configured", checked[1]))
    else:
        print("\nThese figures are on the labels the levels were chosen on, so they flatter; "
              "check them on other labelled data with --check FILE.")
    open_level, close_level = tuning.chosen.levels
    print(f"\n# chosen by {args.objective}:\nVRAE_DETECTION__MODE=incidents\n"
          f"VRAE_DETECTION__OPEN_SURPRISE={open_level:.6g}\nVRAE_DETECTION__CLOSE_SURPRISE={close_level:.6g}")
    return 0
