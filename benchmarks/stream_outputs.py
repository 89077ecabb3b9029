"""The model side of the stream benches (benchmarks/stream_types.py, benchmarks/skab.py): streams, one
VRAE per stream, cached per-window outputs.

The protocol the project is judged by, on each stream: `vrae train --window 32` with every default on
the stream's first part (its first 15 % of events; SKAB: each file's first 400 rows), written as the
long CSV a user would train on; then the whole stream replayed through the worker with default settings.
Models are cached under `--cache`, keyed on the training CSV and the torch version; so are the model's
outputs on every window (the static VRAE baseline reads them).

    python benchmarks/stream_outputs.py --seeds 0-2 --skab --jobs 2   # train + score: ~15-25 s a stream a core

Two sources of streams:
- the operations stream types of `vrae synth --kind ...` (vrae_model.synth.STREAM_KINDS), univariate
  except `stuck-sensor`; per seed `--series` streams of each type;
- SKAB valve1 (`/work/shared/data/skab`), by the benchmark's own protocol: each file is a stream, the
  model trains on its first 400 rows, and every later row is judged point-wise.

Events reach the worker in file order; its window store drops an event whose timestamp is not after
the series' last one (`late`, `duplicate`), so a stream here holds the accepted events only, and the
baselines' windows are cut from them (stride 1, count-based).
"""

import argparse
import contextlib
import csv
import hashlib
import io
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vrae_model.synth import STREAM_INTERVAL_MS, STREAM_KINDS, STREAM_LENGTH, StreamConfig, generate_streams

WINDOW = 32
TRAIN_FRACTION = 0.15
SKAB = Path("/work/shared/data/skab")
SKAB_TRAIN_ROWS = 400
DEFAULT_CACHE = Path(".cache/streams")


@dataclass
class Stream:
    """One stream as the worker sees it, with its labels and (once loaded) its model's outputs."""

    name: str  # "<kind>/seed<k>/<series_id>" or "skab/valve1/<file>"
    kind: str
    seed: int
    features: list[str]
    timestamps: np.ndarray  # (n,) int64 epoch ms, accepted events only (strictly increasing)
    values: np.ndarray  # (n, F) float32
    labels: np.ndarray  # (n,) int8
    train_events: int  # accepted events inside the training part
    train_rows: tuple[np.ndarray, np.ndarray]  # the training part as recorded: (timestamps, values), raw
    benign: list[tuple[int, int, str]]  # unlabelled benign events, accepted-event indices
    anomaly_kinds: list[tuple[int, int, str]]  # labelled spans with their kind, accepted-event indices
    model_path: Path | None = None
    # the model's outputs on every count window, (n - WINDOW + 1,) each:
    score: np.ndarray | None = None  # reconstruction error, float64
    anomaly_score: np.ndarray | None = None  # calibrated, float32 (windows mode compares it to `threshold`)
    surprise: np.ndarray | None = None  # -log10 of the artifact's tail probability, unsaturated
    threshold: float = float("nan")  # the artifact's threshold on anomaly_score

    @property
    def due(self) -> np.ndarray:
        """Event index ending each count window (stride 1)."""
        return np.arange(WINDOW - 1, len(self.timestamps), dtype=np.int64)

    @property
    def series_id(self) -> str:  # worker.tools.backtest.Recorded
        return self.name


def accepted_events(timestamps: np.ndarray) -> np.ndarray:
    """Indices of the events the worker's window store accepts: each one's timestamp is after every
    accepted timestamp before it (arrival order = file order)."""
    keep = np.zeros(len(timestamps), bool)
    last = None
    for i, ts in enumerate(timestamps.tolist()):
        if last is None or ts > last:
            keep[i] = True
            last = ts
    return np.flatnonzero(keep)


def _remap(spans: list[tuple[int, int, str]], kept: np.ndarray) -> list[tuple[int, int, str]]:
    """Spans of raw event indices as spans of accepted-event indices (dropping spans that vanished)."""
    out = []
    for a, b, kind in spans:
        lo, hi = int(np.searchsorted(kept, a)), int(np.searchsorted(kept, b))
        if hi > lo:
            out.append((lo, hi, kind))
    return out


