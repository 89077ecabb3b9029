"""Per-series online calibration (pure): judge a window against that series' own recent history.

A model calibrated once on its training data floods when a series drifts and goes silent when a sensor
gets quieter. Each series therefore carries a fixed-size summary of its recent window errors, per
feature f and in log space (reconstruction errors are roughly log-normal and span decades; a fault in
one sensor is diluted F times in the model's mean score, not in its own feature's error):

    e_f   = score * F * share_f                      the window's mean squared error of feature f
    x_f   = ln(max(e_f, 1e-12))
    u     = min(1, 10 ** (learn_surprise - surprise))  the window's weight: how usual it was judged
    W    <- W + u                                    the weight learned from so far
    a     = max(u / W, a_long)                       a_long = 1 - 2 ** (-1 / long_halflife)
    d_f   = clip(x_f - m_f, +-c sqrt(v_f + floor))  winsorised at c = clip_sd: an outlier barely teaches
    m_f  <- m_f + a d_f                              long-term mean
    v_f  <- (1 - a) (v_f + a d_f ** 2 / k)           long-term variance (exponentially weighted);
                                                     k = E[min(Z², c²)] unbiases it for normal x
    d'_f  = clip(y_f - m_f, +-c sqrt(v_f + floor))   the same for the confirmed error y_f (below)
    s_f  <- s_f + max(1 / n, a_short) (m_f,old + d'_f - s_f)   short-term mean of y_f (short_halflife)
    w_f  <- w_f + a ((s_f - m_f) ** 2 - w_f)         how far the short mean usually strays
    r_f  <- x_f                                      the previous window's log error, for confirmation
    r_0  <- anomaly_score                            and its model anomaly score, likewise

A new window is judged BEFORE it is folded in:

    y_f     = min(x_f, r_f) if confirmed (below), else x_f  the error the previous window agrees with
    p_point = Q(max_f (y_f - m_f) / sqrt(v_f + floor))     is this window unusual for this series?
    p_trend = Q(max_f (s'_f - m_f) / sqrt(w_f + floor))    is the recent average unusual?
              s'_f = s_f + max(1 / (n + 1), a_short) (y_f - s_f)
    p_local = min(1, 2 F min(p_point, p_trend))            Bonferroni over the 2 F questions
    p_score = max(1 - min(anomaly_score, r_0), 2 ** -24)   the model's global calibration, confirmed too
    p_feat  = min(1, F Q(max_f (y_f - med_f) / sqrt(sc_f ** 2 + floor)))   each feature's, by the model
    p_model = min(1, 2 min(p_score, p_feat)) if the model records med_f, sc_f and F > 1, else p_score
    D       = max_f |m_f - med_f| / sqrt(sc_f ** 2 + floor)   how far the series' errors moved off the
                                                           model's calibration (0 without med_f, sc_f)
    h       = max(history_weight, clip(D - 1, 0, 1))       the say the series' history reaches (1 by default)
    lambda  = h n / (n + warmup)                           trust in the series' history grows with it
    ln p    = (1 - lambda) ln p_model + lambda ln p_local
    surprise = -log10 p                                    3 means "one window in a thousand"

Q is the upper tail of the standard normal; r_f and r_0 count only when the window is confirmed
(below). The state is 40 + 40 F bytes per series whatever the stream length, and it forgets: a regime
change becomes the new normal after a few `long_halflife`s, while a window that is unusual *for this
series* stands out even when the model's global scale says otherwise.

Confirmation: when the previous window of the series covers at least the first half of this one
(2 last_end_ms >= start_ms + end_ms, i.e. stride <= window / 2), every event lies in two consecutive
windows, so a real anomaly in feature f raises f's error in both. An error that jumps in ONE window
only is the model rendering that window badly (e.g. one phase of a periodic signal it reconstructs
poorly, once per period), not the data: both tests therefore see, per feature, the smaller of the two
windows' errors (an intersection-union test: both windows must be unusual). The cost is one stride of
delay. The long-term moments fold in the window's own x (they describe all of the series' errors); the
short-term mean folds in y, since the trend test adds up recent windows: fed x, it added up the
one-window rendering errors too, and its surprise on normal windows had the heaviest tail of the tests
(README: the quality harness). The model's calibration,
which a young series leans on, is confirmed the same way (the smaller of the two windows' anomaly
scores): unconfirmed, it let those one-window errors through for the first few hundred windows of
every series (README: the quality harness). Non-overlapping or gapped windows are judged alone.

Why winsorise at c = 2 sd: the history must not learn from the anomalies it is there to catch. Every
window of a lasting anomaly still grows the variance by a (c² / k - 1). Over a 144-window drift fault
(halflife 1000) that doubled the standard deviation at c = 4 (x2.1), which then hid later faults of
the series for thousands of windows (README: the quality harness); at c = 2 it grows 1.18x. The
price: a regime change that moves the errors is absorbed more slowly, mostly through that same growth.

Why the model's calibration judges each feature too: a young series leans on the model, and the score's
calibration judges the window's MEAN error, in which a fault in one of F sensors is diluted F times (a
stuck sensor raises its own error a few-fold, the mean barely). The artifact records each feature's
log-error median med_f and robust scale sc_f on its held-out calibration windows (vrae_model.calibration
.FeatureCalibration), so the model's side asks the same per-feature question the series' history asks
later. With one feature its error is the score, whose calibration (with its fitted tail) is kept alone.

Why weigh windows by how usual they were: a young series learns at rate u / W, about 1 / n, so its
first windows make up its whole history. When a series' stream starts inside an anomaly or a regime
the model finds odd, those windows would teach the history a spread several times the normal one
(0.9 against 0.25 ln units on one harness series), and at a_long the excess then takes thousands of
windows to fade, hiding moderate faults (stuck sensors) meanwhile. The judgement made just before the
fold (blended with the model's calibration while the series is young) says which windows those are:
one at surprise 3 counts a tenth of a usual window, at 4 a hundredth. Weights are relative (u / W): a
series whose every window is unusual to the model still learns at about 1 / n. Once W passes
1 / a_long the rate is a_long whatever u, exactly as without weights: an old series is protected by
winsorising alone, so a lasting change still becomes the new normal.

Why a history_weight (default 1: the series' history takes over entirely): judged on its own scale
alone, a series whose abnormal windows are not rare for it (ECG5000: one beat in seven) is judged by a
normal spread that differs from stream to stream, so alert levels chosen on one labelled stream
transfer worse to the next (benchmarks/level_transfer.py). A history_weight below 1 keeps the model's
calibration, the same for every series, in the judgement for good. Where the series' errors have moved
off it for good (a recalibrated sensor: its long-term mean error D model scales from the model's
median), the model's word is stale and would hold an incident open for good, so the history takes
over there anyway, fully from D = 2. The default stays 1: on the quality harness a history_weight of
1/2 gains on ECG5000 over many seeds (+1.8 NAB over 60) but costs series that get recalibrated
(README: the quality harness, with figures).

Replays: the state remembers the end timestamp of the last window folded in; a window ending at or
before it is never folded in again, so a replay leaves the history unchanged.
"""

