"""Per-series calibration and incident policy (pure numpy, vectorised over the series of a batch).

Each window of a series is turned into a surprise (-log10 of a tail probability) against THAT series'
own history, and the series' incident opens, stays open or closes. The VRAE's reconstruction error is
the signal, standardised by the model's own per-feature calibration; the window's level is judged beside
it (a model that removes window levels cannot see a level change, one that keeps them sees it slowly,
as the changed part fills its windows), and so is its newest event's spike (a window's mean error
dilutes a lone spike of k noise scales to k²/T). Seven columns
(the point confirmed by the two windows before, a recent and a slow average, how much quieter than usual
the quietest feature is, the jump of either from the series' last hours or from its usual error at this
time of day, the level, the spike or how flat the window went, or the event before the newest as a blip
that came back) are each judged by a
decayed histogram of the series' past values with an exponential tail beyond it, and their tail
probabilities combined (weighted harmonic mean). A window teaches
the history only a quarantine later (and, once the series has learnt, after a longer hold, so a slow
drift does not keep pace with itself), nothing is learnt while an incident is open (but the spike
column, which learns how often spikes come from every window, but not a flat feed's or a louder
stretch's inside an incident), a young series opens nothing while it learns (past the windows that trained
the model, nothing but far out), and an incident closes
when the stream is back ("recovered") or after a day as the new normal ("settled": the columns that tell
it from the old one relearn it; never while a feed is flat). The formulas, the defaults and why each
part is there: docs/detection.md; how they were chosen: benchmarks/STREAM_TYPES.md.

`Batch` holds S series side by side; `step` judges one window per series, so the detector judges all
due windows of a batch round by round (`rounds`) with a few numpy operations per round. Its byte
layout in a store: worker/state/codec.py.
"""

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, fields
from enum import IntEnum
from functools import lru_cache
from typing import NamedTuple

import numpy as np

MIN_ERROR = 1e-12  # as vrae_model.calibration.MIN_ERROR
MIN_PROBABILITY = 1e-300
# the data's grid counts where rounding to it errs at most this many model scales above the model's median error
# (`Reference.grid`)
GRID_MODEL_SCALES = 2.0
LO, HI, STEP = -4.0, 44.0, 0.5
BINS = int(round((HI - LO) / STEP))
EDGES = LO + STEP * np.arange(BINS + 1)
POINT, RECENT, SLOW, QUIET, JUMP, LEVEL, SPIKE, BLIP = range(8)
COLUMNS = 8  # histograms: the blip has its own, and tells through the spike column (`step`)
# each column's weight in the combination: the point and the jump are two views of the window's error now
# and share one column's (combined_probability); the blip is judged as a spike, in the spike column's place
WEIGHTS = np.array([0.5, 1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 0.0])
# the spike column is SPIKE_UNITS x ln(the spike in noise scales): in log units a heavy (power-law) tail of
# spikes is an exponential one, which the tail extrapolates as it is, and bins of 0.5 are 13 % apart
SPIKE_UNITS = 4.0
# ... and a feed gone flat reads there too: ln(the series' noise scale / the window's own), the window's floored at
# FLAT_LEAST_SHARE of the series' (at most ln 100), where the series' noise scale is above FLAT_NOISE_SHARE of
# spike_noise_floor (a constant has no noise to lose)
FLAT_LEAST_SHARE = 0.01
FLAT_NOISE_SHARE = 0.1
# A window whose own noise scale is more than LOUD_NOISE_RATIO times the series' (a louder stretch, not one event)
# teaches the spike column nothing while an incident is open (`_learn`): the scale is frozen there, so each of
# its events reads as a spike
LOUD_NOISE_RATIO = 2.0
# Where a line predicts a window's events better than the events before them do (a ramp), an event's spike is
# its distance from the least-squares line through the 4 events before it, extrapolated one step: these weights
# on those 4, oldest first. On plain noise that line errs by sqrt(2.5) noise scales and the median of 8 by about
# sqrt(1.2): the distance is divided by LINE_SPREAD, so both read in the same units
LINE_WEIGHTS = np.array([-0.5, 0.0, 0.5, 1.0])
LINE_SPREAD = math.sqrt(2.5 / 1.2)
# ... judged on the window's last LINE_CHOICE_EVENTS events before its new ones: a ramp is local (a whole window
# of 32 judged a descent in its last few events by the flat hours before it, and read the descent as a spike)
LINE_CHOICE_EVENTS = 12
# a feature whose noise grows with its level is judged for spikes on a power scale (`spike_units`): its values
# offset by this share of the training mean (a count of 0 has a logarithm), a power under BOX_COX_LOG is the log
STABILISE_OFFSET = 0.01
BOX_COX_LOG = 0.05
MAX_LOG_ERROR = math.log(float(np.finfo(np.float32).max))
# Within the first learning period, past the windows that trained the model, a window opens an incident only this
# many times as surprising (in -log10 p) as the open level: a young history does not know how far a model errs past
# its training part (at one event an hour, models that fit their first days and not the next reached surprise 6.0-6.4
# there: docs/detection.md, Incidents), but a fault far beyond that is no misfit (`step`)
YOUNG_OPEN_FACTOR = 3.0
# A day is cut into slots of 30 minutes (UTC): the daily recurrence rule and the series' usual error at each
# time of day work on them
DAY_MS = 86_400_000
DAY_SLOTS = 48
SLOT_MS = DAY_MS // DAY_SLOTS


class Close(IntEnum):
    """Why an incident closed."""

    NONE = 0
    RECOVERED = 1  # back inside the series' normal (as it was before the incident)
    SETTLED = 2  # open for settle_ms: the process settled into a new normal, and the series relearns it


@dataclass(frozen=True)
class CalibrationSettings:
    """Defaults chosen on the stream-type bench's development seeds (benchmarks/stream_types.py)."""

    error_floor: float = 1e-3  # scaled mean squared error: a window within ~3 % of the training spread
    scale_floor: float = 0.25  # ln units: the model's per-feature robust scale is floored here
    recent_halflife: float = 8.0  # windows
    slow_halflife: float = 64.0  # windows
    quiet_halflife: float = 3.0  # windows: a stuck sensor is found sooner than by the recent column's 8
    context_halflife: float = 32.0  # windows: the jump column's context, the errors of the last few hours
    halflife: float = 2000.0  # windows taught: the memory of the histograms
    prior_weight: float = 300.0  # windows: the model's expectation a young series starts from
    tail_mass: float = 0.002
    tail_count: float = 10.0  # the empirical tail is trusted down to max(tail_mass, tail_count / N)
    tail_floor: float = 0.5  # model scales: the exponential tail beyond the history is never steeper
    level_tail_floor: float = 0.4  # the same for the level column, in units of the series' level spread
    level_events: int = 8  # the level is the median of the window's last this many events
    level_spread_floor: float = 0.2  # scaled units
    level_prior: float = 300.0  # windows: the training data's own centre (0) and spread (1) as a prior
    spike_events: int = 8  # an event's spike is its distance from the median of this many events before it
    stride: int = 1  # the windows' stride: the events new in each window, each judged for its spike
    spike_halflife: float = 64.0  # windows: the memory of the series' noise scale, which spikes are measured in
    spike_noise_floor: float = 0.05  # scaled units: the noise scale is floored here (a noise-free signal)
    spike_tail_floor: float = 0.45  # the spike column's tail is never steeper (SPIKE_UNITS x ln units)
    blip_tail_floor: float = 2.0  # ... nor the blip's, far flatter: a blip tells only far beyond its history
    quarantine: int = 32  # windows before a judged window teaches the history
    hold_slots: int = 16  # past the learning period, every k-th window that left the quarantine then waits
    hold_stride: int = 12  # hold_slots x k windows more and teaches as k of them: k is the windows of one
    hold_slot_ms: int = 3_600_000  # hold slot at the series' cadence, within [1, hold_stride] (`hold_strides`)
    learning_windows: int = 300  # a series opens no incident before this many windows taught ...
    max_learning_windows: int = 1000  # ... or as many as trained the model, up to this (Reference)
    gap_factor: float = 5.0  # a window holding an outage of this many usual intervals is "gapped"
    open_surprise: float = 3.0
    close_surprise: float = 2.0
    close_after: int = 5
    open_after: int = 1  # windows in a row at or above open_surprise that open an incident
    settle_ms: int = 86_400_000  # an incident this long closes as "settled into a new normal"
    skip_daily_recurrences: bool = True  # reaching open_surprise within ~an hour of a day after it did opens nothing
    season_halflife_days: float = 1.0  # the series' usual error at each time of day (the jump column): its memory
    season_days: float = 2.0  # a time of day is judged against its usual error once taught this many days of windows
    season_step: float = 2.0  # model scales: the most one window moves its time of day's usual error
    season_windows: float = 6.0  # ... and its memory (half-life) and the windows it needs before judging: at least this

    def __post_init__(self) -> None:
        if self.close_surprise > self.open_surprise:
            raise ValueError("close_surprise must not exceed open_surprise (hysteresis needs close <= open)")
        if self.close_after < 1 or self.level_events < 1 or self.spike_events < 1 or self.stride < 1:
            raise ValueError("close_after, level_events, spike_events and stride must be at least 1")
        if not 1 <= self.quarantine <= 62 or not 0 <= self.hold_slots <= 62:
            raise ValueError("quarantine must be within [1, 62] windows and hold_slots within [0, 62] (their flags "
                             "are one int64 bit mask each)")
        if self.hold_stride < 1 or self.hold_slot_ms < 1:
            raise ValueError("hold_stride and hold_slot_ms must be at least 1")
        if not (self.error_floor > 0 and self.scale_floor > 0 and self.tail_floor > 0 and self.halflife > 0
                and self.spike_halflife > 0 and self.spike_noise_floor > 0 and self.spike_tail_floor > 0):
            raise ValueError("error_floor, scale_floor, tail_floor, halflife, spike_halflife, spike_noise_floor and "
                             "spike_tail_floor must be positive")
        if not (self.season_halflife_days > 0 and self.season_days >= 0 and self.season_step > 0
                and self.season_windows >= 0):
            raise ValueError("season_halflife_days and season_step must be positive, season_days and season_windows "
                             "not negative")

    @property
    def decay(self) -> float:
        return 2.0 ** (-1.0 / self.halflife)

    @property
    def recent_rate(self) -> float:
        return 1.0 - 2.0 ** (-1.0 / self.recent_halflife)

    @property
    def quiet_rate(self) -> float:
        return 1.0 - 2.0 ** (-1.0 / self.quiet_halflife)

    @property
    def context_rate(self) -> float:
        return 1.0 - 2.0 ** (-1.0 / self.context_halflife)

    @property
    def slow_rate(self) -> float:
        return 1.0 - 2.0 ** (-1.0 / self.slow_halflife)

    @property
    def noise_rate(self) -> float:
        return 1.0 - 2.0 ** (-1.0 / self.spike_halflife)

    @property
    def spike_slots(self) -> int:
        """The spikes a state holds until they teach (`_teach_spikes`)."""
        return 2 * self.hold_stride


