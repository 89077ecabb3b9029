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
    benign: list[tuple[int, int, str]] = field(default_factory=list)  # (start, stop, kind): unlabelled, normal


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


def write_csv(data: "SynthData | StreamData", path: str | Path) -> Path:
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


# ------------------------------------------------------------------------------------- stream types
#
# What operations data looks like, one generator per stream type (`vrae synth --kind ...`). The machines
# above are smooth sensors with Gaussian noise and a regular clock; real operations streams also have
# noise-free periodic signals with sharp edges, flat lines, counts, outages, jittered and repeated
# timestamps. Each type labels the events an operator would want to be paged about and leaves the
# events that must not page unlabelled (`SynthSeries.benign`), decided type by type below.
#
# Conventions, shared by every type:
# - One event every `interval_ms` (default 5 min: a day is 288 events, the default 14 days 4,032) in
#   real time; types with clock trouble or outages change the timestamps, never the real-time signal.
# - Nothing is labelled and no benign event happens in the first `quiet_fraction` (15 %) of a stream
#   plus a window: that part trains the model.
# - A labelled span covers the events the fault changed. A change that stays (a permanent step) is
#   labelled on its first `_ONSET_EVENTS` events: the change is what pages; the new level is normal
#   afterwards, and a detector should close its incident there ("settled into a new normal").
# - Deterministic: (seed, kind, series index) decide everything; `start_ms` only moves the clock.

STREAM_KINDS: tuple[str, ...] = (
    "periodic-edges",
    "sawtooth",
    "flat-steps",
    "counts-bursts",
    "slow-drift",
    "level-shift",
    "gaps-irregular",
    "duplicate-timestamps",
    "stuck-sensor",
    "random-walk",
    "trend",
    "weekly",
    "noisy-spells",
    "sparse-counts",
)
# Labelled anomaly kinds per stream type (placed round-robin, so each shows up).
STREAM_ANOMALIES: dict[str, tuple[str, ...]] = {
    "periodic-edges": ("pulse_higher", "pulse_missing", "spike", "pulse_lower"),
    "sawtooth": ("cleanup_missed", "fast_growth"),
    "flat-steps": ("transient_step", "permanent_step", "glitch"),
    "counts-bursts": ("burst", "dropout"),
    "slow-drift": ("drift",),
    "level-shift": ("level_shift", "permanent_shift"),
    "gaps-irregular": ("level_shift", "spike"),
    "duplicate-timestamps": ("level_shift", "spike"),
    "stuck-sensor": ("stuck", "spike", "drift"),
    "random-walk": ("spike", "level_shift"),
    "trend": ("spike", "level_shift"),
    "weekly": ("drop", "surge", "stuck"),
    "noisy-spells": ("noisy_spell", "spike"),
    "sparse-counts": ("storm",),
}
# Unlabelled events that must not page, per stream type (on top of each type's normal behaviour).
STREAM_BENIGN: dict[str, tuple[str, ...]] = {
    "periodic-edges": (),  # the daily edges themselves
    "sawtooth": (),  # the daily cleanup drop
    "flat-steps": (),
    "counts-bursts": ("natural_burst",),
    "slow-drift": (),
    "level-shift": ("benign_spike",),
    "gaps-irregular": ("gap",),
    "duplicate-timestamps": ("clock_repeat", "clock_step_back", "duplicate_event"),
    "stuck-sensor": (),
    "random-walk": (),  # the wander itself
    "trend": (),  # the growth itself
    "weekly": (),  # the weekends, which the training part may not hold
    "noisy-spells": (),
    "sparse-counts": (),
}
MULTIVARIATE_KINDS: frozenset[str] = frozenset({"stuck-sensor"})
STREAM_INTERVAL_MS = 300_000
STREAM_LENGTH = 4032  # 14 days at 5 min
_ONSET_EVENTS = 24
_STREAM_GAP_EVENTS = 48  # clean events between two labelled spans


