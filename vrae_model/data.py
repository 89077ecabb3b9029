"""Load windows from .npy, long CSV and UCR files; scale them; fingerprint them.

Every problem with the input surfaces as one DataError whose one-line message says what to fix,
because the CLI prints it as is.
"""

import csv
import hashlib
import math
from array import array
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from vrae_model.exceptions import DataError
from vrae_model.windowing import DEFAULT_GAP_FACTOR, GapPolicy, due_ends, due_positions, median_interval_ms

NPY_SUFFIXES = (".npy",)
CSV_SUFFIXES = (".csv",)
UCR_SUFFIXES = (".txt", ".tsv", ".ucr")
RESERVED_COLUMNS = ("series_id", "timestamp", "label", "anomaly_kind")


@dataclass
class WindowSet:
    windows: np.ndarray  # (N, T, F) float32, raw units
    feature_names: list[str]
    series_ids: np.ndarray | None = None  # (N,) str: the series of each window (long CSV)
    end_timestamps: np.ndarray | None = None  # (N,) int64 epoch ms of the event ending each window
    labels: np.ndarray | None = None  # (N,) int: UCR class, or 1 if the window's end event is anomalous
    stride: int = 1  # stride the windows were cut with (1 for files of independent windows)
    interval_ms: int = 0  # the data's usual step between events (long CSV; 0: no timestamps)

    @property
    def window(self) -> int:
        return int(self.windows.shape[1])


@dataclass
class SeriesEvents:
    timestamps: np.ndarray  # (n,) int64 epoch ms, increasing
    values: np.ndarray  # (n, F) float32


@dataclass
class LongData:
    series: dict[str, SeriesEvents]
    feature_names: list[str]
    labels: dict[str, np.ndarray] | None = None  # per series (n,) int 0/1
    kinds: dict[str, np.ndarray] | None = None  # per series (n,) str, "" when normal