@dataclass(frozen=True)
class Reference:
    """What the model's artifact says about normal errors and levels (metadata: feature_calibration,
    scaler, window)."""

    median: np.ndarray  # (F,) ln error medians on held-out windows
    scale: np.ndarray  # (F,) robust scales of the same
    mean: np.ndarray  # (F,) the scaler's
    std: np.ndarray  # (F,)
    window: int
    train_windows: int | np.ndarray = 0  # how many windows trained the model (0: unknown)
    noise_power: np.ndarray | None = None  # (F,) b: noise ~ level^b in the training data (None: not recorded)
    # (F,) >= 1: how much farther the level strays out of sample than in it, in the training data (None: not
    # recorded, read as 1): the level column's prior is that much wider (`prior_state`)
    level_wander: np.ndarray | None = None
    resolution: np.ndarray | None = None  # (F,) raw units: the grid the training data lay on, 0: none (None: not recorded)

    @classmethod
    def from_metadata(cls, metadata: dict) -> "Reference":
        n = len(metadata["features"])
        calibration = metadata.get("feature_calibration") or {}
        median = np.asarray(calibration.get("log_error_median", [math.log(1.0)] * n), np.float64)
        scale = np.asarray(calibration.get("log_error_scale", [1.0] * n), np.float64)
        # the calibration windows are the held-out val_fraction of the training windows
        held_out = float(metadata.get("training_config", {}).get("val_fraction", 0.0) or 0.0)
        n_calibration = int(metadata.get("calibration", {}).get("n", 0))
        train_windows = int(round(n_calibration / held_out)) if held_out > 0 else 0
        scaler = metadata["scaler"]
        power = np.asarray(scaler["noise_power"], np.float64) if scaler.get("noise_power") is not None else None
        wander = np.asarray(scaler["level_wander"], np.float64) if scaler.get("level_wander") is not None else None
        grid = np.asarray(scaler["resolution"], np.float64) if scaler.get("resolution") is not None else None
        return cls(median, scale, np.asarray(scaler["mean"], np.float64), np.asarray(scaler["std"], np.float64),
                   int(metadata["window"]), train_windows, power, wander, grid)

    def learning_windows(self, settings: "CalibrationSettings") -> int | np.ndarray:
        """A series opens nothing before it has streamed as many windows as trained the model (the windows
        a per-series model was trained on are replayed first, and their errors are in-sample), within
        [learning_windows, max_learning_windows]."""
        return np.minimum(np.maximum(self.train_windows, settings.learning_windows), settings.max_learning_windows)

    def grid(self, settings: CalibrationSettings) -> np.ndarray:
        """(F,) `resolution` in the model's scaled units where it limits what the model resolves, 0 elsewhere (and
        where none was recorded). Nothing finer than it is information: an error under the variance of rounding to it
        (grid²/12) nor a level's spread under it (`statistic`, `_level_reading`). Only where that variance lies
        within GRID_MODEL_SCALES of the model's held-out median error: a noise-free signal's only moves are its own
        edges, all one size, and read as a grid (a daily pulse at one event an hour: its full height); the model
        reconstructs it far finer (rounding variance 2.6-8.4 model scales above its median error; counts and
        rounded readings -30 to +0.9), and floored there its error columns saw nothing under a whole edge (hourly
        stream-type bench, periodic-edges, dev / fresh seeds: NAB 84.4 -> 44.1 / 99.5 -> 44.0)."""
        if self.resolution is None:
            return np.zeros(len(self.std))
        grid = self.resolution / self.std
        floor = np.log(np.maximum(settings.error_floor, grid ** 2 / 12.0))
        above = (floor - np.maximum(self.median, math.log(settings.error_floor))) / np.maximum(self.scale,
                                                                                             settings.scale_floor)
        return np.where(above <= GRID_MODEL_SCALES, grid, 0.0)

    @property
    def wander(self) -> tuple[float, ...] | None:
        """`level_wander` as the level column's prior takes it (`prior_state`, cached by it)."""
        return None if self.level_wander is None else tuple(float(w) for w in self.level_wander)