def synthetic_streams(kind: str, seed: int, n_series: int, length: int = STREAM_LENGTH,
                      interval_ms: int = STREAM_INTERVAL_MS) -> list[Stream]:
    """`length` events a stream, one every `interval_ms`; a shape other than the default (14 days at 5 min)
    is named in the streams' names (`slow-drift/seed0-16128x300s/...`)."""
    data = generate_streams(StreamConfig(kind=kind, n_series=n_series, seed=seed, length=length,
                                         interval_ms=interval_ms))
    shape = "" if (length, interval_ms) == (STREAM_LENGTH, STREAM_INTERVAL_MS) else f"-{length}x{interval_ms // 1000}s"
    streams = []
    for one in data.series:
        kept = accepted_events(one.timestamps)
        train_rows = int(TRAIN_FRACTION * len(one.timestamps))
        streams.append(Stream(
            name=f"{kind}/seed{seed}{shape}/{one.series_id}", kind=kind, seed=seed, features=list(data.feature_names),
            timestamps=one.timestamps[kept], values=one.values[kept], labels=one.labels[kept].astype(np.int8),
            train_events=int(np.searchsorted(kept, train_rows)),
            train_rows=(one.timestamps[:train_rows], one.values[:train_rows]),
            benign=_remap(one.benign, kept),
            anomaly_kinds=_remap([(a, b, k) for a, b, k, _ in one.anomalies], kept)))
    return streams


def skab_streams(root: Path = SKAB) -> list[Stream]:
    streams = []
    for path in sorted((root / "valve1").glob("*.csv"), key=lambda p: int(p.stem)):
        with path.open() as handle:
            header, *rows = [row for row in csv.reader(handle, delimiter=";") if row]
        stamps = np.array([np.datetime64(r[0], "ms").astype(np.int64) for r in rows], np.int64)
        values = np.array([[float(x) for x in r[1:9]] for r in rows], np.float32)
        labels = np.array([int(float(r[9])) for r in rows], np.int8)
        if len(accepted_events(stamps)) != len(rows):
            raise ValueError(f"{path}: timestamps not strictly increasing")
        edges = np.flatnonzero(np.diff(np.r_[0, labels, 0]))
        streams.append(Stream(
            name=f"skab/valve1/{path.stem}", kind="skab-valve1", seed=0, features=header[1:9], timestamps=stamps,
            values=values, labels=labels, train_events=SKAB_TRAIN_ROWS,
            train_rows=(stamps[:SKAB_TRAIN_ROWS], values[:SKAB_TRAIN_ROWS]), benign=[],
            anomaly_kinds=[(int(a), int(b), "valve") for a, b in zip(edges[::2], edges[1::2], strict=True)]))
    return streams


def write_training_csv(stream: Stream, path: Path) -> None:
    """The training part as the long CSV `vrae train` reads (the events as recorded, repeats included)."""
    stamps, values = stream.train_rows
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["series_id", "timestamp", *stream.features])
        for ts, row in zip(stamps.tolist(), values.tolist(), strict=True):
            out.writerow([stream.name, ts, *(repr(float(x)) for x in row)])


# Part of the cache key: bump it when what `vrae train` makes of the same CSV changes (2: a flat line's
# model removes window levels; 3: the scaler records each feature's noise power; 4: and how far its level wanders;
# 5: and the grid its values lie on),
# so a checkout never reads models that today's training would not make.
TRAINING_REVISION = 5


def cache_paths(stream: Stream, cache: Path) -> tuple[Path, Path]:
    """(model, outputs) files of a stream's model, keyed on its training CSV, the torch version and the
    training revision."""
    import torch

    stamps, values = stream.train_rows
    digest = hashlib.sha256(stamps.tobytes() + np.ascontiguousarray(values, np.float32).tobytes())
    digest.update(repr((stream.features, WINDOW, torch.__version__, "vrae train defaults")).encode())
    if TRAINING_REVISION > 1:
        digest.update(f"revision {TRAINING_REVISION}".encode())
    safe = stream.name.replace("/", "__")
    key = digest.hexdigest()[:16]
    return cache / "models" / f"{safe}-{key}.pt", cache / "outputs" / f"{safe}-{key}.npz"


