"""SKAB (the Skoltech Anomaly Benchmark) by its own protocol, on the part the project holds (valve1).

    python benchmarks/skab.py          # the default preset against levels removed, the worker both ways, PCA T²+Q
    python benchmarks/skab.py --variants all --exports all,16,8 --lofo default/all/incidents   # the study (~1 h)
    python benchmarks/skab.py --variants default,w32-remove --other-sensors 2   # faults in other sensors
    python benchmarks/skab.py --variants default --statistics   # per-window statistics: oracle and label-free
    python benchmarks/skab.py --variants default --probes       # per-series calibration / incident probes

Results and what they mean: benchmarks/SKAB.md.

Protocol (SKAB's "Proposed Leaderboard" for outlier detection): for each experiment file, the first
400 rows (normal) train the detector; every later row is predicted, one prediction per row, no point
adjustment; F1, false-alarm rate (FAR) and missed-alarm rate (MAR) come from ONE confusion matrix summed
over the test rows of all files.

Here a model is `vrae train` on the file's first 400 rows (long CSV: series_id = the file, timestamp
from datetime, the 8 sensors), then every window of the whole file is scored. The window ending at
row r predicts row r (rows before the first full window have no prediction; they are training rows).
Per row, two readings of the worker:
    windows     the window's anomaly_score reaches the artifact's threshold (VRAE_DETECTION__MODE=windows)
    incidents   an incident of the series is open after the window ending at the row (the worker's
                per-series calibration and incident machine with default settings, replayed in memory)
and for each per-window statistic an oracle (the best threshold on the labels, for insight only) next
to its label-free default.

Models and per-window outputs are cached under --cache keyed on everything that trains them, so
detection variants replay in seconds.
"""

import argparse
import csv
import hashlib
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

SKAB_DIR = Path("/work/shared/data/skab")
TRAIN_ROWS = 400
CACHE_VERSION = "1"


# ---------------------------------------------------------------------------------------------- data


@dataclass
class Experiment:
    name: str
    features: list[str]
    timestamps: np.ndarray  # (n,) int64 epoch ms
    values: np.ndarray  # (n, F) float32
    labels: np.ndarray  # (n,) int 0/1
    altered: str = ""  # what `inject` changed after the training rows ("" for recorded data)

    @property
    def test(self) -> slice:
        return slice(TRAIN_ROWS, None)


def read_experiment(path: Path, name: str) -> Experiment:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    header, body = rows[0], [row for row in rows[1:] if row]
    features = header[1:9]
    stamps = np.array([int(datetime.fromisoformat(r[0]).replace(tzinfo=timezone.utc).timestamp() * 1000)
                       for r in body], np.int64)
    values = np.array([[float(v) for v in r[1:9]] for r in body], np.float32)
    labels = np.array([int(float(r[9])) for r in body], np.int64) if len(header) > 9 else np.zeros(len(body), np.int64)
    return Experiment(name, features, stamps, values, labels)


def valve1(root: Path = SKAB_DIR) -> list[Experiment]:
    paths = sorted((root / "valve1").glob("*.csv"), key=lambda p: int(p.stem))
    return [read_experiment(p, f"valve1/{p.stem}") for p in paths]