@lru_cache(maxsize=16)
def prior_state(n_features: int, settings: CalibrationSettings,
                wander: tuple[float, ...] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a series expects before it has a history, as a state holds it, read-only: (above (COLUMNS, BINS)
    float32, tail_q, tail_scale (COLUMNS,)). On held-out windows each feature's standardised error is about
    N(0, 1), so v is the max of F of them. The level column, a max of F standardised deviations, is given
    the same shape, each feature's widened by its `wander` (`Reference.level_wander`): the series' centre and
    spread are learnt from the windows it streams, the model's training part first, and the level column's
    readings there are in-sample; a level that wanders like a random walk then strays out of that range
    (random-walk streams read 3-4 spreads within days of it, their false incidents). Its out-of-sample spread,
    measured in the training data, says how far to expect; the prior weighs like the series' first windows and
    fades as the history grows. The spike column: in Gaussian noise an event's distance from the median of 8
    before it is about N(0, 1.1²) noise scales (the median's own error), and the column is the max over F of
    its size."""
    from math import erf, sqrt

    def prior(cdf: np.ndarray) -> np.ndarray:
        mass = np.diff(cdf)
        mass[0] += cdf[0]
        mass[-1] += 1.0 - cdf[-1]
        return settings.prior_weight * mass / mass.sum()

    def normal(spread: float) -> np.ndarray:
        return np.array([0.5 * (1.0 + erf(e / (spread * sqrt(2.0)))) for e in EDGES])

    expected = np.tile(prior(normal(1.0) ** n_features), (COLUMNS, 1))
    if wander is not None:
        expected[LEVEL] = prior(np.prod([normal(w) for w in wander], axis=0))
    # the blip, at most the spike's size, starts from the spike's prior
    expected[SPIKE] = expected[BLIP] = prior(np.array([erf(math.exp(e / SPIKE_UNITS) / (1.1 * sqrt(2.0)))
                                                       for e in EDGES]) ** n_features)
    above = reverse_cumsum(expected).astype(np.float32)
    q, scale = tail_shape(above, settings)
    parts = (above, _stored(q), _stored(scale))
    for part in parts:
        part.setflags(write=False)
    return parts


def reverse_cumsum(hist: np.ndarray) -> np.ndarray:
    """The mass in bins >= j of histograms (..., BINS), in float64."""
    return np.cumsum(np.asarray(hist, np.float64)[..., ::-1], axis=-1)[..., ::-1]


# ----------------------------------------------------------------------------------------- the state


# The state's scalars, in their stored order (worker/state/codec.py); last_end_ms first: a store compares
# those 8 bytes to refuse an older state.
SCALARS = (
    ("last_end_ms", np.int64), ("model_key", np.int64), ("seen", np.int64), ("taught", np.int64),
    ("since_reset", np.int64),
    ("span", np.float64), ("previous", np.float64), ("recent", np.float64), ("slow", np.float64),
    ("level_n", np.float64), ("pending_n", np.int64), ("pending_incident", np.int64),
    ("open", np.int64), ("normal_run", np.int64), ("open_windows", np.int64), ("opened_ms", np.int64),
    ("above_run", np.int64), ("last_anomalous_ms", np.int64), ("peak_end_ms", np.int64),
    ("peak_surprise", np.float64), ("peak_score", np.float64), ("opening_surprise", np.float64),
    ("hold_n", np.int64), ("hold_skip", np.int64), ("hold_incident", np.int64), ("previous2", np.float64),
    ("quiet", np.float64), ("relearn", np.int64), ("lasting", np.int64), ("context", np.float64),
    ("context_quiet", np.float64), ("cross_day", np.int64), ("cross_today", np.int64), ("cross_yesterday", np.int64),
    ("recurring", np.int64), ("cross_peak_today", np.float64), ("cross_peak_yesterday", np.float64),
    ("spike_n", np.int64), ("pending_flat", np.int64), ("pending_loud", np.int64),
    ("cross_columns_today", np.int64), ("cross_columns_yesterday", np.int64),
)


@dataclass
class Batch:
    """S series side by side: every field is an array whose first axis is the series.

    `pending_incident` is a bit mask over the quarantine slots (bit j: slot j was judged while an
    incident was open, or waited in quarantine when one opened)."""

    last_end_ms: np.ndarray  # (S,) end of the last window judged; -1: none yet
    model_key: np.ndarray  # (S,) which model's error scale this history is in
    seen: np.ndarray  # (S,) windows judged outside gaps
    taught: np.ndarray  # (S,) windows taught so far
    since_reset: np.ndarray  # (S,) windows seen since the histograms (re)started
    span: np.ndarray  # (S,) EW ln(window span ms)
    previous: np.ndarray  # (S,) the previous window's v
    recent: np.ndarray  # (S,) EW mean of v, recent_halflife
    slow: np.ndarray  # (S,) EW mean of v, slow_halflife
    level_n: np.ndarray  # (S,) levels taught
    pending_n: np.ndarray  # (S,) quarantine slots filled
    pending_incident: np.ndarray  # (S,) bit mask, see above
    open: np.ndarray  # (S,) 0/1
    normal_run: np.ndarray  # (S,)
    open_windows: np.ndarray  # (S,)
    opened_ms: np.ndarray  # (S,) end of the window that opened the incident
    above_run: np.ndarray  # (S,) windows in a row at or above open_surprise, while closed
    last_anomalous_ms: np.ndarray  # (S,) end of the incident's last window at or above close_surprise
    peak_end_ms: np.ndarray  # (S,) the incident's most surprising window: its end,
    peak_surprise: np.ndarray  # (S,) its surprise,
    peak_score: np.ndarray  # (S,) its reconstruction error,
    opening_surprise: np.ndarray  # (S,) and the surprise of the window that opened it
    hold_n: np.ndarray  # (S,) hold slots filled
    hold_skip: np.ndarray  # (S,) windows that left the quarantine since the last one held
    hold_incident: np.ndarray  # (S,) bit mask over the hold slots, as pending_incident
    previous2: np.ndarray  # (S,) the v of the window before the previous one
    quiet: np.ndarray  # (S,) EW mean of u, quiet_halflife
    relearn: np.ndarray  # (S,) bit mask over the columns restarted by the last settled incident, and RECENTRE
    lasting: np.ndarray  # (S,) bit mask over the columns still anomalous in the open incident past its onset
    context: np.ndarray  # (S,) EW mean of v, context_halflife: the errors of the last few hours
    context_quiet: np.ndarray  # (S,) and of u
    cross_day: np.ndarray  # (S,) the UTC day (epoch ms // day) of the last window that reached open_surprise,
    cross_today: np.ndarray  # (S,) bit mask over the DAY_SLOTS: the slots that did that day,
    cross_yesterday: np.ndarray  # (S,) and the day before
    recurring: np.ndarray  # (S,) windows into a run that recurs daily (0: none going on; < 0: a run the learning
    # period carried, -1 - the windows since the learning period ended)
    cross_peak_today: np.ndarray  # (S,) the highest surprise of the day's windows that reached open_surprise,
    cross_peak_yesterday: np.ndarray  # (S,) and of the day before's
    spike_n: np.ndarray  # (S,) spike values in spike_block
    pending_flat: np.ndarray  # (S,) bit mask over the quarantine slots: slot j's spike column told a feed gone flat
    pending_loud: np.ndarray  # (S,) and slot j's own noise scale was over LOUD_NOISE_RATIO times the series'
    cross_columns_today: np.ndarray  # (S,) bit mask over the columns that told the day's windows that reached
    cross_columns_yesterday: np.ndarray  # (S,) open_surprise (`_signature`), and the day before's
    above: np.ndarray  # (S, COLUMNS, BINS) float32, as stored: each column's decayed histogram as the mass in bins >= j
    tail_q: np.ndarray  # (S, COLUMNS) where its empirical tail ends, and the mean excess beyond (`tail_shape`):
    tail_scale: np.ndarray  # (S, COLUMNS) they change only with the histogram, so they are kept beside it
    pending: np.ndarray  # (S, quarantine, COLUMNS) judged values waiting, oldest first
    pending_level: np.ndarray  # (S, quarantine, F) their levels
    hold: np.ndarray  # (S, hold_slots, COLUMNS) values that left the quarantine, waiting again, oldest first
    hold_level: np.ndarray  # (S, hold_slots, F) their levels
    centre: np.ndarray  # (S, F) the series' level centre
    spread: np.ndarray  # (S, F) and spread
    peak_shares: np.ndarray  # (S, F) each feature's share of the error at the incident's peak
    season: np.ndarray  # (S, DAY_SLOTS) the usual v at each time of day: EW over the windows that ended in the slot
    season_n: np.ndarray  # (S, DAY_SLOTS) windows taught into each slot (at most SEASON_COUNT_MAX)
    noise: np.ndarray  # (S, F) the series' noise scale (scaled units), which the spike column measures in
    spike_block: np.ndarray  # (S, spike_slots, 2) spike and blip values that left the quarantine, waiting to teach

    @classmethod
    def fresh(cls, n_series: int, n_features: int, settings: CalibrationSettings, model_key: int = 0,
              wander: tuple[float, ...] | None = None) -> "Batch":
        """New series' states; `wander` widens the level column's prior (`prior_state`)."""
        s, d = n_series, settings.quarantine
        scalars = {name: np.zeros(s, kind) for name, kind in SCALARS}
        scalars["last_end_ms"][:] = -1
        scalars["model_key"][:] = model_key
        above, q, scale = prior_state(n_features, settings, wander)
        return cls(**scalars, above=np.tile(above, (s, 1, 1)), tail_q=np.tile(q, (s, 1)),
                   tail_scale=np.tile(scale, (s, 1)),
                   pending=np.zeros((s, d, COLUMNS)), pending_level=np.zeros((s, d, n_features)),
                   hold=np.zeros((s, settings.hold_slots, COLUMNS)), hold_level=np.zeros((s, settings.hold_slots,
                                                                                          n_features)),
                   centre=np.zeros((s, n_features)), spread=np.ones((s, n_features)),
                   peak_shares=np.zeros((s, n_features)), season=np.zeros((s, DAY_SLOTS)),
                   season_n=np.zeros((s, DAY_SLOTS)), noise=np.zeros((s, n_features)),
                   spike_block=np.zeros((s, settings.spike_slots, 2)))

    def __len__(self) -> int:
        return len(self.last_end_ms)

    def take(self, index: np.ndarray) -> "Batch":
        return Batch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def put(self, index: np.ndarray, part: "Batch") -> None:
        for f in fields(self):
            getattr(self, f.name)[index] = getattr(part, f.name)


# ------------------------------------------------------------------------------------- the statistic


def statistic(score: np.ndarray, shares: np.ndarray, reference: Reference, settings: CalibrationSettings,
              grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S,) v, the max over features of the model-standardised, floored log error (module docstring), and
    (S,) u, minus their min: how much quieter than usual the quietest feature is. NaN or inf (the model
    overflowed) lands at the top of the scale. `grid` is `reference.grid(settings)`."""
    f = shares.shape[1]
    shares = np.where(np.isfinite(shares), shares, 1.0 / f)
    with np.errstate(over="ignore", invalid="ignore"):
        errors = np.asarray(score, np.float64)[:, None] * f * shares
    floor = np.log(np.maximum(settings.error_floor, grid ** 2 / 12.0))
    x = np.log(np.maximum(np.where(np.isnan(errors), np.inf, errors), MIN_ERROR))
    x = np.clip(x, floor, MAX_LOG_ERROR)
    centre = np.maximum(reference.median, floor)
    z = (x - centre) / np.maximum(reference.scale, settings.scale_floor)
    return np.max(z, axis=1), -np.min(z, axis=1)


def _median(a: np.ndarray, axis: int = 1) -> np.ndarray:
    """np.median of finite values by a sort: the same result, at a fraction of the cost on the many short rows a
    batch has (a window's 8 or 30 values, for thousands of windows). A full sort, not np.partition: on rows this
    short numpy's vectorised sort takes 30-60 % of introselect's time."""
    n = a.shape[axis]
    h = n // 2
    ordered = np.sort(a, axis=axis)
    if n % 2:
        return np.take(ordered, h, axis=axis)
    return (np.take(ordered, h - 1, axis=axis) + np.take(ordered, h, axis=axis)) / 2


def window_level(values: np.ndarray, reference: Reference, settings: CalibrationSettings) -> np.ndarray:
    """(S, F) the median of each window's last `level_events` events in the model's scaled units, from raw
    windows (S, T, F). The median, not the mean: in heavy-tailed noise a lone spike or two moved the mean
    of 8 events by a noise scale and opened false incidents (stream-type bench, level-shift), while a level
    change holds most of the 8."""
    tail = np.asarray(values, np.float64)[:, -settings.level_events:, :]
    return (_median(tail) - reference.mean) / reference.std


class Spike(NamedTuple):
    """Each window's new events against the events before them, in the model's scaled units; (S, F) each."""

    size: np.ndarray  # the largest |new event - the median of the spike_events before it| (or a line: window_spike)
    noise: np.ndarray  # the window's noise scale: the robust sd of its events' steps before the new ones
    blip: np.ndarray  # the largest blip of an event before a new one: its spike and its step back, the smaller


def window_spike(values: np.ndarray, reference: Reference, settings: CalibrationSettings) -> Spike | None:
    """From raw windows (S, T, F); None for windows with no step before their new events (the last `stride`).

    Only the new events are judged, so each spike is judged once, as it arrives, whatever the window's
    length: in a window's mean error a spike of k noise scales adds only k²/T, and the windows that hold it
    all err alike (stream-type bench: 17 of 36 lone spikes missed without this column). The median, not the
    mean, of the events before: a spike among them must not hide the next one. The noise scale comes from
    the steps between events (1.4826 x their median absolute size / sqrt 2), which a daily rhythm or a
    wandering level moves far less than the events themselves; `step` also compares it with the series' own,
    for a feed gone flat.

    But where the signal moves within a few events (a rush hour's ramp at one event an hour), the median of
    the 8 before lags it by half a ramp, and every ramp reads as a spike of many noise scales: the column's
    history learns those, and a real spike then reads as nothing special. So where a line through the 4
    events before predicts the window's own last events better than the 8 before them do
    (`_line_predicts_better`), an event is judged against that line. Plain noise and a wandering level keep
    the median: a line through 4 noisy events predicts worse, and it would follow a spike's first event into
    its second.

    The blip: the event before each new one, now that the next has come, if it left the events before it (its
    spike, as above) and the new one came back (the step between them, the other way), is a blip of the smaller
    of the two. A noise-free daily pulse's edges are spikes the size of the pulse every day, which the spike
    column learns as normal, so a lone spike half the pulse's height on its top read as a common spike
    (stream-type bench, periodic-edges: 4 of 8 and 3 of 6 spikes missed, dev and fresh seeds); an edge stays
    where it went, so its blip is 0."""
    x = spike_units(values, reference)
    new = min(settings.stride, x.shape[1])
    if x.shape[1] - new < 2:
        return None
    size = np.zeros((x.shape[0], x.shape[2]))
    line = _line_predicts_better(x[:, :-new, :], settings.spike_events)
    for j in range(x.shape[1] - new, x.shape[1]):
        size = np.maximum(size, np.abs(_off(x, j, line, settings.spike_events)))
    blip = np.zeros_like(size)
    for j in range(max(x.shape[1] - new - 1, 1), x.shape[1] - 1):
        out, back = _off(x, j, line, settings.spike_events), x[:, j, :] - x[:, j + 1, :]
        blip = np.maximum(blip, np.where(out * back > 0, np.minimum(np.abs(out), np.abs(back)), 0.0))
    noise = 1.4826 / math.sqrt(2.0) * _median(np.abs(np.diff(x[:, :-new, :], axis=1)))
    return Spike(size, noise, blip)


def _off(x: np.ndarray, j: int, line: np.ndarray, k: int) -> np.ndarray:
    """(S, F) how far the windows' event j lies from the median of the k events before it, or where `line`, from
    the line through the 4 before it (in the median's units: LINE_SPREAD), signed."""
    off = x[:, j, :] - _median(x[:, max(j - k, 0):j, :])
    if j >= len(LINE_WEIGHTS) and line.any():
        off = np.where(line, (x[:, j, :] - _line_ahead(x, j, j + 1)[:, 0]) / LINE_SPREAD, off)
    return off


def spike_units(values: np.ndarray, reference: Reference) -> np.ndarray:
    """Raw windows (S, T, F) in the units the spike column judges: the model's scaled units, or, for a feature whose
    noise grows with its level (counts, traffic: `Reference.noise_power` b > 0), its Box-Cox transform of power
    1 - b, where that noise is level, scaled to match the model's units at the training mean. A burst at night is
    then as many noise scales as one in the afternoon, not a fraction of one (stream-type bench, counts-bursts:
    bursts and dropouts at night read a spike of 1-3 against a noise scale the afternoons set)."""
    raw = np.asarray(values, np.float64)
    x = (raw - reference.mean) / reference.std
    power = reference.noise_power
    if power is None or not (power > 0).any():
        return x
    offset = STABILISE_OFFSET * np.maximum(reference.mean, 1e-12)
    centre = reference.mean + offset
    lam = 1.0 - power

    def box_cox(v: np.ndarray) -> np.ndarray:  # v > 0
        return np.where(lam > BOX_COX_LOG, (v ** lam - 1.0) / np.maximum(lam, BOX_COX_LOG), np.log(v))

    # its slope at the centre is centre ** -power: times centre ** power, one scaled unit there is one unit here
    y = (box_cox(np.maximum(raw, 0.0) + offset) - box_cox(centre)) * centre ** power
    return np.where(power > 0, y / reference.std, x)


def _line_predicts_better(x: np.ndarray, k: int) -> np.ndarray:
    """(S, F) bool: for windows' events (S, n, F), whether the line through the 4 events before each one predicts
    it better than the mean of the k before it, by the median absolute error over the last LINE_CHOICE_EVENTS
    events that have k before them. The mean stands in for the median here: one cumulative sum, and over a dozen
    events a spike moves the median error little."""
    n = x.shape[1]
    if n <= k or k < len(LINE_WEIGHTS):
        return np.zeros((x.shape[0], x.shape[2]), bool)
    first = max(k, n - LINE_CHOICE_EVENTS)
    sums = np.concatenate([np.zeros_like(x[:, :1]), np.cumsum(x, axis=1)], axis=1)  # sums[:, i]: the events before i
    by_mean = _median(np.abs(x[:, first:] - (sums[:, first:n] - sums[:, first - k:n - k]) / k))
    return _median(np.abs(x[:, first:] - _line_ahead(x, first, n))) < by_mean


def _line_ahead(x: np.ndarray, first: int, stop: int) -> np.ndarray:
    """(S, stop - first, F): where the line through the 4 events before each of the events first..stop - 1 of
    `x` (S, n, F) puts it; first >= 4."""
    m = len(LINE_WEIGHTS)
    return sum(w * x[:, first - m + i:stop - m + i] for i, w in enumerate(LINE_WEIGHTS.tolist()) if w)


# ------------------------------------------------------------------------------------------ the tail


def tail_shape(above: np.ndarray, settings: CalibrationSettings) -> tuple[np.ndarray, np.ndarray]:
    """(q, scale), each (...), of histograms held as their mass in bins >= j (..., BINS): q is where the
    empirical tail ends (the alpha level: max(tail_mass, tail_count / N) of the mass lies above it) and scale the
    mean excess beyond it, what `tail_probability` extrapolates with (module docstring). Both change only when
    the histogram does (one window in hold_stride), so a state keeps them and a window reads them in O(1)."""
    shape = above.shape[:-1]
    above = np.asarray(above, np.float64).reshape(-1, BINS)
    rows = np.arange(len(above))
    total = np.maximum(above[:, 0], 1e-12)
    alpha = np.maximum(settings.tail_mass, settings.tail_count / total)
    target = alpha * total
    jq = np.clip(np.count_nonzero(above >= target[:, None], axis=1) - 1, 0, BINS - 1)  # last bin with enough above
    m = jq + 1
    above_q = np.where(m < BINS, above[rows, np.minimum(m, BINS - 1)], 0.0)  # the mass above bin jq (none: the last)
    hq = above[rows, jq] - above_q
    inside = np.clip((target - above_q) / np.where(hq > 0, hq, 1.0), 0.0, 1.0) * (hq > 0)
    q = LO + STEP * (jq + 1 - inside)  # `inside` of bin jq's mass lies above q
    # the mass above bin jq times the bins' centres, by parts from the mass above each bin (Abel summation)
    further = np.where(np.arange(BINS)[None, :] > m[:, None], above, 0.0).sum(axis=1)
    moment = (LO + STEP * (m + 0.5)) * above_q + STEP * further
    excess = moment - q * above_q + inside * hq * STEP * inside / 2.0
    return q.reshape(shape), (excess / target).reshape(shape)


def tail_probability(above: np.ndarray, q: np.ndarray, scale: np.ndarray, w: np.ndarray,
                     floor: float | np.ndarray, settings: CalibrationSettings) -> np.ndarray:
    """(...) P(column >= w) from histograms held as their mass in bins >= j (..., BINS) and their `tail_shape`:
    empirical up to q, exponential beyond it with scale max(mean excess, floor). O(1) per histogram."""
    total = np.maximum(above[..., 0].astype(np.float64), 1e-12)
    pos = np.clip((w - LO) / STEP, 0.0, BINS - 1e-9)
    j = pos.astype(np.int64)
    # the two bins read of each histogram, from the flat histograms: take_along_axis builds an index per axis
    flat, first = above.reshape(-1), np.arange(0, above.size, BINS).reshape(above.shape[:-1])
    at_j = flat[first + j].astype(np.float64)
    at_next = np.where(j + 1 < BINS, flat[first + np.minimum(j + 1, BINS - 1)], 0.0)
    mass_w = at_next + ((j + 1) - pos) * (at_j - at_next)
    alpha = np.maximum(settings.tail_mass, settings.tail_count / total)
    sigma = np.maximum(scale, floor)
    empirical = mass_w / total
    extrapolated = np.maximum(alpha * np.exp(-(w - q) / sigma), empirical)
    return np.clip(np.where(w > q, extrapolated, empirical), MIN_PROBABILITY, 1.0)


def column_weights(n_series: int, with_level: bool, with_spike: bool = True) -> np.ndarray:
    """(S, COLUMNS) each column's weight in the combination (0: not asked)."""
    weights = np.tile(WEIGHTS, (n_series, 1))
    weights[:, LEVEL] *= with_level
    weights[:, SPIKE] *= with_spike
    return weights


def combined_probability(p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(S,) one tail probability from each series' column probabilities (S, COLUMNS): their weighted harmonic
    mean p-value (Wilson 2019) with the columns' `weights` (S, COLUMNS: `column_weights`, 0 where not asked).

    It lies between the smallest p and Bonferroni's (total weight / that column's weight) x the smallest p:
    where one column alone tells, it is about Bonferroni's; where columns that move together (the point,
    recent and slow averages of one error) agree, it is their common p rather than a multiple of it. The
    columns are strongly and positively dependent: Bonferroni stays valid there but overcharges, the
    harmonic mean is robust to it. The point and the jump share one column's weight: on a quiet stretch
    they are the same number, and two equal weights would halve what a lone spike is charged."""
    inverse = weights / np.maximum(p, MIN_PROBABILITY)
    return np.clip(weights.sum(axis=1) / inverse.sum(axis=1), MIN_PROBABILITY, 1.0)


def _teach(batch: "Batch", lessons: list[tuple[np.ndarray, np.ndarray]], settings: CalibrationSettings) -> None:
    """Fold lessons, in order, into the histograms, in place: each (S, COLUMNS) values at weights (S, COLUMNS)
    (split linearly between the two nearest bin centres), each histogram decaying by decay ** its weight
    before each. The lessons of a step are summed as a histogram first, each decayed by the weight taught
    after it, and folded into the stored mass above each bin with one cumulative sum; they are held at the
    stored float32 (the
    decay multiplies in float32: a float64 factor made numpy convert every bin both ways), the sums work in
    float64 and round to it once. The taught rows' tail shapes follow."""
    if not lessons:
        return
    weights = np.stack([weight for _, weight in lessons])  # (K, S, COLUMNS), none negative
    taught = np.flatnonzero(weights.any(axis=0).any(axis=1))  # one axis at a time: the first reduces across rows
    if not len(taught):
        return
    w = weights[:, taught]
    total = w.sum(axis=0)  # (R, COLUMNS)
    after = total[None] - np.cumsum(w, axis=0)  # (K, R, COLUMNS) weight taught after each lesson
    # every lesson at once: one bincount adds, bin by bin, in the order a loop over the lessons would (lesson by
    # lesson, the lower bin's share before the upper's), so the sums are the same to the bit; a lesson of weight 0
    # would add nothing, so only the others are counted (a window's lessons leave the spike columns out, the
    # spikes' all others: half of them); the bins are counted from the top, so the mass above each is a cumulative
    # sum along contiguous memory (reverse_cumsum's, reversed)
    k, r, c = np.nonzero(w)
    pos = np.clip((np.stack([values for values, _ in lessons])[k, taught[r], c] - LO) / STEP - 0.5, 0.0, BINS - 1.0)
    j0 = np.floor(pos).astype(np.int64)
    upper = pos - j0
    kept = w[k, r, c] * settings.decay ** after[k, r, c]
    top = (r * COLUMNS + c) * BINS + BINS - 1  # where each lesson's histogram's bin 0 lands in delta
    index = np.stack([top - j0, top - np.minimum(j0 + 1, BINS - 1)], axis=1)  # (N, 2)
    delta = np.bincount(index.ravel(), np.stack([kept * (1.0 - upper), kept * upper], axis=1).ravel(),
                        minlength=len(taught) * COLUMNS * BINS).reshape(len(taught), COLUMNS, BINS)
    every = len(taught) == len(batch.above)  # the usual round: the whole batch in place, no copy
    above = batch.above if every else batch.above[taught]
    above *= (settings.decay ** total).astype(np.float32)[:, :, None]
    above += np.cumsum(delta, axis=-1, out=delta)[..., ::-1]
    q, scale = tail_shape(above, settings)
    if not every:
        batch.above[taught] = above
    batch.tail_q[taught] = _stored(q)
    batch.tail_scale[taught] = _stored(scale)


# --------------------------------------------------------------------------------------------- a step


class Verdict(NamedTuple):
    """One window per series of a round; arrays of S."""

    surprise: np.ndarray  # -log10 of the tail probability (bounded)
    p: np.ndarray  # (S, COLUMNS) each column's tail probability
    opened: np.ndarray  # bool
    closed: np.ndarray  # Close codes (0: none)
    open: np.ndarray  # bool: an incident is open after this window
    gapped: np.ndarray  # bool: the window spans an outage
    learning: np.ndarray  # bool: the series is in its learning period (cannot open)


# A daily recurrence is a crossing within this many day slots of one the day before, either way (2: within an hour
# and up to an hour and a half): a daily peak's time drifts with the day's load. 1 slot (within 30-60 minutes) let
# a growing trend's peaks reopen most days (trend streams, dev seeds: 68.0 -> 71.9 NAB, 2.8 -> 2.5 false per 10k);
# 3 slots or more held back a true fault near yesterday's time (random-walk 70.9 -> 65.8)
RECURRENCE_SLOTS = 2


def _slot_masks(reach: int) -> np.ndarray:
    """(DAY_SLOTS,) per day slot, the bit mask of the slots within `reach` of it either way (around midnight too)."""
    return np.array([sum(1 << ((s + k) % DAY_SLOTS) for k in range(-reach, reach + 1)) for s in range(DAY_SLOTS)],
                    np.int64)


# per day slot, the bit mask of the slots a crossing the day before may have been in
_NEAR_SLOTS = _slot_masks(RECURRENCE_SLOTS)

# A window this many times as surprising (in -log10 p) as the day before's most surprising crossing is no
# recurrence: a fault that starts on a daily edge the series crosses at 3-5 (a higher pulse at 13.9 was missed)
RECURRENCE_RATIO = 2.0
# ... and a crossing no more than RECURRENCE_MILD_RATIO times as surprising as the day before's most surprising one is a
# recurrence within RECURRENCE_MILD_SLOTS day slots either way (2.5 to 3 hours): a series whose errors creep up as its
# load outgrows the model crosses the open level at its daily peak, whose time wanders by 2 hours from day to day, as
# mildly each day (trend streams, dev seeds: 8 openings at 3.0-3.1 in one stream, 2.2 false incidents per 10k windows).
# Such a crossing opens nothing and starts no run: the next window more surprising than that still opens (a level
# shift whose onset was as mild as the day before's crossing was missed, 3.8, when it started one)
RECURRENCE_MILD_SLOTS = 5
RECURRENCE_MILD_RATIO = 1.1
_MILD_SLOTS = _slot_masks(RECURRENCE_MILD_SLOTS)


def _daily_recurrence(batch: Batch, crossing: np.ndarray, end_ms: np.ndarray, slot: np.ndarray,
                      surprise: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(recurs, far, mild) of the `crossing` windows (at or above open_surprise where they could open an incident):
    which recur daily, a window did the same a day before, within about an hour and a half: in its day slot or
    RECURRENCE_SLOTS either side (one int64 bit mask of DAY_SLOTS a day); which are far more surprising than any
    the day before (RECURRENCE_RATIO x its peak), so recur or not, they open; and which are mild recurrences, no
    more surprising than the day before's peak (RECURRENCE_MILD_RATIO x) within RECURRENCE_MILD_SLOTS of one of
    its crossings. A recurrence is the same pattern: some column that tells it (`columns`, a bit mask: `_signature`)
    told one of the day before's crossings too. A mild one need not: a load that outgrows its model crosses at each
    day's peak through whichever column its errors reach most that day (14 days, dev seeds: trend 79.7 -> 72.0 NAB
    at 1.9 -> 2.5 false per 10k with the columns asked of it too). Records every crossing, so a pattern that keeps
    recurring keeps being recognised (one that opened nothing counts too), the day's highest surprise among them and
    the columns that told them. `slot` is day_slot(end_ms)."""
    if not crossing.any():  # the usual round: nothing to record, nothing recurs
        return crossing, crossing, crossing
    day = end_ms // DAY_MS
    bit = np.left_shift(np.int64(1), slot)
    near = _NEAR_SLOTS[slot]
    same, next_day = day == batch.cross_day, day == batch.cross_day + 1
    yesterday = _record_day(batch, "cross", crossing, same, next_day, lambda today: today | bit)
    peak_yesterday = _record_day(batch, "cross_peak", crossing, same, next_day,
                                 lambda today: np.maximum(today, surprise))
    told_yesterday = _record_day(batch, "cross_columns", crossing, same, next_day, lambda today: today | columns)
    batch.cross_day = np.where(crossing, day, batch.cross_day)
    alike = (told_yesterday & columns) != 0
    far = crossing & (surprise >= RECURRENCE_RATIO * peak_yesterday)
    mild = crossing & ((yesterday & _MILD_SLOTS[slot]) != 0) & (surprise <= RECURRENCE_MILD_RATIO * peak_yesterday)
    return crossing & alike & ((yesterday & near) != 0) & ~far, far, mild


def _record_day(batch: Batch, name: str, crossing: np.ndarray, same: np.ndarray, next_day: np.ndarray,
                record: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """One of the day's records of its crossings (`<name>_today`, and `<name>_yesterday` the day before's), as of
    each window's day (`same`: the records' day; `next_day`: the day after it; else both are too old: 0), with
    `record` applied to today's where the window crosses. Returns the day before's, as of the window's day."""
    today, yesterday = getattr(batch, f"{name}_today"), getattr(batch, f"{name}_yesterday")
    before = np.where(same, yesterday, np.where(next_day, today, 0))
    setattr(batch, f"{name}_yesterday", np.where(crossing, before, yesterday))
    setattr(batch, f"{name}_today", np.where(crossing, record(np.where(same, today, 0)), today))
    return before


