"""`vrae`: synthesise data, train, export, score and explore a VRAE from the command line.

Every mistake a user can make ends as one line on stderr, `error: <what to fix>`, and exit code 2.
Heavy imports (torch, lightning, sklearn, matplotlib) happen inside the command that needs them, so
`vrae --help` and `vrae synth` start instantly.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from vrae_model import __version__
from vrae_model.exceptions import DataError, VraeError
from vrae_model.synth import STREAM_KINDS
from vrae_model.windowing import DEFAULT_GAP_FACTOR

if TYPE_CHECKING:
    from vrae_model.artifact import Artifact
    from vrae_model.data import WindowSet

EXIT_USAGE = 2
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


class UsageError(VraeError):
    """A bad flag or flag combination; argparse's own errors are turned into this too."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# ---------------------------------------------------------------- shared helpers


def _require_suffix(path: Path, flag: str, allowed: Sequence[str]) -> None:
    if path.suffix.lower() not in allowed:
        raise UsageError(f"{flag} {path} must end in {' or '.join(allowed)}")


def _parse_features(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UsageError("--features needs comma-separated column names, e.g. --features temp,pressure")
    return names


def _load_model(path: Path) -> Artifact:
    from vrae_model.artifact import load_artifact

    return load_artifact(path)


def _load_for_model(artifact: Artifact, data: Path, stride: int | None,
                    gap_factor: float = DEFAULT_GAP_FACTOR) -> WindowSet:
    """Cut `data` into exactly the windows the model (and the worker) would see."""
    from vrae_model.data import CSV_SUFFIXES, NPY_SUFFIXES, load_windows

    window = int(artifact.metadata["window"])
    features = list(artifact.metadata["features"])
    suffix = data.suffix.lower()
    if suffix in NPY_SUFFIXES:
        if stride is not None:
            raise UsageError("--stride applies to series data (long CSV, UCR); .npy files are windows already: drop --stride")
        windows = load_windows(data)
    elif suffix in CSV_SUFFIXES:
        windows = load_windows(data, window=window, stride=stride or 1, features=features, gap_factor=gap_factor,
                               interval_ms=int(artifact.metadata.get("interval_ms") or 0) or None)
    else:
        windows = load_windows(data, window=window, stride=stride or 1)
    got = tuple(windows.windows.shape[1:])
    if got != (window, len(features)):
        raise DataError(
            f"{data}: windows are {got[0]} steps x {got[1]} features but {artifact.path} expects "
            f"{window} x {len(features)} ({', '.join(features)}); give data shaped like the training data"
        )
    return windows


def _row_ids(windows: WindowSet) -> tuple[list[str], list[np.ndarray]]:
    """Columns that identify each window in output tables."""
    if windows.series_ids is not None and windows.end_timestamps is not None:
        return ["series_id", "timestamp"], [windows.series_ids, windows.end_timestamps]
    return ["window"], [np.arange(len(windows.windows))]


def _window_name(windows: WindowSet, index: int) -> str:
    if windows.series_ids is not None and windows.end_timestamps is not None:
        when = np.datetime64(int(windows.end_timestamps[index]), "ms").astype(datetime)
        return f"{windows.series_ids[index]} {when:%Y-%m-%d %H:%M:%S}"
    return f"window {index}"


def _write_table(path: Path, header: list[str], columns: list[np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    formatted = [
        [f"{v:.8g}" for v in column.tolist()] if np.asarray(column).dtype.kind == "f" else [str(v) for v in column.tolist()]
        for column in columns
    ]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(zip(*formatted, strict=True))
    return path


def _to_epoch_ms(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--start {text!r} is neither epoch ms nor ISO-8601, e.g. 2026-01-01T00:00:00Z") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return int(stamp.timestamp() * 1000)


def _anomaly_labels(windows: WindowSet) -> np.ndarray | None:
    """The windows' 0/1 anomaly labels; UCR class labels are classes, not anomaly labels."""
    if windows.labels is None or windows.series_ids is None:
        return None
    return windows.labels.astype(bool)


def _labelled_summary(is_anomaly: np.ndarray, truth: np.ndarray | None) -> str:
    """Window-level precision/recall against labels, when the data has them."""
    if truth is None:
        return ""
    hits = int(np.sum(is_anomaly & truth))
    precision = hits / max(int(is_anomaly.sum()), 1)
    recall = hits / max(int(truth.sum()), 1)
    return f"; against labels: precision {precision:.3f}, recall {recall:.3f} ({int(truth.sum())} labelled windows)"


# ---------------------------------------------------------------- commands


def cmd_synth(args: argparse.Namespace) -> int:
    _require_suffix(args.out, "--out", (".csv",))
    if args.kind != "machines":
        return _synth_stream_type(args)
    from vrae_model.synth import ANOMALY_KINDS, SynthConfig, feature_names_for, generate, write_csv

    if args.clean and (args.anomalies is not None or args.anomaly_rate is not None or args.kinds is not None):
        raise UsageError("--clean makes data without anomalies: drop --anomalies/--anomaly-rate/--kinds or --clean")
    if args.features is None or args.features.isdigit():
        features = feature_names_for(3 if args.features is None else int(args.features))
    else:
        features = tuple(_parse_features(args.features) or ())
    kinds = tuple(_parse_features(args.kinds)) if args.kinds is not None else ANOMALY_KINDS
    try:
        config = SynthConfig(
            n_series=args.series,
            length=2000 if args.length is None else args.length,
            features=features,
            interval_ms=60_000 if args.interval_ms is None else args.interval_ms,
            anomaly_rate=0.001 if args.anomaly_rate is None else args.anomaly_rate,
            anomalies_per_series=args.anomalies,
            kinds=kinds,
            clean=args.clean,
            regime_changes=args.regime_changes,
            seed=args.seed,
            start_ms=_to_epoch_ms(args.start),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    data = generate(config)
    write_csv(data, args.out)
    _print_synth_summary(data.series, config.n_series, config.length, features, args.out)
    return 0


def _synth_stream_type(args: argparse.Namespace) -> int:
    """`vrae synth --kind <stream type>`: one of the operations stream types (vrae_model.synth)."""
    from vrae_model.synth import STREAM_INTERVAL_MS, STREAM_LENGTH, StreamConfig, generate_streams, write_csv

    unsupported = [flag for flag, value in (("--anomaly-rate", args.anomaly_rate), ("--kinds", args.kinds))
                   if value is not None] + (["--regime-changes"] if args.regime_changes else [])
    if unsupported:
        raise UsageError(f"{', '.join(unsupported)} apply to --kind machines only; stream types choose their own "
                         "anomalies (use --anomalies N or --clean)")
    if args.clean and args.anomalies is not None:
        raise UsageError("--clean makes data without anomalies: drop --anomalies or --clean")
    if args.features is not None and not args.features.isdigit():
        raise UsageError("stream types name their own features: give --features as a count (multivariate types)")
    try:
        config = StreamConfig(
            kind=args.kind,
            n_series=args.series,
            length=STREAM_LENGTH if args.length is None else args.length,
            interval_ms=STREAM_INTERVAL_MS if args.interval_ms is None else args.interval_ms,
            anomalies_per_series=3 if args.anomalies is None else args.anomalies,
            n_features=4 if args.features is None else int(args.features),
            clean=args.clean,
            seed=args.seed,
            start_ms=_to_epoch_ms(args.start),
        )
        data = generate_streams(config)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    write_csv(data, args.out)  # type: ignore[arg-type]
    _print_synth_summary(data.series, config.n_series, config.length, config.features, args.out)
    benign = sum(len(s.benign) for s in data.series)
    print(f"{args.kind}: {benign} unlabelled benign events (normal behaviour that must not page)")
    return 0


def _print_synth_summary(series: list, n_series: int, length: int, features: tuple[str, ...], out: Path) -> None:
    n_anomalies = sum(len(s.anomalies) for s in series)
    labelled = sum(int(s.labels.sum()) for s in series)
    events = sum(len(s.labels) for s in series)
    print(
        f"wrote {events} events ({n_series} series x {length}, features {', '.join(features)}) to {out}: "
        f"{n_anomalies} anomalies, {labelled} labelled events ({labelled / events:.1%})"
    )


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "epochs", "lr", "batch_size", "beta", "kl_schedule", "free_bits", "threshold_method", "risk",
        "quantile", "accelerator", "devices", "strategy", "seed", "window_level", "scale_floor",
    )  # fmt: skip
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def cmd_train(args: argparse.Namespace) -> int:
    from vrae_model.data import CSV_SUFFIXES, load_windows
    from vrae_model.presets import get_preset, with_overrides

    _require_suffix(args.out, "--out", (".pt",))
    overrides = _train_overrides(args)
    preset = get_preset(args.preset)
    with_overrides(preset, overrides)  # rejects bad values before the slow part starts
    window = args.window
    if window is None and args.data.suffix.lower() in CSV_SUFFIXES:
        window = preset.model.sequence_length
    windows = load_windows(args.data, window=window, stride=args.stride, features=_parse_features(args.features))

    from vrae_model.training import train

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = train(windows, preset, out=args.out, progress_bar=not args.quiet, overrides=overrides)
    meta = result.metadata
    print(
        f"trained {meta['model_version']} on {len(windows.windows)} windows of {meta['window']} x "
        f"{len(meta['features'])} ({', '.join(meta['features'])}), {meta['param_counts']['total']:,} parameters\n"
        f"threshold {meta['threshold']:.6g} on the anomaly score ({meta['threshold_method']}), "
        f"score {meta['score_threshold']:.6g}\n"
        f"window levels {'removed' if result.metrics['window_level'] == 'remove' else 'kept'} "
        f"(they hold {result.metrics['level_share']:.0%} of the typical feature's variance)\n"
        f"artifact   {result.artifact_path}\ncheckpoint {result.checkpoint_path}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    _require_suffix(args.out, "--out", (".pt",))
    if not args.checkpoint.is_file():  # checked here too: importing the trainer takes seconds
        raise UsageError(f"--checkpoint {args.checkpoint}: no such file; `vrae train` writes it beside the artifact")
    from vrae_model.artifact import load_artifact
    from vrae_model.training import export_from_checkpoint

    path = export_from_checkpoint(args.checkpoint, args.out)
    print(f"exported {args.checkpoint} to {path} (sha256 {load_artifact(path).sha256})")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from vrae_model.scoring import score_windows

    _require_suffix(args.out, "--out", (".csv",))
    artifact = _load_model(args.model)
    windows = _load_for_model(artifact, args.data, args.stride, args.gap_factor)
    scores = score_windows(artifact, windows.windows, batch_size=args.batch_size)
    header, ids = _row_ids(windows)
    _write_table(
        args.out,
        [*header, "score", "anomaly_score", "surprise", "is_anomaly"],
        [*ids, scores["score"], scores["anomaly_score"], scores["surprise"], scores["is_anomaly"].astype(np.int8)],
    )
    flagged = int(scores["is_anomaly"].sum())
    print(
        f"scored {len(windows.windows)} windows: {flagged} anomalies at threshold "
        f"{artifact.metadata['threshold']:.6g}{_labelled_summary(scores['is_anomaly'], _anomaly_labels(windows))} -> {args.out}"
    )
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from vrae_model.analysis import embed

    _require_suffix(args.out, "--out", (".npy", ".csv"))
    artifact = _load_model(args.model)
    windows = _load_for_model(artifact, args.data, args.stride, args.gap_factor)
    latents = embed(artifact, windows.windows)
    if args.out.suffix.lower() == ".npy":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.out, latents)
    else:
        header, ids = _row_ids(windows)
        _write_table(args.out, [*header, *(f"z{i}" for i in range(latents.shape[1]))], [*ids, *latents.T])
    print(f"wrote {latents.shape[0]} latent means of size {latents.shape[1]} to {args.out}")
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    from vrae_model.analysis import cluster, embed, plot_map, reduce

    _require_suffix(args.out, "--out", (".csv",))
    if args.plot is not None:
        _require_suffix(args.plot, "--plot", PLOT_SUFFIXES)
    artifact = _load_model(args.model)
    windows = _load_for_model(artifact, args.data, args.stride, args.gap_factor)
    latents = embed(artifact, windows.windows)
    labels = cluster(latents, args.k, seed=args.seed)
    header, ids = _row_ids(windows)
    _write_table(args.out, [*header, "cluster"], [*ids, labels])
    sizes = np.bincount(labels, minlength=args.k)
    print(f"{args.k} clusters of {len(labels)} windows (sizes {', '.join(map(str, sizes))}) -> {args.out}")
    if args.plot is not None:
        coords = reduce(latents, "pca", seed=args.seed)
        plot_map(coords, args.plot, groups=labels, title=f"k-means (k={args.k}) on latent means, PCA map")
        print(f"map -> {args.plot}")
    return 0


def _subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    if max_points <= 0 or n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def cmd_reduce(args: argparse.Namespace) -> int:
    from vrae_model.analysis import embed, plot_map, reduce
    from vrae_model.scoring import score_windows

    _require_suffix(args.out, "--out", PLOT_SUFFIXES)
    if args.csv is not None:
        _require_suffix(args.csv, "--csv", (".csv",))
    artifact = _load_model(args.model)
    windows = _load_for_model(artifact, args.data, args.stride, args.gap_factor)
    keep = _subsample(len(windows.windows), args.max_points, args.seed)
    latents = embed(artifact, windows.windows[keep])
    coords = reduce(latents, args.method, seed=args.seed)
    title = f"{args.method.upper()} of latent means ({len(keep)} windows)"
    if windows.labels is not None:
        is_ucr = windows.series_ids is None
        groups = windows.labels[keep] if is_ucr else np.where(windows.labels[keep] > 0, "anomalous", "normal")
        plot_map(coords, args.out, groups=groups, title=title, legend_title="class" if is_ucr else "label")
    else:
        anomaly_score = score_windows(artifact, windows.windows[keep])["anomaly_score"]
        plot_map(coords, args.out, values=anomaly_score, title=title, legend_title="anomaly score")
    print(f"map of {len(keep)} windows -> {args.out}")
    if args.csv is not None:
        header, ids = _row_ids(windows)
        _write_table(args.csv, [*header, "x", "y"], [*(column[keep] for column in ids), coords[:, 0], coords[:, 1]])
        print(f"coordinates -> {args.csv}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from vrae_model.analysis import embed, generate, latent_size, plot_series, sample_latents

    _require_suffix(args.out, "--out", (".npy", ".csv"))
    if args.plot is not None:
        _require_suffix(args.plot, "--plot", PLOT_SUFFIXES)
    if args.source == "posterior" and args.data is None:
        raise UsageError("--source posterior fits the latents of real data: add --data PATH")
    if args.source == "prior" and args.data is not None:
        raise UsageError("--data is only used with --source posterior: drop --data or add --source posterior")
    artifact = _load_model(args.model)
    latents = None
    if args.data is not None:
        latents = embed(artifact, _load_for_model(artifact, args.data, args.stride, args.gap_factor).windows)
    z = sample_latents(args.n, latent_size(artifact), args.source, latents=latents, seed=args.seed)
    series = generate(artifact, z)  # (n, T, F)
    features = list(artifact.metadata["features"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix.lower() == ".npy":
        np.save(args.out, series)
    else:
        n, steps, _ = series.shape
        # long CSV (timestamp = step index in ms) so the output can be fed back to `vrae score`
        ids = np.repeat([f"generated-{i:04d}" for i in range(n)], steps)
        _write_table(args.out, ["series_id", "timestamp", *features], [ids, np.tile(np.arange(steps), n), *series.reshape(n * steps, -1).T])
    print(f"generated {args.n} series of {series.shape[1]} x {series.shape[2]} from the {args.source} -> {args.out}")
    if args.plot is not None:
        plot_series(series, features, args.plot, title=f"{args.n} series decoded from the {args.source}")
        print(f"plot -> {args.plot}")
    return 0


def _pick_series(windows: WindowSet, wanted: str | None, is_anomaly: np.ndarray) -> str:
    assert windows.series_ids is not None
    available = list(dict.fromkeys(windows.series_ids.tolist()))
    if wanted is None:
        # the series with the most alerts is the one worth looking at
        counts = {sid: int(is_anomaly[windows.series_ids == sid].sum()) for sid in available}
        return max(available, key=lambda sid: counts[sid])
    if wanted not in available:
        shown = ", ".join(available[:5]) + (", ..." if len(available) > 5 else "")
        raise UsageError(f"--series {wanted!r} is not in the data; available: {shown}")
    return wanted


def cmd_plot(args: argparse.Namespace) -> int:
    from vrae_model.analysis import pick_examples, plot_reconstructions, plot_timeline, reconstruct
    from vrae_model.scoring import score_windows

    _require_suffix(args.out, "--out", PLOT_SUFFIXES)
    if args.kind == "reconstruction" and args.series is not None:
        raise UsageError("--series selects the timeline's series: drop it or use --kind timeline")
    artifact = _load_model(args.model)
    windows = _load_for_model(artifact, args.data, args.stride, args.gap_factor)
    scores = score_windows(artifact, windows.windows)
    features = list(artifact.metadata["features"])
    if args.kind == "reconstruction":
        chosen = pick_examples(scores["score"], args.n)
        recon = reconstruct(artifact, windows.windows[chosen])
        titles = [
            f"{_window_name(windows, i)}\nscore {scores['score'][i]:.3g}" + (" ALERT" if scores["is_anomaly"][i] else "")
            for i in chosen
        ]
        plot_reconstructions(windows.windows[chosen], recon, features, args.out, titles=titles)
        print(f"{len(chosen)} reconstructions (worst and typical) -> {args.out}")
        return 0
    score_threshold = float(artifact.metadata["score_threshold"])
    if windows.series_ids is None or windows.end_timestamps is None:
        plot_timeline(
            np.arange(len(windows.windows)), scores["score"], score_threshold, args.out,
            title=f"score per window of {args.data.name}: {int(scores['is_anomaly'].sum())} alerts", x_label="window",
        )  # fmt: skip
    else:
        series_id = _pick_series(windows, args.series, scores["is_anomaly"])
        mask = windows.series_ids == series_id
        labels = _anomaly_labels(windows)
        plot_timeline(
            windows.end_timestamps[mask].astype("datetime64[ms]"), scores["score"][mask], score_threshold, args.out,
            title=f"series {series_id}", x_label="time (UTC) of the event ending each window",
            values=windows.windows[mask, -1, :], feature_names=features,
            labels=labels[mask] if labels is not None else None,
        )  # fmt: skip
        print(f"series {series_id}")
    print(f"timeline -> {args.out}")
    return 0


def _format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {value:,}" for name, value in counts.items())


def _format_config(config: dict[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in config.items())


def cmd_info(args: argparse.Namespace) -> int:
    artifact = _load_model(args.model)
    meta = artifact.metadata
    if args.json:
        print(json.dumps({**meta, "sha256": artifact.sha256}, indent=2, sort_keys=True))
        return 0
    calibration = meta.get("calibration", {})
    rows = [
        ("model", f"{meta['model_name']} {meta['model_version']}"),
        ("file", f"{artifact.path} ({artifact.path.stat().st_size / 1024:.1f} KiB)"),
        ("sha256", artifact.sha256),
        ("window", f"{meta['window']} steps, trained with stride {meta['stride']}"),
        ("features", ", ".join(meta["features"])),
        ("threshold", f"{meta['threshold']:.6g} anomaly score = {meta['score_threshold']:.6g} score ({meta['threshold_method']})"),
        ("calibration", _format_config({k: v for k, v in calibration.items() if not isinstance(v, list)})),
        ("parameters", _format_counts(meta["param_counts"])),
        ("model config", _format_config(meta["model_config"])),
        ("training", _format_config(meta["training_config"])),
        ("data", meta["data_fingerprint"]),
        ("built", f"{meta['created_at']} with vrae_model {meta['library_version']}, torch {meta['torch_version']}"),
    ]
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    return 0


# ---------------------------------------------------------------- parser


def _add_model_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="artifact written by `vrae train` (model.pt)")
    parser.add_argument("--data", type=Path, required=True, help=".npy windows, long CSV or UCR file")
    parser.add_argument(
        "--stride", type=int, help="long CSV/series only: score every k-th full window (default 1, like VRAE_WINDOW__STRIDE)"
    )
    parser.add_argument(
        "--gap-factor", type=float, default=DEFAULT_GAP_FACTOR,
        help="long CSV only: a step longer than this many usual intervals starts a fresh window "
        f"(default {DEFAULT_GAP_FACTOR:g}, like VRAE_WINDOW__GAP_FACTOR; 0: windows count events only)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vrae", description="Train, score and explore a Variational Recurrent Auto-Encoder.")
    parser.add_argument("--version", action="version", version=f"vrae {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, handler: Callable[[argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(handler=handler)
        return sub

    synth = command("synth", cmd_synth, "write labelled synthetic multivariate sensor data as a long CSV")
    synth.add_argument("--out", type=Path, required=True, help="CSV to write")
    synth.add_argument("--series", type=int, default=10, help="number of series (default 10)")
    synth.add_argument("--kind", default="machines", choices=("machines", *STREAM_KINDS),
                       help="machines (default): drifting multi-sensor machines; or an operations stream type "
                            "(README: vrae synth)")
    synth.add_argument("--length", type=int, help="events per series (default 2000; stream types 4032: 14 days)")
    synth.add_argument("--features", help="a count (default 3 = temp,pressure,vibration) or names a,b,c; "
                                          "multivariate stream types: a count (default 4)")
    synth.add_argument("--interval-ms", type=int,
                       help="time between events (default 60000; stream types 300000: 5 min)")
    rate = synth.add_mutually_exclusive_group()
    rate.add_argument("--anomaly-rate", type=float, help="anomalies started per event (default 0.001)")
    rate.add_argument("--anomalies", type=int, help="anomalies per series instead of a rate")
    synth.add_argument("--kinds", help="anomaly kinds to inject, comma-separated (default all)")
    synth.add_argument("--clean", action="store_true", help="no anomalies: normal training history")
    synth.add_argument("--regime-changes", type=int, default=0, help="unlabelled permanent normal-behaviour changes per series")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--start", default="2026-01-01T00:00:00+00:00", help="first timestamp: ISO-8601 or epoch ms")

    train = command("train", cmd_train, "train, calibrate and export a model")
    train.add_argument("--data", type=Path, required=True, help=".npy windows, long CSV or UCR file")
    train.add_argument("--out", type=Path, default=Path("model.pt"), help="artifact path; the checkpoint goes beside it")
    train.add_argument("--preset", default="default", help="seed | default (default: default)")
    train.add_argument("--window", type=int, help="window length T for series data (default: the preset's, 24)")
    train.add_argument("--stride", type=int, default=1, help="stride between training windows (default 1)")
    train.add_argument("--features", help="feature columns to use, comma-separated (default: all)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--beta", type=float, help="KL weight")
    train.add_argument("--kl-schedule", choices=("none", "linear", "cyclical"))
    train.add_argument("--free-bits", type=float)
    train.add_argument("--threshold-method", choices=("pot", "quantile"))
    train.add_argument("--risk", type=float, help="POT risk: expected false-alert rate per window (default 3e-5)")
    train.add_argument("--quantile", type=float, help="quantile threshold (e.g. 0.999)")
    train.add_argument("--accelerator", help="cpu | gpu | auto | ...")
    train.add_argument("--devices", type=lambda text: int(text) if text.isdigit() else text)
    train.add_argument("--strategy")
    train.add_argument("--seed", type=int)
    train.add_argument("--window-level", choices=("keep", "remove", "auto"),
                       help="remove each window's level before the model sees it, keep it, or auto (the default "
                            "preset): remove when levels hold over 30%% of the typical feature's variance")
    train.add_argument("--scale-floor", type=float,
                       help="floor each feature's scale at this fraction of its typical magnitude (default preset 0.01; 0: none)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    export = command("export", cmd_export, "export a training checkpoint to a TorchScript artifact")
    export.add_argument("--checkpoint", type=Path, required=True)
    export.add_argument("--out", type=Path, required=True)

    score = command("score", cmd_score, "score every due window, exactly as the worker would")
    _add_model_data(score)
    score.add_argument("--out", type=Path, required=True, help="CSV of scores")
    score.add_argument("--batch-size", type=int, default=4096)

    embed = command("embed", cmd_embed, "write the latent mean of every window")
    _add_model_data(embed)
    embed.add_argument("--out", type=Path, required=True, help="latents.npy or latents.csv")

    clusters = command("cluster", cmd_cluster, "k-means on latent means")
    _add_model_data(clusters)
    clusters.add_argument("--k", type=int, required=True, help="number of clusters")
    clusters.add_argument("--out", type=Path, required=True, help="CSV of cluster labels")
    clusters.add_argument("--plot", type=Path, help="also draw a PCA map coloured by cluster")
    clusters.add_argument("--seed", type=int, default=0)

    reduce = command("reduce", cmd_reduce, "2-D map of the latent space")
    _add_model_data(reduce)
    reduce.add_argument("--method", choices=("pca", "tsne"), default="pca")
    reduce.add_argument("--out", type=Path, required=True, help="image (.png, .pdf, .svg)")
    reduce.add_argument("--csv", type=Path, help="also write the coordinates")
    reduce.add_argument("--max-points", type=int, default=5000, help="random subsample for speed (0 = all)")
    reduce.add_argument("--seed", type=int, default=0)

    gen = command("generate", cmd_generate, "decode new series from the prior or the data's latent distribution")
    gen.add_argument("--model", type=Path, required=True)
    gen.add_argument("--n", type=int, default=8, help="number of series (default 8)")
    gen.add_argument("--source", choices=("prior", "posterior"), default="prior")
    gen.add_argument("--data", type=Path, help="posterior only: data whose latents define the Gaussian")
    gen.add_argument("--stride", type=int, help="long CSV only: stride for the --data windows")
    gen.add_argument("--gap-factor", type=float, default=DEFAULT_GAP_FACTOR, help="long CSV only: as for score")
    gen.add_argument("--out", type=Path, required=True, help="series.npy (n, T, F) or series.csv (long form)")
    gen.add_argument("--plot", type=Path)
    gen.add_argument("--seed", type=int, default=0)

    plot = command("plot", cmd_plot, "reconstructions against inputs, or a score timeline")
    _add_model_data(plot)
    plot.add_argument("--kind", choices=("reconstruction", "timeline"), required=True)
    plot.add_argument("--out", type=Path, required=True, help="image (.png, .pdf, .svg)")
    plot.add_argument("--n", type=int, default=4, help="reconstruction: windows to show (default 4)")
    plot.add_argument("--series", help="timeline on a long CSV: series to draw (default: the one with most alerts)")

    info = command("info", cmd_info, "show an artifact's metadata, parameter counts and sha256")
    info.add_argument("model", type=Path)
    info.add_argument("--json", action="store_true", help="all metadata as JSON")
    parser.set_defaults(handler=partial(_no_command, tuple(commands.choices)))
    return parser


def _no_command(names: tuple[str, ...], _: argparse.Namespace) -> int:
    raise UsageError(f"choose a command: {', '.join(names)} (see `vrae --help`)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.handler(args)
    except VraeError as exc:
        message = str(exc)
    except OSError as exc:
        message = f"{exc.filename or ''}: {exc.strerror or exc}; check the path and permissions".lstrip(": ")
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        return 130
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