def write_long_csv(exp: Experiment, rows: slice, path: Path) -> None:
    """The long CSV `vrae train` reads: series_id, timestamp (epoch ms), the sensors, label."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["series_id", "timestamp", *exp.features, "label"])
        for ts, row, label in zip(exp.timestamps[rows], exp.values[rows], exp.labels[rows]):
            writer.writerow([exp.name, int(ts), *(repr(float(v)) for v in row), int(label)])


# ------------------------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Confusion:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: "Confusion") -> "Confusion":
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @classmethod
    def of(cls, predicted: np.ndarray, labels: np.ndarray) -> "Confusion":
        p, y = np.asarray(predicted, bool), np.asarray(labels) == 1
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

    def row(self) -> str:
        return f"{self.f1:5.3f} {100 * self.far:5.1f} {100 * self.mar:5.1f}"


def confusion(experiments: Sequence[Experiment], predictions: Sequence[np.ndarray]) -> Confusion:
    """One confusion matrix over the test rows (>= TRAIN_ROWS) of all files."""
    total = Confusion()
    for exp, predicted in zip(experiments, predictions):
        total = total + Confusion.of(predicted[exp.test], exp.labels[exp.test])
    return total


def oracle(experiments: Sequence[Experiment], stats: Sequence[np.ndarray], *, grid: int = 400) -> tuple[Confusion, float]:
    """The best F1 over one global threshold on a per-row statistic (NaN = no prediction): insight only."""
    pooled = np.concatenate([s[e.test] for e, s in zip(experiments, stats)])
    pooled = pooled[np.isfinite(pooled)]
    best, level = Confusion(), math.nan
    for q in np.unique(np.quantile(pooled, np.linspace(0.0, 0.999, grid))):
        c = confusion(experiments, [np.nan_to_num(s, nan=-np.inf) >= q for s in stats])
        if c.f1 > best.f1:
            best, level = c, float(q)
    return best, level


# ----------------------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Variant:
    """One way to train the per-file model: `vrae train --window W` plus preset overrides."""

    name: str
    window: int = 32
    overrides: dict[str, Any] = field(default_factory=dict)
    preset: str = "default"

    def key(self, exp: Experiment) -> str:
        digest = hashlib.sha256(exp.values[:TRAIN_ROWS].tobytes())
        digest.update(exp.timestamps[:TRAIN_ROWS].tobytes())
        digest.update(json.dumps([CACHE_VERSION, self.window, self.preset, self.overrides], sort_keys=True).encode())
        return digest.hexdigest()[:16]


def train_model(exp: Experiment, variant: Variant, cache: Path) -> Path:
    """`vrae train` on the file's first 400 rows (the CLI's own path: long CSV -> load_windows -> train)."""
    out = cache / "models" / f"{exp.name.replace('/', '-')}-{variant.key(exp)}.pt"
    if out.exists():
        return out
    import torch

    from vrae_model.data import load_windows
    from vrae_model.training import train

    torch.set_num_threads(1)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_path = out.with_suffix(".train.csv")
    write_long_csv(exp, slice(0, TRAIN_ROWS), csv_path)
    windows = load_windows(csv_path, window=variant.window, stride=1)
    result = train(windows, variant.preset, out=out, progress_bar=False, overrides=variant.overrides)
    out.with_suffix(".json").write_text(json.dumps({k: v for k, v in result.metrics.items() if k != "history"},
                                                   default=float, indent=1))
    csv_path.unlink()
    return out


@dataclass
class Outputs:
    """Everything the model says about every window of one file (window i ends at row i + T - 1)."""

    window: int
    score: np.ndarray  # (N,) the exported score: mean squared error, scaled units
    anomaly_score: np.ndarray  # (N,) the exported calibrated score
    feature_scores: np.ndarray  # (N, F) the exported shares
    error: np.ndarray  # (N, T, F) squared reconstruction error per step and feature, scaled units
    latent: np.ndarray  # (N, L) posterior means
    validation: np.ndarray  # (V,) indices of the windows the artifact was calibrated on
    meta: dict[str, Any]

    def rows(self, per_window: np.ndarray, n_rows: int) -> np.ndarray:
        """A per-window value placed on the row ending its window; NaN before the first full window."""
        out = np.full(n_rows, np.nan)
        out[self.window - 1:] = per_window
        return out


def sliding(values: np.ndarray, window: int) -> np.ndarray:
    return np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(values, window, axis=0).transpose(0, 2, 1))


def model_outputs(exp: Experiment, variant: Variant, cache: Path) -> Outputs:
    path = train_model(exp, variant, cache)
    scored = hashlib.sha256(exp.values.tobytes()).hexdigest()[:12]  # the same model scores injected copies
    stored = path.with_name(f"{path.stem}-{scored}.outputs.npz")
    if not stored.exists():
        import torch

        from vrae_model.artifact import load_artifact
        from vrae_model.training import split_indices

        torch.set_num_threads(1)
        artifact = load_artifact(path)
        module, meta = artifact.module, artifact.metadata
        windows = torch.from_numpy(sliding(exp.values, variant.window))
        std = torch.as_tensor(meta["scaler"]["std"], dtype=torch.float32)
        with torch.inference_mode():
            out = module(windows)
            error = ((module.reconstruct(windows) - windows) / std).pow(2)
            latent = module.embed(windows)
        n_train = TRAIN_ROWS - variant.window + 1
        train_config = meta["training_config"]
        _, validation = split_indices(n_train, train_config["val_fraction"], train_config["seed"], variant.window)
        np.savez_compressed(stored, score=out["score"].numpy(), anomaly_score=out["anomaly_score"].numpy(),
                            feature_scores=out["feature_scores"].numpy(), error=error.numpy(),
                            latent=latent.numpy(), validation=validation,
                            meta=json.dumps({**meta, "sha256": artifact.sha256}))
    data = np.load(stored)
    return Outputs(variant.window, data["score"], data["anomaly_score"], data["feature_scores"], data["error"],
                   data["latent"], data["validation"], json.loads(str(data["meta"])))


# ---------------------------------------------------------------------------------------- the worker


@dataclass
class WorkerRun:
    surprise: np.ndarray  # (n,) per row: the judged surprise of the window ending there (NaN: none)
    open: np.ndarray  # (n,) bool per row: an incident is open after that window
    openings: list[int]  # rows whose window opened an incident


def replay_worker(exp: Experiment, window: int, score: np.ndarray, anomaly_score: np.ndarray,
                  feature_scores: np.ndarray, feature_calibration: dict[str, Any] | None,
                  settings: Any = None, *, freeze_while_open: bool = False, quiet_training: bool = False) -> WorkerRun:
    """The worker's `detection.detect` loop for one series, window by window: judge against the series'
    history, advance the incident machine, fold the window in (the same calls, the same order).

    freeze_while_open (a design probe, not the worker today): while an incident is open the series'
    long-term moments (mean, variance, weight) stay as they were when it opened, so the fault is judged
    against the normal before it and is not learned as normal; the short-term mean and the previous
    window (confirmation) still move."""
    from vrae_model.calibration import FeatureCalibration
    from worker.adaptive import ScoreHistory, feature_errors, fold, judge
    from worker.detection import DetectorSettings
    from worker.incidents import IncidentState, Observation, Phase, step

    settings = settings or DetectorSettings()
    n_features = feature_scores.shape[1]
    reference = FeatureCalibration.from_dict(feature_calibration, n_features) if feature_calibration else None
    history, incident = ScoreHistory.fresh(0), IncidentState()
    n = len(exp.labels)
    surprise, is_open, openings = np.full(n, np.nan), np.zeros(n, bool), []
    scores, anomalies = score.astype(float).tolist(), anomaly_score.astype(float).tolist()
    for i in range(len(scores)):
        row = i + window - 1
        start_ms, end_ms = int(exp.timestamps[i]), int(exp.timestamps[row])
        errors = feature_errors(scores[i], feature_scores[i])
        judgement = judge(history, errors, anomalies[i], settings.adaptive, start_ms=start_ms, end_ms=end_ms,
                          reference=reference)
        judged = judgement.surprise
        if quiet_training and row < TRAIN_ROWS and not incident.open:
            judged = min(judged, settings.incidents.open_surprise - 1e-9)
        seen = Observation(start_ms, end_ms, scores[i], judged, feature_scores[i])
        incident, transition = step(exp.name, incident, seen, settings.incidents)
        folded = fold(history, errors, settings.adaptive, start_ms=start_ms, end_ms=end_ms,
                      anomaly_score=anomalies[i], surprise=judgement.surprise)
        if freeze_while_open and incident.open and history.n > 0:
            folded = folded._replace(mean=history.mean, var=history.var, short_var=history.short_var,
                                     weight=history.weight)
        history = folded
        surprise[row], is_open[row] = judgement.surprise, incident.open
        if transition is not None and transition.phase is Phase.OPENED:
            openings.append(row)
    return WorkerRun(surprise, is_open, openings)


def worker_of(exp: Experiment, out: Outputs, settings: Any = None) -> WorkerRun:
    return replay_worker(exp, out.window, out.score, out.anomaly_score, out.feature_scores,
                         out.meta.get("feature_calibration"), settings)


# ------------------------------------------------------------------------------- per-window statistics
# Each maps a file's model outputs to one value per window (higher = more anomalous). Statistics that
# need a reference are fitted on the artifact's calibration (validation) windows only: label-free, and
# held out from the model's training like the exported calibration.

LOG_FLOOR = 1e-12


def log_feature_errors(out: Outputs, last: int | None = None) -> np.ndarray:
    """(N, F) ln of each feature's mean squared error over the window, or over its last `last` steps."""
    error = out.error if last is None else out.error[:, -last:]
    return np.log(np.maximum(error.mean(axis=1), LOG_FLOOR))