def _signature(raw_p: np.ndarray, charge: np.ndarray, weights: np.ndarray, open_surprise: float) -> np.ndarray:
    """(S,) bit mask over the columns that tell each window: those that, charged as if alone told (`charge`: the
    total weight over their own), reach the open level, or where none does the strongest.
    A daily edge tells through the same columns each day; a fault that happens to come at yesterday's time
    (a spike the day after a level shift began) through others (1,200 events at 5 minutes, dev seeds:
    a spike read -log10 p 8.7 in the point and jump columns, yesterday's shift 6.2 in the spike column, and
    as a recurrence opened nothing)."""
    strength = np.where(weights > 0, -np.log10(np.maximum(raw_p * charge, MIN_PROBABILITY)), -np.inf)
    tells = strength >= np.minimum(open_surprise, strength.max(axis=1, keepdims=True))
    return (tells.astype(np.int64) << np.arange(COLUMNS)).sum(axis=1)


def day_slot(end_ms: np.ndarray) -> np.ndarray:
    """The UTC half hour of the day each window ended in, 0..DAY_SLOTS - 1."""
    return (np.asarray(end_ms, np.int64) % DAY_MS) // SLOT_MS


SEASON_COUNT_MAX = 65_535  # a slot's count is stored as uint16 (worker/state/codec.py)