@dataclass(frozen=True)
class StreamConfig:
    """One stream type's data set; equal configs give identical data."""

    kind: str
    n_series: int = 4
    length: int = STREAM_LENGTH
    interval_ms: int = STREAM_INTERVAL_MS
    anomalies_per_series: int = 3
    n_features: int = 4  # multivariate types only; the others have one feature, `value`
    clean: bool = False  # no labelled anomalies (benign events stay: they are normal behaviour)
    quiet_fraction: float = 0.15  # no anomaly or benign event here: the part a model trains on
    seed: int = 0
    start_ms: int = DEFAULT_START_MS

    def __post_init__(self) -> None:
        if self.kind not in STREAM_KINDS:
            raise ValueError(f"stream kind must be one of {', '.join(STREAM_KINDS)}; got {self.kind!r}")
        if self.n_series < 1:
            raise ValueError("n_series must be at least 1")
        if self.length < 288:
            raise ValueError("stream types need at least 288 events per series (a day at 5 min)")
        if self.interval_ms < 1:
            raise ValueError("interval_ms must be at least 1")
        if self.anomalies_per_series < 0:
            raise ValueError("anomalies_per_series must be 0 or more")
        if self.n_features < 2 and self.kind in MULTIVARIATE_KINDS:
            raise ValueError(f"{self.kind} is multivariate: n_features must be at least 2")
        if not 0.0 <= self.quiet_fraction < 0.9:
            raise ValueError("quiet_fraction must be within [0, 0.9)")

    @property
    def features(self) -> tuple[str, ...]:
        if self.kind in MULTIVARIATE_KINDS:
            return tuple(f"sensor_{i}" for i in range(self.n_features))
        return ("value",)

    @property
    def day_events(self) -> int:
        return max(int(round(DAY_MS / self.interval_ms)), 1)


@dataclass(frozen=True)
class StreamData:
    feature_names: list[str]
    series: list[SynthSeries]
    config: StreamConfig


def generate_streams(config: StreamConfig | None = None, **overrides: object) -> StreamData:
    """Generate every series of one stream type (fields may also be passed as keyword overrides)."""
    if config is None:
        config = StreamConfig(**overrides)  # type: ignore[arg-type]
    elif overrides:
        config = StreamConfig(**{**config.__dict__, **overrides})  # type: ignore[arg-type]
    series = [_stream_series(config, index) for index in range(config.n_series)]
    return StreamData(feature_names=list(config.features), series=series, config=config)


@dataclass
class _Stream:
    """A stream under construction, in real time: event i happened at start + i * interval."""

    values: np.ndarray  # (n, F) float64
    spans: list[tuple[int, int, str, int]]  # labelled (start, stop, kind, feature)
    benign: list[tuple[int, int, str]]
    timestamps: np.ndarray  # (n,) int64, possibly changed by clock trouble
    decimals: int = 3


def _stream_series(config: StreamConfig, index: int) -> SynthSeries:
    rng = np.random.default_rng([config.seed, STREAM_KINDS.index(config.kind), index, 17])
    n = config.length
    real = config.start_ms + np.arange(n, dtype=np.int64) * config.interval_ms
    stream = _BUILDERS[config.kind](config, rng, real)
    labels = np.zeros(len(stream.values), dtype=np.int8)
    kinds = np.full(len(stream.values), "", dtype="<U16")
    for start, stop, kind, _ in stream.spans:
        labels[start:stop] = 1
        kinds[start:stop] = kind
    names = config.features
    values = np.round(stream.values, stream.decimals).astype(np.float32)
    return SynthSeries(
        series_id=f"{config.kind}-{index:03d}",
        timestamps=stream.timestamps,
        values=values,
        labels=labels,
        kinds=kinds,
        anomalies=[(a, b, kind, names[f] if f >= 0 else "*") for a, b, kind, f in stream.spans],
        benign=list(stream.benign),
    )


def _slots(config: StreamConfig, rng: np.random.Generator, spans: list[int],
           margin_after: int = 0) -> list[int]:
    """Start positions for spans of the given lengths, one per equal segment of the stream after its
    quiet part, each at least `_STREAM_GAP_EVENTS` from the segment's ends (so never overlapping)."""
    first = int(config.quiet_fraction * config.length) + 64
    usable = config.length - first - margin_after
    if not spans:
        return []
    segment = usable // len(spans)
    starts = []
    for j, span in enumerate(spans):
        low = first + j * segment + _STREAM_GAP_EVENTS
        high = first + (j + 1) * segment - _STREAM_GAP_EVENTS - span
        if high < low:
            raise ValueError(f"{config.kind}: {len(spans)} anomalies do not fit in {config.length} events; "
                             "use fewer anomalies or a longer stream")
        starts.append(int(rng.integers(low, high + 1)))
    return starts