def robust_z(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 MAD) per column, the scale floored like worker.adaptive's variance floor."""
    median = np.median(reference, axis=0)
    scale = 1.4826 * np.median(np.abs(reference - median), axis=0)
    return (x - median) / np.sqrt(scale**2 + 1e-3)


def mahalanobis(x: np.ndarray, reference: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Squared Mahalanobis distance to the reference rows (a T² with the reference covariance, ridged)."""
    mean = reference.mean(axis=0)
    cov = np.atleast_2d(np.cov(reference, rowvar=False)) + ridge * np.eye(reference.shape[1])
    d = x - mean
    return np.einsum("ij,jk,ik->i", d, np.linalg.inv(cov), d)


def stat_mean(out: Outputs) -> np.ndarray:
    return out.score.astype(np.float64)


def stat_feature_z(last: int | None = None) -> Callable[[Outputs], np.ndarray]:
    """max over features of the robust z of the feature's log error against the calibration windows."""
    def stat(out: Outputs) -> np.ndarray:
        x = log_feature_errors(out, last)
        return robust_z(x, x[out.validation]).max(axis=1)
    return stat


def stat_log_t2(last: int | None = None) -> Callable[[Outputs], np.ndarray]:
    """T² of the per-feature log errors with the calibration windows' mean and covariance."""
    def stat(out: Outputs) -> np.ndarray:
        x = log_feature_errors(out, last)
        return mahalanobis(x, x[out.validation])
    return stat


def stat_last(steps: int = 1) -> Callable[[Outputs], np.ndarray]:
    """The mean squared error of the window's last `steps` rows: the newest rows, for point-wise timing."""
    def stat(out: Outputs) -> np.ndarray:
        return out.error[:, -steps:].mean(axis=(1, 2)).astype(np.float64)
    return stat


def stat_latent(out: Outputs) -> np.ndarray:
    return mahalanobis(out.latent.astype(np.float64), out.latent[out.validation].astype(np.float64))


STATISTICS: dict[str, Callable[[Outputs], np.ndarray]] = {
    "mean": stat_mean,
    "feature_z": stat_feature_z(),
    "log_t2": stat_log_t2(),
    "last1": stat_last(1),
    "last4": stat_last(4),
    "feature_z_last4": stat_feature_z(4),
    "log_t2_last4": stat_log_t2(4),
    "latent": stat_latent,
}


def tail_threshold(reference: np.ndarray, risk: float) -> float:
    """The value whose tail probability is `risk` by the artifact's own calibration (ECDF + GPD tail)
    fitted on the reference (calibration-window) values: label-free."""
    from vrae_model.calibration import fit_calibration, score_at_risk

    return score_at_risk(fit_calibration(reference), risk)


# ----------------------------------------------------------------------------------------- baselines


def pca_t2q(exp: Experiment, explained: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """PCA T² and Q (SPE) per row, fitted on the standardised first 400 rows: (n, 2), and the same for
    the training rows (the reference distribution)."""
    train = exp.values[:TRAIN_ROWS].astype(np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std < 1e-8, 1.0, std)
    z = (exp.values - mean) / std
    _, s, vt = np.linalg.svd(z[:TRAIN_ROWS], full_matrices=False)
    variance = s**2 / (TRAIN_ROWS - 1)
    k = int(np.searchsorted(np.cumsum(variance) / variance.sum(), explained) + 1)
    scores = z @ vt[:k].T
    t2 = (scores**2 / variance[:k]).sum(axis=1)
    q = ((z - scores @ vt[:k]) ** 2).sum(axis=1)
    both = np.stack([t2, q], axis=1)
    return both, both[:TRAIN_ROWS]


def pca_predictions(exp: Experiment, quantile: float = 0.99, explained: float = 0.9) -> np.ndarray:
    """A row is anomalous when T² or Q exceeds that quantile of its training rows (label-free)."""
    both, train = pca_t2q(exp, explained)
    return (both > np.quantile(train, quantile, axis=0)).any(axis=1)


# ------------------------------------------------------------------------------------------- the study

RISKS = (1e-2, 1e-3, 3e-5)


@dataclass
class StatResult:
    oracle: Confusion
    label_free: dict[float, Confusion]  # risk -> confusion at the calibration windows' tail threshold


def judge_statistic(experiments: Sequence[Experiment], outputs: Sequence[Outputs],
                    stat: Callable[[Outputs], np.ndarray], risks: Sequence[float] = RISKS) -> StatResult:
    per_window = [stat(out) for out in outputs]
    rows = [out.rows(v, len(e.labels)) for e, out, v in zip(experiments, outputs, per_window)]
    best, _ = oracle(experiments, rows)
    label_free = {}
    for risk in risks:
        levels = [tail_threshold(v[out.validation], risk) for out, v in zip(outputs, per_window)]
        label_free[risk] = confusion(experiments, [np.nan_to_num(r, nan=-np.inf) >= level
                                                   for r, level in zip(rows, levels)])
    return StatResult(best, label_free)


KEEP = {"window_level": "keep"}
# The cache key covers each variant's settings and the training rows, not the library's code: clear
# --cache after changing vrae_model. "default" names its settings explicitly so that models of an earlier
# default (the mean feature's level share decided auto, which removed SKAB's levels) are not reused.
VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("default", 32, {"window_level": "auto", "scale_floor": 0.01}),
    Variant("default-nofloor", 32, {"window_level": "auto", "scale_floor": 0.0}),
    Variant("w32-remove", 32, {"window_level": "remove"}),
    Variant("w32-keep", 32, KEEP),
    Variant("w16-keep", 16, KEEP),
    Variant("w8-keep", 8, KEEP),
    Variant("w32-keep-seed1", 32, {**KEEP, "seed": 1}),
    Variant("w32-keep-e20", 32, {**KEEP, "epochs": 20, "patience": 5}),
    Variant("w32-keep-h16", 32, {**KEEP, "hidden_size": 16}),
    Variant("w32-keep-z16", 32, {**KEEP, "latent_length": 16}),
    Variant("w32-keep-v15", 32, {**KEEP, "val_fraction": 0.15}),
    Variant("w32-keep-v50", 32, {**KEEP, "val_fraction": 0.5}),
    Variant("w32-keep-floor1", 32, {**KEEP, "scale_floor": 0.01}),
    Variant("w16-keep-floor1", 16, {**KEEP, "scale_floor": 0.01}),
    Variant("w32-keep-floor05", 32, {**KEEP, "scale_floor": 0.005}),
    Variant("w32-keep-floor2", 32, {**KEEP, "scale_floor": 0.02}),
    Variant("w32-keep-floor1-seed1", 32, {**KEEP, "scale_floor": 0.01, "seed": 1}),
]}