def windows_in(duration_ms: float, span: np.ndarray, reference: Reference) -> np.ndarray:
    """(S,) how many windows come in `duration_ms` at each series' cadence, from its usual window span `span`
    (EW ln ms: a window spans window - 1 intervals)."""
    return duration_ms * max(reference.window - 1, 1) / np.exp(span)


def slot_windows(span: np.ndarray, reference: Reference) -> np.ndarray:
    """(S,) the windows that end in one day slot a day at the series' cadence (at least 1): 6 at 5 minutes."""
    return np.maximum(windows_in(SLOT_MS, span, reference), 1.0)


def _teach_season(batch: Batch, teach: np.ndarray, v: np.ndarray, slot: np.ndarray, per_slot: np.ndarray,
                  settings: CalibrationSettings) -> None:
    """Each `teach` window's v into its day slot's usual error, in place: an EW mean with a half-life of
    season_halflife_days of the slot's windows (at least season_windows: at one event an hour a half hour
    gets one window a day, and one window is no usual error), each window moving it by at most season_step
    (once the slot has one): a fault that no other column opened on teaches its time of day slowly, as the
    recurring edge of a daily pattern does, and one bad window on a quiet stretch does not make the next
    day's look odd."""
    if not teach.any():
        return
    rows = np.flatnonzero(teach)
    slots, count = slot[rows], batch.season_n[rows, slot[rows]]
    halflife = np.maximum(settings.season_halflife_days * per_slot[rows], settings.season_windows)
    rate = np.maximum(1.0 / (count + 1.0), 1.0 - 2.0 ** (-1.0 / halflife))
    delta = v[rows] - batch.season[rows, slots]
    delta = np.where(count > 0, np.clip(delta, -settings.season_step, settings.season_step), delta)
    batch.season[rows, slots] = _stored(batch.season[rows, slots] + rate * delta)
    batch.season_n[rows, slots] = np.minimum(count + 1, SEASON_COUNT_MAX)


def hold_strides(span: np.ndarray, reference: Reference, settings: CalibrationSettings) -> np.ndarray:
    """(S,) every how many windows one waits in the hold, standing for them: the windows of hold_slot_ms (an
    hour) at the series' cadence, within [1, hold_stride]. So the hold lasts hold_slots hours (16) wherever a
    window comes every 5 minutes or less often: at one event an hour 192 windows were 8 days, and the history
    lagged a growing series by 9 days and more (a false incident throws away its hold): hourly streams, dev
    seeds, trend 16.3 -> 7.1 and counts-bursts 9.9 -> 6.4 false incidents per 10k windows."""
    return np.clip(np.rint(windows_in(settings.hold_slot_ms, span, reference)), 1, settings.hold_stride).astype(np.int64)


def relearning_windows(span: np.ndarray, reference: Reference, settings: CalibrationSettings) -> np.ndarray:
    """How long the columns a settled incident restarted relearn: the windows of one settle time (a day) at the
    series' own cadence and a quarantine, so that the whole day is taught; at least 3 quarantines (what a
    settle waits for), at most learning_windows. At 5 minutes that is learning_windows (300); at one event an
    hour 96 windows (4 days), not 12.5 days in which the relearning columns judge nothing."""
    day = windows_in(settings.settle_ms, span, reference)
    return np.clip(day + settings.quarantine, 3 * settings.quarantine, settings.learning_windows)