def count_windows(stream: Stream) -> np.ndarray:
    view = np.lib.stride_tricks.sliding_window_view(stream.values, WINDOW, axis=0)  # (W, F, T)
    return np.ascontiguousarray(view.transpose(0, 2, 1), dtype=np.float32)


def prepare(stream: Stream, cache: Path, log: Callable[[str], None] = print) -> Stream:
    """Train (or reuse) the stream's model as `vrae train --window 32` would, and score (or reuse) every
    count window of the stream; fills the model fields."""
    import torch

    torch.set_num_threads(1)
    model_path, outputs_path = cache_paths(stream, cache)
    if not model_path.exists():
        import tempfile

        from vrae_model.data import load_windows
        from vrae_model.training import train

        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
        started = time.perf_counter()
        model_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="vrae-stream-") as scratch:
            data = Path(scratch) / "train.csv"
            write_training_csv(stream, data)
            windows = load_windows(data, window=WINDOW)
            with contextlib.redirect_stdout(io.StringIO()):  # Lightning's test-metric table, per model
                train(windows, "default", out=Path(scratch) / "model.pt", progress_bar=False)
            (Path(scratch) / "model.pt").replace(model_path)  # whole or absent: a killed run leaves no half file
        log(f"  trained {stream.name} on {len(windows.windows)} windows in {time.perf_counter() - started:.0f} s")
    if not outputs_path.exists():
        from vrae_model.artifact import load_artifact
        from worker.scorer import Scorer

        scorer = Scorer(load_artifact(model_path))
        scores = scorer.score(count_windows(stream))
        outputs_path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(outputs_path, score=scores.score.astype(np.float64), anomaly_score=scores.anomaly_score,
                            surprise=scores.surprise, threshold=scorer.info.threshold)
    cached = np.load(outputs_path)
    stream.model_path = model_path
    stream.score, stream.anomaly_score, stream.surprise = cached["score"], cached["anomaly_score"], cached["surprise"]
    stream.threshold = float(cached["threshold"])
    return stream


def _prepare_quietly(stream: Stream, cache: Path) -> Stream:
    return prepare(stream, cache, log=lambda line: None)


def load(kinds: Sequence[str], seeds: Sequence[int], n_series: int, cache: Path, skab: bool, jobs: int = 1,
         log: Callable[[str], None] = print, length: int = STREAM_LENGTH,
         interval_ms: int = STREAM_INTERVAL_MS) -> list[Stream]:
    """The streams with their models; `jobs` > 1 trains that many side by side (one torch thread each)."""
    streams: list[Stream] = []
    for seed in seeds:
        for kind in kinds:
            streams += synthetic_streams(kind, seed, n_series, length, interval_ms)
    if skab:
        streams += skab_streams()
    missing = [s for s in streams if not all(p.exists() for p in cache_paths(s, cache))]
    if jobs > 1 and len(missing) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        log(f"  training {len(missing)} models, {jobs} at a time")
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_prepare_quietly, missing, [cache] * len(missing)))
    return [prepare(s, cache, log) for s in streams]


def parse_seeds(text: str) -> list[int]:
    """"0-2", "0,1,900-902": in the order given, each once."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, _, last = part.partition("-")
        seeds += range(int(first), int(last or first) + 1)
    return list(dict.fromkeys(seeds))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0-2")
    parser.add_argument("--kinds", default=",".join(STREAM_KINDS))
    parser.add_argument("--series", type=int, default=3, help="streams of each type per seed")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--skab", action="store_true", help="also the SKAB valve1 files")
    parser.add_argument("--jobs", type=int, default=1, help="models trained side by side")
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    streams = load(kinds, parse_seeds(args.seeds), args.series, args.cache, args.skab, args.jobs,
                   log=lambda line: print(line, flush=True))
    print(f"{len(streams)} streams ready in {args.cache}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
