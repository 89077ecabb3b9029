"""Turn raw reconstruction scores into calibrated anomaly scores and pick a threshold without labels.

Below the tail quantile u the anomaly score is the empirical CDF of the calibration (validation)
scores; above u it follows a generalised Pareto tail fitted to the excesses (peaks over threshold,
Siffer et al. 2017, "SPOT"), so scores beyond anything seen keep ranking instead of saturating at 1.
Pure numpy: `ScoringModule` mirrors `anomaly_scores` in torch from the same numbers.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_KNOTS = 1024
# Fewer excesses than this cannot support a shape estimate; an exponential tail is the safe default.
MIN_EXCESSES_FOR_SHAPE = 10


@dataclass(frozen=True)
class Calibration:
    knots_score: np.ndarray  # (K,) increasing scores up to and including u
    knots_prob: np.ndarray  # (K,) fraction of calibration scores strictly below each knot
    u: float  # tail threshold (a calibration score)
    q_u: float  # fraction of calibration scores below u
    gpd_shape: float  # xi >= 0
    gpd_scale: float  # sigma > 0
    n: int  # number of calibration scores

    def to_dict(self) -> dict[str, Any]:
        return {
            "quantile": self.q_u,
            "u": self.u,
            "gpd_shape": self.gpd_shape,
            "gpd_scale": self.gpd_scale,
            "n": self.n,
            "sorted_scores_sample": self.knots_score.tolist(),
            "sample_probs": self.knots_prob.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Calibration":
        return cls(
            knots_score=np.asarray(data["sorted_scores_sample"], dtype=np.float64),
            knots_prob=np.asarray(data["sample_probs"], dtype=np.float64),
            u=float(data["u"]),
            q_u=float(data["quantile"]),
            gpd_shape=float(data["gpd_shape"]),
            gpd_scale=float(data["gpd_scale"]),
            n=int(data["n"]),
        )


# Errors are floored here before their log: the worker's per-series judgement (worker.detection.calibration) uses the
# same floor, so its log errors and this calibration's medians are on one scale.
MIN_ERROR = 1e-12


@dataclass(frozen=True)
class FeatureCalibration:
    """Each feature's typical log reconstruction error on the calibration windows: median and robust scale.

    The score's calibration judges the window's MEAN error, in which a fault in one of F sensors is
    diluted F times. A consumer that judges features one by one (the worker, while a series is too
    young to have a history of its own) needs each feature's normal error too. Log space, because
    errors are roughly log-normal; median and MAD, because a user's history may hold a few anomalies.
    """

    median: tuple[float, ...]  # per feature, of ln(mean squared error of that feature in the window)
    scale: tuple[float, ...]  # per feature, 1.4826 * median absolute deviation: the sd if normal

    def to_dict(self) -> dict[str, Any]:
        return {"log_error_median": list(self.median), "log_error_scale": list(self.scale)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], n_features: int) -> "FeatureCalibration":
        """Validated: one finite median and one finite, non-negative scale per feature."""
        median = tuple(float(v) for v in data["log_error_median"])
        scale = tuple(float(v) for v in data["log_error_scale"])
        if len(median) != n_features or len(scale) != n_features:
            raise ValueError(f"feature calibration has {len(median)}/{len(scale)} entries for {n_features} features")
        if not all(np.isfinite(median)) or not all(np.isfinite(scale)) or min(scale) < 0:
            raise ValueError("feature calibration holds a non-finite median or scale, or a negative scale")
        return cls(median, scale)


def fit_feature_calibration(feature_errors: np.ndarray) -> FeatureCalibration:
    """From (N, F) per-feature mean squared errors of the calibration windows."""
    x = np.log(np.maximum(np.asarray(feature_errors, dtype=np.float64), MIN_ERROR))
    median = np.median(x, axis=0)
    scale = 1.4826 * np.median(np.abs(x - median), axis=0)
    return FeatureCalibration(tuple(median.tolist()), tuple(scale.tolist()))


def fit_gpd(excesses: np.ndarray) -> tuple[float, float]:
    """(shape xi, scale sigma) of a generalised Pareto fitted to positive excesses over u.

    Probability-weighted moments (Hosking & Wallis 1987): closed form, no optimiser, and better than
    plain moments on the small samples a validation split gives. The shape is floored at 0: a bounded
    tail (xi < 0) fitted on a few hundred points would declare everything past its end equally
    certain, and ranking unseen extremes is the reason this tail exists. With xi = 0 the tail is
    exponential with the maximum-likelihood scale, the mean excess.
    """
    y = np.sort(np.asarray(excesses, dtype=np.float64))
    mean = float(y.mean()) if y.size else 0.0
    if mean <= 0.0:
        return 0.0, max(mean, np.finfo(np.float64).tiny)
    if y.size < MIN_EXCESSES_FOR_SHAPE:
        return 0.0, mean
    n = y.size
    plotting = (np.arange(1, n + 1) - 0.35) / n
    a0 = mean
    a1 = float(np.mean((1.0 - plotting) * y))
    denominator = a0 - 2.0 * a1
    if denominator <= 0.0:
        return 0.0, mean
    k = a0 / denominator - 2.0  # Hosking's k = -xi
    xi = -k
    if xi <= 0.0:
        return 0.0, mean
    sigma = 2.0 * a0 * a1 / denominator
    return float(min(xi, 0.95)), float(sigma)


def fit_calibration(scores: np.ndarray, tail_quantile: float = 0.98) -> Calibration:
    """Fit the body CDF and the tail on calibration scores (finite, at least one)."""
    x = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError("calibration needs at least one finite score")
    n = x.size
    u = float(x[min(int(np.floor(tail_quantile * n)), n - 1)])
    values, first_index = np.unique(x, return_index=True)  # first index = how many score lower
    body = values <= u
    knots_score, knots_prob = values[body], first_index[body] / n
    if knots_score.size > MAX_KNOTS:
        keep = np.unique(np.linspace(0, knots_score.size - 1, MAX_KNOTS).round().astype(np.int64))
        knots_score, knots_prob = knots_score[keep], knots_prob[keep]
    if knots_score.size == 1:  # one distinct value: a flat body, so interpolation still has two knots
        knots_score, knots_prob = np.repeat(knots_score, 2), np.repeat(knots_prob, 2)
    q_u = float(knots_prob[-1])
    excesses = x[x > u] - u
    if excesses.size:
        shape, scale = fit_gpd(excesses)
    else:  # nothing above u (ties at the top): any scale is a guess, so use one the size of the scores
        shape, scale = 0.0, max(float(x.std()), abs(u), 1e-12)
    return Calibration(knots_score, knots_prob, u, q_u, shape, scale, n)


def gpd_survival(excess: np.ndarray, shape: float, scale: float) -> np.ndarray:
    y = np.maximum(np.asarray(excess, dtype=np.float64), 0.0) / scale
    if shape > 1e-6:
        return np.exp(-np.log1p(shape * y) / shape)
    return np.exp(-y)


def anomaly_scores(calibration: Calibration, scores: np.ndarray) -> np.ndarray:
    """Calibrated anomaly score in [0, 1] for raw scores: monotone, strictly increasing above u."""
    s = np.asarray(scores, dtype=np.float64)
    body = np.interp(s, calibration.knots_score, calibration.knots_prob, left=0.0)
    tail = 1.0 - (1.0 - calibration.q_u) * gpd_survival(s - calibration.u, calibration.gpd_shape, calibration.gpd_scale)
    return np.where(s >= calibration.u, tail, body)


def surprises(calibration: Calibration, scores: np.ndarray) -> np.ndarray:
    """-log10 of each score's tail probability, 1 - anomaly_score, computed in log space: past the
    calibration's range `anomaly_score` rounds to 1.0 in float32 (and, far out, in float64), while the
    surprise keeps ranking (one decade of rarity per unit)."""
    s = np.asarray(scores, dtype=np.float64)
    body = np.interp(s, calibration.knots_score, calibration.knots_prob, left=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        body_surprise = -np.log10(1.0 - body)
        y = np.maximum(s - calibration.u, 0.0) / calibration.gpd_scale
        if calibration.gpd_shape > 1e-6:
            log_survival = -np.log1p(calibration.gpd_shape * y) / calibration.gpd_shape
        else:
            log_survival = -y
        tail_surprise = -(np.log10(1.0 - calibration.q_u) + log_survival / np.log(10.0))
    return np.where(s >= calibration.u, tail_surprise, body_surprise)


def score_at_risk(calibration: Calibration, risk: float) -> float:
    """The raw score whose tail probability is `risk` (inverse of the calibrated score at 1 - risk)."""
    tail_mass = 1.0 - calibration.q_u
    if risk >= tail_mass:
        return float(np.interp(1.0 - risk, calibration.knots_prob, calibration.knots_score))
    ratio = tail_mass / risk
    if calibration.gpd_shape > 1e-6:
        excess = calibration.gpd_scale / calibration.gpd_shape * (ratio**calibration.gpd_shape - 1.0)
    else:
        excess = calibration.gpd_scale * np.log(ratio)
    return float(calibration.u + excess)


@dataclass(frozen=True)
class Threshold:
    threshold: float  # on the anomaly_score scale
    score_threshold: float  # on the raw score scale
    method: str  # e.g. "pot:risk=0.0001"


def choose_threshold(
    calibration: Calibration,
    scores: np.ndarray,
    method: str,
    *,
    risk: float | None = None,
    quantile: float | None = None,
) -> Threshold:
    """Alert threshold without labels: a tail risk level (pot) or a quantile of the validation scores.

    The method's parameter has no default here: TrainConfig holds the one default of each.
    """
    if method == "pot" and risk is None:
        raise ValueError("threshold method 'pot' needs risk")
    if method == "quantile" and quantile is None:
        raise ValueError("threshold method 'quantile' needs quantile")
    if method == "pot":
        score_threshold = score_at_risk(calibration, risk)
        label = f"pot:risk={risk:g}"
    elif method == "quantile":
        score_threshold = float(np.quantile(np.asarray(scores, dtype=np.float64), quantile))
        label = f"quantile:{quantile:g}"
    else:
        raise ValueError(f"unknown threshold method {method!r}: use pot or quantile")
    threshold = float(anomaly_scores(calibration, np.array([score_threshold]))[0])
    return Threshold(threshold=threshold, score_threshold=score_threshold, method=label)