def step(batch: Batch, score: np.ndarray, shares: np.ndarray, start_ms: np.ndarray,
         end_ms: np.ndarray, level: np.ndarray | None, reference: Reference, settings: CalibrationSettings,
         spike: Spike | None = None) -> Verdict:
    """Judge one window per series of `batch`, advance its incident and teach its history, in place.

    `level` (S, F) is `window_level(...)` of each window and `spike` its `window_spike(...)` (None: no level
    or no spike column).
    Windows of one series must come in order; a window ending at or before the series' last_end_ms is
    a replay and must not be passed (`Batch.last_end_ms`)."""
    n = len(batch)
    grid = reference.grid(settings)  # once a round: the statistic's error floor and the level column's spread floor
    v, u = statistic(score, shares, reference, settings, grid)
    start_ms, end_ms = np.asarray(start_ms, np.int64), np.asarray(end_ms, np.int64)

    # gaps: this window's span against the series' usual span
    span = np.log(np.maximum(end_ms - start_ms, 1).astype(np.float64))
    young = batch.seen == 0
    usual = np.exp(np.where(young, span, batch.span))
    gapped = ~young & (np.exp(span) - usual > (settings.gap_factor - 1.0) * usual / max(reference.window - 1, 1))
    overlaps = ~young & ~gapped  # consecutive overlapping windows confirm each other's point

    judged = np.zeros((n, COLUMNS))
    judged[:, POINT] = np.where(overlaps, np.minimum(np.minimum(v, batch.previous), batch.previous2), v)
    first = young
    judged[:, RECENT] = np.where(first, v, batch.recent + settings.recent_rate * (v - batch.recent))
    slow = np.where(first, v, batch.slow + settings.slow_rate * (v - batch.slow))
    # the slow average counts only where the recent one agrees: it finds faults that creep up (where it
    # lags below the recent one anyway), and an incident closes once the stream is back, not a few slow
    # half-lives later
    judged[:, SLOW] = np.minimum(slow, judged[:, RECENT])
    # a feature quieter than usual, window after window (a stuck sensor, a flatlined signal)
    quiet = np.where(first, u, batch.quiet + settings.quiet_rate * (u - batch.quiet))
    judged[:, QUIET] = quiet
    # the jump from the series' own last hours, either way: where the errors swing with the series' state
    # (counts whose noise grows with the rate), a burst at night errs like a normal afternoon and only its
    # change from the errors of the hours before tells
    judged[:, JUMP] = np.where(first, 0.0, np.maximum(judged[:, POINT] - batch.context, quiet - batch.context_quiet))
    # ... or from its usual error at this time of day, either way, once that time of day is known: a burst at
    # night errs like any afternoon and, where it comes on slowly, like the hours before it too; a daily pulse
    # that does not come errs less than that time of day always does
    slot, rows = day_slot(end_ms), np.arange(n)
    per_slot = slot_windows(batch.span, reference)
    usual = batch.season[rows, slot]
    needed = np.maximum(settings.season_days * per_slot, settings.season_windows)
    known = ~young & (batch.season_n[rows, slot] >= needed)
    if known.any():
        seasonal = np.maximum(judged[:, POINT] - usual,
                              usual - np.maximum(np.maximum(v, batch.previous), batch.previous2))
        judged[:, JUMP] = np.where(known, np.maximum(judged[:, JUMP], seasonal), judged[:, JUMP])
    # the level column: a model that removes levels cannot see a level change, one that keeps them sees it
    # only as the changed part fills its windows (a shift of 4-8 noise scales opened 16 windows late)
    with_level = level is not None
    if with_level:
        spread_floor = np.maximum(settings.level_spread_floor, grid)
        _recentre_level(batch, spread_floor, settings)
        judged[:, LEVEL] = _level_reading(level, batch.centre, batch.spread, spread_floor)
    # the spike column: the newest event's spike in the series' noise scale (as it was before this window), in
    # log units (SPIKE_UNITS); the event before it as a blip, in the same units
    with_spike = spike is not None
    if with_spike:
        noise = np.where(young[:, None], spike.noise, batch.noise)
        scale = np.maximum(noise, settings.spike_noise_floor)
        judged[:, SPIKE] = SPIKE_UNITS * np.log(np.maximum(np.max(spike.size / scale, axis=1), MIN_ERROR))
        judged[:, BLIP] = SPIKE_UNITS * np.log(np.maximum(np.max(spike.blip / scale, axis=1), MIN_ERROR))
        # ... or a feature gone flat: the window's noise scale far under the series' own (a feed stuck at its last
        # value: its steps vanish, while its error need not move), in the same log units (FLAT_LEAST_SHARE)
        least = FLAT_NOISE_SHARE * settings.spike_noise_floor
        usual = np.maximum(noise, least)
        flat = SPIKE_UNITS * np.max(np.where(noise > least, np.log(usual / np.maximum(
            spike.noise, FLAT_LEAST_SHARE * usual)), 0.0), axis=1)
        flat_told = flat > judged[:, SPIKE]  # the spike column reads the flatness, not a spike
        judged[:, SPIKE] = np.maximum(judged[:, SPIKE], flat)
        # ... and a window louder than the series' noise (not a spike but a stretch: `_learn` keeps it from teaching
        # the spike column inside an incident)
        loud = np.any(spike.noise > LOUD_NOISE_RATIO * scale, axis=1)
    else:
        flat_told = loud = np.zeros(n, bool)
    judged = np.clip(judged, LO, HI - 1e-9)

    floors = np.array([settings.tail_floor] * LEVEL + [settings.level_tail_floor, settings.spike_tail_floor,
                                                       settings.blip_tail_floor])
    p = tail_probability(batch.above, batch.tail_q, batch.tail_scale, judged, floors, settings)
    if not with_level:
        p[:, LEVEL] = 1.0
    if not with_spike:
        p[:, SPIKE] = 1.0
    # a blip is a spike that came back, judged against the blips before: it tells in the spike column's place
    # (a column of its own diluted every other column's surprise, and read the end of a count's natural burst
    # as another chance to open, after its start: counts-bursts 1.9 -> 3.3 false per 10k windows)
    p[:, SPIKE] = np.minimum(p[:, SPIKE], p[:, BLIP])
    p[:, BLIP] = 1.0

    # incidents
    # the first learning period (never settled: seen == since_reset) follows the model's training size; after
    # a settled incident only the columns it restarted relearn (relearning_windows), and the others judge on
    first_period = batch.seen == batch.since_reset
    relearning = ~first_period
    if relearning.any():
        relearning &= batch.since_reset < relearning_windows(batch.span, reference, settings)
    masked = relearning[:, None] & ((batch.relearn[:, None] >> np.arange(COLUMNS)) & 1).astype(bool)
    masked[:, LEVEL] |= not with_level
    masked[:, SPIKE] |= not with_spike
    masked[:, BLIP] = True  # told through the spike column
    raw_p = p
    p = np.where(masked, 1.0, p)
    weights = column_weights(n, with_level, with_spike)
    surprise = -np.log10(combined_probability(p, weights))
    learning = (first_period & (batch.since_reset < reference.learning_windows(settings))) | masked.all(axis=1)
    was_open = batch.open.astype(bool)
    counted = ~gapped  # the windows that count: judged, taught, advancing an incident
    # ... but a window past the ones that trained the model (where the artifact says how many), within the first
    # learning period, opens where it is YOUNG_OPEN_FACTOR times as surprising: where a model trained on fewer
    # windows than the learning period (a short history, a slow cadence), a fault there went unseen, or opened only
    # once its carried run had lasted 2 window lengths past the learning period
    strong = learning & first_period & (np.asarray(reference.train_windows) > 0) \
        & (batch.since_reset >= reference.train_windows) & (surprise >= YOUNG_OPEN_FACTOR * settings.open_surprise)
    candidate = counted & (~learning | strong) & ~was_open
    crossing = candidate & (surprise >= settings.open_surprise)
    cap = 2 * reference.window  # a run's reach: every event lies in `window` windows
    charge = weights.sum(axis=1, keepdims=True) / np.maximum(weights, 1e-12)  # each column as if it alone told
    run = batch.recurring
    recurs = far = mild = np.zeros(n, bool)
    if settings.skip_daily_recurrences:
        # a daily pattern the history has not learnt (or no longer holds: it is not taught while an incident
        # is open, so a daily edge that opened one once would open one every day, and more surely each day)
        # opens no incident; as it teaches like any other window, the history learns it again
        judged_crossing = crossing & (run < cap)
        columns = (_signature(raw_p, charge, weights, settings.open_surprise) if judged_crossing.any()
                   else np.zeros(n, np.int64))
        recurs, far, mild = _daily_recurrence(batch, judged_crossing, end_ms, slot, surprise, columns)
    # a run is the pattern until the surprise falls below the close level, for at most `cap` windows: a fault that
    # lasts longer opens, late, even where it began at yesterday's time. So is a run the learning period carries
    # (at or above the open level in a window it judged, and not below the close level since; negative: -1 - the
    # windows since the learning period ended): the errors of a model that fits the series' first days and not the
    # days after (a small training part, a series that outgrows it) rise while the history learns and a quarantine
    # behind; the first window past the learning period opened on what the series had done for days (hourly stream
    # types, dev seeds: 5 of 61 false openings, at the first window it could)
    carried = counted & learning & (surprise >= settings.open_surprise)
    batch.recurring = np.where(
        counted & (surprise < settings.close_surprise), 0,
        np.where(learning, np.where((run != 0) | carried, -1, 0),
                 np.where(run < 0, run - counted, np.where(run > 0, run + counted, recurs.astype(np.int64)))))
    # a window far more surprising than any the day before opens at once, inside a daily run too (not a carried
    # one: there is no day before); a mild recurrence (RECURRENCE_MILD_SLOTS) opens nothing but starts no run either
    run = batch.recurring
    crossing &= (((run == 0) | (np.abs(run) > cap) | (far & (run > 0))) & ~mild) | strong
    batch.above_run = np.where(candidate, np.where(crossing, batch.above_run + 1, 0),
                               np.where(counted, 0, batch.above_run))
    opened = candidate & (batch.above_run >= settings.open_after)
    going = counted & was_open
    batch.normal_run = np.where(going, np.where(surprise < settings.close_surprise, batch.normal_run + 1, 0),
                                batch.normal_run)
    batch.open_windows = np.where(going, batch.open_windows + 1, batch.open_windows)
    recovered = going & (batch.normal_run >= settings.close_after)
    # settled: open for settle_ms, and a quarantine past its onset (`lasting` watches after 2 quarantines), so
    # that `lasting` has seen which columns still tell the fault (at an hourly cadence a day is 24 windows: settled at the onset's end,
    # every column relearnt and taught the fault's end as normal)
    # ... and not while the spike column tells a feed gone flat: a sensor stuck at its last value is a fault until
    # it reports again, not a new normal (settled, the spike column relearnt from the flat windows and the noise
    # scale restarted from a flat feed's: once it reported again, its every event read as a spike and taught the
    # column so; hourly stream-type bench, stuck-sensor: spikes days later read as nothing special). A column
    # tells where its p, charged as if it alone told (the total weight over its own), is under the close level
    anomalous = raw_p * charge <= 10.0 ** -settings.close_surprise
    flat_now = flat_told & anomalous[:, SPIKE]
    settled = going & ~recovered & (end_ms - batch.opened_ms >= settings.settle_ms) \
        & (batch.open_windows >= 3 * settings.quarantine) & ~flat_now & (batch.pending_flat == 0)
    closed = np.where(recovered, Close.RECOVERED, np.where(settled, Close.SETTLED, Close.NONE))
    now_open = (was_open & ~(recovered | settled)) | opened
    batch.open = now_open.astype(np.int64)
    batch.normal_run = np.where(opened | recovered | settled, 0, batch.normal_run)
    batch.open_windows = np.where(opened, 1, batch.open_windows)  # kept after a close: its record says it
    batch.opened_ms = np.where(opened, end_ms, batch.opened_ms)
    _track_incident(batch, opened, going, surprise, score, shares, end_ms, settings)
    # which columns still tell the incident from the old normal once its onset has passed through the windows
    # (a step inside a window moves the error columns only while it passes; a new level moves the level
    # column for good): those, and only those, relearn if it settles (`anomalous`, above)
    bits = (anomalous.astype(np.int64) << np.arange(COLUMNS)).sum(axis=1)
    past_onset = going & (batch.open_windows > 2 * settings.quarantine)
    batch.lasting = np.where(opened, 0, np.where(past_onset, batch.lasting | bits, batch.lasting))

    # the time of day learns outside incidents, and after a settled one only once the restarted columns have
    # relearnt: the first windows of a new normal may still hold the fault's end (a shift that lasted a day
    # settled as it ended, and its last windows taught their half hours a high usual error: the next days,
    # normal there, looked like a daily pulse that did not come)
    _teach_season(batch, counted & ~now_open & ~relearning, v, slot, per_slot, settings)
    strides = hold_strides(batch.span, reference, settings)
    _learn(batch, counted, judged, level, flat_now, loud, opened, now_open, learning | relearning, strides, settings)
    restart = settled
    if restart.any():
        # a new normal: the columns that kept telling it from the old one (`lasting`; none: all) start again
        # from the prior and relearn; the others keep their history and judge on
        new = ((batch.lasting[:, None] >> np.arange(COLUMNS)) & 1).astype(bool)
        new[:, LEVEL] &= with_level
        new[:, SPIKE] &= with_spike
        new[:, BLIP] = new[:, SPIKE]
        new = np.where(new.any(axis=1, keepdims=True), new, True)
        rows = np.flatnonzero(restart)
        # ... but the level column, whose readings are relative to the series' centre, keeps its history and moves
        # its centre a quarantine later (`_recentre_level`)
        batch.relearn[rows] = (new[rows].astype(np.int64) << np.arange(COLUMNS)).sum(axis=1) \
            | np.where(new[rows, LEVEL], RECENTRE, 0)
        new[:, LEVEL] = False
        above, q, scale = prior_state(batch.centre.shape[1], settings)
        for r in rows.tolist():
            batch.above[r, new[r]], batch.tail_q[r, new[r]], batch.tail_scale[r, new[r]] = \
                above[new[r]], q[new[r]], scale[new[r]]
        batch.pending_n[restart] = 0
        batch.pending_incident[restart] = 0
        batch.hold_n[restart] = batch.hold_skip[restart] = batch.hold_incident[restart] = 0
        batch.spike_n[restart] = 0
        # a new normal: what was surprising the day before (the incident's opening, a day ago) says nothing now
        batch.cross_today[restart] = batch.cross_yesterday[restart] = batch.recurring[restart] = 0
        batch.cross_peak_today[restart] = batch.cross_peak_yesterday[restart] = 0.0
        batch.cross_columns_today[restart] = batch.cross_columns_yesterday[restart] = 0
        batch.season_n[restart] = 0  # and the usual errors of the old normal's times of day

    batch.previous2 = np.where(counted, np.where(young, v, batch.previous), batch.previous2)
    batch.previous = np.where(counted, v, batch.previous)
    batch.recent = np.where(counted, judged[:, RECENT], batch.recent)
    batch.quiet = np.where(counted, quiet, batch.quiet)
    # the jump's context is frozen with the rest while an incident is open (the end of a fault is no jump from
    # the fault), and starts at the new normal after a settled one
    follow, fresh_context = counted & ~now_open, young | restart
    for name, value in (("context", v), ("context_quiet", u)):
        old = getattr(batch, name)
        setattr(batch, name, np.where(fresh_context, value,
                                      np.where(follow, old + settings.context_rate * (value - old), old)))
    batch.slow = np.where(counted, slow, batch.slow)
    if with_spike:
        # the noise scale follows the series outside incidents (a fault's noise is no scale for the next spike)
        batch.noise = _stored(np.where(fresh_context[:, None], spike.noise, np.where(
            follow[:, None], batch.noise + settings.noise_rate * (spike.noise - batch.noise), batch.noise)))
    batch.span = np.where(counted, np.where(young, span, batch.span + 0.01 * (span - batch.span)),
                          batch.span)
    batch.seen = batch.seen + counted
    batch.since_reset = np.where(restart, 0, batch.since_reset + counted)
    batch.last_end_ms = end_ms.copy()
    return Verdict(surprise, p, opened, closed, now_open,
                   gapped, learning)