@dataclass
class Scaler:
    """Per-feature standardisation fitted on training windows only (so validation stays unseen)."""

    mean: np.ndarray  # (F,) float32
    std: np.ndarray  # (F,) float32
    # (F,) b where a feature's noise grows as level^b in the training data (`noise_power`; None: not recorded).
    # The model does not use it: the worker judges a new event's spike where that noise is level (x^(1-b))
    noise_power: np.ndarray | None = None
    # (F,) >= 1: how much farther a feature's level strays out of sample than in it (`level_wander`; None: not
    # recorded). The model does not use it either: the worker widens its level column's prior by it
    level_wander: np.ndarray | None = None
    # (F,) the grid a feature's values lie on, raw units (a count's 1), or 0 for none found (`resolution`; None: not
    # recorded). The model does not use it: the worker reads no level or error finer than it
    resolution: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float32)
        self.std = np.asarray(self.std, dtype=np.float32)
        if self.noise_power is not None:
            self.noise_power = np.asarray(self.noise_power, dtype=np.float64)
        if self.level_wander is not None:
            self.level_wander = np.asarray(self.level_wander, dtype=np.float64)
        if self.resolution is not None:
            self.resolution = np.asarray(self.resolution, dtype=np.float64)

    @classmethod
    def fit(cls, windows: np.ndarray, scale_floor: float = 0.0) -> "Scaler":
        """Mean and standard deviation per feature; `scale_floor` > 0 floors each feature's scale at that
        fraction of its typical magnitude |median| (a sensor's accuracy is often quoted that way), so a
        slow sensor that barely moved in a short history does not turn its later drift into huge errors."""
        flat = np.asarray(windows, dtype=np.float64).reshape(-1, windows.shape[-1])
        std = flat.std(axis=0)
        if scale_floor > 0:
            std = np.maximum(std, scale_floor * np.abs(np.median(flat, axis=0)))
        # A constant feature carries no information; dividing by ~0 would turn float noise into alarms.
        std = np.where(std < 1e-8, 1.0, std)
        return cls(mean=flat.mean(axis=0), std=std, noise_power=noise_power(windows), resolution=resolution(windows))

    def transform(self, windows: np.ndarray) -> np.ndarray:
        return ((np.asarray(windows, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        out = {"mean": self.mean.astype(float).tolist(), "std": self.std.astype(float).tolist()}
        if self.noise_power is not None:
            out["noise_power"] = self.noise_power.astype(float).tolist()
        if self.level_wander is not None:
            out["level_wander"] = self.level_wander.astype(float).tolist()
        if self.resolution is not None:
            out["resolution"] = self.resolution.astype(float).tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Scaler":
        power, wander, grid = data.get("noise_power"), data.get("level_wander"), data.get("resolution")
        return cls(mean=np.asarray(data["mean"]), std=np.asarray(data["std"]),
                   noise_power=None if power is None else np.asarray(power),
                   level_wander=None if wander is None else np.asarray(wander),
                   resolution=None if grid is None else np.asarray(grid))


# `noise_power`: the level must vary at least this factor across the windows (their 10th to 90th percentile) for a
# slope to be read, in this many bins of windows by level; a slope under NOISE_POWER_LEAST is read as none
NOISE_POWER_RANGE = 2.0
NOISE_POWER_BINS = 8
NOISE_POWER_LEAST = 0.2


def noise_power(windows: np.ndarray) -> np.ndarray:
    """(F,) b in [0, 1] per feature: how a feature's noise grows with its level, noise ~ level^b, from raw windows
    (N, T, F) of consecutive events. Counts are Poisson-like (b 1/2), traffic and rates often multiplicative (b 1),
    a sensor's noise additive (b 0). Each window gives a level (the median) and a noise scale (the median absolute
    step); the slope of ln noise on ln level through the medians of NOISE_POWER_BINS bins of windows by level,
    for a feature that never went negative and whose level spans NOISE_POWER_RANGE; else 0."""
    x = np.asarray(windows, np.float64)
    n, _, f = x.shape
    power = np.zeros(f)
    if n < 4 * NOISE_POWER_BINS or x.shape[1] < 3:
        return power
    level = np.median(x, axis=1)
    noise = np.median(np.abs(np.diff(x, axis=1)), axis=1)
    for j in range(f):
        if x[..., j].min() < 0:
            continue
        ok = (level[:, j] > 0) & (noise[:, j] > 0)
        if ok.sum() < 4 * NOISE_POWER_BINS:
            continue
        lv, nz = np.log(level[ok, j]), np.log(noise[ok, j])
        lo, hi = np.percentile(lv, [10, 90])
        if hi - lo < np.log(NOISE_POWER_RANGE):
            continue
        order = np.argsort(lv)
        bins = np.array_split(order, NOISE_POWER_BINS)
        bx = np.array([np.median(lv[b]) for b in bins])
        by = np.array([np.median(nz[b]) for b in bins])
        slope = float(np.polyfit(bx, by, 1)[0])
        power[j] = 0.0 if slope < NOISE_POWER_LEAST else min(slope, 1.0)
    return power


# `resolution`: a grid is read from at least RESOLUTION_LEAST_STEPS steps that move, at least RESOLUTION_MOVING of
# all steps (a noise-free signal's rare edges are no grid: their smallest is the signal's own move), every one a
# whole multiple of the smallest, within RESOLUTION_TOLERANCE of it (float32 keeps 0.1 or 0.01 at a sensor's values
# well within it; a finer grid that it does not keep is too fine to matter)
RESOLUTION_LEAST_STEPS = 32
RESOLUTION_MOVING = 0.05
RESOLUTION_TOLERANCE = 0.01


def resolution(windows: np.ndarray) -> np.ndarray:
    """(F,) >= 0 per feature: the grid its values lie on in raw windows (N, T, F), the smallest step between
    consecutive events where every step is a whole multiple of it; 0 where there is none.

    Counts move by 1, a sensor's reading by its last digit. Where that step is as large as the noise (errors or
    retries per interval, mostly 0), what lies under it is no information: a window of zeros is reconstructed
    almost exactly, far under the model's usual error, and the median of 8 counts flips from 0 to 1 when 5 intervals
    of 8 see one, a move of the whole spread. The worker reads neither error nor level finer than the grid
    (worker.detection.calibration: `Reference.grid`). Where the grid is far finer than the noise, it changes
    nothing."""
    x = np.asarray(windows, np.float64)
    grid = np.zeros(x.shape[-1])
    if x.ndim != 3 or x.shape[1] < 2:
        return grid
    steps = np.abs(np.diff(x, axis=1)).reshape(-1, x.shape[-1])
    for j in range(x.shape[-1]):
        tiny = 1e-9 * max(float(np.abs(x[..., j]).max()), 1e-12)
        moving = steps[steps[:, j] > tiny, j]
        if len(moving) < max(RESOLUTION_LEAST_STEPS, RESOLUTION_MOVING * len(steps)):
            continue
        smallest = float(moving.min())
        k = moving / smallest
        if np.all(np.abs(k - np.round(k)) <= RESOLUTION_TOLERANCE):
            grid[j] = smallest
    return grid


# `level_wander`: a window's level is the median of its last LEVEL_EVENTS events, as the worker's level column reads
# it; a series is read where its training part spans LEVEL_WANDER_SPAN_MS (each half a day) and each half holds
# LEVEL_WANDER_LEAST windows
LEVEL_EVENTS = 8
LEVEL_WANDER_SPAN_MS = 2 * 86_400_000
LEVEL_WANDER_LEAST = 32


def level_wander(windows: np.ndarray, series_ids: np.ndarray | None, end_timestamps: np.ndarray | None,
                 interval_ms: int) -> np.ndarray | None:
    """(F,) >= 1 per feature: how much farther a series' level strays from the centre of another stretch of its
    training part than from its own, from raw windows (N, T, F) in time order per series, ending at
    `end_timestamps` (None where the windows are no series with timestamps, e.g. UCR files).

    The worker's level column judges a window's level by the series' centre and spread, learnt from what it
    has streamed, the training part first, where its readings are in-sample. A level that wanders like a random
    walk leaves that range and reads 3-4 spreads within days (random-walk streams: most of their false
    incidents); a stationary one (a daily swing, a wander pulled back within hours, a noisy level) stays in it.
    Each series' training part is cut in two halves, a and b: the spread of b about a's centre over a's own,
    times that of a about b's centre over b's own, square-rooted; the median over series, at least 1. Only
    where each half spans a day: a shorter half holds part of a daily cycle, or of any process slower than it,
    and the other half the rest, which reads as a wander (SKAB's 400 s: a pump's temperatures and flow read
    2-13, and its faults show in those levels); such a series, and a model without one, reads 1."""
    if series_ids is None or end_timestamps is None:
        return None
    x = np.asarray(windows, np.float64)
    levels = np.median(x[:, -LEVEL_EVENTS:, :], axis=1)  # (N, F)
    ends = np.asarray(end_timestamps, np.int64)
    before = (x.shape[1] - 1) * max(int(interval_ms), 0)  # a series' first window starts this long before its end
    _, codes = np.unique(np.asarray(series_ids), return_inverse=True)
    order = np.argsort(codes, kind="stable")  # each series' windows together, still in time order
    ratios = []
    for mine in np.split(order, np.flatnonzero(np.diff(codes[order])) + 1):
        own = levels[mine]
        half = len(own) // 2
        span = int(ends[mine].max() - ends[mine].min()) + before
        if half < LEVEL_WANDER_LEAST or span < LEVEL_WANDER_SPAN_MS:
            continue
        a, b = own[:half], own[half:]
        ca, cb = a.mean(axis=0), b.mean(axis=0)
        aa, ba = np.abs(a - ca).mean(axis=0), np.abs(b - ca).mean(axis=0)
        ab, bb = np.abs(a - cb).mean(axis=0), np.abs(b - cb).mean(axis=0)
        varying = (aa > 1e-12) & (bb > 1e-12)
        ratios.append(np.where(varying, np.sqrt(ba * ab / np.where(varying, aa * bb, 1.0)), 1.0))
    if not ratios:
        return np.ones(x.shape[-1])
    return np.maximum(np.median(np.stack(ratios), axis=0), 1.0)


# Above this share of the typical feature's variance in the window levels, `window_level="auto"` removes
# them (see below). Midway between the cases measured: a pump's typical sensor (SKAB valve1, 16 files:
# 0.08-0.24 at T=32, levels needed) and the drifting synthetic fleet's (0.37-0.53, levels in the way).
LEVEL_SHARE_TO_REMOVE = 0.3


def level_share(windows: np.ndarray) -> float:
    """How much of the typical feature's variance is in the windows' levels: Var(window mean) / Var(value)
    per feature, the median over features. White noise gives about 1/T; a signal whose variation lives
    inside each window (ECG beats: ~0.01) stays low; one dominated by slow load, trend and seasons (the
    synthetic machines: 0.8, 0.5 and 0.3, median 0.5) is high. The median, not the mean: a pump with two
    slow temperature sensors among eight noisy ones (SKAB: shares 0.85 and 0.82, the others 0.03-0.25,
    mean 0.32, median 0.08) is a plant whose levels are news, not one whose levels wander."""
    data = np.asarray(windows, dtype=np.float64)
    total = data.reshape(-1, data.shape[-1]).var(axis=0)
    levels = data.mean(axis=1).var(axis=0)
    varying = total > 1e-12  # a constant feature has no level to speak of ...
    # ... but where no feature varies (a limit, a replica count) the windows are nothing but their levels. A
    # model that keeps them learns one constant: after a step to a new level every window reconstructs
    # equally badly, and a glitch on top moves the error by hundredths (flat-steps: 9 of 9 glitches after a
    # step missed); with the levels removed a flat window is flat again at any level, and the detector's
    # level column judges (and relearns) the level.
    return float(np.median(levels[varying] / total[varying])) if varying.any() else 1.0


def choose_window_level(share: float) -> str:
    """`window_level="auto"`: remove the levels when they carry a large share (`level_share`) of the variance.

    The slow part of a signal is the part that drifts, changes with the season or jumps when a sensor is
    recalibrated, and a recurrent model cannot extrapolate it: live levels outside the training range
    make every window reconstruct badly (measured: the static VRAE's AUC-PR on the drifting synthetic
    set was 0.35 with levels kept, 0.80 removed). Where levels stay put and the variation is inside the
    windows (ECG beats), the level still tells normal from abnormal (AUC-PR 0.42-0.59 kept, 0.37-0.46
    removed), so it is kept. Where most sensors are noisy and a few slow ones drift, the levels are what
    faults move (SKAB, a pump whose valve closing drops the flow rate: removed, F1 0.35 by the benchmark's
    protocol; kept, 0.77; benchmarks/SKAB.md), so the typical feature decides (`level_share`)."""
    return "remove" if share > LEVEL_SHARE_TO_REMOVE else "keep"


def fingerprint(windows: np.ndarray) -> str:
    """sha256 of the raw float32 window bytes and their shape: identifies the training data."""
    data = np.ascontiguousarray(windows, dtype=np.float32)
    digest = hashlib.sha256(repr(tuple(data.shape)).encode())
    digest.update(data.tobytes())
    return digest.hexdigest()


def load_windows(
    path: str | Path, *, window: int | None = None, stride: int = 1, features: list[str] | None = None,
    gap_factor: float = DEFAULT_GAP_FACTOR, interval_ms: int | None = None,
) -> WindowSet:
    """Read windows from a file, dispatching on its suffix.

    In a long CSV no window spans an outage, by the worker's rule (`vrae_model.windowing`): a step longer
    than `gap_factor` usual intervals starts a fresh window. Every series starts from `interval_ms` (a
    model's recorded interval, when scoring for it), else from the data's own median step."""
    path = Path(path)
    if stride < 1:
        raise DataError(f"stride must be >= 1, got {stride}: pass a positive --stride")
    if window is not None and window < 2:
        raise DataError(f"window must be >= 2, got {window}: pass a longer --window")
    if not gap_factor >= 0:
        raise DataError(f"gap factor must be >= 0, got {gap_factor}: pass 0 to count events only")
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path")
    suffix = path.suffix.lower()
    if suffix in NPY_SUFFIXES:
        result = _load_npy(path, window, features)
    elif suffix in CSV_SUFFIXES:
        result = _load_long_csv(path, window, stride, features, gap_factor, interval_ms)
    elif suffix in UCR_SUFFIXES:
        result = _load_ucr(path, window, stride, features)
    else:
        raise DataError(f"{path}: unknown file type {suffix!r}; use .npy, .csv (long form) or .txt/.tsv/.ucr (UCR)")
    _check_finite(path, result.windows)
    return result


def _check_finite(path: Path, windows: np.ndarray) -> None:
    if windows.size == 0 or windows.shape[0] == 0:
        raise DataError(f"{path}: no windows; the file holds no usable data")
    bad = ~np.isfinite(windows)
    if bad.any():
        index = int(np.argwhere(bad)[0][0])
        raise DataError(f"{path}: {int(bad.sum())} NaN/inf values (first in window {index}); clean or impute them first")


def _single_feature_names(path: Path, features: list[str] | None, default: str) -> list[str]:
    if features is None:
        return [default]
    if len(features) != 1:
        raise DataError(f"{path}: the file has one unnamed feature, but features {features} were asked for; drop --features")
    return list(features)


def _load_npy(path: Path, window: int | None, features: list[str] | None) -> WindowSet:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc}); save it with numpy.save") from None
    if array.dtype.kind not in "fiu":
        raise DataError(f"{path}: dtype {array.dtype} is not numeric; save a float array")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise DataError(f"{path}: shape {array.shape} is not (N, T) or (N, T, F); reshape it")
    if window is not None and array.shape[1] != window:
        raise DataError(f"{path}: windows have length {array.shape[1]} but --window is {window}; drop --window or fix it")
    n_features = array.shape[2]
    if features is None:
        names = [f"f{i}" for i in range(n_features)] if n_features > 1 else ["value"]
    elif len(features) != n_features:
        raise DataError(f"{path}: {len(features)} feature names given for {n_features} features; give one name per feature")
    else:
        names = list(features)
    return WindowSet(windows=np.ascontiguousarray(array, dtype=np.float32), feature_names=names)


def _parse_float(text: str, path: Path, line: int, column: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{path}:{line}: {column}={text!r} is not a number; fix or remove the row") from None


def _load_ucr(path: Path, window: int | None, stride: int, features: list[str] | None) -> WindowSet:
    """UCR classification files (class label, then the values) or a one-column file of one long series."""
    rows: list[list[float]] = []
    with path.open() as handle:
        for line_number, line in enumerate(handle, start=1):
            tokens = line.replace(",", " ").split()
            if tokens:
                rows.append([_parse_float(token, path, line_number, "value") for token in tokens])
    if not rows:
        raise DataError(f"{path}: empty file; give one series per line (label then values)")
    names = _single_feature_names(path, features, "value")
    if all(len(row) == 1 for row in rows):
        return _windows_of_long_series(path, np.asarray(rows, dtype=np.float32)[:, 0], window, stride, names)
    lengths = {len(row) for row in rows}
    if len(lengths) != 1:
        raise DataError(f"{path}: rows have different lengths {sorted(lengths)[:5]}; pad or resample to one length")
    table = np.asarray(rows, dtype=np.float64)
    classes, series = table[:, 0], table[:, 1:].astype(np.float32)
    if not np.all(np.isfinite(classes)) or not np.all(classes == np.round(classes)):
        raise DataError(f"{path}: the first column must be an integer class label; put the label first")
    if series.shape[1] < 2:
        raise DataError(f"{path}: each row needs a label and at least 2 values")
    labels = classes.astype(np.int64)
    if window is None or window == series.shape[1]:
        return WindowSet(windows=series[:, :, None], feature_names=names, labels=labels)
    if window > series.shape[1]:
        raise DataError(f"{path}: series have {series.shape[1]} values, fewer than --window {window}; use a smaller --window")
    # Longer rows are cut like any series: the due-window rule applied to each row.
    positions = due_positions(series.shape[1], window, stride)
    views = np.lib.stride_tricks.sliding_window_view(series, window, axis=1)[:, positions - (window - 1)]
    windows = views.reshape(-1, window)[:, :, None]
    return WindowSet(
        windows=np.ascontiguousarray(windows), feature_names=names, labels=np.repeat(labels, len(positions)), stride=stride
    )


def _windows_of_long_series(path: Path, values: np.ndarray, window: int | None, stride: int, names: list[str]) -> WindowSet:
    if window is None:
        raise DataError(f"{path}: one long series needs a window length; pass --window")
    if values.shape[0] < window:
        raise DataError(f"{path}: the series has {values.shape[0]} values, fewer than --window {window}; use a smaller --window")
    positions = due_positions(values.shape[0], window, stride)
    windows = np.lib.stride_tricks.sliding_window_view(values, window)[positions - (window - 1)]
    return WindowSet(windows=np.ascontiguousarray(windows[:, :, None]), feature_names=names, stride=stride)


def _parse_timestamp(text: str, path: Path, line: int) -> int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DataError(f"{path}:{line}: timestamp {text!r} is neither epoch ms nor ISO-8601; fix the row") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return int(math.floor(stamp.timestamp() * 1000))


def _parse_label(text: str, path: Path, line: int) -> int:
    text = text.strip()
    if text in ("", "0", "0.0", "false", "False"):
        return 0
    if text in ("1", "1.0", "true", "True"):
        return 1
    raise DataError(f"{path}:{line}: label {text!r} is not 0/1; fix the row")


@dataclass
class _Columns:
    """One series' rows as they are read, column by column in typed arrays: about 40 bytes an event
    for three features, where a tuple with a list per row took about 260 (a 72-hour export of a
    thousand series at one event a minute is 4.3 million rows)."""

    timestamps: array = field(default_factory=lambda: array("q"))
    values: array = field(default_factory=lambda: array("d"))  # row after row, F per event
    labels: array = field(default_factory=lambda: array("b"))
    kinds: list[str] = field(default_factory=list)


def read_long_csv(path: str | Path, features: list[str] | None = None) -> LongData:
    """Read `series_id,timestamp,<features...>[,label][,anomaly_kind]`, grouped by series, time-sorted.

    A repeated (series_id, timestamp) keeps its first row, like a replayed event in the stream. Without a
    series_id column the file is one series named after it (its stem): an export of a single metric is
    usually `timestamp,value`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path")
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        if not header:
            raise DataError(f"{path}: empty file; write a header series_id,timestamp,<features...>")
        if "timestamp" not in header:
            raise DataError(f"{path}: missing column timestamp; the header must be series_id,timestamp,<features...> "
                            "(or timestamp,<features...> for one series)")
        available = [name for name in header if name not in RESERVED_COLUMNS]
        if features is None:
            feature_names = available
        else:
            unknown = [name for name in features if name not in available]
            if unknown:
                raise DataError(f"{path}: unknown feature column(s) {', '.join(unknown)}; available: {', '.join(available) or 'none'}")
            feature_names = list(features)
        if not feature_names:
            raise DataError(f"{path}: no feature columns; add at least one numeric column after timestamp")
        sid_col, ts_col = header.index("series_id") if "series_id" in header else None, header.index("timestamp")
        feature_cols = [header.index(name) for name in feature_names]
        label_col = header.index("label") if "label" in header else None
        kind_col = header.index("anomaly_kind") if "anomaly_kind" in header else None
        columns: dict[str, _Columns] = {}
        for line_number, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{line_number}: {len(row)} fields, expected {len(header)}; fix the row")
            timestamp = _parse_timestamp(row[ts_col], path, line_number)
            values = [_parse_float(row[c], path, line_number, header[c]) for c in feature_cols]
            sid = row[sid_col].strip() if sid_col is not None else path.stem
            into = columns.get(sid)
            if into is None:
                into = columns[sid] = _Columns()
            into.timestamps.append(timestamp)
            into.values.extend(values)
            if label_col is not None:
                into.labels.append(_parse_label(row[label_col], path, line_number))
            if kind_col is not None:
                into.kinds.append(row[kind_col].strip())
    if not columns:
        raise DataError(f"{path}: no data rows; the file has only a header")
    series: dict[str, SeriesEvents] = {}
    labels: dict[str, np.ndarray] = {}
    kinds: dict[str, np.ndarray] = {}
    for series_id, events in columns.items():
        stamps = np.frombuffer(events.timestamps, dtype=np.int64)
        order = np.argsort(stamps, kind="stable")  # stable: the first of equal timestamps stays first
        keep = np.ones(len(order), dtype=bool)
        keep[1:] = stamps[order[1:]] != stamps[order[:-1]]
        kept = order[keep]
        values = np.frombuffer(events.values, dtype=np.float64).reshape(len(stamps), len(feature_names))
        series[series_id] = SeriesEvents(timestamps=stamps[kept], values=values[kept].astype(np.float32))
        if label_col is not None:
            labels[series_id] = np.frombuffer(events.labels, dtype=np.int8)[kept].astype(np.int64)
        if kind_col is not None:
            kinds[series_id] = np.array(events.kinds, dtype=object)[kept]
    return LongData(
        series=series,
        feature_names=feature_names,
        labels=labels if label_col is not None else None,
        kinds=kinds if kind_col is not None else None,
    )


def _load_long_csv(path: Path, window: int | None, stride: int, features: list[str] | None, gap_factor: float,
                   interval_ms: int | None) -> WindowSet:
    if window is None:
        raise DataError(f"{path}: a long CSV needs a window length; pass --window")
    data = read_long_csv(path, features)
    short = {sid: len(ev.timestamps) for sid, ev in data.series.items() if len(ev.timestamps) < window}
    if short:
        sid, count = next(iter(short.items()))
        raise DataError(
            f"{path}: series {sid!r} has {count} events, fewer than --window {window} "
            f"({len(short)} series too short); use a smaller --window or drop those series"
        )
    median = median_interval_ms(events.timestamps for events in data.series.values())
    policy = GapPolicy(factor=gap_factor, interval_ms=median if interval_ms is None else interval_ms)
    windows, series_ids, end_stamps, labels = [], [], [], []
    for series_id, events in data.series.items():
        positions = due_ends(events.timestamps, window, stride, policy)
        views = np.lib.stride_tricks.sliding_window_view(events.values, window, axis=0)  # (n-T+1, F, T)
        windows.append(views[positions - (window - 1)].transpose(0, 2, 1))
        series_ids.append(np.full(len(positions), series_id, dtype=object))
        end_stamps.append(events.timestamps[positions])
        if data.labels is not None:
            labels.append(data.labels[series_id][positions])
    return WindowSet(
        windows=np.ascontiguousarray(np.concatenate(windows), dtype=np.float32),
        feature_names=data.feature_names,
        series_ids=np.concatenate(series_ids).astype(str),
        end_timestamps=np.concatenate(end_stamps),
        labels=np.concatenate(labels) if labels else None,
        stride=stride,
        interval_ms=median,
    )
