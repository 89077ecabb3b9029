"""Per-series online calibration: bounded state, replay idempotence, adaptation, confirmation across
overlapping windows, the model-swap rule."""

import math
import struct

import numpy as np
import pytest

from vrae_model.calibration import FeatureCalibration
from worker.detection.calibration import (AdaptiveSettings, Judgement, ScoreHistory, feature_errors, fold, for_model,
                                          judge, log_error, model_key, upper_tail)
from worker.state.codec import decode_history, encode_history, history_bytes

SETTINGS = AdaptiveSettings(long_halflife=50.0, short_halflife=4.0, warmup=20.0)
HALF = AdaptiveSettings(long_halflife=50.0, short_halflife=4.0, warmup=20.0, history_weight=0.5)


def learn(history: ScoreHistory, errors, end_ms: int, settings: AdaptiveSettings = SETTINGS,
          anomaly_score: float = 0.5, surprise: float | None = None, window_ms: int = 1000) -> ScoreHistory:
    """Judge a window ending at `end_ms` (one second long unless told), then fold it in at that surprise:
    the worker's order. A fixed `surprise` instead weighs every window alike (the rule before windows
    were weighted)."""
    start_ms = end_ms - window_ms + 1
    if surprise is None:
        surprise = judge(history, tuple(errors), anomaly_score, settings, start_ms=start_ms, end_ms=end_ms).surprise
    return fold(history, tuple(errors), settings, start_ms=start_ms, end_ms=end_ms, anomaly_score=anomaly_score,
                surprise=surprise)


def history_of(errors: np.ndarray, settings: AdaptiveSettings = SETTINGS) -> ScoreHistory:
    """Judge and fold (n, F) per-feature errors, one window per second."""
    history = ScoreHistory.fresh(model_key("ab" * 32))
    for i, row in enumerate(errors):
        history = learn(history, row, 1000 * (i + 1), settings)
    return history


def lognormal(n: int, seed: int = 0, median: float = 0.1, sigma: float = 0.3, features: int = 2) -> np.ndarray:
    return median * np.exp(sigma * np.random.default_rng(seed).standard_normal((n, features)))


def later(history: ScoreHistory, errors, anomaly_score: float = 0.5) -> ScoreHistory:
    return learn(history, errors, history.last_end_ms + 1000, anomaly_score=anomaly_score)


ALONE_MS, OVERLAPPING_MS = 1000, 10_000  # window spans: one stride (no overlap), ten strides


def judged(history: ScoreHistory, errors, anomaly_score: float = 0.5, settings: AdaptiveSettings = SETTINGS, *,
           window_ms: int = ALONE_MS, reference: FeatureCalibration | None = None) -> Judgement:
    """Judge the window that ends one second after the history's last one and spans `window_ms`."""
    end_ms = history.last_end_ms + 1000
    return judge(history, tuple(errors), anomaly_score, settings, start_ms=end_ms - window_ms + 1, end_ms=end_ms,
                 reference=reference)


def test_state_size_is_fixed_whatever_the_stream_length() -> None:
    short, long = history_of(lognormal(10)), history_of(lognormal(5000))
    assert len(encode_history(short)) == len(encode_history(long)) == history_bytes(2) == 120
    assert decode_history(encode_history(long)) == long


def test_replayed_window_leaves_history_unchanged() -> None:
    history = history_of(lognormal(100))
    before = encode_history(history)
    for end_ms in (history.last_end_ms, history.last_end_ms - 5000):
        replayed = fold(history, np.array([1e6, 1e6]), SETTINGS, start_ms=end_ms - 999, end_ms=end_ms,
                        anomaly_score=1.0, surprise=0.0)
        assert encode_history(replayed) == before


def test_moments_track_the_log_errors_per_feature() -> None:
    errors = np.hstack([lognormal(4000, median=0.1, features=1), lognormal(4000, seed=1, median=2.0, features=1)])
    history = history_of(errors, AdaptiveSettings(long_halflife=2000.0))
    np.testing.assert_allclose(history.mean, np.log([0.1, 2.0]), atol=0.05)
    np.testing.assert_allclose(np.sqrt(history.var), [0.3, 0.3], rtol=0.15)


