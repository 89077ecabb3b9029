import numpy as np
import pytest

from vrae_model.calibration import (
    Calibration,
    FeatureCalibration,
    anomaly_scores,
    choose_threshold,
    fit_calibration,
    fit_feature_calibration,
    fit_gpd,
    gpd_survival,
    score_at_risk,
)


@pytest.fixture()
def scores() -> np.ndarray:
    return np.random.default_rng(0).gamma(2.0, 1.0, size=5000)


def test_anomaly_score_is_the_fraction_of_calibration_scores_below(scores: np.ndarray) -> None:
    calibration = fit_calibration(scores, tail_quantile=0.98)
    probe = np.quantile(scores, [0.1, 0.5, 0.9])
    expected = [(scores < p).mean() for p in probe]
    assert np.allclose(anomaly_scores(calibration, probe), expected, atol=2e-3)


def test_anomaly_score_is_monotone_and_strictly_increasing_past_the_maximum(scores: np.ndarray) -> None:
    calibration = fit_calibration(scores)
    grid = np.linspace(-1.0, scores.max() * 3, 4000)
    values = anomaly_scores(calibration, grid)
    assert np.all(np.diff(values) >= 0)
    beyond = anomaly_scores(calibration, scores.max() + np.array([0.0, 1.0, 2.0, 5.0]))
    assert np.all(np.diff(beyond) > 0)
    assert values.min() >= 0.0 and values.max() < 1.0


def test_tail_starts_where_the_body_ends(scores: np.ndarray) -> None:
    calibration = fit_calibration(scores, tail_quantile=0.95)
    below, at = anomaly_scores(calibration, np.array([np.nextafter(calibration.u, 0), calibration.u]))
    assert at == pytest.approx(calibration.q_u)
    assert below <= at
    assert calibration.q_u == pytest.approx(0.95, abs=1e-3)


def test_gpd_fit_recovers_a_heavy_tail() -> None:
    rng = np.random.default_rng(1)
    xi, sigma = 0.3, 2.0
    sample = sigma / xi * ((1 - rng.random(20000)) ** -xi - 1)  # inverse CDF of the GPD
    shape, scale = fit_gpd(sample)
    assert shape == pytest.approx(xi, abs=0.05)
    assert scale == pytest.approx(sigma, rel=0.08)


def test_bounded_tail_falls_back_to_exponential_so_extremes_still_rank() -> None:
    shape, scale = fit_gpd(np.random.default_rng(2).random(500))  # uniform excesses: xi = -1
    assert shape == 0.0
    assert scale == pytest.approx(0.5, abs=0.05)
    assert gpd_survival(np.array([10.0]), shape, scale)[0] > 0


def test_pot_threshold_has_the_requested_tail_probability(scores: np.ndarray) -> None:
    calibration = fit_calibration(scores)
    threshold = choose_threshold(calibration, scores, "pot", risk=1e-4)
    assert threshold.threshold == pytest.approx(1 - 1e-4, abs=1e-9)
    assert threshold.score_threshold > scores.max() * 0.8
    assert threshold.method == "pot:risk=0.0001"


def test_risk_larger_than_the_tail_uses_the_empirical_quantile(scores: np.ndarray) -> None:
    calibration = fit_calibration(scores, tail_quantile=0.98)
    assert score_at_risk(calibration, 0.1) == pytest.approx(np.quantile(scores, 0.9), rel=0.01)


def test_quantile_threshold_is_that_quantile_of_validation_scores(scores: np.ndarray) -> None:
    calibration = fit_calibration(scores)
    threshold = choose_threshold(calibration, scores, "quantile", quantile=0.99)
    assert threshold.score_threshold == pytest.approx(np.quantile(scores, 0.99))
    assert threshold.threshold == pytest.approx(0.99, abs=2e-3)
    alerts = anomaly_scores(calibration, scores) >= threshold.threshold
    assert alerts.mean() == pytest.approx(0.01, abs=2e-3)


def test_calibration_survives_a_dict_round_trip(scores: np.ndarray) -> None:
    calibration = fit_calibration(scores)
    again = Calibration.from_dict(calibration.to_dict())
    probe = np.linspace(0, 30, 50)
    assert np.array_equal(anomaly_scores(again, probe), anomaly_scores(calibration, probe))
    assert len(calibration.knots_score) <= 1024


def test_constant_scores_still_calibrate() -> None:
    calibration = fit_calibration(np.full(10, 2.0))
    values = anomaly_scores(calibration, np.array([1.0, 2.0, 3.0, 4.0]))
    assert values[0] == 0.0
    assert np.all(np.diff(values[1:]) > 0)


def test_feature_calibration_is_each_features_log_error_median_and_robust_scale() -> None:
    rng = np.random.default_rng(0)
    log_errors = rng.normal([-3.0, 0.5], [0.2, 0.6], size=(20_000, 2))
    log_errors[:500, 0] = 5.0  # a few anomalous windows in the history barely move it
    fitted = fit_feature_calibration(np.exp(log_errors))
    np.testing.assert_allclose(fitted.median, [-3.0, 0.5], atol=0.02)
    np.testing.assert_allclose(fitted.scale, [0.2, 0.6], rtol=0.05)
    assert FeatureCalibration.from_dict(fitted.to_dict(), 2) == fitted


@pytest.mark.parametrize("raw,n_features,message", [
    ({"log_error_median": [0.0], "log_error_scale": [1.0]}, 2, "1/1 entries for 2 features"),
    ({"log_error_median": [float("nan")], "log_error_scale": [1.0]}, 1, "non-finite"),
    ({"log_error_median": [0.0], "log_error_scale": [-1.0]}, 1, "negative scale"),
])
def test_malformed_feature_calibration_is_refused(raw: dict, n_features: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FeatureCalibration.from_dict(raw, n_features)
