"""Labelled synthetic multivariate sensor data.

Each series is a small machine: a shared load signal (daily + weekly seasonality) and a fast duty
cycle drive every feature, each feature adds its own noise and a slow trend. Anomalies are injected
into spans and every event inside a span is labelled; optional regime changes alter normal behaviour
permanently WITHOUT a label (a model must learn to live with them, not flag them forever).

The seed picks the fleet (each machine's levels, gains, phases); noise and incidents also depend on
the start time, so a later `start_ms` with the same seed continues the same machines: clean history
for training and labelled live data for testing come from one seed.

Signals are built in "scale units" (about one standard deviation of normal behaviour) and mapped to
physical units at the end, so anomaly magnitudes mean the same thing for every feature.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ANOMALY_KINDS: tuple[str, ...] = (
    "spike",
    "level_shift",
    "drift",
    "frequency_change",
    "stuck",
    "noise_burst",
)
REGIME_KINDS: tuple[str, ...] = ("regime_level", "regime_seasonality", "regime_trend")
DEFAULT_FEATURES: tuple[str, ...] = ("temp", "pressure", "vibration")
DEFAULT_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS

# Spans (in events) per anomaly kind: long enough to matter, short enough to be an incident.
_SPAN_EVENTS: dict[str, tuple[int, int]] = {
    "spike": (1, 3),
    "level_shift": (24, 72),
    "drift": (48, 144),
    "frequency_change": (36, 96),
    "stuck": (24, 96),
    "noise_burst": (16, 48),
}
_GAP_EVENTS = 16  # clean events kept between two anomalies so each one is a separate incident
_MAX_SPAN = max(high for _, high in _SPAN_EVENTS.values())


@dataclass(frozen=True)
class FeatureProfile:
    """Physical units of one feature: value = base + scale * signal_in_scale_units."""

    base: float
    scale: float
    load_gain: float
    cycle_gain: float
    noise_sd: float
    decimals: int


_PROFILES: dict[str, FeatureProfile] = {
    "temp": FeatureProfile(base=21.0, scale=2.0, load_gain=1.0, cycle_gain=0.5, noise_sd=0.15, decimals=3),
    "pressure": FeatureProfile(base=5.0, scale=0.3, load_gain=0.6, cycle_gain=0.8, noise_sd=0.12, decimals=4),
    "vibration": FeatureProfile(base=2.0, scale=0.5, load_gain=0.4, cycle_gain=1.0, noise_sd=0.25, decimals=4),
}
_GENERIC_PROFILE = FeatureProfile(base=0.0, scale=1.0, load_gain=0.7, cycle_gain=0.7, noise_sd=0.2, decimals=4)


@dataclass(frozen=True)
class SynthConfig:
    """Everything that decides the generated data; equal configs give identical data."""

    n_series: int = 10
    length: int = 2000
    features: tuple[str, ...] = DEFAULT_FEATURES
    interval_ms: int = 60_000
    anomaly_rate: float = 0.001  # anomalies started per event: ~5% of events labelled
    anomalies_per_series: int | None = None
    kinds: tuple[str, ...] = ANOMALY_KINDS
    clean: bool = False
    regime_changes: int = 0
    seed: int = 0
    start_ms: int = DEFAULT_START_MS

    def __post_init__(self) -> None:
        if self.n_series < 1:
            raise ValueError("n_series must be at least 1")
        if self.length < 1:
            raise ValueError("length must be at least 1")
        if not self.features:
            raise ValueError("at least one feature is needed")
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"feature names must be unique, got {', '.join(self.features)}")
        if self.interval_ms < 1:
            raise ValueError("interval_ms must be at least 1")
        if not 0.0 <= self.anomaly_rate <= 1.0:
            raise ValueError("anomaly_rate must be between 0 and 1 (anomalies started per event)")
        if self.anomalies_per_series is not None and self.anomalies_per_series < 0:
            raise ValueError("anomalies_per_series must be 0 or more")
        unknown = sorted(set(self.kinds) - set(ANOMALY_KINDS))
        if unknown or not self.kinds:
            raise ValueError(f"anomaly kinds must be among {', '.join(ANOMALY_KINDS)}; got {', '.join(unknown) or 'none'}")
        if self.regime_changes < 0:
            raise ValueError("regime_changes must be 0 or more")


@dataclass
class SynthSeries:
    """One series, event-aligned arrays; `kinds` is '' where the event is normal."""

    series_id: str
    timestamps: np.ndarray  # (n,) int64 epoch ms
    values: np.ndarray  # (n, F) float32, physical units
    labels: np.ndarray  # (n,) int8, 1 inside an anomaly span
    kinds: np.ndarray  # (n,) str
    anomalies: list[tuple[int, int, str, str]] = field(default_factory=list)  # (start, stop, kind, feature or "*")
    regime_changes: list[tuple[int, str]] = field(default_factory=list)  # (position, kind), unlabelled


@dataclass
class SynthData:
    feature_names: list[str]
    series: list[SynthSeries]
    config: SynthConfig


def feature_names_for(count: int) -> tuple[str, ...]:
    """Default names for `count` features: the known sensors first, then feature_3, feature_4, ..."""
    if count < 1:
        raise ValueError("feature count must be at least 1")
    extra = tuple(f"feature_{i}" for i in range(len(DEFAULT_FEATURES), count))
    return (DEFAULT_FEATURES + extra)[:count]


def generate(config: SynthConfig | None = None, **overrides: object) -> SynthData:
    """Generate every series of `config` (fields may also be passed as keyword overrides)."""
    if config is None:
        config = SynthConfig(**overrides)  # type: ignore[arg-type]
    elif overrides:
        config = SynthConfig(**{**config.__dict__, **overrides})  # type: ignore[arg-type]
    series: list[SynthSeries] = []
    kind_offset = 0  # round-robin over kinds across the whole data set, so every kind shows up
    for index in range(config.n_series):
        one = _generate_series(config, index, kind_offset)
        kind_offset += len(one.anomalies)
        series.append(one)
    return SynthData(feature_names=list(config.features), series=series, config=config)


@dataclass(frozen=True)
class _Machine:
    """What makes one series itself; drawn from (seed, series index) only, so the same seed gives the
    same fleet whatever the start time: a later --start continues the same machines with new noise."""

    day_phase: float
    week_phase: float
    cycle_omega: float  # duty-cycle radians per event
    cycle_phase: float
    trend_period_ms: float
    trend_phase: float
    trend_amplitude: np.ndarray  # (F,)
    load_gain: np.ndarray  # (F,)
    cycle_gain: np.ndarray  # (F,)
    noise_sd: np.ndarray  # (F,)
    base: np.ndarray  # (F,) physical units
    scale: np.ndarray  # (F,) physical units per scale unit
    decimals: tuple[int, ...]


def _machine(config: SynthConfig, index: int) -> _Machine:
    rng = np.random.default_rng([config.seed, index])
    profiles = [_PROFILES.get(name, _GENERIC_PROFILE) for name in config.features]
    n_features = len(profiles)
    scale = np.array([p.scale for p in profiles])
    return _Machine(
        day_phase=rng.uniform(0, 2 * np.pi),
        week_phase=rng.uniform(0, 2 * np.pi),
        cycle_omega=2 * np.pi / rng.uniform(16, 32),
        cycle_phase=rng.uniform(0, 2 * np.pi),
        trend_period_ms=rng.uniform(20, 60) * DAY_MS,
        trend_phase=rng.uniform(0, 2 * np.pi),
        trend_amplitude=rng.uniform(0.2, 0.5, size=n_features),
        load_gain=np.array([p.load_gain for p in profiles]) * rng.uniform(0.8, 1.2, size=n_features),
        cycle_gain=np.array([p.cycle_gain for p in profiles]) * rng.uniform(0.8, 1.2, size=n_features),
        noise_sd=np.array([p.noise_sd for p in profiles]) * rng.uniform(0.8, 1.2, size=n_features),
        base=np.array([p.base for p in profiles]) + rng.uniform(-0.5, 0.5, size=n_features) * scale,
        scale=scale,
        decimals=tuple(p.decimals for p in profiles),
    )


def _generate_series(config: SynthConfig, index: int, kind_offset: int) -> SynthSeries:
    machine = _machine(config, index)
    # Separate streams for noise and incidents: the same seed and start with and without anomalies
    # share their normal behaviour exactly, so a labelled span is the only difference.
    noise_rng = np.random.default_rng([config.seed, index, config.start_ms, 1])
    incident_rng = np.random.default_rng([config.seed, index, config.start_ms, 2])
    n, n_features = config.length, len(config.features)
    timestamps = config.start_ms + np.arange(n, dtype=np.int64) * config.interval_ms
    t = timestamps.astype(np.float64)

    anomalies = [] if config.clean else _place_anomalies(config, incident_rng, kind_offset)
    regimes = _place_regime_changes(config, incident_rng)

    # (n,) shared load: daily + weekly seasonality
    load = 0.8 * np.sin(2 * np.pi * t / DAY_MS + machine.day_phase) + 0.35 * np.sin(
        2 * np.pi * t / WEEK_MS + machine.week_phase
    )
    # (n,) duty cycle; its period is in events so every window holds a recognisable shape
    phase = machine.cycle_phase + machine.cycle_omega * (config.start_ms // config.interval_ms + np.arange(n))
    for start, stop, kind, _ in anomalies:
        if kind == "frequency_change":  # runs faster for the span, then back on its usual schedule
            speed_up = incident_rng.uniform(2.5, 4.0)
            phase[start:stop] = phase[start] + speed_up * machine.cycle_omega * np.arange(stop - start)
    cycle = np.sin(phase)
    # (n, F) slow wander: looks like a trend over days, stays bounded over months
    trend = machine.trend_amplitude * np.sin(2 * np.pi * t / machine.trend_period_ms + machine.trend_phase)[:, None]

    load_gains = np.broadcast_to(machine.load_gain, (n, n_features)).copy()  # (n, F): regime changes alter it
    signal = trend + _apply_regime_changes(regimes, load_gains, incident_rng, n)
    signal += load_gains * load[:, None] + machine.cycle_gain * cycle[:, None]

    noise_scale = np.broadcast_to(machine.noise_sd, (n, n_features)).copy()
    for start, stop, kind, feature in anomalies:
        if kind == "noise_burst":
            noise_scale[start:stop, feature] = incident_rng.uniform(0.6, 1.0)
    signal += noise_scale * noise_rng.standard_normal((n, n_features))

    labels = np.zeros(n, dtype=np.int8)
    kinds = np.full(n, "", dtype="<U16")
    described: list[tuple[int, int, str, str]] = []
    for start, stop, kind, feature in anomalies:
        _inject(signal, start, stop, kind, feature, incident_rng)
        labels[start:stop] = 1
        kinds[start:stop] = kind
        described.append((start, stop, kind, "*" if kind == "frequency_change" else config.features[feature]))

    values = machine.base + machine.scale * signal  # (n, F) physical units
    values = np.stack([np.round(values[:, f], d) for f, d in enumerate(machine.decimals)], axis=1)
    return SynthSeries(
        series_id=f"sensor-{index:03d}",
        timestamps=timestamps,
        values=values.astype(np.float32),
        labels=labels,
        kinds=kinds,
        anomalies=described,
        regime_changes=regimes,
    )


def _anomaly_count(config: SynthConfig, rng: np.random.Generator) -> int:
    wanted = (
        config.anomalies_per_series
        if config.anomalies_per_series is not None
        else int(rng.poisson(config.anomaly_rate * config.length))
    )
    room = config.length // (_MAX_SPAN + 2 * _GAP_EVENTS)
    return min(wanted, room)


def _place_anomalies(
    config: SynthConfig, rng: np.random.Generator, kind_offset: int
) -> list[tuple[int, int, str, int]]:
    """(start, stop, kind, feature index): one per equal segment, so spread out and never overlapping."""
    count = _anomaly_count(config, rng)
    if count == 0:
        return []
    segment = config.length // count
    placed = []
    for j in range(count):
        kind = config.kinds[(kind_offset + j) % len(config.kinds)]
        low, high = _SPAN_EVENTS[kind]
        span = int(rng.integers(low, high + 1))
        first = j * segment + _GAP_EVENTS
        last = (j + 1) * segment - _GAP_EVENTS - span
        start = int(rng.integers(first, last + 1))
        placed.append((start, start + span, kind, int(rng.integers(len(config.features)))))
    return placed


def _place_regime_changes(config: SynthConfig, rng: np.random.Generator) -> list[tuple[int, str]]:
    if config.regime_changes == 0 or config.length < 4:
        return []
    # Never in the first quarter: there must be some history of the original behaviour.
    candidates = np.arange(config.length // 4, config.length)
    size = min(config.regime_changes, len(candidates))
    positions = np.sort(rng.choice(candidates, size=size, replace=False))
    return [(int(p), str(rng.choice(REGIME_KINDS))) for p in positions]


def _apply_regime_changes(
    regimes: list[tuple[int, str]], load_gains: np.ndarray, rng: np.random.Generator, n: int
) -> np.ndarray:
    """Permanent normal-behaviour changes from each position on; returns their additive part (n, F)."""
    n_features = load_gains.shape[1]
    offset = np.zeros((n, n_features))
    for position, kind in regimes:
        if kind == "regime_level":
            offset[position:] += rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0, size=n_features)
        elif kind == "regime_seasonality":
            load_gains[position:] *= rng.uniform(0.6, 1.5)
        else:
            total = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0, size=n_features)
            offset[position:] += np.linspace(0.0, 1.0, n - position)[:, None] * total
    return offset


def _inject(signal: np.ndarray, start: int, stop: int, kind: str, feature: int, rng: np.random.Generator) -> None:
    """Apply one anomaly in place (frequency_change and noise_burst were built into the signal)."""
    sign = rng.choice([-1.0, 1.0])
    if kind == "spike":
        signal[start:stop, feature] += sign * rng.uniform(3.0, 5.0)
    elif kind == "level_shift":
        signal[start:stop, feature] += sign * rng.uniform(1.5, 2.5)
    elif kind == "drift":
        signal[start:stop, feature] += sign * np.linspace(0.0, rng.uniform(2.0, 3.5), stop - start)
    elif kind == "stuck":
        signal[start:stop, feature] = signal[start, feature]


def iter_events(data: SynthData) -> Iterator[tuple[str, int, np.ndarray, int, str]]:
    """Events across all series in timestamp order, as a producer would emit them."""
    series_index = np.concatenate([np.full(len(s.timestamps), i) for i, s in enumerate(data.series)])
    positions = np.concatenate([np.arange(len(s.timestamps)) for s in data.series])
    timestamps = np.concatenate([s.timestamps for s in data.series])
    for k in np.lexsort((series_index, timestamps)):
        one = data.series[series_index[k]]
        n = positions[k]
        yield one.series_id, int(one.timestamps[n]), one.values[n], int(one.labels[n]), str(one.kinds[n])


def write_csv(data: SynthData, path: str | Path) -> Path:
    """Write the long CSV `series_id,timestamp,<features...>,label,anomaly_kind`, grouped by series."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    decimals = [_PROFILES.get(name, _GENERIC_PROFILE).decimals for name in data.feature_names]
    with path.open("w", newline="") as out:
        out.write(",".join(["series_id", "timestamp", *data.feature_names, "label", "anomaly_kind"]) + "\n")
        for one in data.series:
            columns = [np.char.mod(f"%.{d}f", one.values[:, f]) for f, d in enumerate(decimals)]
            for row in zip(one.timestamps.astype(str), *columns, one.labels.astype(str), one.kinds, strict=True):
                out.write(f"{one.series_id}," + ",".join(row) + "\n")
    return path