def test_fault_in_one_quiet_feature_is_surprising_even_when_the_model_calls_it_normal() -> None:
    errors = np.hstack([lognormal(300, sigma=0.1, median=0.01, features=1), lognormal(300, seed=1, features=1)])
    history = history_of(errors)
    usual = judged(history, [0.01, 0.1])
    quiet_feature_up = judged(history, [0.04, 0.1])
    assert usual.surprise < 1.0
    assert quiet_feature_up.surprise > 4.0


def test_young_series_leans_on_the_models_calibration() -> None:
    fresh = ScoreHistory.fresh(1)
    assert judged(fresh, [5.0, 5.0], anomaly_score=0.999).surprise == pytest.approx(3.0)
    young, old = history_of(lognormal(3)), history_of(lognormal(400))
    typical = np.array([0.1, 0.1])
    assert judged(young, typical, 0.9999).surprise > 2.5
    assert judged(old, typical, 0.9999).surprise < 1.0  # the series' history takes over...
    assert 1.5 < judged(old, typical, 0.9999, HALF).surprise < 2.5  # ...or half of the say (history_weight)


def test_a_history_weight_of_one_half_keeps_half_the_say_until_the_series_moves_off_the_model() -> None:
    """VRAE_DETECTION__HISTORY_WEIGHT=0.5: an old series whose errors sit where the model's calibration
    puts them is judged half by each. Where its errors moved two or more of the model's scales off (a
    recalibrated sensor), the model's word is stale and the series' history takes over: otherwise the
    model would keep every window of that series near surprise 2, and an incident open for good."""
    old = history_of(lognormal(400, features=2))
    typical = (0.1, 0.1)
    fits = FeatureCalibration(median=(math.log(0.1),) * 2, scale=(0.3,) * 2)
    moved = FeatureCalibration(median=(math.log(0.1), math.log(0.1) - 0.7), scale=(0.3,) * 2)  # 2.3 scales
    halfway = FeatureCalibration(median=(math.log(0.1), math.log(0.1) - 0.53), scale=(0.3,) * 2)  # 1.75
    own = judged(old, typical, 0.9999, reference=fits)  # history_weight 1 (the default): its own
    assert own.surprise < 1.0
    both = judged(old, typical, 0.9999, HALF, reference=fits)
    local = -math.log10(min(1.0, 4.0 * min(own.p_point, own.p_trend)))  # Bonferroni over 2 F = 4 questions
    trust = 0.5 * 400 / 420
    assert both.surprise == pytest.approx((1 - trust) * -math.log10(both.p_model) + trust * local)
    assert judged(old, typical, 0.9999, HALF, reference=moved).surprise == pytest.approx(own.surprise)
    assert own.surprise + 0.1 < judged(old, typical, 0.9999, HALF, reference=halfway).surprise < both.surprise - 0.1
    with pytest.raises(ValueError, match="history_weight"):
        AdaptiveSettings(history_weight=1.5)


def test_a_young_series_judges_each_feature_by_the_models_calibration_of_it() -> None:
    """A fault in one of three sensors is diluted three times in the model's mean score, which its score
    calibration calls normal; the model's calibration of that feature alone does not."""
    reference = FeatureCalibration(median=(math.log(0.1),) * 3, scale=(0.3,) * 3)
    fresh = ScoreHistory.fresh(1)
    one_sensor_up = (0.6, 0.1, 0.1)  # 6x that feature's median: about 6 scale units above it
    without = judged(fresh, one_sensor_up, 0.6)
    with_reference = judged(fresh, one_sensor_up, 0.6, reference=reference)
    assert without.surprise < 0.5
    # 2 * 3 * Q(6): Bonferroni over the features, then over the score and the features
    assert with_reference.surprise == pytest.approx(-math.log10(6.0 * upper_tail(math.log(6.0) / math.sqrt(0.09 + 1e-3))))
    usual = judged(fresh, (0.1, 0.12, 0.09), 0.6, reference=reference)
    assert usual.surprise == pytest.approx(without.surprise - math.log10(2.0))  # the score's, Bonferroni x2
    # A series' own history takes over as it grows (trust 400 / 420 here), as it does from the score's.
    old = history_of(lognormal(400, median=0.1, sigma=0.3, features=3))
    assert judged(old, one_sensor_up, 0.6).surprise == pytest.approx(
        judged(old, one_sensor_up, 0.6, reference=reference).surprise, rel=0.05)


def test_with_one_feature_the_models_feature_calibration_adds_no_question() -> None:
    """With one feature its error is the score: the score's calibration (its tail fitted as such) decides."""
    reference = FeatureCalibration(median=(math.log(0.1),), scale=(0.3,))
    fresh = ScoreHistory.fresh(1)
    assert judged(fresh, (0.6,), 0.6, reference=reference) == judged(fresh, (0.6,), 0.6)


