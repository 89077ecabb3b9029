"""Per-series online calibration (pure): judge a window's score against that series' own recent history.

A model calibrated once on its training data floods when a series drifts and goes silent when a sensor
gets quieter. Each series therefore carries a fixed-size summary of its recent window scores, in log
space (reconstruction errors are roughly log-normal and span decades):

    x_t   = ln(max(score_t, 1e-12))
    a     = max(1 / n, a_long)        a_long  = 1 - 2 ** (-1 / long_halflife)   (exponential forgetting)
    m    <- m + a (x_t - m)            long-term mean
    v    <- (1 - a) (v + a (x_t - m_old) ** 2)   long-term variance (West 1979, exponentially weighted)
    s    <- s + max(1 / n, a_short) (x_t - s)    short-term mean (a_short from short_halflife)
    w    <- w + a ((s - m) ** 2 - w)   how far the short mean usually strays from the long one

A new window is judged BEFORE it is folded in:

    p_point = Q((x_t - m) / sqrt(v + floor))           is this window unusual for this series?
    p_trend = Q((s' - m) / sqrt(w + floor))            is the recent average unusual? (s' includes x_t)
    p_local = min(1, 2 min(p_point, p_trend))          Bonferroni over the two questions
    p_model = max(1 - anomaly_score, 2 ** -24)         the model's global calibration (its tail probability)
    lambda  = n / (n + warmup)                         trust in the series' own history grows with it
    ln p    = (1 - lambda) ln p_model + lambda ln p_local
    surprise = -log10 p                                3 means "one window in a thousand"

Q is the upper tail of the standard normal. The state is 48 bytes per series whatever the stream
length, and it forgets: a regime change becomes the new normal after a few `long_halflife`s, while a
window that is unusual *for this series* stands out even when the model's global scale says otherwise.

Replays: the state remembers the end timestamp of the last window folded in; a window ending at or
before it is never folded in again, so a replay leaves the history unchanged.
"""

import math
import struct
from dataclasses import dataclass

import numpy as np

MIN_SCORE = 1e-12
MIN_PROBABILITY = 1e-300
# anomaly_score arrives as float32: 1 - p cannot resolve p below 2**-24, so the model's own tail
# probability is floored there instead of reading an exact 1.0 as "impossible".
MIN_MODEL_PROBABILITY = 2.0**-24
# ln(float32 max): where a non-finite score (the model overflowed) lands, the most anomalous there is.
MAX_LOG_SCORE = math.log(float(np.finfo(np.float32).max))
_STATE = struct.Struct("<qqqddddd")  # last_end_ms, n, model_key, mean, var, short, short_var, spare


@dataclass(frozen=True)
class AdaptiveSettings:
    """How fast a series' history forgets and how long the model's calibration dominates."""

    long_halflife: float = 400.0  # windows; the memory of "normal" for this series
    short_halflife: float = 6.0  # windows; the "recent average" compared against it
    warmup: float = 100.0  # windows after which the series' own history has half the say
    variance_floor: float = 1e-3  # in ln-score units squared: scores within ~3 % are never "unusual"
    clip_sd: float = 4.0  # updates are winsorised at this many standard deviations

    @property
    def long_rate(self) -> float:
        return 1.0 - 2.0 ** (-1.0 / self.long_halflife)

    @property
    def short_rate(self) -> float:
        return 1.0 - 2.0 ** (-1.0 / self.short_halflife)


@dataclass(frozen=True)
class ScoreHistory:
    """The bounded summary of one series' window scores (see the module docstring for the symbols)."""

    last_end_ms: int = -1  # end of the last window folded in; -1: none yet
    n: int = 0
    model_key: int = 0  # which model's score scale these moments are in
    mean: float = 0.0
    var: float = 0.0
    short: float = 0.0
    short_var: float = 0.0

    def to_bytes(self) -> bytes:
        return _STATE.pack(self.last_end_ms, self.n, self.model_key, self.mean, self.var, self.short,
                           self.short_var, 0.0)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "ScoreHistory":
        last_end_ms, n, model_key, mean, var, short, short_var, _ = _STATE.unpack(raw)
        return cls(last_end_ms, n, model_key, mean, var, short, short_var)

    @classmethod
    def fresh(cls, model_key: int, last_end_ms: int = -1) -> "ScoreHistory":
        return cls(last_end_ms=last_end_ms, model_key=model_key)


