"""Why the worker's alert levels transfer worse on ECG5000: each stream judged on its own scale.

    python benchmarks/level_transfer.py --seed 0-11 --jobs 2 --models runs/models    # ~6 min, ~1 with models

The quality harness chooses each detector's levels on a tuning stream and reports them on a separate
test stream. On ECG5000 the adaptive worker ranks windows as well as the static VRAE (AUC-PR, and
NAB with levels chosen on the test stream itself), yet loses more NAB from tuning stream to test
stream. This script separates the two causes that could be at work, side by side on the same model
and windows:

    model's scale      the static VRAE's score, confirmed over two windows (the harness's ablation row;
                       on a one-feature stream the worker's own side of the blend, p_model, is this)
    stream's own scale the same statistic, in log space, standardised by the mean and standard
                       deviation of its own stream's NORMAL windows (found with the labels: an ideal
                       per-series calibration, free of estimation noise and of the anomalies it sees)
    worker             the worker's surprise (worker.tools.backtest: the pipeline as the harness runs it)

Inside one stream the first two rank every window the same (a monotone transform). ECG5000 is one
stream, so with levels chosen on the test stream itself ("oracle", diagnosis only) they score the
same NAB there, and whatever the second loses with levels chosen on the tuning stream is level
transfer alone: the price of judging each stream on its own scale, before any estimation error. The
worker's row shows what its history adds on top. On the synthetic sets (six machines, one pooled
level) the own scale also changes how machines rank against each other, which is what per-series
calibration is for; there the rows show its gain. A multi-seed run ends with means and the paired
difference against the model's scale.
"""

import argparse
import multiprocessing
import sys
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from quality import (BUILDERS, CLOSE_AFTER, DataSet, Series, confirmed, labelled_windows, paired_interval, parse_seeds,
                     run_worker, static_score, train_vrae, tune, window_stats)
from vrae_model.artifact import load_artifact
from vrae_model.calibration import MIN_ERROR
from worker.scorer import Scorer
from worker.tools.evaluation import Stats, best_levels, incident_openings, score_detections

ROWS = ("model's scale", "stream's own scale", "worker")


@dataclass
class Outcome:
    tuned: float  # NAB on the test stream with levels chosen on the tuning stream
    oracle: float  # NAB with levels chosen on the test stream itself (diagnosis only)


def own_scale(stats: Stats, split: Sequence[Series], window: int) -> Stats:
    """Each stream's log statistic standardised by its own normal windows (uses the labels: diagnosis)."""
    values = {}
    for s in split:
        x = np.log(np.maximum(stats.values[s.series_id], MIN_ERROR))
        normal = x[~labelled_windows(s, stats.due[s.series_id], window)]
        values[s.series_id] = (x - normal.mean()) / max(normal.std(), 1e-12)
    return Stats(values, stats.due)


def outcome(data: DataSet, tuning: Stats, test: Stats) -> Outcome:
    """Tuned and oracle NAB on the test stream."""
    labels = {s.series_id: s.labels for s in data.test}
    openings = incident_openings(test, tune(data.tune, tuning, data.window), CLOSE_AFTER)
    n_windows = sum(len(due) for due in test.due.values())
    tuned = score_detections(labels, openings, data.window, n_windows).nab
    oracle = best_levels(labels, test, data.window, CLOSE_AFTER, objective=lambda score: score.nab)[1].nab
    return Outcome(tuned, oracle)


def run_seed(key: str, seed: int, models: Path | None) -> dict[str, Outcome]:
    """The three rows for one seed; top level so a process pool can run seeds side by side."""
    torch.set_num_threads(1)
    data = BUILDERS[key](False, seed)
    with tempfile.TemporaryDirectory(prefix="vrae-transfer-") as scratch:
        artifact = train_vrae(data, Path(scratch) / f"{data.name.split()[0].lower()}.pt", False, seed,
                              models if models is not None else Path(scratch) / "models")
        scorer = Scorer(load_artifact(artifact))
        model = {name: confirmed(window_stats(split, data, static_score(scorer)), data)
                 for name, split in (("tune", data.tune), ("test", data.test))}
        own = {name: own_scale(model[name], split, data.window)
               for name, split in (("tune", data.tune), ("test", data.test))}
        tuning_run = run_worker(data.tune, data, scorer, (3.0, 2.0))
        test_run = run_worker(data.test, data, scorer, (3.0, 2.0))
    return {ROWS[0]: outcome(data, model["tune"], model["test"]),
            ROWS[1]: outcome(data, own["tune"], own["test"]),
            ROWS[2]: outcome(data, tuning_run.surprise, test_run.surprise)}


def report(key: str, results: dict[int, dict[str, Outcome]]) -> str:
    seeds = sorted(results)
    lines = [f"### {key}: {len(seeds)} seed(s), NAB on the test stream",
             "", "| row | tuned | oracle | lost to transfer | tuned − model's scale [95 % CI] |",
             "|---|---:|---:|---:|---:|"]
    for row in ROWS:
        tuned = [results[s][row].tuned for s in seeds]
        oracle = [results[s][row].oracle for s in seeds]
        mean, low, high = paired_interval([results[s][row].tuned - results[s][ROWS[0]].tuned for s in seeds])
        versus = "" if row == ROWS[0] else f"{mean:+.1f} [{low:+.1f}, {high:+.1f}]"
        lines.append(f"| {row} | {np.mean(tuned):.1f} | {np.mean(oracle):.1f} | {np.mean(oracle) - np.mean(tuned):.1f} "
                     f"| {versus} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ecg", help=f"one of {', '.join(BUILDERS)}")
    parser.add_argument("--seed", default="0-3", help="seeds, as for benchmarks/quality.py (0,1,2 or 0-11)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run side by side in separate processes")
    parser.add_argument("--models", type=Path, help="keep trained models here and reuse them (as quality.py)")
    args = parser.parse_args(argv)
    try:
        seeds = parse_seeds(args.seed)
        if args.dataset not in BUILDERS:
            raise ValueError(f"unknown data set {args.dataset}; use {', '.join(BUILDERS)}")
        if args.jobs < 1:
            raise ValueError("--jobs must be at least 1")
    except ValueError as error:
        print(f"level_transfer.py: {error}", file=sys.stderr)
        return 2
    results: dict[int, dict[str, Outcome]] = {}
    with ExitStack() as stack:
        if args.jobs > 1 and len(seeds) > 1:
            # spawn, not fork, as in quality.py: a forked child inherits torch's thread pools mid-state.
            pool = stack.enter_context(ProcessPoolExecutor(min(args.jobs, len(seeds)),
                                                           mp_context=multiprocessing.get_context("spawn")))
            pending = [pool.submit(run_seed, args.dataset, seed, args.models) for seed in seeds]
            done: Iterator[dict[str, Outcome]] = (future.result() for future in pending)
        else:
            done = (run_seed(args.dataset, seed, args.models) for seed in seeds)
        for seed, outcomes in zip(seeds, done):  # in seed order, each as soon as it is done
            results[seed] = outcomes
            print(f"seed {seed}: " + ", ".join(f"{row} {o.tuned:.1f} (oracle {o.oracle:.1f})"
                                               for row, o in outcomes.items()), flush=True)
    print("\n" + report(args.dataset, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