# ------------------------------------------------------------------ what an artifact exporting X would say


@dataclass
class Exported:
    """The three outputs the worker reads, and the per-feature calibration, for one exported statistic."""

    score: np.ndarray  # (N,)
    anomaly_score: np.ndarray  # (N,)
    feature_scores: np.ndarray  # (N, F)
    feature_calibration: dict[str, Any]


def exported(out: Outputs, last: int | None = None) -> Exported:
    """An artifact whose score is the mean squared error of the window's last `last` rows (None: all of
    it, today's artifact), calibrated as `vrae_model.scoring.calibrate` does, on the calibration windows."""
    from vrae_model.calibration import anomaly_scores, fit_calibration, fit_feature_calibration

    error = out.error if last is None else out.error[:, -last:]
    per_feature = error.mean(axis=1).astype(np.float64)  # (N, F)
    score = per_feature.mean(axis=1)
    total = per_feature.sum(axis=1, keepdims=True)
    shares = np.where(total > 0, per_feature / np.maximum(total, 1e-30), 1.0 / per_feature.shape[1])
    calibration = fit_calibration(score[out.validation])
    return Exported(score, anomaly_scores(calibration, score), shares,
                    fit_feature_calibration(per_feature[out.validation]).to_dict())


def worker_on(exp: Experiment, out: Outputs, export: Exported, settings: Any = None, **options: Any) -> WorkerRun:
    return replay_worker(exp, out.window, export.score, export.anomaly_score, export.feature_scores,
                         export.feature_calibration, settings, **options)