def _stored(values: np.ndarray) -> np.ndarray:
    """`values` at the precision a store keeps them (float32)."""
    return np.asarray(values, np.float32).astype(np.float64)


# Every array the store keeps as float32 (the histograms are held so throughout) is rounded to it where
# it is written (`_stored`): a series then evolves exactly alike whether its state stays in memory or goes
# through the store between two windows, so a replay cut into other batches leaves the same state, byte
# for byte.


def _track_incident(batch: Batch, opened: np.ndarray, going: np.ndarray, surprise: np.ndarray, score: np.ndarray,
                    shares: np.ndarray, end_ms: np.ndarray, settings: CalibrationSettings) -> None:
    """What the incident's records say: its peak window and its last anomalous window (closed_at)."""
    higher = opened | (going & (surprise > batch.peak_surprise))
    batch.peak_surprise = np.where(higher, surprise, batch.peak_surprise)
    batch.peak_score = np.where(higher, np.asarray(score, np.float64), batch.peak_score)
    batch.peak_end_ms = np.where(higher, end_ms, batch.peak_end_ms)
    batch.peak_shares = np.where(higher[:, None], _stored(np.nan_to_num(np.asarray(shares, np.float64), nan=0.0)),
                                 batch.peak_shares)
    anomalous = opened | (going & (surprise >= settings.close_surprise))
    batch.last_anomalous_ms = np.where(anomalous, end_ms, batch.last_anomalous_ms)
    batch.opening_surprise = np.where(opened, surprise, batch.opening_surprise)


def _learn(batch: Batch, taught: np.ndarray, judged: np.ndarray, level: np.ndarray | None, flat: np.ndarray,
           loud: np.ndarray, opened: np.ndarray, now_open: np.ndarray, learning: np.ndarray, strides: np.ndarray,
           settings: CalibrationSettings) -> None:
    """Push this window into the quarantine; the one leaving it teaches the history while the series learns
    (hold_stride at a time), and after the hold once it has learnt, one in `strides` (S,) standing for them
    (module docstring: Learning). Its spike teaches apart (`_teach_spikes`), inside an incident too, but not
    where its spike column told a feed gone flat (`flat`, S): a spike is one event, a flat feed lasts. A stuck
    sensor's every window, taught as it left the quarantine, made its flat reading common within two
    quarantines (hourly stream-type bench, stuck-sensor: the incident closed as recovered while the sensor was
    still stuck, and the next spike, in a history full of flat readings, read as nothing). Nor where the window
    was loud (`loud`, S: its own noise scale far above the series'), nor a window waiting when one was: a louder
    stretch lasts too, and against the noise scale frozen at the opening its every event reads as a spike
    (stream-type bench, noisy-spells: the spike days after a spell read as nothing, 7 of 9 missed). Nor, inside an
    incident, where the window after it reads a spike at least half as large: that is a step, not one event (a
    shift reads as a spike at each event until the median of the 8 before has caught up, 4-5 windows, at its start
    and again at its end; taught, a drop's steps made a surge's common: stream-type bench, weekly, p 10^-2.3)."""
    d = settings.quarantine
    # the windows waiting when an incident opens are its ramp: flag them, and this one if open
    flags = np.where(opened, (1 << d) - 1, batch.pending_incident)
    ready = taught & (batch.pending_n >= d)
    leaving = batch.pending[:, 0, :].copy()
    leaving_level = batch.pending_level[:, 0, :].copy()
    leaving_incident = (flags & 1).astype(bool)
    leaving_flat = (batch.pending_flat & 1).astype(bool)
    leaving_loud = (batch.pending_loud & 1).astype(bool)
    following = batch.pending[:, 1, SPIKE] if d > 1 else judged[:, SPIKE]  # the window after the one leaving
    leaving_step = following > leaving[:, SPIKE] - SPIKE_UNITS * math.log(2.0)
    _shift_in(batch, "pending", taught, judged)
    if level is not None:
        _shift_in(batch, "pending_level", taught, level)
    batch.pending_incident = np.where(taught, (flags >> 1) | (now_open.astype(np.int64) << (d - 1)), flags)
    batch.pending_flat = np.where(taught, (batch.pending_flat >> 1) | (flat.astype(np.int64) << (d - 1)),
                                  batch.pending_flat)
    # a loud window marks every window still waiting too: the median of a window's steps moves only once half of
    # them are loud, and the first events of a louder stretch read as the largest spikes
    batch.pending_loud = np.where(taught, np.where(loud, (1 << d) - 1, batch.pending_loud >> 1), batch.pending_loud)
    batch.pending_n = np.where(taught, np.minimum(batch.pending_n + 1, d), batch.pending_n)
    clean = ready & ~leaving_incident
    spiky = ready & ~(leaving_incident & (leaving_flat | leaving_loud | leaving_step))
    h, k = settings.hold_slots, settings.hold_stride
    lessons: list[tuple[np.ndarray, np.ndarray]] = []
    if h == 0:
        _teach_window(batch, lessons, clean, leaving, leaving_level, 1, level, settings)
        _teach_spikes(batch, lessons, spiky, leaving[:, [SPIKE, BLIP]], settings)
        _teach(batch, lessons, settings)
        return
    if h < k:  # no room for a block: each window teaches as it leaves
        _teach_window(batch, lessons, clean & learning, leaving, leaving_level, 1, level, settings)
    else:
        _teach_in_blocks(batch, lessons, taught, clean, learning, leaving, leaving_level, level, settings)

    # The hold: a fault that creeps up over hours (a drift) must not teach its own start as normal a
    # quarantine later, so once a series has learnt, what leaves the quarantine waits h x k windows more (h
    # hours: k is the windows of an hour, `hold_strides`). Every k-th window waits, standing for k (the history
    # learns slowly anyway); an incident that opens flags the hold too, so its ramp never teaches.
    held = clean & ~learning
    hold_flags = np.where(opened, (1 << h) - 1, batch.hold_incident)
    batch.hold_skip = np.where(held, (batch.hold_skip + 1) % strides, batch.hold_skip)
    push = held & (batch.hold_skip == 0)
    out_ready = push & (batch.hold_n >= h)
    out, out_level = batch.hold[:, 0, :].copy(), batch.hold_level[:, 0, :].copy()
    out_incident = (hold_flags & 1).astype(bool)
    _shift_in(batch, "hold", push, leaving)
    _shift_in(batch, "hold_level", push, leaving_level)
    batch.hold_incident = np.where(push, (hold_flags >> 1) | (now_open.astype(np.int64) << (h - 1)), hold_flags)
    batch.hold_n = np.where(push, np.minimum(batch.hold_n + 1, h), batch.hold_n)
    _teach_window(batch, lessons, out_ready & ~out_incident, out, out_level, strides, level, settings)
    _teach_spikes(batch, lessons, spiky, leaving[:, [SPIKE, BLIP]], settings)
    _teach(batch, lessons, settings)