import math
import struct
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np

from vrae_model.calibration import MIN_ERROR, FeatureCalibration

MIN_PROBABILITY = 1e-300
# anomaly_score arrives as float32: 1 - p cannot resolve p below 2**-24, so the model's own tail
# probability is floored there instead of reading an exact 1.0 as "impossible".
MIN_MODEL_PROBABILITY = 2.0**-24
# ln(float32 max): where a non-finite error (the model overflowed) lands, the most anomalous there is.
MAX_LOG_SCORE = math.log(float(np.finfo(np.float32).max))
# last_end_ms, n, model_key, previous_anomaly, weight; then 5 float64 arrays of F
_HEAD = struct.Struct("<qqqdd")
_ARRAYS = 5


@dataclass(frozen=True)
class AdaptiveSettings:
    """How fast a series' history forgets and how long the model's calibration dominates."""

    long_halflife: float = 1000.0  # windows; the memory of "normal" for this series
    short_halflife: float = 6.0  # windows; the "recent average" compared against it
    warmup: float = 300.0  # windows after which the series' own history has half its final say
    history_weight: float = 1.0  # the say the series' history reaches while the model fits it (docstring)
    variance_floor: float = 1e-3  # in ln-error units squared: errors within ~3 % are never "unusual"
    clip_sd: float = 2.0  # updates are winsorised at this many standard deviations (docstring: why 2)
    learn_surprise: float = 2.0  # windows judged above this count less in a young history (docstring)

    def __post_init__(self) -> None:
        if not self.clip_sd > 0:
            raise ValueError(f"clip_sd must be positive, got {self.clip_sd}")
        if not 0.0 <= self.history_weight <= 1.0:
            raise ValueError(f"history_weight must be within [0, 1], got {self.history_weight}")

    @cached_property  # read for every window: computed once
    def long_rate(self) -> float:
        return 1.0 - 2.0 ** (-1.0 / self.long_halflife)

    @cached_property
    def short_rate(self) -> float:
        return 1.0 - 2.0 ** (-1.0 / self.short_halflife)

    @cached_property
    def clip_efficiency(self) -> float:
        """k = E[min(Z², c²)] for a standard normal Z: the share of the variance a winsorised update sees,
        so that v / k, not v, estimates the variance of normal-behaviour errors."""
        c = self.clip_sd
        inside = math.erf(c / math.sqrt(2.0))
        density = math.exp(-0.5 * c * c) / math.sqrt(2.0 * math.pi)
        return inside - 2.0 * c * density + c * c * (1.0 - inside)


