"""Per-series online calibration (pure): judge a window against that series' own recent history.

Each series keeps a fixed-size summary of its recent window errors, per feature and in log space
(`ScoreHistory`: long-term mean and variance, a short-term mean and how far it strays, the previous
window's errors). `judge` gives a window's tail probability before it is folded in: the series' point
and trend tests, blended in log space with the model's own calibration, which keeps the say while the
series is young (`warmup`) or for good (`history_weight`). `fold` then updates the summary, winsorised
at `clip_sd` and weighted by how usual the window was. Overlapping windows confirm each other: an error
counts only as far as the previous window agrees. A window ending at or before `last_end_ms` (a replay)
changes nothing; a history kept for another model restarts.

The formulas, the symbols used in the comments below, and why each part is there: docs/detection.md.
"""

import math
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


@dataclass(frozen=True)
class AdaptiveSettings:
    """How fast a series' history forgets and how long the model's calibration dominates."""

    long_halflife: float = 1000.0  # windows; the memory of "normal" for this series
    short_halflife: float = 6.0  # windows; the "recent average" compared against it
    warmup: float = 300.0  # windows after which the series' own history has half its final say
    history_weight: float = 1.0  # the say the series' history reaches while the model fits it (docs/detection.md)
    variance_floor: float = 1e-3  # in ln-error units squared: errors within ~3 % are never "unusual"
    clip_sd: float = 2.0  # updates are winsorised at this many standard deviations (docs/detection.md: why 2)
    learn_surprise: float = 2.0  # windows judged above this count less in a young history (docs/detection.md)

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
    """The bounded summary of one series' per-feature window errors (symbols: docs/detection.md).

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

    @classmethod
    def fresh(cls, model_key: int, last_end_ms: int = -1) -> "ScoreHistory":
        return cls(last_end_ms=last_end_ms, model_key=model_key)


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
    two consecutive windows, and an anomaly must show in both (docs/detection.md: confirmation)."""
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
    its long-term errors sit two or more of the model's scales off the model's median (docs/detection.md)."""
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
    (docs/detection.md); an unjudgeable (NaN) surprise teaches nothing."""
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
        # The short-term mean averages the confirmed errors, as the trend test judges (docs/detection.md).
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
