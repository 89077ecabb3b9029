"""Detection quality: the worker as shipped (untuned defaults) against label-free baselines, side by side.

    make bench-quality                      # the headline: fourteen stream types (seeds 0-2) + SKAB valve1,
                                            # ~2 min with the models cached (.cache/streams), 6-10 min the first time
    python benchmarks/quality.py --seed 900-902 --datasets streams   # fresh stream seeds
    python benchmarks/quality.py --datasets ecg,synth --seed 0-2     # the tuned-split sets, paired summary
    python benchmarks/quality.py --quick    # a smoke run: seed 0, five stream types, splits too small to rank

THE HEADLINE is always the untuned worker: the default model preset (`vrae train` defaults) and the
default detection settings, run through the worker's own pipeline in memory (worker.tools.backtest:
parsing, window store, scoring, per-series calibration, incidents). Tuned rows may appear beside it,
never instead of it. Four kinds of data set (`--datasets`, comma-separated):

    streams       the fourteen operations stream types of `vrae synth --kind` (benchmarks/stream_types.py):
                  per stream a VRAE by `vrae train --window 32` defaults on its first 15 %, the whole
                  stream replayed; baselines VRAE static, rolling z-score, PCA T2+Q, each turned into a
                  label-free surprise on the training part and run through the same incident levels (3/2)
    skab          SKAB valve1 by SKAB's protocol (benchmarks/skab.py): F1 / FAR / MAR point-wise,
                  NAB-style event scores beside them; the worker in incidents and in windows mode
    synth, ecg    a drifting synthetic fleet and ECG5000 beats streamed (one model per set, trained
                  here); a TUNING split and a separate TEST split. Baselines (rolling z-score, PCA
                  reconstruction, VRAE static) get their open level tuned on the tuning split (grid over
                  each statistic's own quantiles, maximising NAB); "VRAE worker (defaults)" is the
                  untuned worker, "VRAE worker (levels tuned)" the worker with levels tuned the same way
                  (what `vrae-worker tune-levels` does). "VRAE static + confirmation" is an ablation.
    recalibrated  synth with one sensor per machine recalibrated for good in each streamed split

`--seed`: stream types default to the development seeds 0-2 (`--series` streams a type per seed), the
other sets to 0; any other value draws fresh data and models, to confirm on what nobody tuned on. On
synth/ecg several seeds add a summary of paired per-seed differences with a 95 % Student-t interval.

Metrics (worker.tools.evaluation, which `vrae-worker tune-levels` uses too): a detection is an incident
OPENING; event precision / recall / F1 (an anomaly is detected when an incident opens inside its NAB
window: the labelled span extended by window - 1 events), the NAB score (Lavin & Ahmad 2015: standard
profile A_FP -0.11 and low-FP profile A_FP -0.22; 100 = perfect, 0 = no detections), mean detection
delay in events, false alarms per 10,000 windows; on synth/ecg also AUC-PR of the per-window statistic
and false alarms within a window after one of the generator's unlabelled level changes (a floor no
detector gets under). Results and method: benchmarks/QUALITY.md.
"""

import argparse
import hashlib
import json
import math
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from stream_types import rolling_z_at, worker_settings
from vrae_model.artifact import load_artifact
from vrae_model.data import WindowSet
from vrae_model.synth import SynthSeries, generate
from vrae_model.windowing import due_positions
from worker.scorer import Scorer
from worker.tools.backtest import Backtest, backtest
from worker.tools.evaluation import Stats, anomaly_windows, best_levels, incident_openings, matches, score_detections
from worker.tools.tune_levels import with_levels

ECG_PATH = Path("/work/shared/data/ecg5000/ECG5000_TRAIN.txt")
CLOSE_AFTER = 5
ABLATION = "VRAE static + confirmation (ablation)"
DEFAULTS = "VRAE worker (defaults)"  # the headline: the worker as shipped, nothing tuned
TUNED = "VRAE worker (levels tuned)"  # open / close levels chosen on the tuning split, as tune-levels would


