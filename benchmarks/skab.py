"""SKAB (the Skoltech Anomaly Benchmark) valve1 by its own protocol: the worker with default settings.

    python benchmarks/skab.py                  # 16 models (~2 min on 2 cores the first time), then seconds
    python benchmarks/quality.py --datasets skab

Protocol (SKAB's "Proposed Leaderboard" for outlier detection): for each experiment file, the first
400 rows (normal) train the detector; every later row is predicted, one prediction per row, no point
adjustment; F1, false-alarm rate (FAR) and missed-alarm rate (MAR) come from ONE confusion matrix summed
over the test rows of all files.

Here a file is one stream (benchmarks/stream_outputs.py): `vrae train --window 32` with every default on
its first 400 rows, then the whole file through each detector. The window ending at row r predicts
row r (every test row ends a window: 400 >= 32).

    VRAE worker (incidents)  THE WORKER, default configuration (VRAE_DETECTION__MODE=incidents): the file
                             through worker.tools.backtest; a row is anomalous while an incident is open
    VRAE worker (windows)    the worker in windows mode: the window's anomaly_score reaches the
                             artifact's threshold (worker.detection.alerts)
    VRAE static              the model's own tail surprise through the plain incident machine (3 / 2)
    PCA T2+Q (rows)          SKAB's own baseline: T2 and Q of the standardised row (PCA on the 400 rows,
                             90 % of the variance); a row is anomalous when either exceeds the 99th
                             percentile of its training rows
    PCA T2+Q (rows, 3/2)     the same statistic as a tail surprise through the plain incident machine,
                             as on the stream types

Beside SKAB's own scores, the NAB-style event scores of benchmarks/stream_types.py (an anomaly is the
file's valve closure; a detection is an incident opening, or for the point-wise detectors the first
row of each run of anomalous rows), the median rows from the fault's start to the first anomalous row,
and how many files end with an incident open.
"""

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stream_outputs import DEFAULT_CACHE, SKAB_TRAIN_ROWS, Stream, load
from stream_types import PCA, Card, Run, event_card, pca_rows, plain_incidents, worker_run

WORKER = "VRAE worker (incidents)"


@dataclass(frozen=True)
class Confusion:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @classmethod
    def of(cls, streams: Sequence[Stream], predictions: Sequence[np.ndarray]) -> "Confusion":
        """One confusion matrix over the test rows of all files."""
        p = np.concatenate([pred[SKAB_TRAIN_ROWS:] for pred in predictions])
        y = np.concatenate([s.labels[SKAB_TRAIN_ROWS:] == 1 for s in streams])
        return cls(int(np.sum(p & y)), int(np.sum(p & ~y)), int(np.sum(~p & y)), int(np.sum(~p & ~y)))

    @property
    def f1(self) -> float:
        return 2 * self.tp / max(2 * self.tp + self.fp + self.fn, 1)

    @property
    def far(self) -> float:
        return self.fp / max(self.fp + self.tn, 1)

    @property
    def mar(self) -> float:
        return self.fn / max(self.fn + self.tp, 1)


def pointwise(stream: Stream, flagged: np.ndarray, due: np.ndarray) -> Run:
    """A per-row detector as a run: each run of flagged rows is one detection (its first row)."""
    rows = np.zeros(len(stream.timestamps), bool)
    rows[due] = flagged
    starts = np.flatnonzero(rows & ~np.r_[False, rows[:-1]])
    return Run(starts.tolist(), rows, len(due))


def windows_mode(stream: Stream) -> Run:
    return pointwise(stream, stream.anomaly_score >= stream.threshold, stream.due)


def pca_skab(stream: Stream, quantile: float = 0.99) -> Run:
    rows = stream.values.astype(np.float64)
    t2, q = PCA.fit(rows[:SKAB_TRAIN_ROWS]).t2_q(rows)
    flagged = (t2 > np.quantile(t2[:SKAB_TRAIN_ROWS], quantile)) | (q > np.quantile(q[:SKAB_TRAIN_ROWS], quantile))
    return pointwise(stream, flagged, np.arange(len(rows)))


def detectors(stream: Stream) -> dict[str, Run]:
    return {
        WORKER: worker_run(stream),
        "VRAE worker (windows)": windows_mode(stream),
        "VRAE static": plain_incidents(stream, stream.surprise.astype(np.float64)),
        "PCA T2+Q (rows)": pca_skab(stream),
        "PCA T2+Q (rows, 3/2)": plain_incidents(stream, pca_rows(stream)),
    }


@dataclass
class SkabRow:
    confusion: Confusion
    events: Card
    first_row_delay: float  # median rows from the fault's first row to the first anomalous row at or after it
    open_at_end: int  # files whose last row is predicted anomalous


def evaluate(streams: Sequence[Stream]) -> dict[str, SkabRow]:
    runs = [detectors(s) for s in streams]
    result = {}
    for name in runs[0]:
        mine = [r[name] for r in runs]
        delays = []
        for s, r in zip(streams, mine, strict=True):
            first = int(np.flatnonzero(s.labels)[0])
            hits = np.flatnonzero(r.open_rows[first:])
            delays.append(int(hits[0]) if len(hits) else len(s.labels) - first)
        result[name] = SkabRow(Confusion.of(streams, [r.open_rows for r in mine]), event_card(streams, mine),
                               float(np.median(delays)), sum(bool(r.open_rows[-1]) for r in mine))
    return result


def table(result: dict[str, SkabRow]) -> str:
    any_row = next(iter(result.values())).confusion
    n_test = any_row.tp + any_row.fp + any_row.fn + any_row.tn
    lines = [f"SKAB valve1, 16 files, {n_test} test rows: SKAB's F1 / FAR / MAR, then NAB-style event scores", "",
             ("| detector | F1 | FAR % | MAR % | NAB std | NAB low-FP | event F1 | false / 10k | rows to first anomalous "
             "(median) | files open at end | worker closed: recovered / settled |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in result.items():
        c, e = row.confusion, row.events
        closed = f"{e.closed['recovered']} / {e.closed['settled']}" if name == WORKER else ""
        lines.append(f"| {name} | {c.f1:.3f} | {100 * c.far:.1f} | {100 * c.mar:.1f} | {e.nab:.1f} | {e.nab_low_fp:.1f} "
                     f"| {e.f1:.2f} | {e.false_per_10k:.1f} | {row.first_row_delay:.0f} | {row.open_at_end} | {closed} |")
    lines += ["", ("published, whole benchmark (F1 / FAR % / MAR %): Conv-AE 0.78 / 13.6 / 28.0, MSET 0.78 / 39.7 / "
                  "14.1, T2+Q (PCA) 0.76 / 26.6 / 24.9, LSTM-AE 0.74 / 30.0 / 25.9, LSTM-VAE 0.56 / 9.1 / 55.0; "
                  "all rows anomalous scores F1 0.70 on valve1")]
    return "\n".join(lines)


def run(cache: Path = DEFAULT_CACHE, jobs: int = 1, log=print) -> dict[str, SkabRow]:
    return evaluate(load([], [], 0, cache, skab=True, jobs=jobs, log=log))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="trained models and their outputs")
    parser.add_argument("--jobs", type=int, default=1, help="models trained side by side")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(table(run(args.cache, args.jobs, log=lambda line: print(line, flush=True))))
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