# ---------------------------------------------------------------- faults in other sensors (semi-synthetic)
# valve1's faults show mostly in the flow rate. To check that a model-side choice does not blind the
# detector to faults elsewhere (the benchmark's other experiments: vibration, temperature, pressure ...),
# the anomaly-free recording is cut into files shaped like valve1's (400 training rows, a 400-row fault
# from row 570) and one sensor is altered over the fault rows.

SEGMENT_ROWS = 1150
FAULT_ROWS = slice(570, 970)
INJECTIONS = ("step", "ramp", "noise")


def anomaly_free_segments(root: Path = SKAB_DIR) -> list[Experiment]:
    free = read_experiment(root / "anomaly-free" / "anomaly-free.csv", "anomaly-free")
    return [Experiment(f"free/{i}", free.features, free.timestamps[s:s + SEGMENT_ROWS].copy(),
                       free.values[s:s + SEGMENT_ROWS].copy(), np.zeros(SEGMENT_ROWS, np.int64))
            for i, s in enumerate(range(0, len(free.labels) - SEGMENT_ROWS + 1, SEGMENT_ROWS))]


def inject(exp: Experiment, sensor: int, kind: str, size: float, long_run_sd: np.ndarray) -> Experiment:
    """The segment with one sensor altered over FAULT_ROWS by `size` long-run standard deviations of that
    sensor (the anomaly-free file's): a step, a ramp up to it, or added noise of that sd."""
    values = exp.values.copy()
    n = FAULT_ROWS.stop - FAULT_ROWS.start
    magnitude = size * long_run_sd[sensor]
    if kind == "step":
        values[FAULT_ROWS, sensor] += magnitude
    elif kind == "ramp":
        values[FAULT_ROWS, sensor] += magnitude * np.linspace(0.0, 1.0, n)
    elif kind == "noise":
        rng = np.random.default_rng(sensor)
        values[FAULT_ROWS, sensor] += magnitude * rng.standard_normal(n)
    else:
        raise ValueError(kind)
    labels = np.zeros_like(exp.labels)
    labels[FAULT_ROWS] = 1
    return Experiment(exp.name, exp.features, exp.timestamps, values, labels, f"{kind}{sensor}x{size:g}")


# ---------------------------------------------------------------------------------------------- noise


def per_file(experiments: Sequence[Experiment], predictions: Sequence[np.ndarray]) -> np.ndarray:
    """(files, 4) confusion counts tp, fp, fn, tn of each file's test rows."""
    rows = []
    for exp, predicted in zip(experiments, predictions):
        c = Confusion.of(predicted[exp.test], exp.labels[exp.test])
        rows.append((c.tp, c.fp, c.fn, c.tn))
    return np.array(rows, np.float64)


def f1_of(counts: np.ndarray) -> np.ndarray:
    """F1 of summed counts along the second-to-last axis: (..., files, 4) -> (...)."""
    total = counts.sum(axis=-2)
    tp, fp, fn = total[..., 0], total[..., 1], total[..., 2]
    return 2 * tp / np.maximum(2 * tp + fp + fn, 1)


def bootstrap_f1(counts: np.ndarray, reference: np.ndarray | None = None, n: int = 2000,
                 seed: int = 0) -> tuple[float, float, float]:
    """(low, high) 90 % interval of the pooled F1 over files resampled with replacement, and the share of
    resamples in which it beats `reference` (the same files' counts of another detector: paired)."""
    draws = np.random.default_rng(seed).integers(0, len(counts), size=(n, len(counts)))
    f1 = f1_of(counts[draws])
    beats = float(np.mean(f1 > f1_of(reference[draws]))) if reference is not None else math.nan
    return float(np.quantile(f1, 0.05)), float(np.quantile(f1, 0.95)), beats


# ----------------------------------------------------------------------------------- the candidate table

DEFAULT_RISK = 3e-5  # TrainConfig.risk: the artifact's threshold