@dataclass
class Series:
    series_id: str
    timestamps: np.ndarray  # (n,) int64 epoch ms
    values: np.ndarray  # (n, F) float32
    labels: np.ndarray  # (n,) int 0/1
    # where an unlabelled level change (a step in every sensor that stays: normal behaviour) starts
    level_changes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    kinds: np.ndarray | None = None  # (n,) str: each labelled event's anomaly kind, where the data says


@dataclass
class DataSet:
    name: str
    features: list[str]
    window: int
    stride: int  # the worker's scoring stride
    train_windows: np.ndarray  # (N, T, F) normal history
    train_stride: int
    tune: list[Series]
    test: list[Series]
    z_window: int


@dataclass
class Scorecard:
    nab: float
    precision: float
    recall: float
    f1: float
    delay: float
    false_alarms_per_10k: float
    auc_pr: float
    false_alarms: int = 0
    false_alarms_at_level_changes: int = 0  # opened within a window after an unlabelled level change
    anomalies_by_kind: dict[str, int] = field(default_factory=dict)  # where the data names the kinds
    missed_by_kind: dict[str, int] = field(default_factory=dict)
    levels: tuple[float, float] = (math.nan, math.nan)
    extra: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- data


def windows_of(series: Sequence[Series], window: int, stride: int) -> np.ndarray:
    parts = [np.stack([s.values[n - window + 1:n + 1] for n in due_positions(len(s.values), window, stride)])
             for s in series]
    return np.concatenate(parts).astype(np.float32)


def synth_data(quick: bool, seed: int = 0) -> DataSet:
    """Drifting sensors: each machine's history trains the model, its later events are streamed.

    The streams carry the slow trends, labelled anomalies and UNLABELLED regime changes (level,
    seasonality, trend) that move normal behaviour. Time split per machine: history | tuning | test.
    """
    history, part = (1200, 1500) if quick else (2000, 2500)
    n_series = 4 if quick else 6
    length = history + 2 * part
    data = generate(n_series=n_series, length=length, anomalies_per_series=length // 600, regime_changes=4,
                    seed=2026 + seed)

    def cut(first: int, stop: int) -> list[Series]:
        def level_changes(s: SynthSeries) -> np.ndarray:
            return np.array([p - first for p, kind in s.regime_changes if kind == "regime_level" and first <= p < stop],
                            np.int64)

        return [Series(s.series_id, s.timestamps[first:stop], s.values[first:stop],
                       s.labels[first:stop].astype(np.int8), level_changes(s), s.kinds[first:stop])
                for s in data.series]

    return DataSet(name="synthetic (drift + regime changes)", features=list(data.feature_names), window=24,
                   stride=1, train_windows=windows_of(cut(0, history), 24, 4), train_stride=4,
                   tune=cut(history, history + part), test=cut(history + part, length), z_window=96)


