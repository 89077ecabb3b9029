"""The model side of `benchmarks/stream_types.py`: streams, one VRAE per stream, cached per-window outputs.

The protocol the project is judged by, on each stream: train with `vrae train --window 32` defaults on
the stream's first 15 % of events, then replay the whole stream through the worker with default
settings. The VRAE's outputs on every window do not depend on the calibration that judges them, so they
are computed once and cached (`--cache`): a calibration variant then replays in seconds.

    python benchmarks/stream_outputs.py --seeds 0-2 --cache .cache/streams      # train + score, ~20 s a stream

Two sources of streams:
- the operations stream types of `vrae synth --kind ...` (vrae_model.synth.STREAM_KINDS), univariate
  except `stuck-sensor`; per seed `--series` streams of each type;
- SKAB valve1 (`/work/shared/data/skab`), by the benchmark's own protocol: each file is a stream, the
  model trains on its first 400 rows, and every later row is judged point-wise.

Events reach the worker in file order; the worker's window store drops an event whose timestamp is not
after the series' last one (worker.windows: `late` and `duplicate`), so the windows here are cut from
the accepted events only, exactly as the worker would cut them (stride 1, count-based).
"""

import argparse
import csv
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vrae_model.synth import STREAM_KINDS, StreamConfig, generate_streams

WINDOW = 32
TRAIN_FRACTION = 0.15
SKAB = Path("/work/shared/data/skab")
SKAB_TRAIN_ROWS = 400


@dataclass
class Stream:
    """One stream as the worker sees it, with its labels and the model's outputs on every window."""

    name: str  # "<kind>/seed<k>/<series_id>" or "skab/valve1/<file>"
    kind: str
    seed: int
    timestamps: np.ndarray  # (n,) int64, accepted events only (strictly increasing)
    values: np.ndarray  # (n, F) float32
    labels: np.ndarray  # (n,) int8
    train_events: int  # accepted events inside the training part
    benign: list[tuple[int, int, str]]  # unlabelled benign events, accepted-event indices
    anomaly_kinds: list[tuple[int, int, str]]  # labelled spans with their kind, accepted-event indices
    # the model's outputs on the windows ending at due[i] (stride 1: due = arange(WINDOW - 1, n))
    due: np.ndarray | None = None
    score: np.ndarray | None = None  # (W,) float64
    anomaly_score: np.ndarray | None = None  # (W,) float32, as the worker receives it
    feature_scores: np.ndarray | None = None  # (W, F) float32
    model: dict | None = None  # the artifact's metadata

    @property
    def start_ms(self) -> np.ndarray:
        return self.timestamps[self.due - (WINDOW - 1)]

    @property
    def end_ms(self) -> np.ndarray:
        return self.timestamps[self.due]


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


def synthetic_streams(kind: str, seed: int, n_series: int, clean: bool = False) -> list[Stream]:
    data = generate_streams(StreamConfig(kind=kind, n_series=n_series, seed=seed, clean=clean))
    streams = []
    for one in data.series:
        kept = accepted_events(one.timestamps)
        train_rows = int(TRAIN_FRACTION * len(one.timestamps))
        streams.append(Stream(
            name=f"{kind}/seed{seed}{'-clean' if clean else ''}/{one.series_id}", kind=kind, seed=seed,
            timestamps=one.timestamps[kept], values=one.values[kept], labels=one.labels[kept],
            train_events=int(np.searchsorted(kept, train_rows)),
            benign=_remap(one.benign, kept),
            anomaly_kinds=_remap([(a, b, k) for a, b, k, _ in one.anomalies], kept)))
    return streams


def skab_streams() -> list[Stream]:
    streams = []
    for path in sorted((SKAB / "valve1").glob("*.csv"), key=lambda p: int(p.stem)):
        with path.open() as handle:
            rows = list(csv.reader(handle, delimiter=";"))[1:]
        stamps = np.array([np.datetime64(r[0], "ms").astype(np.int64) for r in rows], np.int64)
        values = np.array([[float(x) for x in r[1:9]] for r in rows], np.float32)
        labels = np.array([int(float(r[9])) for r in rows], np.int8)
        kept = accepted_events(stamps)
        if len(kept) != len(rows):
            raise ValueError(f"{path}: timestamps not strictly increasing")
        spans = np.flatnonzero(np.diff(np.r_[0, labels, 0]))
        streams.append(Stream(name=f"skab/valve1/{path.stem}", kind="skab-valve1", seed=0, timestamps=stamps,
                              values=values, labels=labels, train_events=SKAB_TRAIN_ROWS, benign=[],
                              anomaly_kinds=[(int(a), int(b), "valve") for a, b in zip(spans[::2], spans[1::2])]))
    return streams