STATE_BYTES = _STATE.size


@dataclass(frozen=True)
class Judgement:
    """How unusual one window is: the blended tail probability and its parts."""

    p_value: float
    p_point: float
    p_trend: float
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


def log_score(score: float) -> float:
    if not math.isfinite(score):
        return MAX_LOG_SCORE
    return min(math.log(max(score, MIN_SCORE)), MAX_LOG_SCORE)


def upper_tail(z: float) -> float:
    """Q(z) = P(N(0, 1) > z)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def judge(history: ScoreHistory, score: float, anomaly_score: float, settings: AdaptiveSettings) -> Judgement:
    """The tail probability of `score` for this series, blended with the model's own (`anomaly_score`)."""
    model_anomaly = anomaly_score if math.isfinite(anomaly_score) else 1.0
    p_model = min(max(1.0 - model_anomaly, MIN_MODEL_PROBABILITY), 1.0)
    if history.n == 0:
        return Judgement(p_value=p_model, p_point=1.0, p_trend=1.0, p_model=p_model)
    x = log_score(score)
    p_point = upper_tail((x - history.mean) / math.sqrt(history.var + settings.variance_floor))
    short = history.short + max(1.0 / (history.n + 1), settings.short_rate) * (x - history.short)
    p_trend = upper_tail((short - history.mean) / math.sqrt(history.short_var + settings.variance_floor))
    p_local = max(min(1.0, 2.0 * min(p_point, p_trend)), MIN_PROBABILITY)
    trust = history.n / (history.n + settings.warmup)
    p_value = math.exp((1.0 - trust) * math.log(p_model) + trust * math.log(p_local))
    return Judgement(p_value=p_value, p_point=p_point, p_trend=p_trend, p_model=p_model)


def fold(history: ScoreHistory, score: float, end_ms: int, settings: AdaptiveSettings) -> ScoreHistory:
    """The history with one more window; a window at or before `last_end_ms` (a replay) changes nothing."""
    if end_ms <= history.last_end_ms:
        return history
    x = log_score(score)
    n = history.n + 1
    if n == 1:
        return ScoreHistory(last_end_ms=end_ms, n=1, model_key=history.model_key, mean=x, var=0.0, short=x,
                            short_var=0.0)
    rate = max(1.0 / n, settings.long_rate)
    # Winsorised: one wild window moves the moments no more than a window at the clip would, so an
    # anomaly does not teach the history that anomalies are normal; a lasting change still gets in.
    limit = settings.clip_sd * math.sqrt(history.var + settings.variance_floor)
    deviation = min(max(x - history.mean, -limit), limit)
    mean = history.mean + rate * deviation
    var = (1.0 - rate) * (history.var + rate * deviation * deviation)
    short = history.short + max(1.0 / n, settings.short_rate) * (history.mean + deviation - history.short)
    short_var = history.short_var + rate * ((short - mean) ** 2 - history.short_var)
    return ScoreHistory(last_end_ms=end_ms, n=n, model_key=history.model_key, mean=mean, var=var, short=short,
                        short_var=short_var)


def for_model(history: ScoreHistory | None, key: int) -> ScoreHistory:
    """The history to use under the model tagged `key`.

    Rule on a model swap: scores of two models live on different scales, so a history kept for another
    model restarts empty (keeping its replay mark). The blend then leans on the new model's global
    calibration and hands over to the series' own history again over `warmup` windows.
    """
    if history is None:
        return ScoreHistory.fresh(key)
    if history.model_key != key:
        return ScoreHistory.fresh(key, last_end_ms=history.last_end_ms)
    return history