def recalibrated_data(quick: bool, seed: int = 0) -> DataSet:
    """The drifting machines, and in each streamed split one sensor per machine recalibrated for good.

    At an unlabelled time in the split's first 60 %, one feature's gain around its mean so far changes
    by a factor of 1.3-2 up or down: the same machine, measured louder or quieter from then on. The
    level stays, so window-level removal does not hide it; the model has never seen that amplitude, and
    the faults after it are scaled too. This is the change a frozen calibration floods on or goes deaf
    after, and the one per-series calibration is for. History (and so the model) is the synthetic set's.
    """
    data = synth_data(quick, seed)
    rng = np.random.default_rng([7, seed])

    def recalibrate(split: list[Series]) -> list[Series]:
        changed = []
        for s in split:
            at = int(rng.integers(len(s.values) // 10, 6 * len(s.values) // 10))
            feature = int(rng.integers(s.values.shape[1]))
            gain = math.exp(rng.choice([-1.0, 1.0]) * rng.uniform(math.log(1.3), math.log(2.0)))
            values = s.values.astype(np.float64)
            centre = values[:at, feature].mean()
            values[at:, feature] = centre + gain * (values[at:, feature] - centre)
            changed.append(replace(s, values=values.astype(np.float32)))
        return changed

    return replace(data, name="synthetic + sensor recalibrations", tune=recalibrate(data.tune),
                   test=recalibrate(data.test))


def ecg_data(quick: bool, seed: int = 0) -> DataSet:
    """ECG5000 beats streamed as one series; abnormal beats (class != 1) are the labelled anomalies.

    `seed` draws which beats go to training, tuning and test and where the abnormal ones sit."""
    raw = np.loadtxt(ECG_PATH, dtype=np.float64)
    classes, beats = raw[:, 0].astype(int), raw[:, 1:].astype(np.float32)
    rng = np.random.default_rng(5 + seed)
    normal = beats[rng.permutation(np.flatnonzero(classes == 1))]
    abnormal = beats[rng.permutation(np.flatnonzero(classes != 1))]
    n_train = 140
    per_split = 40 if quick else 76
    n_abnormal = 6 if quick else 12  # about one beat in seven: anomalies stay rare

    def stream(name: str, normal_beats: np.ndarray, abnormal_beats: np.ndarray) -> Series:
        order: list[tuple[np.ndarray, int]] = [(b, 0) for b in normal_beats]
        slots = np.sort(rng.choice(np.arange(2, len(order), 3), size=len(abnormal_beats), replace=False))
        for slot, beat in sorted(zip(slots, abnormal_beats, strict=True), key=lambda x: -x[0]):
            order.insert(int(slot), (beat, 1))
        values = np.concatenate([b for b, _ in order])[:, None]
        labels = np.concatenate([np.full(len(b), label, np.int8) for b, label in order])
        timestamps = 1_767_225_600_000 + 8 * np.arange(len(values), dtype=np.int64)  # 125 Hz
        return Series(name, timestamps, values, labels)

    train = stream("train", normal[:n_train], abnormal[:0])
    tune = stream("ecg", normal[n_train:n_train + per_split], abnormal[:n_abnormal])
    test = stream("ecg", normal[n_train + per_split:n_train + 2 * per_split], abnormal[n_abnormal:2 * n_abnormal])
    return DataSet(name="ECG5000 (beats streamed)", features=["ecg"], window=140, stride=5,
                   train_windows=windows_of([train], 140, 10), train_stride=10, tune=[tune], test=[test],
                   z_window=280)


# ------------------------------------------------------------------------------------------- training


def train_vrae(data: DataSet, out: Path, quick: bool, seed: int = 0, models: Path | None = None) -> Path:
    """Train the harness's VRAE, or reuse the one `models` holds for exactly these inputs.

    The cache key covers everything training sees (windows, features, settings, seed), so a cached
    model is the one this run would train; it lets work on the detection layer skip retraining."""
    from vrae_model.training import train

    windows = WindowSet(data.train_windows, data.features, series_ids=np.zeros(len(data.train_windows), str),
                        stride=data.train_stride)
    # The default preset's architecture with a lighter KL weight: sharper reconstructions, and 30 epochs
    # reach PCA's training error on these windows (measured; beta=1 stays ~5x worse in this budget).
    overrides = {"epochs": 15 if quick else 30, "patience": 4, "batch_size": 32 if quick else 64, "beta": 0.1,
                 "seed": seed}
    if models is not None:
        key = hashlib.sha256(data.train_windows.tobytes())
        key.update(json.dumps([data.features, data.train_stride, overrides, torch.__version__]).encode())
        cached = models / f"{out.stem}-seed{seed}-{key.hexdigest()[:16]}.pt"
        if cached.exists():
            return cached
        models.mkdir(parents=True, exist_ok=True)
        out = cached
    train(windows, "default", out=out, progress_bar=False, overrides=overrides)
    return out


# ----------------------------------------------------------------------------------------- detectors


def due_of(series: Series, data: DataSet) -> np.ndarray:
    return due_positions(len(series.values), data.window, data.stride)


def zscore_stats(split: Sequence[Series], data: DataSet) -> Stats:
    """max_f |x_f - mean_f| / std_f over the previous z_window events, at each due window's last event."""
    dues = {s.series_id: due_of(s, data) for s in split}
    return Stats({s.series_id: rolling_z_at(s.values, dues[s.series_id], data.z_window) for s in split}, dues)


@dataclass
class PCADetector:
    mean: np.ndarray
    std: np.ndarray
    components: np.ndarray  # (k, T*F)
    centre: np.ndarray  # (T*F,)

    @classmethod
    def fit(cls, windows: np.ndarray, explained: float = 0.9) -> "PCADetector":
        mean = windows.mean(axis=(0, 1))
        std = windows.std(axis=(0, 1)) + 1e-8
        flat = ((windows - mean) / std).reshape(len(windows), -1)
        centre = flat.mean(axis=0)
        _, sv, vt = np.linalg.svd(flat - centre, full_matrices=False)
        share = np.cumsum(sv**2) / np.sum(sv**2)
        k = int(np.searchsorted(share, explained) + 1)
        return cls(mean, std, vt[:k], centre)

    def score(self, windows: np.ndarray) -> np.ndarray:
        flat = ((windows - self.mean) / self.std).reshape(len(windows), -1) - self.centre
        recon = flat @ self.components.T @ self.components
        return np.mean((flat - recon) ** 2, axis=1)


def window_stats(split: Sequence[Series], data: DataSet, scorer: Callable[[np.ndarray], np.ndarray]) -> Stats:
    values, dues = {}, {}
    for s in split:
        due = due_of(s, data)
        windows = np.stack([s.values[n - data.window + 1:n + 1] for n in due]).astype(np.float32)
        values[s.series_id] = scorer(windows)
        dues[s.series_id] = due
    return Stats(values, dues)


def confirmed(stats: Stats, data: DataSet) -> Stats:
    """The ablation: each window's statistic capped at its predecessor's, when consecutive windows share
    at least half their events (the worker's confirmation rule; without that overlap, unchanged)."""
    if 2 * data.stride > data.window - 1:
        return stats
    return Stats({sid: np.minimum(values, np.concatenate([values[:1], values[:-1]]))
                  for sid, values in stats.values.items()}, stats.due)


def static_score(scorer: Scorer) -> Callable[[np.ndarray], np.ndarray]:
    """The model's raw score: its static calibration is monotone in it, without float32 saturation at 1."""
    def score(windows: np.ndarray) -> np.ndarray:
        return scorer.score(windows).score.astype(np.float64)
    return score


# ------------------------------------------------------------------------ the worker, in memory


def run_worker(split: Sequence[Series], data: DataSet, scorer: Scorer, levels: tuple[float, float]) -> Backtest:
    """Stream the split through the worker's pipeline (worker.tools.backtest), Kafka and Redis aside."""
    settings, _, gap_factor = worker_settings()
    return backtest(split, scorer, data.stride, with_levels(settings, levels), gap_factor=gap_factor)


# ------------------------------------------------------------------------------------------ scoring


def scorecard(split: Sequence[Series], openings: dict[str, list[int]], stats: Stats, window: int) -> Scorecard:
    """The event metrics of worker.tools.evaluation, plus AUC-PR of the per-window statistic and how many false
    alarms opened within a window after an unlabelled level change (where no detector can yet tell a
    step that stays from a level-shift fault)."""
    labels = {s.series_id: s.labels for s in split}
    n_windows = sum(len(stats.due[s.series_id]) for s in split)
    events = score_detections(labels, openings, window, n_windows)
    at_changes = 0
    anomalies: Counter[str] = Counter()
    missed: Counter[str] = Counter()
    for s in split:
        areas = anomaly_windows(s.labels, window)
        hit = [False] * len(areas)
        for d, k in matches(areas, openings.get(s.series_id, [])):
            if k >= 0:
                hit[k] = True
            else:
                at_changes += any(0 <= d - p < window for p in s.level_changes.tolist())
        if s.kinds is not None:
            for (first, _), detected in zip(areas, hit, strict=True):
                anomalies[str(s.kinds[first])] += 1
                missed[str(s.kinds[first])] += not detected
    positive = [labelled_windows(s, stats.due[s.series_id], window) for s in split]
    values = [stats.values[s.series_id] for s in split]
    return Scorecard(nab=events.nab, precision=events.precision, recall=events.recall, f1=events.f1,
                     delay=events.delay, false_alarms_per_10k=events.false_alarms_per_10k,
                     auc_pr=auc_pr(np.concatenate(positive), np.concatenate(values)),
                     false_alarms=events.false_alarms, false_alarms_at_level_changes=at_changes,
                     anomalies_by_kind=dict(sorted(anomalies.items())), missed_by_kind=dict(sorted(missed.items())))


def labelled_windows(series: Series, due: np.ndarray, window: int) -> np.ndarray:
    """Which of the windows ending at `due` hold a labelled event (AUC-PR's positives)."""
    return np.array([series.labels[max(n - window + 1, 0):n + 1].any() for n in due], bool)


def auc_pr(labels: np.ndarray, values: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    finite = np.nan_to_num(values.astype(np.float64), nan=np.finfo(np.float64).max, posinf=np.finfo(np.float64).max)
    return float(average_precision_score(labels, finite)) if labels.any() else math.nan


def tune(split: Sequence[Series], stats: Stats, window: int) -> tuple[float, float]:
    """The levels that maximise the NAB score on the TUNING split."""
    labels = {s.series_id: s.labels for s in split}
    return best_levels(labels, stats, window, CLOSE_AFTER, objective=lambda score: score.nab)[0]


# ------------------------------------------------------------------------------------------ the run


def evaluate(data: DataSet, workdir: Path, quick: bool, log: Callable[[str], None],
             seed: int = 0, models: Path | None = None) -> dict[str, Scorecard]:
    started = time.perf_counter()
    artifact = train_vrae(data, workdir / f"{data.name.split()[0].lower()}.pt", quick, seed, models)
    log(f"  VRAE ready (trained on {len(data.train_windows)} history windows, or reused) in "
        f"{time.perf_counter() - started:.0f} s")
    scorer = Scorer(load_artifact(artifact))
    pca = PCADetector.fit(data.train_windows)
    baselines: dict[str, Callable[[Sequence[Series]], Stats]] = {
        "rolling z-score": lambda split: zscore_stats(split, data),
        "PCA reconstruction": lambda split: window_stats(split, data, pca.score),
        "VRAE static": lambda split: window_stats(split, data, static_score(scorer)),
        ABLATION: lambda split: confirmed(window_stats(split, data, static_score(scorer)), data),
    }
    cards: dict[str, Scorecard] = {}
    for name, stats_of in baselines.items():
        tuned = tune(data.tune, stats_of(data.tune), data.window)
        test_stats = stats_of(data.test)
        card = scorecard(data.test, incident_openings(test_stats, tuned, CLOSE_AFTER), test_stats, data.window)
        card.levels = tuned
        cards[name] = card
    tuning_run = run_worker(data.tune, data, scorer, (3.0, 2.0))
    tuned = tune(data.tune, tuning_run.surprise, data.window)
    for name, levels in ((DEFAULTS, (3.0, 2.0)), (TUNED, tuned)):
        run = run_worker(data.test, data, scorer, levels)
        card = scorecard(data.test, run.openings, run.surprise, data.window)
        card.levels = levels
        card.extra = {"windows_per_s": run.windows / run.seconds}
        cards[name] = card
    log(f"  evaluated in {time.perf_counter() - started:.0f} s")
    return cards


def table(data: DataSet, cards: dict[str, Scorecard]) -> str:
    n_anomalies = sum(len(anomaly_windows(s.labels, data.window)) for s in data.test)
    n_events = sum(len(s.labels) for s in data.test)
    n_changes = sum(len(s.level_changes) for s in data.test)
    changes = f"{n_changes} unlabelled level changes, " if n_changes else ""
    lines = [(f"### {data.name}: test split, {len(data.test)} series, {n_events} events, {n_anomalies} anomalies, "
             f"{changes}window {data.window}, stride {data.stride}"),
             "",
             ("| detector | NAB | F1 | precision | recall | delay (events) | false alarms / 10k windows "
             "| false alarms (at level changes) | AUC-PR | open / close level |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, c in cards.items():
        lines.append(f"| {name} | {c.nab:.1f} | {c.f1:.2f} | {c.precision:.2f} | {c.recall:.2f} | {c.delay:.1f} "
                     f"| {c.false_alarms_per_10k:.1f} | {c.false_alarms} ({c.false_alarms_at_level_changes}) "
                     f"| {c.auc_pr:.3f} | {c.levels[0]:.3g} / {c.levels[1]:.3g} |")
    best = {name: c.nab for name, c in cards.items() if name not in WORKER_ROWS and name != ABLATION}
    worker = cards[DEFAULTS]
    ratios = ", ".join(f"{name} {worker.nab - nab:+.1f}" for name, nab in best.items())
    lines += ["", f"NAB of the untuned worker minus each tuned baseline's: {ratios}",
              (f"worker throughput in this harness: {worker.extra['windows_per_s']:.0f} windows/s "
              f"(parse + windows + score + detect, one thread)")]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ several seeds


BUILDERS: dict[str, Callable[[bool, int], DataSet]] = {"synth": synth_data, "ecg": ecg_data,
                                                        "recalibrated": recalibrated_data}
WORKER_ROWS = (DEFAULTS, TUNED)


@dataclass
class SeedRun:
    seed: int
    names: dict[str, str]  # data set key -> its display name
    cards: dict[str, dict[str, Scorecard]]  # data set key -> detector -> scorecard
    tables: dict[str, str]
    seconds: float


def run_seed(seed: int, keys: Sequence[str], quick: bool, models: Path | None, verbose: bool) -> SeedRun:
    """Every data set for one seed; top level so a process pool can run seeds side by side."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    log = (lambda line: print(line, flush=True)) if verbose else (lambda line: None)
    run = SeedRun(seed, {}, {}, {}, 0.0)
    with tempfile.TemporaryDirectory(prefix="vrae-quality-") as scratch:
        # Without --models, the scratch folder caches: the synthetic sets share their history, so
        # they share one trained model within the run.
        cache = models if models is not None else Path(scratch) / "models"
        for key in keys:
            data = BUILDERS[key](quick, seed)
            log(f"{data.name}, seed {seed}:")
            run.names[key] = data.name
            run.cards[key] = evaluate(data, Path(scratch), quick, log, seed, cache)
            run.tables[key] = table(data, run.cards[key])
    run.seconds = time.perf_counter() - started
    return run


def paired_interval(differences: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean of per-seed differences (paired: both
    detectors saw the same data and model on each seed, so seed-to-seed swings cancel)."""
    values = np.asarray(differences, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2.0, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def summary(name: str, per_seed: dict[int, dict[str, Scorecard]]) -> str:
    """Each detector's NAB and F1 over the seeds, then each worker row against every other row, paired
    by seed: the mean difference with its 95 % interval and on how many seeds it is ahead on both."""
    seeds = sorted(per_seed)
    detectors = list(per_seed[seeds[0]])
    lines = [f"### {name}: {len(seeds)} seeds ({', '.join(map(str, seeds))}), test split",
             "",
             "| detector | NAB mean | NAB min-max | F1 mean | F1 min-max | false alarms (at level changes), all seeds |",
             "|---|---:|---:|---:|---:|---:|"]
    for detector in detectors:
        nab = [per_seed[s][detector].nab for s in seeds]
        f1 = [per_seed[s][detector].f1 for s in seeds]
        false_alarms = sum(per_seed[s][detector].false_alarms for s in seeds)
        at_changes = sum(per_seed[s][detector].false_alarms_at_level_changes for s in seeds)
        lines.append(f"| {detector} | {np.mean(nab):.1f} | {min(nab):.1f}-{max(nab):.1f} "
                     f"| {np.mean(f1):.2f} | {min(f1):.2f}-{max(f1):.2f} | {false_alarms} ({at_changes}) |")
    kinds = sorted({kind for s in seeds for kind in per_seed[s][detectors[0]].anomalies_by_kind})
    if kinds:
        totals = [sum(per_seed[s][detectors[0]].anomalies_by_kind.get(kind, 0) for s in seeds) for kind in kinds]
        lines += ["", "Anomalies missed, by kind, all seeds (of " + ", ".join(f"{t} {k}" for k, t in zip(kinds, totals))
                  + "):", "", "| detector | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
        for detector in detectors:
            missed = [sum(per_seed[s][detector].missed_by_kind.get(kind, 0) for s in seeds) for kind in kinds]
            lines.append(f"| {detector} | " + " | ".join(map(str, missed)) + " |")
    lines += ["", ("| worker row | against | NAB difference [95 % CI] | F1 difference [95 % CI] "
                  "| seeds ahead on both |"),
              "|---|---|---:|---:|---:|"]
    for ours in (d for d in WORKER_ROWS if d in detectors):
        for other in (d for d in detectors if d not in WORKER_ROWS):
            nab = paired_interval([per_seed[s][ours].nab - per_seed[s][other].nab for s in seeds])
            f1 = paired_interval([per_seed[s][ours].f1 - per_seed[s][other].f1 for s in seeds])
            ahead = sum(per_seed[s][ours].nab > per_seed[s][other].nab and per_seed[s][ours].f1 > per_seed[s][other].f1
                        for s in seeds)
            lines.append(f"| {ours} | {other} | {nab[0]:+.1f} [{nab[1]:+.1f}, {nab[2]:+.1f}] "
                         f"| {f1[0]:+.2f} [{f1[1]:+.2f}, {f1[2]:+.2f}] | {ahead} of {len(seeds)} |")
    return "\n".join(lines)


def parse_seeds(text: str) -> tuple[int, ...]:
    """"0,1,2", "201-205" or a mix ("0,201-203"), in the order given, each once."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, dash, last = part.partition("-")
        if not (first.isdigit() and (not dash or last.isdigit())):
            raise ValueError(f"not a seed or a range of seeds: {part!r} (e.g. 0,1,2 or 201-205)")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise ValueError(f"empty range of seeds: {part!r}")
        seeds += range(low, high + 1)
    if not seeds:
        raise ValueError("no seeds given (e.g. 0,1,2 or 201-205)")
    return tuple(dict.fromkeys(seeds))


STREAM_SETS = ("streams", "skab")  # judged by benchmarks/stream_types.py and benchmarks/skab.py
DEFAULT_SETS = "streams,skab"
QUICK_KINDS = ("periodic-edges", "counts-bursts", "level-shift", "gaps-irregular", "stuck-sensor")


def run_streams(args: argparse.Namespace, seeds: Sequence[int]) -> dict[str, object]:
    """The stream types: their per-type table, the untuned worker beside every baseline."""
    import stream_types

    from vrae_model.synth import STREAM_KINDS

    kinds = QUICK_KINDS if args.quick else STREAM_KINDS
    started = time.perf_counter()
    result = stream_types.run(seeds, args.series, kinds, args.cache, args.jobs,
                              log=lambda line: print(line, flush=True))
    title = (f"Stream types, seeds {', '.join(map(str, seeds))}, {args.series} stream(s) a type, untuned defaults "
             f"({time.perf_counter() - started:.0f} s)")
    print(f"\n{stream_types.headline(result, title)}\n\n{stream_types.incidents(result)}\n", flush=True)
    return {kind: {name: card.__dict__ for name, card in cards.items()} for kind, cards in result.items()}


def run_skab(args: argparse.Namespace) -> dict[str, object]:
    import skab

    started = time.perf_counter()
    result = skab.run(args.cache, args.jobs, log=lambda line: print(line, flush=True))
    print(f"\n{skab.table(result)}\n({time.perf_counter() - started:.0f} s)\n", flush=True)
    return {name: {"f1": row.confusion.f1, "far": row.confusion.far, "mar": row.confusion.mar,
                   "events": row.events.__dict__} for name, row in result.items()}


def run_splits(args: argparse.Namespace, keys: Sequence[str], seeds: Sequence[int]) -> dict[str, object]:
    """synth / ecg / recalibrated: tuning and test splits, one model per set and seed."""
    jobs = min(args.jobs, len(seeds))
    runs: list[SeedRun] = []
    if jobs == 1:
        for seed in seeds:
            runs.append(run_seed(seed, keys, args.quick, args.models, verbose=True))
            for key in keys:
                print(f"\n{runs[-1].tables[key]}\n", flush=True)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: a forked child inherits torch's thread pools in whatever state they were.
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            pending = [pool.submit(run_seed, seed, keys, args.quick, args.models, False) for seed in seeds]
            for future in pending:  # in seed order, each as soon as it and those before it are done
                runs.append(future.result())
                print(f"seed {runs[-1].seed}: {runs[-1].seconds:.0f} s", flush=True)
                for key in keys:
                    print(f"\n{runs[-1].names[key]}, seed {runs[-1].seed}:\n\n{runs[-1].tables[key]}\n", flush=True)
    if len(runs) > 1:
        for key in keys:
            print(summary(runs[0].names[key], {run.seed: run.cards[key] for run in runs}) + "\n", flush=True)
    results = {str(run.seed): {key: {name: card.__dict__ for name, card in run.cards[key].items()} for key in keys}
               for run in runs}
    return results if len(runs) > 1 else results[str(seeds[0])]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: seed 0, five stream types, smaller splits and shorter training")
    parser.add_argument("--datasets", default=DEFAULT_SETS,
                        help=f"comma-separated: {', '.join(STREAM_SETS + tuple(BUILDERS))} (default {DEFAULT_SETS})")
    parser.add_argument("--seed",
                        help="stream types: default 0-2, the development seeds; synth/ecg: default 0, the "
                             "development arrangement. Any other value draws fresh data (generators, ECG beat "
                             "split and order) and fresh models, to confirm results on arrangements nobody "
                             "looked at while choosing the method. Several seeds on synth/ecg add a summary "
                             "with paired differences across them")
    parser.add_argument("--series", type=int, default=1, help="stream types: streams of each type per seed")
    parser.add_argument("--jobs", type=int, default=2,
                        help="processes side by side: stream models in training, or synth/ecg seeds")
    parser.add_argument("--cache", type=Path, default=Path(".cache/streams"),
                        help="stream types and SKAB: trained models and their outputs, reused")
    parser.add_argument("--models", type=Path,
                        help="synth/ecg: keep trained models here and reuse them when data, settings and seed "
                             "are unchanged")
    parser.add_argument("--json", type=Path, help="also write the scorecards here")
    args = parser.parse_args(argv)
    keys = [key for key in args.datasets.split(",") if key]
    unknown = sorted(set(keys) - set(BUILDERS) - set(STREAM_SETS))
    try:
        if unknown:
            raise ValueError(f"unknown data set(s) {', '.join(unknown)}; use {', '.join(STREAM_SETS + tuple(BUILDERS))}")
        stream_seeds = parse_seeds(args.seed or ("0" if args.quick else "0-2"))
        seeds = parse_seeds(args.seed or "0")
        if args.jobs < 1 or args.series < 1:
            raise ValueError("--jobs and --series must be at least 1")
    except ValueError as error:
        print(f"quality.py: {error}", file=sys.stderr)
        return 2
    results: dict[str, object] = {}
    if "streams" in keys:
        results["streams"] = run_streams(args, stream_seeds)
    if "skab" in keys:
        results["skab"] = run_skab(args)
    splits = [key for key in keys if key in BUILDERS]
    if splits:
        results["splits"] = run_splits(args, splits, seeds)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