def test_a_level_that_persists_becomes_the_new_normal() -> None:
    shifted = history_of(lognormal(300))
    first = judged(shifted, [1.0, 1.0]).surprise
    for row in lognormal(600, seed=1, median=1.0):
        shifted = later(shifted, row)
    assert first > 5.0
    assert judged(shifted, [1.0, 1.0]).surprise < 1.0


def test_one_wild_window_barely_moves_the_history() -> None:
    history = history_of(lognormal(300))
    after = later(history, np.array([1e4, 1e4]))
    assert np.all(np.abs(np.subtract(after.mean, history.mean)) < 0.1)
    assert judged(after, [0.4, 0.4]).surprise > 3.0


def test_slowly_rising_errors_are_caught_by_the_short_term_mean() -> None:
    history = history_of(lognormal(400, sigma=0.3))
    worst_trend, worst_point = 1.0, 1.0
    for step in np.linspace(0.0, 0.9, 15):  # each step well inside one standard deviation
        errors = 0.1 * np.exp(np.array([step, 0.0]))
        verdict = judged(history, errors)
        worst_trend, worst_point = min(worst_trend, verdict.p_trend), min(worst_point, verdict.p_point)
        history = later(history, errors)
    assert worst_trend < 1e-3 < worst_point


def test_non_finite_errors_are_the_most_anomalous_and_keep_the_state_finite() -> None:
    history = history_of(lognormal(200))
    assert judged(history, [math.inf, 0.1], math.nan).surprise > 10
    after = later(history, feature_errors(math.nan, np.array([math.nan, math.nan])), anomaly_score=math.nan)
    for moments in (after.mean, after.var, after.short, after.short_var, after.previous, (after.previous_anomaly,)):
        assert np.all(np.isfinite(moments))


def test_history_of_another_model_restarts_but_keeps_its_replay_mark() -> None:
    history = history_of(lognormal(50))
    assert for_model(history, history.model_key, 2) is history
    other = for_model(history, history.model_key + 1, 2)
    assert other.n == 0 and other.last_end_ms == history.last_end_ms and other.model_key == history.model_key + 1


@pytest.mark.parametrize("layout", ["24 + 32 F: no previous errors", "24 + 40 F: no previous anomaly score",
                                    "32 + 40 F: no weight"])
def test_state_of_an_older_layout_restarts_but_keeps_its_replay_mark(layout: str) -> None:
    history = history_of(lognormal(50))
    arrays = (history.mean, history.var, history.short, history.short_var, history.previous)
    if layout.startswith("24 + 32"):
        arrays = arrays[:-1]
    moments = [value for array in arrays for value in array]
    head = struct.pack("<qqq", history.last_end_ms, history.n, history.model_key)
    if layout.startswith("32"):
        head += struct.pack("<d", history.previous_anomaly)
    older = head + struct.pack(f"<{len(moments)}d", *moments)
    restarted = for_model(decode_history(older), history.model_key, 2)
    assert restarted.n == 0 and restarted.last_end_ms == history.last_end_ms


def test_error_jump_in_one_of_two_overlapping_windows_is_not_confirmed() -> None:
    history = history_of(lognormal(300))
    spike = [1.0, 0.1]  # feature 0 ten times its median: ~7.7 standard deviations
    assert judged(history, spike).surprise > 5.0  # judged alone (windows do not overlap)
    assert judged(history, spike, window_ms=OVERLAPPING_MS).surprise < 2.0  # its overlapping predecessor was normal
    assert judged(later(history, spike), spike, window_ms=OVERLAPPING_MS).surprise > 5.0  # both windows agree