# the distance, in level spreads, from the old centre at which a settled incident's new normal is a level apart
RECENTRE_SPREADS = 3.0
# ... and how much wider than its spread it reads the new normal at first: a centre taken from one quarantine of
# overlapping windows is some 4 levels' median, off by about half a spread (the spread then learns back as usual)
RECENTRE_WIDEN = 1.5
# a bit of Batch.relearn beyond the columns': the level column waits to move its centre (`_recentre_level`)
RECENTRE = 1 << COLUMNS


def _level_reading(level: np.ndarray, centre: np.ndarray, spread: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """The level column's reading: the largest distance of a window's feature levels (last axis) from the series'
    centre, in its spreads, floored at `floor` (F,): level_spread_floor, or the data's grid where larger
    (`Reference.grid`)."""
    return np.max(np.abs(level - centre) / np.maximum(spread, floor), axis=-1)


def _recentre_level(batch: Batch, spread_floor: np.ndarray, settings: CalibrationSettings) -> None:
    """A quarantine after a settled incident that the level column kept telling, move its centre to the new normal
    where that is a level apart (RECENTRE_SPREADS of either spread from the old centre, by the quarantine's levels:
    the windows since the settle), the spread the one taught before the incident or the new level's if wider,
    RECENTRE_WIDEN times, and judge on. Relearnt from the prior, as the error columns do, its centre crept from
    the old level for days (it learns slowly: a drift must not teach itself) and its spread swelled with the
    distance: a second fault in those days went unseen. Not at the settle itself, nor where the newest window has
    left the new level: a fault that ends as it settles, or within the quarantine after, leaves the old level the
    normal. A level that cycles slower than a quarantine (a daily ramp) is no level apart either."""
    due = ((batch.relearn & RECENTRE) != 0) & (batch.since_reset >= settings.quarantine)
    if not due.any():
        return
    rows = np.flatnonzero(due)
    levels, old, spread = batch.pending_level[rows], batch.centre[rows], batch.spread[rows]
    centre = np.median(levels, axis=1)
    wide = np.maximum(spread, 1.2533 * np.mean(np.abs(levels - centre[:, None]), axis=1))
    # per feature (the others keep their centre), and only where the newest window is still at the new level (a
    # fault that ended within the quarantine leaves the old level the normal)
    apart = RECENTRE_SPREADS * wide
    moved = (np.abs(centre - old) >= apart) & (np.abs(levels[:, -1] - centre) < apart)
    batch.centre[rows] = centre = _stored(np.where(moved, centre, old))
    batch.spread[rows] = spread = _stored(np.where(moved, RECENTRE_WIDEN * wide, spread))
    batch.level_n[rows] = 0  # and it learns fast again
    # the windows waiting in the quarantine were read against the old centre: read them as they will teach
    reading = _level_reading(levels, centre[:, None], spread[:, None], spread_floor)
    batch.pending[rows, :, LEVEL] = _stored(np.clip(reading, LO, HI - 1e-9))
    batch.relearn[rows] &= ~(RECENTRE | (1 << LEVEL))


# hold_skip of a series whose hold gathers a block of learning windows (past the learning period: 0..k-1)
BLOCK = -1


def _teach_in_blocks(batch: Batch, lessons: list[tuple[np.ndarray, np.ndarray]], taught: np.ndarray,
                     clean: np.ndarray, learning: np.ndarray, leaving: np.ndarray, leaving_level: np.ndarray,
                     level: np.ndarray | None, settings: CalibrationSettings) -> None:
    """While a series learns, the windows leaving the quarantine gather in the hold (idle until it has learnt)
    and teach hold_stride at a time, oldest first, each as it would have alone: the histograms then change
    once in hold_stride windows, and so does most of the state a store rewrites (worker/state/codec.py). Once
    the series has learnt, a block still gathering teaches at once and the hold starts its own work."""
    k = settings.hold_stride
    gather = clean & learning
    if gather.any():  # the hold is empty when the learning period starts (a new series, or a settle's restart)
        batch.hold_skip = np.where(gather, BLOCK, batch.hold_skip)
        slot = np.flatnonzero(gather)
        batch.hold[slot, batch.hold_n[slot]] = _stored(leaving[slot])
        batch.hold_level[slot, batch.hold_n[slot]] = _stored(leaving_level[slot])
        batch.hold_n = batch.hold_n + gather
    due = (batch.hold_skip == BLOCK) & (taught & ~learning | (batch.hold_n >= k))
    if not due.any():
        return
    for j in range(k):
        _teach_window(batch, lessons, due & (batch.hold_n > j), batch.hold[:, j, :], batch.hold_level[:, j, :], 1,
                      level, settings)
    batch.hold_n = np.where(due, 0, batch.hold_n)
    batch.hold_skip = np.where(due & ~learning, 0, batch.hold_skip)


def _shift_in(batch: Batch, name: str, where: np.ndarray, values: np.ndarray) -> None:
    """Append (S, ...) `values` (rounded as stored) to the ring `name` (S, slots, ...) where `where`, in place,
    dropping its oldest."""
    ring = getattr(batch, name)
    if where.all():  # the usual round: in place
        ring[:, :-1] = ring[:, 1:]
        ring[:, -1] = _stored(values)
    elif where.any():
        rows = np.flatnonzero(where)
        ring[rows, :-1] = ring[rows, 1:]
        ring[rows, -1] = _stored(values[rows])


def _teach_spikes(batch: Batch, lessons: list[tuple[np.ndarray, np.ndarray]], ready: np.ndarray, spike: np.ndarray,
                  settings: CalibrationSettings) -> None:
    """The spike of every window that leaves the quarantine (`ready`) teaches the spike column, inside an
    incident too, each at weight 1. They wait in `spike_block` until the step's other `lessons` teach the
    series, so the histograms still change once in hold_stride windows, or until it is full (2 x hold_stride
    windows: while the hold fills or an incident holds the other lessons back).

    A lone spike that a series has once a day and one it has never had differ only in how often they come,
    so this column must count them all. Held like the other columns (one window in hold_stride, taught for
    hold_stride), it saw a spike a day once in twelve days; taught only outside incidents, a spike that opened
    one was never taught and the next one like it opened another. Stream-type bench, development seeds,
    false incidents per 10k windows over the eleven types: 2.7 held, 1.8 outside incidents (counts-bursts
    4.4: the onsets of natural bursts), 1.4 with this rule (counts-bursts 1.9)."""
    if ready.any():
        rows = np.flatnonzero(ready)
        batch.spike_block[rows, batch.spike_n[rows]] = _stored(spike[rows])
        batch.spike_n = batch.spike_n + ready
    due = batch.spike_n >= batch.spike_block.shape[1]
    for _, weights in lessons:
        due |= weights.any(axis=1)
    due &= batch.spike_n > 0
    if not due.any():
        return
    n = int(batch.spike_n[due].max())  # one lesson per slot, all allocated at once
    values, weights = np.zeros((n, len(due), COLUMNS)), np.zeros((n, len(due), COLUMNS))
    values[:, :, [SPIKE, BLIP]] = batch.spike_block[:, :n].transpose(1, 0, 2)
    weights[:, :, SPIKE] = weights[:, :, BLIP] = due & (batch.spike_n > np.arange(n)[:, None])
    lessons.extend(zip(values, weights))
    batch.spike_n = np.where(due, 0, batch.spike_n)


def _teach_window(batch: Batch, lessons: list[tuple[np.ndarray, np.ndarray]], teach: np.ndarray, values: np.ndarray,
                  levels: np.ndarray, weight: int | np.ndarray, level: np.ndarray | None,
                  settings: CalibrationSettings) -> None:
    """Teach (S, COLUMNS) `values` and (S, F) `levels` where `teach`, each standing for `weight` windows (one
    count, or one per series): the level now, the histograms with the step's other lessons (`_teach`); the spike
    column apart (`_teach_spikes`)."""
    if not teach.any():
        return
    weight = np.broadcast_to(np.asarray(weight, np.int64), teach.shape)
    weights = np.repeat(teach[:, None] * weight[:, None].astype(np.float64), COLUMNS, axis=1)
    weights[:, SPIKE] = weights[:, BLIP] = 0.0
    lessons.append((np.array(values), weights))
    batch.taught = batch.taught + teach * weight
    if level is not None:
        learn = teach[:, None]
        a = np.maximum(1.0 / (batch.level_n + 1.0 + settings.level_prior), 1.0 - settings.decay)[:, None]
        a = 1.0 - (1.0 - a) ** weight[:, None]
        deviation = levels - batch.centre
        batch.centre = np.where(learn, _stored(batch.centre + a * deviation), batch.centre)
        batch.spread = np.where(learn, _stored(batch.spread + a * (1.2533 * np.abs(deviation) - batch.spread)),
                                batch.spread)
        batch.level_n = batch.level_n + learn[:, 0] * weight


def rounds(series: Sequence[Hashable] | np.ndarray) -> list[np.ndarray]:
    """Positions of a batch's windows (in order) grouped into rounds: round r holds the r-th window of
    every series that has one, so each round judges each series at most once, in window order. `series`
    names each window's series (integer codes are used as they are)."""
    if isinstance(series, np.ndarray) and series.dtype.kind in "iu":
        codes = series.astype(np.int64, copy=False)
    else:
        index: dict[Hashable, int] = {}
        codes = np.fromiter((index.setdefault(key, len(index)) for key in series), np.int64, len(series))
    n = len(codes)
    if not n:
        return []
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    rank = np.empty(n, np.int64)  # the window's place among its series' windows
    rank[order] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    by_round = np.argsort(rank, kind="stable")
    return np.split(by_round, np.cumsum(np.bincount(rank))[:-1])