def training_windows(stream: Stream) -> np.ndarray:
    """The windows `vrae train --window 32` cuts from a CSV of the stream's training part: stride 1 over
    the training events (the CSV loader sorts by timestamp and keeps the first of equal ones; on the
    accepted events that is the identity)."""
    values = stream.values[:stream.train_events]
    view = np.lib.stride_tricks.sliding_window_view(values, WINDOW, axis=0)  # (n - T + 1, F, T)
    return np.ascontiguousarray(view.transpose(0, 2, 1), dtype=np.float32)


def all_windows(stream: Stream) -> np.ndarray:
    view = np.lib.stride_tricks.sliding_window_view(stream.values, WINDOW, axis=0)
    return np.ascontiguousarray(view.transpose(0, 2, 1), dtype=np.float32)


def _key(windows: np.ndarray, extra: str) -> str:
    digest = hashlib.sha256(windows.tobytes())
    digest.update(repr(windows.shape).encode())
    digest.update(extra.encode())
    return digest.hexdigest()[:16]


def cache_paths(stream: Stream, cache: Path, overrides: dict | None = None) -> tuple[Path, Path]:
    """(model, outputs) files of a stream's model: keyed by its training windows and the training settings."""
    import torch

    features = [f"f{i}" for i in range(stream.values.shape[1])]
    key = _key(training_windows(stream),
               json.dumps([features, torch.__version__, "default"] + ([overrides] if overrides else [])))
    safe = stream.name.replace("/", "__")
    return cache / "models" / f"{safe}-{key}.pt", cache / "outputs" / f"{safe}-{key}.npz"


def model_outputs(stream: Stream, cache: Path, log=print, overrides: dict | None = None) -> Stream:
    """Train (or reuse) the stream's model and score (or reuse) every window; fills the output fields.
    `overrides` (e.g. {"window_level": "keep"}) train a variant of the default preset, cached apart."""
    import torch

    torch.set_num_threads(1)
    train = training_windows(stream)
    features = [f"f{i}" for i in range(stream.values.shape[1])]
    model_path, outputs_path = cache_paths(stream, cache, overrides)
    if not outputs_path.exists():
        if not model_path.exists():
            from vrae_model.data import WindowSet
            from vrae_model.training import train as train_model

            started = time.perf_counter()
            model_path.parent.mkdir(parents=True, exist_ok=True)
            windows = WindowSet(train, features, series_ids=np.zeros(len(train), str), stride=1)
            train_model(windows, "default", out=model_path, progress_bar=False, overrides=overrides)
            log(f"  trained {stream.name} on {len(train)} windows in {time.perf_counter() - started:.0f} s")
        from vrae_model.artifact import load_artifact
        from vrae_model.scoring import score_arrays

        artifact = load_artifact(model_path)
        out = score_arrays(artifact.module, all_windows(stream))
        outputs_path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(outputs_path, score=out["score"].astype(np.float64), anomaly_score=out["anomaly_score"],
                            feature_scores=out["feature_scores"], metadata=json.dumps(artifact.metadata))
    cached = np.load(outputs_path)
    stream.due = np.arange(WINDOW - 1, len(stream.timestamps), dtype=np.int64)
    stream.score = cached["score"]
    stream.anomaly_score = cached["anomaly_score"]
    stream.feature_scores = cached["feature_scores"]
    stream.model = json.loads(str(cached["metadata"]))
    return stream


def load(kinds: list[str], seeds: list[int], n_series: int, cache: Path, skab: bool, log=print,
         overrides: dict | None = None, clean: bool = False) -> list[Stream]:
    streams: list[Stream] = []
    for seed in seeds:
        for kind in kinds:
            streams += synthetic_streams(kind, seed, n_series, clean)
    if skab:
        streams += skab_streams()
    for stream in streams:
        model_outputs(stream, cache, log, overrides)
    return streams


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        seeds += range(int(first), int(last or first) + 1)
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0-2")
    parser.add_argument("--kinds", default=",".join(STREAM_KINDS))
    parser.add_argument("--series", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path(".cache/streams"))
    parser.add_argument("--skab", action="store_true", help="also the SKAB valve1 files")
    parser.add_argument("--no-synthetic", action="store_true")
    parser.add_argument("--clean", action="store_true", help="the stream types without labelled anomalies")
    parser.add_argument("--window-level", choices=("keep", "remove"),
                        help="train with this window_level instead of the preset's auto (a model-side variant)")
    args = parser.parse_args(argv)
    kinds = [] if args.no_synthetic else args.kinds.split(",")
    overrides = {"window_level": args.window_level} if args.window_level else None
    streams = load(kinds, parse_seeds(args.seeds), args.series, args.cache, args.skab,
                   log=lambda line: print(line, flush=True), overrides=overrides, clean=args.clean)
    print(f"{len(streams)} streams ready in {args.cache}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