def _kinds_for(config: StreamConfig, index_offset: int = 0) -> list[str]:
    if config.clean:
        return []
    kinds = STREAM_ANOMALIES[config.kind]
    return [kinds[(index_offset + j) % len(kinds)] for j in range(config.anomalies_per_series)]


def _day_phase(config: StreamConfig, real: np.ndarray) -> np.ndarray:
    """(n,) time of day in [0, 1) from the real clock (UTC)."""
    return (real % DAY_MS) / DAY_MS


def _periodic_edges(config: StreamConfig, rng: np.random.Generator, real: np.ndarray) -> _Stream:
    """A noise-free daily pulse with sharp edges (a batch job's load, business hours): low, then high
    from `on` to `off` each day. Labelled: one day's pulse higher or lower than usual, missing
    altogether, or a one-event spike. The two daily edges are normal: they must not page."""
    low, high = rng.uniform(10, 30), rng.uniform(50, 90)
    on = rng.uniform(0.25, 0.4)
    off = on + rng.uniform(0.25, 0.4)
    phase = _day_phase(config, real)
    pulse = (phase >= on) & (phase < off)
    values = np.where(pulse, high, low)
    day = config.day_events
    spans: list[tuple[int, int, str, int]] = []
    kinds = _kinds_for(config, index_offset=int(rng.integers(4)))
    lengths = [1 if kind == "spike" else day for kind in kinds]
    for kind, start in zip(kinds, _slots(config, rng, lengths), strict=True):
        if kind == "spike":
            values[start] += rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0) * (high - low)
            spans.append((start, start + 1, kind, 0))
            continue
        days_pulse = np.flatnonzero(pulse[start:start + day]) + start  # that day's pulse (a day from start)
        a, b = int(days_pulse[0]), int(days_pulse[-1]) + 1
        if kind == "pulse_higher":
            values[a:b] = high + rng.uniform(0.3, 0.6) * (high - low)
        elif kind == "pulse_lower":
            values[a:b] = high - rng.uniform(0.35, 0.6) * (high - low)
        else:  # pulse_missing
            values[a:b] = low
        spans.append((a, b, kind, 0))
    return _Stream(values[:, None], sorted(spans), [], real.copy(), decimals=2)