def test_one_window_error_jumps_do_not_add_up_in_the_short_term_mean() -> None:
    """The trend test averages confirmed errors: every other overlapping window rendered badly (a phase
    of a periodic signal, say) leaves the recent average alone, while the same errors in windows that
    do not overlap, or a rise both windows agree on, move it."""
    settings = AdaptiveSettings(long_halflife=200.0, short_halflife=4.0, warmup=20.0)
    normal, spike = lognormal(600), [1.0, 0.1]
    runs = {}
    for label, window_ms, pattern in (("flicker", OVERLAPPING_MS, (spike, None)), ("alone", ALONE_MS, (spike, None)),
                                      ("lasting", OVERLAPPING_MS, (spike, spike))):
        history = ScoreHistory.fresh(model_key("ab" * 32))
        for i, row in enumerate(normal):
            errors = pattern[i % 2] if i >= 580 and pattern[i % 2] is not None else row
            history = learn(history, errors, 1000 * (i + 1), settings, window_ms=window_ms)
        runs[label] = history.short[0] - history.mean[0]
    sd = math.sqrt(history.var[0])
    assert abs(runs["flicker"]) < 0.25 * sd < 0.75 * sd < runs["alone"] < runs["lasting"]


def test_a_young_series_confirms_the_models_calibration_too() -> None:
    """While the model's calibration has the say, a window the model finds extreme only counts when its
    overlapping predecessor agrees: otherwise one badly rendered window opens an incident."""
    young = later(ScoreHistory.fresh(model_key("ab" * 32)), [0.1, 0.1], anomaly_score=0.5)
    assert judged(young, [0.1, 0.1], 0.99999).surprise > 4.0  # judged alone
    assert judged(young, [0.1, 0.1], 0.99999, window_ms=OVERLAPPING_MS).surprise < 1.0
    agreeing = later(ScoreHistory.fresh(model_key("ab" * 32)), [0.1, 0.1], anomaly_score=0.9999)
    assert judged(agreeing, [0.1, 0.1], 0.99999, window_ms=OVERLAPPING_MS).surprise > 3.5


def test_confirmation_needs_the_predecessor_to_cover_half_the_window() -> None:
    history = later(history_of(lognormal(300)), [0.1, 0.1])
    spike = [1.0, 0.1]
    end_ms = history.last_end_ms + 1000
    half_covered = judge(history, spike, 0.5, SETTINGS, start_ms=end_ms - 2000, end_ms=end_ms)
    less = judge(history, spike, 0.5, SETTINGS, start_ms=end_ms - 1998, end_ms=end_ms)
    assert half_covered.surprise < 2.0 < 5.0 < less.surprise


def test_feature_errors_split_the_score_by_share() -> None:
    np.testing.assert_allclose(feature_errors(0.3, np.array([0.5, 0.25, 0.25])), [0.45, 0.225, 0.225])
    assert upper_tail(0.0) == pytest.approx(0.5)
    assert upper_tail(3.0) == pytest.approx(0.0013499, rel=1e-3)
    assert log_error(0.0) == pytest.approx(math.log(1e-12))
    assert log_error(math.nan) == log_error(math.inf) > 80
    assert model_key("00" * 32) == 0


@pytest.mark.parametrize("clip_sd", [1.5, 2.0, 3.0])
def test_winsorised_variance_is_unbiased_for_normal_log_errors(clip_sd: float) -> None:
    settings = AdaptiveSettings(long_halflife=4000.0, clip_sd=clip_sd)
    history = history_of(lognormal(20_000, sigma=0.3, features=1), settings)
    assert math.sqrt(history.var[0]) == pytest.approx(0.3, rel=0.05)


def test_clip_efficiency_is_the_winsorised_second_moment_of_a_standard_normal() -> None:
    z = np.random.default_rng(0).standard_normal(2_000_000)
    for clip_sd in (1.0, 2.0, 4.0):
        expected = float(np.mean(np.minimum(z * z, clip_sd**2)))
        assert AdaptiveSettings(clip_sd=clip_sd).clip_efficiency == pytest.approx(expected, rel=0.01)


def test_a_long_anomaly_does_not_hide_the_next_one() -> None:
    """144 windows far off (a slow drift fault), then 300 normal ones: a later fault 5 standard
    deviations up must still be surprising. Winsorised at 4 sd, the first fault doubled the standard
    deviation and hid the second one."""
    normal = lognormal(2300, sigma=0.3, features=1)
    rows = np.concatenate([normal[:2000], np.full((144, 1), 0.1 * math.exp(3.0)), normal[2000:]])
    fault = (0.1 * math.exp(5 * 0.3),)

    def surprise(clip_sd: float) -> float:
        settings = AdaptiveSettings(warmup=0.0, clip_sd=clip_sd)
        return judged(history_of(rows, settings), fault, settings=settings).surprise

    assert surprise(2.0) > 3.0 > surprise(4.0)


