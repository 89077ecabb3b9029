"""Per-series online calibration: bounded state, replay idempotence, adaptation, the model-swap rule."""

import math

import numpy as np
import pytest

from worker.adaptive import (STATE_BYTES, AdaptiveSettings, ScoreHistory, fold, for_model, judge, log_score,
                             model_key, upper_tail)

SETTINGS = AdaptiveSettings(long_halflife=50.0, short_halflife=4.0, warmup=20.0)


def history_of(scores: np.ndarray, settings: AdaptiveSettings = SETTINGS, start_ms: int = 0) -> ScoreHistory:
    history = ScoreHistory.fresh(model_key("ab" * 32))
    for i, score in enumerate(scores):
        history = fold(history, float(score), start_ms + 1000 * (i + 1), settings)
    return history


def lognormal(n: int, seed: int = 0, median: float = 0.1, sigma: float = 0.3) -> np.ndarray:
    return median * np.exp(sigma * np.random.default_rng(seed).standard_normal(n))


def test_state_size_is_fixed_whatever_the_stream_length() -> None:
    short, long = history_of(lognormal(10)), history_of(lognormal(5000))
    assert len(short.to_bytes()) == len(long.to_bytes()) == STATE_BYTES == 64
    assert ScoreHistory.from_bytes(long.to_bytes()) == long


def test_replayed_window_leaves_history_unchanged() -> None:
    history = history_of(lognormal(100))
    assert fold(history, 1e6, history.last_end_ms, SETTINGS) == history
    assert fold(history, 1e6, history.last_end_ms - 5000, SETTINGS) == history


def test_moments_track_the_log_scores() -> None:
    history = history_of(lognormal(4000, sigma=0.3), AdaptiveSettings(long_halflife=2000.0))
    assert history.mean == pytest.approx(math.log(0.1), abs=0.05)
    assert math.sqrt(history.var) == pytest.approx(0.3, rel=0.15)


def test_unusual_score_for_this_series_is_surprising_even_when_the_model_calls_it_normal() -> None:
    history = history_of(lognormal(300, sigma=0.1))
    usual = judge(history, 0.1, anomaly_score=0.5, settings=SETTINGS)
    unusual = judge(history, 0.4, anomaly_score=0.5, settings=SETTINGS)
    assert usual.surprise < 1.0
    assert unusual.surprise > 4.0


def test_young_series_leans_on_the_models_calibration() -> None:
    fresh = ScoreHistory.fresh(1)
    assert judge(fresh, 5.0, anomaly_score=0.999, settings=SETTINGS).surprise == pytest.approx(3.0)
    young, old = history_of(lognormal(3)), history_of(lognormal(400))
    p_young = judge(young, 0.1, anomaly_score=0.9999, settings=SETTINGS)
    p_old = judge(old, 0.1, anomaly_score=0.9999, settings=SETTINGS)
    assert p_young.surprise > 2.5 > 1.0 > p_old.surprise


def test_a_level_that_persists_becomes_the_new_normal() -> None:
    before = history_of(lognormal(300))
    shifted = before
    first = judge(shifted, 1.0, 0.5, SETTINGS).surprise
    for i, score in enumerate(lognormal(400, seed=1, median=1.0)):
        shifted = fold(shifted, float(score), before.last_end_ms + 1000 * (i + 1), SETTINGS)
    assert first > 5.0
    assert judge(shifted, 1.0, 0.5, SETTINGS).surprise < 1.0


def test_slowly_rising_scores_are_caught_by_the_short_term_mean() -> None:
    history = history_of(lognormal(400, sigma=0.3))
    ramp = 0.1 * np.exp(np.linspace(0.0, 0.9, 15))  # each step well inside one standard deviation
    worst_trend, worst_point = 1.0, 1.0
    for i, score in enumerate(ramp):
        verdict = judge(history, float(score), 0.5, SETTINGS)
        worst_trend, worst_point = min(worst_trend, verdict.p_trend), min(worst_point, verdict.p_point)
        history = fold(history, float(score), history.last_end_ms + 1000, SETTINGS)
    assert worst_trend < 1e-3 < worst_point


def test_non_finite_scores_are_the_most_anomalous_and_keep_the_state_finite() -> None:
    history = history_of(lognormal(200))
    assert judge(history, math.inf, math.nan, SETTINGS).surprise > 10
    after = fold(history, math.nan, history.last_end_ms + 1000, SETTINGS)
    assert all(math.isfinite(x) for x in (after.mean, after.var, after.short, after.short_var))


def test_history_of_another_model_restarts_but_keeps_its_replay_mark() -> None:
    history = history_of(lognormal(50))
    same = for_model(history, history.model_key)
    other = for_model(history, history.model_key + 1)
    assert same == history
    assert other.n == 0 and other.last_end_ms == history.last_end_ms and other.model_key == history.model_key + 1


def test_helpers() -> None:
    assert upper_tail(0.0) == pytest.approx(0.5)
    assert upper_tail(3.0) == pytest.approx(0.0013499, rel=1e-3)
    assert log_score(0.0) == pytest.approx(math.log(1e-12))
    assert model_key("00" * 32) == 0