def _sawtooth(config: StreamConfig, rng: np.random.Generator, real: np.ndarray) -> _Stream:
    """Disk usage that a daily cleanup job resets: grows linearly over the day, drops at the cleanup
    time (a sharp daily edge, normal). Labelled: a cleanup that does not run, so usage keeps growing
    past its normal range until the next day's cleanup, and a day whose growth runs 2-3x faster."""
    base, rise = rng.uniform(20, 40), rng.uniform(15, 30)
    cleanup = rng.uniform(0.0, 1.0)
    phase = (_day_phase(config, real) - cleanup) % 1.0  # 0 at each cleanup
    rate = np.full(len(real), rise / config.day_events)
    day = config.day_events
    kinds = _kinds_for(config)
    spans: list[tuple[int, int, str, int]] = []
    resets = np.flatnonzero(np.diff(phase) < 0) + 1  # first event after each cleanup
    skip: set[int] = set()
    for kind, start in zip(kinds, _slots(config, rng, [2 * day] * len(kinds)), strict=True):
        reset = int(resets[np.searchsorted(resets, start)])
        nxt = int(resets[np.searchsorted(resets, reset + 1)])
        if kind == "cleanup_missed":
            skip.add(reset)
        else:
            rate[reset:min(reset + day // 2, len(real))] *= rng.uniform(2.0, 3.0)
        # up to and including the next cleanup, whose drop the fault made larger than usual
        spans.append((reset, nxt + 1, kind, 0))
    values = np.empty(len(real))
    level = base + rise * phase[0]
    for i in range(len(real)):
        if i > 0 and phase[i] < phase[i - 1] and i not in skip:
            level = base
        elif i > 0:
            level += rate[i]
        values[i] = level
    return _Stream(values[:, None], sorted(spans), [], real.copy(), decimals=3)


def _flat_steps(config: StreamConfig, rng: np.random.Generator, real: np.ndarray) -> _Stream:
    """A flat line (a configured limit, a replica count, a queue at rest): constant, no noise.
    Labelled: a step away and back hours later, a step that stays (labelled on its onset), a one-event
    glitch. After a permanent step the new level is normal: an incident should close, saying so."""
    level = float(rng.choice([0.0, 1.0, 4.0, 100.0, 250.0]))
    unit = max(abs(level), 1.0)
    values = np.full(len(real), level)
    kinds = _kinds_for(config)
    lengths = {"transient_step": int(rng.integers(12, 145)), "permanent_step": _ONSET_EVENTS, "glitch": 1}
    spans: list[tuple[int, int, str, int]] = []
    for kind, start in zip(kinds, _slots(config, rng, [lengths[k] for k in kinds]), strict=True):
        step = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.5) * unit
        if kind == "permanent_step":
            values[start:] += step
        else:
            values[start:start + lengths[kind]] += step
        spans.append((start, start + lengths[kind], kind, 0))
    return _Stream(values[:, None], sorted(spans), [], real.copy(), decimals=3)


def _counts_bursts(config: StreamConfig, rng: np.random.Generator, real: np.ndarray) -> _Stream:
    """Requests or messages per interval: Poisson counts around a daily and weekly rhythm, with an
    overdispersed rate (AR(1) in log space) and short natural bursts (x1.5-2 for 1-4 intervals, a few a
    day: unlabelled, normal). Labelled: a burst of 3-6x for 30 min to 3 h, and a dropout to 2-10 % of
    the usual rate for 1-6 h (the producer or the counting pipeline broke)."""
    n = len(real)
    base = rng.uniform(5, 200)
    phase = _day_phase(config, real)
    week = ((real // DAY_MS) % 7 >= 5).astype(np.float64)  # weekends quieter
    rhythm = 1.0 + 0.6 * np.sin(2 * np.pi * (phase - rng.uniform(0, 1))) - 0.25 * week
    log_noise = np.zeros(n)
    eps = rng.standard_normal(n) * 0.12
    for i in range(1, n):
        log_noise[i] = 0.9 * log_noise[i - 1] + eps[i]
    rate = base * np.maximum(rhythm, 0.05) * np.exp(log_noise)
    benign: list[tuple[int, int, str]] = []
    quiet = int(config.quiet_fraction * n) + 64
    # natural bursts everywhere (training data included: they are normal), about 3 a day
    for start in np.flatnonzero(rng.random(n) < 3.0 / config.day_events):
        stop = min(int(start) + int(rng.integers(1, 5)), n)
        rate[start:stop] *= rng.uniform(1.5, 2.0)
        if start >= quiet:
            benign.append((int(start), stop, "natural_burst"))
    kinds = _kinds_for(config)
    lengths = [int(rng.integers(6, 37)) if k == "burst" else int(rng.integers(12, 73)) for k in kinds]
    spans: list[tuple[int, int, str, int]] = []
    for kind, start, span in zip(kinds, _slots(config, rng, lengths), lengths, strict=True):
        rate[start:start + span] *= rng.uniform(3.0, 6.0) if kind == "burst" else rng.uniform(0.02, 0.1)
        spans.append((start, start + span, kind, 0))
    labelled = np.zeros(n, bool)
    for a, b, _, _ in spans:
        labelled[a:b] = True
    benign = [(a, b, k) for a, b, k in benign if not labelled[a:b].any()]
    values = rng.poisson(rate).astype(np.float64)
    return _Stream(values[:, None], spans, benign, real.copy(), decimals=0)


def _ar1(rng: np.random.Generator, n: int, ar: float, sd: float) -> np.ndarray:
    """(n,) an AR(1) process from 0 with innovations of sd `sd`: the wander of a level."""
    wander = np.zeros(n)
    eps = rng.standard_normal(n) * sd
    for i in range(1, n):
        wander[i] = ar * wander[i - 1] + eps[i]
    return wander


def _smooth_daily(config: StreamConfig, rng: np.random.Generator, real: np.ndarray, *, amplitude: float,
                  ar: float, ar_sd: float) -> np.ndarray:
    """(n,) a daily sinusoid plus AR(1) wander: a temperature, an occupancy, a latency."""
    wander = _ar1(rng, len(real), ar, ar_sd)
    return amplitude * np.sin(2 * np.pi * (_day_phase(config, real) - rng.uniform(0, 1))) + wander


def _slow_drift(config: StreamConfig, rng: np.random.Generator, real: np.ndarray) -> _Stream:
    """A machine temperature: a daily swing plus smooth wander and sensor noise. Labelled: a slow drift
    (12-48 h) away from the normal range, 4-8 normal standard deviations by its end, then a repair
    that snaps it back: the fault an operator wants caught well before it peaks."""
    signal = _smooth_daily(config, rng, real, amplitude=1.0, ar=0.98, ar_sd=0.1)
    signal += 0.15 * rng.standard_normal(len(real))
    spread = float(np.std(signal))
    kinds = _kinds_for(config)
    lengths = [int(rng.integers(config.day_events // 2, 2 * config.day_events + 1)) for _ in kinds]
    spans: list[tuple[int, int, str, int]] = []
    for kind, start, span in zip(kinds, _slots(config, rng, lengths), lengths, strict=True):
        size = rng.choice([-1.0, 1.0]) * rng.uniform(4.0, 8.0) * spread
        signal[start:start + span] += np.linspace(0.0, size, span)
        spans.append((start, start + span, kind, 0))
    return _Stream((rng.uniform(40, 80) + rng.uniform(2, 5) * signal)[:, None], spans, [], real.copy(), decimals=3)


def _level_shift(config: StreamConfig, rng: np.random.Generator, real: np.ndarray) -> _Stream:
    """A cloud CPU utilisation: a noisy level with heavy-tailed noise (Student t, 3 degrees of freedom)
    and rare lone spikes (unlabelled: a cron job). Labelled: a level shift of 4-8 noise scales for 2-24 h
    that comes back, and one that stays (labelled on its onset)."""
    n = len(real)
    scale = rng.uniform(0.5, 3.0)
    level = rng.uniform(10, 60)
    values = level + scale * rng.standard_t(3, size=n) * 0.6
    benign: list[tuple[int, int, str]] = []
    quiet = int(config.quiet_fraction * n) + 64
    for start in np.flatnonzero(rng.random(n) < 1.0 / config.day_events):
        values[start] += rng.uniform(4, 8) * scale
        if start >= quiet:
            benign.append((int(start), int(start) + 1, "benign_spike"))
    kinds = _kinds_for(config)
    lengths = [int(rng.integers(24, config.day_events + 1)) if k == "level_shift" else _ONSET_EVENTS for k in kinds]
    spans: list[tuple[int, int, str, int]] = []
    for kind, start, span in zip(kinds, _slots(config, rng, lengths), lengths, strict=True):
        shift = rng.choice([-1.0, 1.0]) * rng.uniform(4.0, 8.0) * scale
        if kind == "permanent_shift":
            values[start:] += shift
        else:
            values[start:start + span] += shift
        spans.append((start, start + span, kind, 0))
    labelled = np.zeros(n, bool)
    for a, b, _, _ in spans:
        labelled[a:b] = True
    benign = [(a, b, k) for a, b, k in benign if not labelled[a:b].any()]
    return _Stream(np.maximum(values, 0.0)[:, None], spans, benign, real.copy(), decimals=2)


def _spikes_and_shifts(config: StreamConfig, rng: np.random.Generator, signal: np.ndarray,
                       spread: float, margin_after: int = 0) -> list[tuple[int, int, str, int]]:
    """Labelled level shifts (3-6 spreads for 1-6 h) and spikes (1-2 events, 5-8 spreads), in place."""
    kinds = _kinds_for(config)
    lengths = [int(rng.integers(12, 73)) if k == "level_shift" else int(rng.integers(1, 3)) for k in kinds]
    spans: list[tuple[int, int, str, int]] = []
    for kind, start, span in zip(kinds, _slots(config, rng, lengths, margin_after), lengths, strict=True):
        size = rng.uniform(3.0, 6.0) if kind == "level_shift" else rng.uniform(5.0, 8.0)
        signal[start:start + span] += rng.choice([-1.0, 1.0]) * size * spread
        spans.append((start, start + span, kind, 0))
    return spans


def _gaps_irregular(config: StreamConfig, rng: np.random.Generator, real: np.ndarray) -> _Stream:
    """A road sensor's occupancy: a daily pattern with noise, sampled at jittered times (each event within
    a quarter interval of its slot, so steps of 0.5-1.5x the nominal interval) and with outages of 10-300
    intervals (the events that fell in them are lost; unlabelled: the data after an outage is normal and
    must not page). Labelled: level shifts and spikes. The clock keeps running through an outage, so the
    daily pattern stays where the clock says it is."""
    n = len(real)
    signal = _smooth_daily(config, rng, real, amplitude=1.0, ar=0.9, ar_sd=0.15)
    signal += 0.2 * rng.standard_normal(n)
    spread = float(np.std(signal))
    spans = _spikes_and_shifts(config, rng, signal, spread)
    timestamps = real + (config.interval_ms * rng.uniform(-0.25, 0.25, size=n)).astype(np.int64)
    timestamps[0] = real[0]
    busy = np.zeros(n, bool)  # labelled, near a label, or in an outage already
    for a, b, _, _ in spans:
        busy[max(a - 64, 0):b + 64] = True
    quiet = int(config.quiet_fraction * n) + 64
    lost = np.zeros(n, bool)
    outages: list[int] = []
    for length in rng.integers(10, 301, size=3).tolist():
        # an outage and the event after it, clear of labels and of other outages
        free = np.convolve(~busy[quiet:n - 64], np.ones(length + 1, int), "valid") == length + 1
        candidates = np.flatnonzero(free) + quiet
        if not len(candidates):
            continue
        at = int(rng.choice(candidates))
        lost[at:at + length] = True
        busy[max(at - 64, 0):at + length + 64] = True
        outages.append(at + length)  # the first event after the outage
    kept = np.cumsum(~lost) - 1  # each event's index once the lost ones are gone
    spans = [(int(kept[a]), int(kept[a]) + (b - a), kind, f) for a, b, kind, f in spans]
    benign = sorted((int(kept[at]), int(kept[at]) + 1, "gap") for at in outages)
    return _Stream((50.0 + 12.0 * signal)[~lost, None], spans, benign, timestamps[~lost], decimals=2)


def _duplicate_timestamps(config: StreamConfig, rng: np.random.Generator, real: np.ndarray) -> _Stream:
    """Web traffic (a daily pattern with noise) stamped by a clock with trouble, all unlabelled: a
    DST-like repeat (the clock goes back an hour, so an hour of timestamps repeats), a small backward
    step (a clock correction of 1-3 intervals), and events sent twice (same timestamp, same values).
    Labelled: level shifts and spikes. A stream stamped like this must judge the same as a clean one."""
    n = len(real)
    signal = _smooth_daily(config, rng, real, amplitude=1.0, ar=0.8, ar_sd=0.1)
    signal += 0.25 * rng.standard_normal(n)
    spans = _spikes_and_shifts(config, rng, signal, float(np.std(signal)))
    labelled = np.zeros(n, bool)
    for a, b, _, _ in spans:
        labelled[max(a - 64, 0):b + 64] = True
    quiet = int(config.quiet_fraction * n) + 64
    free = np.flatnonzero(~labelled[quiet:n - 64]) + quiet
    timestamps = real.copy()
    hour_events = max(int(round(3_600_000 / config.interval_ms)), 1)
    repeat_at, step_at = (int(x) for x in np.sort(rng.choice(free, size=2, replace=False)))
    timestamps[repeat_at:] -= 3_600_000
    timestamps[step_at:] -= int(rng.integers(1, 4)) * config.interval_ms
    benign = [(repeat_at, repeat_at + hour_events, "clock_repeat"), (step_at, step_at + 1, "clock_step_back")]
    values = 200.0 + 40.0 * signal
    twice = np.sort(rng.choice(free, size=5, replace=False))
    counts = np.ones(n, np.int64)
    counts[twice] = 2
    shift = np.concatenate([[0], np.cumsum(counts - 1)])  # events inserted before each original index

    def moved(i: int) -> int:
        return int(i + shift[min(i, n)])

    spans = [(moved(a), moved(b - 1) + 1, kind, f) for a, b, kind, f in spans]
    benign = [(moved(a), moved(b - 1) + 1, kind) for a, b, kind in benign]
    benign += [(moved(int(i)) + 1, moved(int(i)) + 2, "duplicate_event") for i in twice]
    return _Stream(np.repeat(values, counts)[:, None], spans, sorted(benign), np.repeat(timestamps, counts),
                   decimals=2)


def _stuck_sensor(config: StreamConfig, rng: np.random.Generator, real: np.ndarray) -> _Stream:
    """A machine's F sensors driven by one shared load (daily rhythm + wander), each with its own gain,
    offset and noise. Labelled: one sensor stuck at its last value (the noise stops: a flat line in a
    noisy stream), a spike in one sensor, a slow drift of one sensor away from the others."""
    n, f = len(real), config.n_features
    load = _smooth_daily(config, rng, real, amplitude=1.0, ar=0.95, ar_sd=0.1)
    gains = rng.uniform(0.5, 1.5, size=f) * rng.choice([-1.0, 1.0], size=f)
    noise = rng.uniform(0.1, 0.3, size=f)
    signal = load[:, None] * gains + noise * rng.standard_normal((n, f))
    kinds = _kinds_for(config)
    lengths = {"stuck": int(rng.integers(24, 145)), "spike": int(rng.integers(1, 3)),
               "drift": int(rng.integers(72, 289))}
    spans: list[tuple[int, int, str, int]] = []
    for kind, start in zip(kinds, _slots(config, rng, [lengths[k] for k in kinds]), strict=True):
        feature, span = int(rng.integers(f)), lengths[kind]
        spread = float(np.std(signal[:start, feature]))
        if kind == "stuck":
            signal[start:start + span, feature] = signal[start - 1, feature]
        elif kind == "spike":
            signal[start:start + span, feature] += rng.choice([-1.0, 1.0]) * rng.uniform(4.0, 6.0) * spread
        else:
            signal[start:start + span, feature] += rng.choice([-1.0, 1.0]) * np.linspace(0, 3.0, span) * spread
        spans.append((start, start + span, kind, feature))
    values = rng.uniform(10, 100, size=f) + rng.uniform(1, 10, size=f) * signal
    return _Stream(values, sorted(spans), [], real.copy(), decimals=3)


def _random_walk(config: StreamConfig, rng: np.random.Generator, real: np.ndarray) -> _Stream:
    """A queue depth or a latency with no rhythm: a level that wanders (a random walk, slowly pulled back)
    and sensor noise. The wander is normal, several times the noise, and often beyond the training part's
    range. Labelled, in units of the noise: level shifts (3-6 for 1-6 h) and spikes of 1-2 events (5-8)."""
    n = len(real)
    signal = _ar1(rng, n, 0.999, 0.3) + rng.standard_normal(n)
    spans = _spikes_and_shifts(config, rng, signal, 1.0)
    scale = rng.uniform(0.5, 5.0)
    return _Stream((rng.uniform(50, 200) + scale * signal)[:, None], spans, [], real.copy(), decimals=2)


def _trend(config: StreamConfig, rng: np.random.Generator, real: np.ndarray) -> _Stream:
    """A service's traffic that grows: the rate about doubles over the stream (so most of it lies above
    anything the training part saw), with a daily rhythm of +-30 % and noise of 3 %. Labelled, relative to
    the noise: drops or surges of 3-6 for 1-6 h and spikes of 1-2 events of 5-8 (15-24 %)."""
    n = len(real)
    growth = 1.0 + np.arange(n) / n * rng.uniform(0.8, 1.2)
    rhythm = 1.0 + 0.3 * np.sin(2 * np.pi * (_day_phase(config, real) - rng.uniform(0, 1)))
    relative = rng.standard_normal(n)
    spans = _spikes_and_shifts(config, rng, relative, 1.0)
    values = rng.uniform(100, 1000) * growth * rhythm * (1.0 + 0.03 * relative)
    return _Stream(values[:, None], spans, [], real.copy(), decimals=1)


def _weekly(config: StreamConfig, rng: np.random.Generator, real: np.ndarray) -> _Stream:
    """Road traffic or taxi trips: weekdays with a morning and an evening rush hour, weekends quieter with
    one broad midday hump, in a local time zone; noise of 5 % and a slow wander. The training part (two
    days of a 14-day stream) may hold no weekend at all: the first weekends are new to the model, and
    normal. Labelled: a drop to 10-40 % for 1-6 h (a closed road, a feed that lost sensors), a surge of
    x1.5-2.5 for 1-4 h (an event in town), and a feed stuck at its last value for 2-6 h."""
    n = len(real)
    local = real + int(rng.integers(-12, 13)) * 3_600_000
    hour = (local % DAY_MS) / 3_600_000
    weekend = np.isin((local // DAY_MS) % 7, (2, 3))  # the epoch was a Thursday: Saturday and Sunday

    def bump(centre: float, width: float) -> np.ndarray:
        return np.exp(-(((hour - centre) / width) ** 2))

    weekday = 0.15 + 0.85 * bump(8.5, 1.5) + 0.7 * bump(17.5, 2.0) + 0.35 * ((hour > 7) & (hour < 20))
    rhythm = np.where(weekend, 0.15 + 0.55 * bump(14.0, 4.0), weekday)
    values = rng.uniform(100, 2000) * rhythm * np.exp(_ar1(rng, n, 0.995, 0.01)) * (1 + 0.05 * rng.standard_normal(n))
    kinds = _kinds_for(config)
    lengths = [int(rng.integers(12, 73)) if k == "drop" else int(rng.integers(12, 49)) if k == "surge"
               else int(rng.integers(24, 73)) for k in kinds]
    spans: list[tuple[int, int, str, int]] = []
    for kind, start, span in zip(kinds, _slots(config, rng, lengths), lengths, strict=True):
        if kind == "stuck":
            values[start:start + span] = values[start - 1]
        else:
            values[start:start + span] *= rng.uniform(0.1, 0.4) if kind == "drop" else rng.uniform(1.5, 2.5)
        spans.append((start, start + span, kind, 0))
    return _Stream(values[:, None], spans, [], real.copy(), decimals=1)


def _noisy_spells(config: StreamConfig, rng: np.random.Generator, real: np.ndarray) -> _Stream:
    """A latency or a vibration reading: a daily swing, a slow wander and sensor noise. Labelled: a spell
    in which the noise grows 3-6 fold for 1-12 h at the same level (a failing bearing, a congested link,
    a loose contact), then calms, and spikes of 1-2 events (5-8 noise scales). The level never moves in a
    spell: only the spread tells it, and a spell's louder events must not teach the detector that its
    spikes are normal."""
    n = len(real)
    noise = rng.uniform(0.1, 0.3)
    signal = _smooth_daily(config, rng, real, amplitude=1.0, ar=0.98, ar_sd=0.03)
    jitter = rng.standard_normal(n)
    kinds = _kinds_for(config)
    lengths = [int(rng.integers(12, 145)) if k == "noisy_spell" else int(rng.integers(1, 3)) for k in kinds]
    spans: list[tuple[int, int, str, int]] = []
    gain = np.ones(n)
    for kind, start, span in zip(kinds, _slots(config, rng, lengths), lengths, strict=True):
        if kind == "noisy_spell":
            gain[start:start + span] = rng.uniform(3.0, 6.0)
        else:
            jitter[start:start + span] = rng.choice([-1.0, 1.0]) * rng.uniform(5.0, 8.0)
        spans.append((start, start + span, kind, 0))
    values = rng.uniform(20, 200) + rng.uniform(1, 10) * (signal + noise * gain * jitter)
    return _Stream(values[:, None], spans, [], real.copy(), decimals=3)


def _sparse_counts(config: StreamConfig, rng: np.random.Generator, real: np.ndarray) -> _Stream:
    """Errors or retries per interval: mostly 0, a Poisson rate of 0.05-0.5 with a daily rhythm (+-50 %), so a
    window's events are a few small integers. Labelled: an error storm, the rate 10-40 times higher (at least 3
    an interval) for 30 min to 3 h. What the other count type lacks: values that move in steps as large as
    their whole spread, and a median that is 0."""
    base = rng.uniform(0.05, 0.5)
    rhythm = 1.0 + 0.5 * np.sin(2 * np.pi * (_day_phase(config, real) - rng.uniform(0, 1)))
    rate = base * rhythm
    kinds = _kinds_for(config)
    lengths = [int(rng.integers(6, 37)) for _ in kinds]
    spans: list[tuple[int, int, str, int]] = []
    for kind, start, span in zip(kinds, _slots(config, rng, lengths), lengths, strict=True):
        rate[start:start + span] = np.maximum(rate[start:start + span] * rng.uniform(10, 40), 3.0)
        spans.append((start, start + span, kind, 0))
    return _Stream(rng.poisson(rate).astype(np.float64)[:, None], spans, [], real.copy(), decimals=0)


_BUILDERS = {
    "periodic-edges": _periodic_edges,
    "sawtooth": _sawtooth,
    "flat-steps": _flat_steps,
    "counts-bursts": _counts_bursts,
    "slow-drift": _slow_drift,
    "level-shift": _level_shift,
    "gaps-irregular": _gaps_irregular,
    "duplicate-timestamps": _duplicate_timestamps,
    "stuck-sensor": _stuck_sensor,
    "random-walk": _random_walk,
    "trend": _trend,
    "weekly": _weekly,
    "noisy-spells": _noisy_spells,
    "sparse-counts": _sparse_counts,
}