def fold_all(rows: np.ndarray, anomaly_scores: np.ndarray, settings: AdaptiveSettings,
             surprise: float | None = None) -> ScoreHistory:
    """`learn` each row with its own model anomaly score."""
    history = ScoreHistory.fresh(model_key("ab" * 32))
    for i, (row, anomaly) in enumerate(zip(rows, anomaly_scores)):
        history = learn(history, row, 1000 * (i + 1), settings, anomaly_score=anomaly, surprise=surprise)
    return history


def test_a_young_series_does_not_learn_the_anomaly_its_stream_starts_in() -> None:
    """60 windows of a fault the model's calibration flags (anomaly score 0.9999), then normal ones. Counted
    like the rest, the fault's windows make up the young history and widen its spread for thousands of
    windows; weighted by their surprise, they barely count."""
    settings = AdaptiveSettings()
    rows = np.concatenate([lognormal(60, median=1.0, features=1), lognormal(600, seed=1, features=1)])
    anomaly = np.r_[np.full(60, 0.9999), np.full(600, 0.5)]
    weighted, alike = fold_all(rows, anomaly, settings), fold_all(rows, anomaly, settings, surprise=0.0)
    assert math.sqrt(weighted.var[0]) == pytest.approx(0.3, rel=0.2)
    assert math.sqrt(alike.var[0]) > 0.6
    assert weighted.mean[0] == pytest.approx(math.log(0.1), abs=0.1)


def test_a_series_the_model_finds_unusual_throughout_still_learns_its_own_normal() -> None:
    """Weights are relative: when every window is unusual to the model, each still counts about 1 / n, so
    the series' own history takes over as fast as without weights."""
    settings = AdaptiveSettings()
    rows = lognormal(600, features=1)
    history = fold_all(rows, np.full(600, 0.9999), settings)
    assert history.mean[0] == pytest.approx(math.log(0.1), abs=0.1)
    assert math.sqrt(history.var[0]) == pytest.approx(0.3, rel=0.2)
    assert judged(history, (0.1,), anomaly_score=0.9999, settings=settings).surprise < 3.0


def test_an_old_series_learns_every_window_at_the_long_rate() -> None:
    """Once the weights add up to 1 / a_long, a window's surprise no longer matters: winsorising alone
    protects an old history, and a lasting change still becomes the new normal."""
    settings = AdaptiveSettings(long_halflife=50.0)
    history = history_of(lognormal(500), settings)
    assert history.weight > 1.0 / settings.long_rate
    end_ms = history.last_end_ms + 1000
    folds = [fold(history, (1.0, 1.0), settings, start_ms=end_ms - 999, end_ms=end_ms, anomaly_score=0.5,
                  surprise=surprise)
             for surprise in (0.0, 5.0, math.nan)]
    assert folds[0].mean == folds[1].mean == folds[2].mean and folds[0].var == folds[1].var == folds[2].var
    assert [f.weight - history.weight for f in folds] == pytest.approx([1.0, 1e-3, 0.0])


def test_clip_must_be_positive() -> None:
    with pytest.raises(ValueError, match="clip_sd"):
        AdaptiveSettings(clip_sd=0.0)


@pytest.mark.parametrize("settings", [AdaptiveSettings(long_halflife=50.0, short_halflife=4.0, warmup=1e9),
                                      AdaptiveSettings(long_halflife=50.0, short_halflife=4.0, history_weight=0.0)],
                         ids=["enormous warmup", "history weight 0"])
def test_the_judgement_can_be_left_to_the_models_calibration(settings: AdaptiveSettings) -> None:
    """VRAE_DETECTION__HISTORY_WEIGHT=0 (README: for streams like ECG5000), or an enormous warmup: however
    old the series and however unusual a window for its own history, the judgement is the model's while
    the series' errors sit where the model's calibration puts them."""
    history = history_of(lognormal(2000), settings)
    reference = FeatureCalibration(median=(math.log(0.1),) * 2, scale=(0.3,) * 2)
    odd = judged(history, (5.0, 5.0), anomaly_score=0.2, settings=settings)  # 50x the series' usual error
    assert odd.p_point < 1e-10  # its own history would call it an anomaly...
    assert odd.p_model == pytest.approx(0.8) and odd.p_value == pytest.approx(0.8, rel=1e-2)  # ...the model does not
    with_reference = judged(history, (5.0, 5.0), anomaly_score=0.2, settings=settings, reference=reference)
    assert with_reference.p_value == pytest.approx(with_reference.p_model, rel=1e-2)