Vector = tuple[float, ...]  # one float per feature; plain floats: F is small and this runs per window


class ScoreHistory(NamedTuple):
    """The bounded summary of one series' per-feature window errors (symbols: module docstring).

    NamedTuples here and for the judgement: one of each is built per window, and a frozen dataclass
    costs three times as much to build."""

    last_end_ms: int = -1  # end of the last window folded in; -1: none yet
    n: int = 0
    model_key: int = 0  # which model's error scale these moments are in
    mean: Vector = ()
    var: Vector = ()
    short: Vector = ()
    short_var: Vector = ()
    previous: Vector = ()  # the log errors of the window ending at last_end_ms
    previous_anomaly: float = 1.0  # and the model's anomaly score of that window (r_0)
    weight: float = 0.0  # W: the summed weights u of the windows folded in

    def to_bytes(self) -> bytes:
        moments = (*self.mean, *self.var, *self.short, *self.short_var, *self.previous)
        head = _HEAD.pack(self.last_end_ms, self.n, self.model_key, self.previous_anomaly, self.weight)
        return head + struct.pack(f"<{len(moments)}d", *moments)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "ScoreHistory":
        last_end_ms, n, key, previous_anomaly, weight = _HEAD.unpack_from(raw)
        f = (len(raw) - _HEAD.size) // (8 * _ARRAYS)
        moments = struct.unpack_from(f"<{_ARRAYS * f}d", raw, _HEAD.size)
        mean, var, short, short_var, previous = (moments[i * f:(i + 1) * f] for i in range(_ARRAYS))
        return cls(last_end_ms, n, key, mean, var, short, short_var, previous, previous_anomaly, weight)

    @classmethod
    def fresh(cls, model_key: int, last_end_ms: int = -1) -> "ScoreHistory":
        return cls(last_end_ms=last_end_ms, model_key=model_key)


def state_bytes(n_features: int) -> int:
    """Bytes of one series' history: fixed by the feature count, whatever the stream length."""
    return _HEAD.size + _ARRAYS * 8 * n_features


class Judgement(NamedTuple):
    """How unusual one window is: the blended tail probability and its parts."""

    p_value: float
    p_point: float  # smallest per-feature point tail probability
    p_trend: float  # smallest per-feature short-term-mean tail probability (both of confirmed errors)
    p_model: float

    @property
    def surprise(self) -> float:
        """-log10 of the tail probability: 2 is one in a hundred, 3 one in a thousand."""
        return -math.log10(max(self.p_value, MIN_PROBABILITY))

    @property
    def anomaly_score(self) -> float:
        return 1.0 - self.p_value


def model_key(sha256: str) -> int:
    """A signed 64-bit tag of the model's sha256: history kept for another model is not comparable."""
    return int.from_bytes(bytes.fromhex(sha256[:16]), "little", signed=True)