def detector_rows(experiments: Sequence[Experiment], variant: Variant, cache: Path, last: int | None,
                  risks: Sequence[float] = (DEFAULT_RISK, 1e-3)) -> dict[str, list[np.ndarray]]:
    """Per-row predictions of each detector on one model variant whose artifact exports the error of
    the window's last `last` rows: the windows mode at each risk and the worker's incidents (defaults)."""
    outputs = [model_outputs(e, variant, cache) for e in experiments]
    exports = [exported(o, last) for o in outputs]
    found: dict[str, list[np.ndarray]] = {}
    for risk in risks:
        found[f"windows@{risk:g}"] = [
            o.rows(x.score >= tail_threshold(x.score[o.validation], risk), len(e.labels)) == 1
            for e, o, x in zip(experiments, outputs, exports)]
    found["incidents"] = [worker_on(e, o, x).open for e, o, x in zip(experiments, outputs, exports)]
    return found


def leave_files_out(counts: dict[str, np.ndarray], default: str, *, splits: int = 500, seed: int = 0,
                    ) -> tuple[float, float, float, dict[str, int]]:
    """Choose the best configuration on a random half of the files, judge it on the other half.

    Returns the mean held-out F1 of the chosen configuration, the mean held-out F1 of `default`, the
    mean in-sample F1 of the chosen one (its optimism), and how often each configuration was chosen."""
    names = list(counts)
    stacked = np.stack([counts[n] for n in names])  # (C, files, 4)
    n_files = stacked.shape[1]
    rng = np.random.default_rng(seed)
    chosen_out, default_out, chosen_in, picks = [], [], [], {}
    for _ in range(splits):
        order = rng.permutation(n_files)
        fit, held = order[: n_files // 2], order[n_files // 2:]
        in_sample = f1_of(stacked[:, fit])
        best = int(np.argmax(in_sample))
        picks[names[best]] = picks.get(names[best], 0) + 1
        chosen_in.append(in_sample[best])
        chosen_out.append(f1_of(stacked[best, held]))
        default_out.append(f1_of(counts[default][held]))
    return float(np.mean(chosen_out)), float(np.mean(default_out)), float(np.mean(chosen_in)), picks



# ------------------------------------------------------------------- a calibration probe: per-feature freeze


def freeze_probe(exp: Experiment, out: Outputs, export: Exported, *, halflife: float, freeze_z: float,
                 max_frozen: int, open_surprise: float = 3.0, close_surprise: float = 2.0,
                 close_after: int = 5, quiet_training: bool = False) -> WorkerRun:
    """A design probe for the per-series calibration, not the worker: each feature's log error has its own
    exponentially weighted mean and variance (`halflife` windows), started from the model's per-feature
    calibration. A window is judged by the largest feature z (Bonferroni over F), then folded in, except
    that a feature whose z is above `freeze_z` is NOT learned from (frozen) for up to `max_frozen`
    windows in a row: a slow drift stays below the level and is learned, a fault is not, and once it is
    over the feature is judged against the normal before it. `quiet_training`: windows whose rows were
    all training rows never open an incident (they are still learned from)."""
    from worker.adaptive import upper_tail
    from worker.incidents import IncidentSettings, Observation, Phase, step, IncidentState

    reference = export.feature_calibration
    mean = np.array(reference["log_error_median"], np.float64)
    var = np.array(reference["log_error_scale"], np.float64) ** 2
    n_features = len(mean)
    rate = 1.0 - 2.0 ** (-1.0 / halflife)
    frozen = np.zeros(n_features, np.int64)
    per_feature = np.log(np.maximum(export.score[:, None] * n_features * export.feature_scores, LOG_FLOOR))
    settings = IncidentSettings(open_surprise, close_surprise, close_after)
    incident = IncidentState()
    n = len(exp.labels)
    surprise, is_open, openings = np.full(n, np.nan), np.zeros(n, bool), []
    previous = None
    for i, x in enumerate(per_feature):
        row = i + out.window - 1
        y = x if previous is None else np.minimum(x, previous)  # confirmation, as the worker does
        z = (y - mean) / np.sqrt(var + 1e-3)
        p = max(min(1.0, n_features * upper_tail(float(z.max()))), 1e-300)
        s = -math.log10(p)
        if quiet_training and row < TRAIN_ROWS:
            s = min(s, close_surprise - 1e-9)
        seen = Observation(int(exp.timestamps[i]), int(exp.timestamps[row]), float(export.score[i]), s,
                           export.feature_scores[i])
        incident, transition = step(exp.name, incident, seen, settings)
        learn = (z <= freeze_z) | (frozen >= max_frozen)
        frozen = np.where(learn, 0, frozen + 1)
        d = np.where(learn, x - mean, 0.0)
        mean = mean + rate * d
        var = np.where(learn, (1.0 - rate) * (var + rate * d * d), var)
        previous = x
        surprise[row], is_open[row] = s, incident.open
        if transition is not None and transition.phase is Phase.OPENED:
            openings.append(row)
    return WorkerRun(surprise, is_open, openings)


# ---------------------------------------------------------------------------------------------- main


def fmt(c: Confusion, counts: np.ndarray | None = None, reference: np.ndarray | None = None) -> str:
    text = f"{c.f1:6.3f} {100 * c.far:6.1f} {100 * c.mar:6.1f}"
    if counts is not None:
        low, high, beats = bootstrap_f1(counts, reference)
        text += f"  [{low:.3f}, {high:.3f}]"
        if reference is not None:
            text += f"  {beats:4.2f}"
    return text


def study(experiments: Sequence[Experiment], names: Sequence[str], lasts: Sequence[int | None], cache: Path,
          reference: str | None) -> dict[str, np.ndarray]:
    """The candidate table: every variant x exported statistic x detector, per-file confusion counts."""
    table: dict[str, np.ndarray] = {}
    for name in names:
        variant = VARIANTS[name]
        for last in lasts:
            if last is not None and last >= variant.window:
                continue
            for detector, predictions in detector_rows(experiments, variant, cache, last).items():
                table[f"{name}/{'all' if last is None else f'last{last}'}/{detector}"] = per_file(experiments, predictions)
    print(f"{'configuration (variant/exported rows/detector)':48s}    F1   FAR%   MAR%  90% CI over files"
          + ("  P(> reference)" if reference else ""))
    ref = table.get(reference) if reference else None
    for key, counts in table.items():
        total = counts.sum(axis=0).astype(int)
        print(f"{key:48s} {fmt(Confusion(*total), counts, ref)}")
    return table


def statistics_table(experiments: Sequence[Experiment], names: Sequence[str], cache: Path) -> None:
    """Each per-window statistic: the oracle (best global threshold, insight only) and label-free rows."""
    print(f"{'variant':16s} {'statistic':16s} {'oracle':20s} " + " ".join(f"risk {r:g}".ljust(20) for r in RISKS))
    for name in names:
        outputs = [model_outputs(e, VARIANTS[name], cache) for e in experiments]
        for stat_name, stat in STATISTICS.items():
            r = judge_statistic(experiments, outputs, stat)
            print(f"{name:16s} {stat_name:16s} {fmt(r.oracle):20s} " + " ".join(fmt(c).ljust(20) for c in r.label_free.values()))


def other_sensors(names: Sequence[str], cache: Path, size: float) -> None:
    """valve1-shaped files cut from the anomaly-free recording, one sensor altered over the fault rows."""
    segments = anomaly_free_segments()
    long_run_sd = read_experiment(SKAB_DIR / "anomaly-free" / "anomaly-free.csv", "free").values.std(axis=0)
    sensors = [j for j, name in enumerate(segments[0].features) if name != "Voltage"]
    print(f"faults of {size:g} long-run sd over rows {FAULT_ROWS.start}-{FAULT_ROWS.stop} of {len(segments)} "
          "segments; lift = share of fault rows flagged minus the share of the same rows flagged without the fault")
    for name in names:
        variant = VARIANTS[name]
        clean = [model_outputs(e, variant, cache) for e in segments]
        modes = {"windows": lambda e, o: o.rows(o.anomaly_score >= o.meta["threshold"], len(e.labels)) == 1,
                 "incidents": lambda e, o: worker_of(e, o).open}
        for mode, predict in modes.items():
            clean_rows = [predict(e, o) for e, o in zip(segments, clean)]
            base = float(np.mean(np.concatenate([p[FAULT_ROWS] for p in clean_rows])))
            lifts: dict[str, list[float]] = {k: [] for k in INJECTIONS}
            f1s = []
            for kind in INJECTIONS:
                for sensor in sensors:
                    faulty = [inject(e, sensor, kind, size, long_run_sd) for e in segments]
                    c = confusion(faulty, [predict(e, model_outputs(e, variant, cache)) for e in faulty])
                    lifts[kind].append(1.0 - c.mar - base)
                    f1s.append(c.f1)
            print(f"{name:16s} {mode:9s} clean FAR {100 * confusion(segments, clean_rows).far:5.1f}%  mean F1 "
                  f"{np.mean(f1s):.3f}  lift " + " ".join(f"{k} {100 * np.mean(v):5.1f}" for k, v in lifts.items()))


def incident_summary(experiments: Sequence[Experiment], runs: Sequence[WorkerRun]) -> str:
    """F1 / FAR / MAR, where the false alarms fall (before or after the fault), and the incidents' timing."""
    before = after = n_before = n_after = 0
    delays, lags = [], []
    for exp, run in zip(experiments, runs):
        start = int(exp.labels.argmax())
        end = len(exp.labels) - 1 - int(exp.labels[::-1].argmax())
        before, n_before = before + int(run.open[TRAIN_ROWS:start].sum()), n_before + start - TRAIN_ROWS
        after, n_after = after + int(run.open[end + 1:].sum()), n_after + len(exp.labels) - end - 1
        first = np.flatnonzero(run.open[start:end + 1])
        delays.append(int(first[0]) if len(first) else -1)
        closed = np.flatnonzero(~run.open[end + 1:])
        lags.append(int(closed[0]) if len(closed) else len(exp.labels) - end - 1)
    on_training = sum(sum(1 for row in run.openings if row < TRAIN_ROWS) for run in runs)
    found = [d for d in delays if d >= 0]
    return (f"{fmt(confusion(experiments, [r.open for r in runs]))}  FAR before/after the fault "
            f"{100 * before / n_before:4.1f}/{100 * after / n_after:4.1f}  openings {sum(len(r.openings) for r in runs):3d} "
            f"(on training rows {on_training:2d})  ending open {sum(bool(r.open[-1]) for r in runs):2d}/{len(runs)}  "
            f"faults never open {delays.count(-1)}  rows to open: median {np.median(found):.0f} max {max(found)}  "
            f"rows open after: median {np.median(lags):.0f}")


def probes(experiments: Sequence[Experiment], names: Sequence[str], lasts: Sequence[int | None], cache: Path) -> None:
    """The worker's per-series calibration and incident machine, and design probes, on each model."""
    from worker.adaptive import AdaptiveSettings
    from worker.detection import DetectorSettings
    from worker.incidents import IncidentSettings

    settings = {
        "worker defaults": ({}, {}),
        "quiet on training rows": ({}, {"quiet_training": True}),
        "anchored (history_weight 0)": ({"adaptive": AdaptiveSettings(history_weight=0.0)}, {}),
        "baseline frozen while open": ({}, {"freeze_while_open": True}),
        "long_halflife 100": ({"adaptive": AdaptiveSettings(long_halflife=100)}, {}),
        "long_halflife 10000": ({"adaptive": AdaptiveSettings(long_halflife=10000)}, {}),
        "close_after 30": ({"incidents": IncidentSettings(close_after=30)}, {}),
    }
    probe = {
        "probe: EW halflife 200, unprotected": {"halflife": 200, "freeze_z": math.inf, "max_frozen": 0},
        "probe: EW halflife 1000, unprotected": {"halflife": 1000, "freeze_z": math.inf, "max_frozen": 0},
        "probe: halflife 200, frozen while z > 2": {"halflife": 200, "freeze_z": 2.0, "max_frozen": 10**9},
        "probe: halflife 300, frozen while z > 3": {"halflife": 300, "freeze_z": 3.0, "max_frozen": 10**9},
    }
    for name in names:
        outputs = [model_outputs(e, VARIANTS[name], cache) for e in experiments]
        for last in lasts:
            exports = [exported(o, last) for o in outputs]
            label = f"{name}/{'all' if last is None else f'last{last}'}"
            for what, (detector, options) in settings.items():
                runs = [worker_on(e, o, x, DetectorSettings(**detector), **options)
                        for e, o, x in zip(experiments, outputs, exports)]
                print(f"{label:22s} {what:40s} {incident_summary(experiments, runs)}")
            for what, options in probe.items():
                runs = [freeze_probe(e, o, x, **options) for e, o, x in zip(experiments, outputs, exports)]
                print(f"{label:22s} {what:40s} {incident_summary(experiments, runs)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="default,w32-remove", help=f"comma-separated, or all: {', '.join(VARIANTS)}")
    parser.add_argument("--exports", default="all", help="exported rows: all (the window mean) and/or last-k, e.g. all,16,8")
    parser.add_argument("--reference", help="configuration the paired bootstrap compares with, e.g. w32-keep/all/incidents")
    parser.add_argument("--statistics", action="store_true", help="also the per-window statistics with their oracle")
    parser.add_argument("--probes", action="store_true", help="also the calibration / incident design probes")
    parser.add_argument("--other-sensors", type=float, metavar="SIZE", help="the semi-synthetic check, faults of SIZE sd")
    parser.add_argument("--lofo", metavar="DEFAULT", help="leave files out: choose on 8 files, judge on 8, against DEFAULT")
    parser.add_argument("--cache", type=Path, default=Path(".cache/skab"))
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    lasts = [None if x == "all" else int(x) for x in args.exports.split(",")]
    experiments = valve1()
    pca = [pca_predictions(e) for e in experiments]
    print(f"SKAB valve1, {len(experiments)} files, rows >= {TRAIN_ROWS} scored point-wise")
    print(f"{'PCA T²+Q (90 % variance, 99th percentile of the training rows)':48s} "
          f"{fmt(confusion(experiments, pca), per_file(experiments, pca))}")
    ones = [np.ones(len(e.labels), bool) for e in experiments]
    print(f"{'every row anomalous':48s} {fmt(confusion(experiments, ones))}")
    table = study(experiments, names, lasts, args.cache, args.reference)
    if args.lofo:
        chosen, default, in_sample, picks = leave_files_out(table, args.lofo)
        print(f"leave files out: the best of {len(table)} configurations on 8 files scores {in_sample:.3f} there and "
              f"{chosen:.3f} on the other 8; {args.lofo} scores {default:.3f} on them. Chosen most: "
              + ", ".join(f"{k} ({v})" for k, v in sorted(picks.items(), key=lambda kv: -kv[1])[:4]))
    if args.statistics:
        statistics_table(experiments, names, args.cache)
    if args.probes:
        probes(experiments, names, lasts, args.cache)
    if args.other_sensors:
        other_sensors(names, args.cache, args.other_sensors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