def feature_errors(score: float, shares: np.ndarray) -> Vector:
    """Each feature's mean squared error in the window: score * F * its share of the error."""
    f = len(shares)
    return tuple(score * f * (share if share == share else 1.0 / f) for share in np.asarray(shares).tolist())


def log_error(error: float) -> float:
    """ln(error), floored at 1e-12; NaN and inf (the model overflowed) land at the top of the scale."""
    if not error < math.inf:
        return MAX_LOG_SCORE
    return min(math.log(max(error, MIN_ERROR)), MAX_LOG_SCORE)


def model_anomaly_of(anomaly_score: float) -> float:
    """The model's calibrated anomaly score; NaN (the model overflowed) counts as certain: 1."""
    return anomaly_score if math.isfinite(anomaly_score) else 1.0


def upper_tail(z: float) -> float:
    """Q(z) = P(N(0, 1) > z)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def confirms(history: ScoreHistory, start_ms: int, end_ms: int) -> bool:
    """Whether the previous window covers at least the first half of this one: then every event is in
    two consecutive windows, and an anomaly must show in both (module docstring: Confirmation)."""
    return history.n > 0 and 2 * history.last_end_ms >= start_ms + end_ms


def confirmed_log_errors(history: ScoreHistory, log_errors: Vector, confirmed: bool) -> Vector:
    """y_f: each feature's log error, capped at the previous window's when that window confirms this one."""
    if not confirmed:
        return log_errors
    return tuple(min(x, r) for x, r in zip(log_errors, history.previous))


def judge(history: ScoreHistory, errors: Vector, anomaly_score: float, settings: AdaptiveSettings, *,
          start_ms: int, end_ms: int, reference: FeatureCalibration | None = None) -> Judgement:
    """The tail probability of a window's per-feature errors for this series, blended with the model's
    own calibration (`anomaly_score`, and each feature's normal error, `reference`, when the model
    records it); the window spans [start_ms, end_ms]."""
    confirmed = confirms(history, start_ms, end_ms)
    confirmed_errors = confirmed_log_errors(history, tuple(log_error(error) for error in errors), confirmed)
    model_anomaly = model_anomaly_of(anomaly_score)
    if confirmed:
        model_anomaly = min(model_anomaly, history.previous_anomaly)
    p_model = min(max(1.0 - model_anomaly, MIN_MODEL_PROBABILITY), 1.0)
    if reference is not None and len(errors) > 1:
        p_model = min(1.0, 2.0 * min(p_model, model_feature_tail(confirmed_errors, reference, settings)))
    if history.n == 0:
        return Judgement(p_value=p_model, p_point=1.0, p_trend=1.0, p_model=p_model)
    floor = settings.variance_floor
    short_rate = max(1.0 / (history.n + 1), settings.short_rate)
    z_point = z_trend = -math.inf
    for y, m, v, s, w in zip(confirmed_errors, history.mean, history.var, history.short, history.short_var):
        z_point = max(z_point, (y - m) / math.sqrt(v + floor))
        z_trend = max(z_trend, (s + short_rate * (y - s) - m) / math.sqrt(w + floor))
    p_point, p_trend = upper_tail(z_point), upper_tail(z_trend)
    # Bonferroni over the 2 F questions asked (point and trend, each feature).
    p_local = max(min(1.0, 2.0 * len(errors) * min(p_point, p_trend)), MIN_PROBABILITY)
    trust = history_share(history, reference, settings) * history.n / (history.n + settings.warmup)
    p_value = math.exp((1.0 - trust) * math.log(p_model) + trust * math.log(p_local))
    return Judgement(p_value=p_value, p_point=p_point, p_trend=p_trend, p_model=p_model)


def history_share(history: ScoreHistory, reference: FeatureCalibration | None, settings: AdaptiveSettings) -> float:
    """h = max(history_weight, clip(D - 1, 0, 1)): the say the series' history reaches, all of it where
    its long-term errors sit two or more of the model's scales off the model's median (docstring)."""
    if reference is None or settings.history_weight >= 1.0:
        return settings.history_weight
    moved = max(abs(m - median) / math.sqrt(scale * scale + settings.variance_floor)
                for m, median, scale in zip(history.mean, reference.median, reference.scale))
    return max(settings.history_weight, min(max(moved - 1.0, 0.0), 1.0))


def model_feature_tail(log_errors: Vector, reference: FeatureCalibration, settings: AdaptiveSettings) -> float:
    """min(1, F Q(max_f (y_f - median_f) / scale_f)): is any feature's error unusual by the model's own
    calibration of that feature? Bonferroni over the F features; the variance floor guards a zero scale."""
    z = max((y - median) / math.sqrt(scale * scale + settings.variance_floor)
            for y, median, scale in zip(log_errors, reference.median, reference.scale))
    return max(min(1.0, len(log_errors) * upper_tail(z)), MIN_PROBABILITY)  # float64 here: no 2**-24 floor


def learning_weight(surprise: float, settings: AdaptiveSettings) -> float:
    """u = min(1, 10 ** (learn_surprise - surprise)): how much a judged window may teach a young history
    (module docstring); an unjudgeable (NaN) surprise teaches nothing."""
    excess = surprise - settings.learn_surprise
    if excess <= 0.0:
        return 1.0
    return 10.0 ** -excess if excess < 300.0 else 0.0


def fold(history: ScoreHistory, errors: Vector, settings: AdaptiveSettings, *, start_ms: int, end_ms: int,
         anomaly_score: float, surprise: float) -> ScoreHistory:
    """The history with one more window spanning [start_ms, end_ms] (its per-feature errors, the model's
    anomaly score, and the surprise it was just judged at); a window ending at or before `last_end_ms`
    (a replay) changes nothing."""
    if end_ms <= history.last_end_ms:
        return history
    x = tuple(log_error(error) for error in errors)
    y = confirmed_log_errors(history, x, confirms(history, start_ms, end_ms))
    anomaly = model_anomaly_of(anomaly_score)
    usual = learning_weight(surprise, settings)
    weight = history.weight + usual
    n = history.n + 1
    if n == 1:
        zeros = (0.0,) * len(x)
        return ScoreHistory(end_ms, 1, history.model_key, x, zeros, x, zeros, x, anomaly, weight)
    rate = max(usual / weight, settings.long_rate) if weight > 0.0 else settings.long_rate
    short_rate = max(1.0 / n, settings.short_rate)
    efficiency = settings.clip_efficiency
    mean, var, short, short_var = [], [], [], []
    for xi, yi, m, v, s, w in zip(x, y, history.mean, history.var, history.short, history.short_var):
        # Winsorised: one wild window moves the moments no more than a window at the clip would, so an
        # anomaly does not teach the history that anomalies are normal; a lasting change still gets in.
        limit = settings.clip_sd * math.sqrt(v + settings.variance_floor)
        d = min(max(xi - m, -limit), limit)
        new_mean = m + rate * d
        # The short-term mean averages the confirmed errors, as the trend test judges (docstring).
        new_short = s + short_rate * (m + min(max(yi - m, -limit), limit) - s)
        mean.append(new_mean)
        var.append((1.0 - rate) * (v + rate * d * d / efficiency))
        short.append(new_short)
        short_var.append(w + rate * ((new_short - new_mean) ** 2 - w))
    return ScoreHistory(end_ms, n, history.model_key, tuple(mean), tuple(var), tuple(short), tuple(short_var), x,
                        anomaly, weight)


def for_model(history: ScoreHistory | None, key: int, n_features: int) -> ScoreHistory:
    """The history to use under the model tagged `key`, which has `n_features` features.

    Rule on a model swap: errors of two models live on different scales, so a history kept for
    another model restarts empty (keeping its replay mark). The blend then leans on the new model's
    global calibration and hands over to the series' own history again over `warmup` windows. A
    history of the wrong shape (a state stored by an older layout: a shorter head or fewer arrays
    decodes to the wrong feature count) restarts the same way.
    """
    if history is None:
        return ScoreHistory.fresh(key)
    if history.model_key != key or (history.n > 0 and len(history.previous) != n_features):
        return ScoreHistory.fresh(key, last_end_ms=history.last_end_ms)
    return history
