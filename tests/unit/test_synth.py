import csv

import numpy as np
import pytest

from vrae_model.synth import ANOMALY_KINDS, SynthConfig, feature_names_for, generate, iter_events, write_csv


def _small(**overrides: object) -> SynthConfig:
    return SynthConfig(**{"n_series": 4, "length": 1200, "anomalies_per_series": 3, "seed": 7, **overrides})


def test_same_seed_gives_identical_data() -> None:
    first, second = generate(_small()), generate(_small())
    for a, b in zip(first.series, second.series, strict=True):
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.anomalies == b.anomalies


def test_different_seed_gives_different_data() -> None:
    assert not np.array_equal(generate(_small()).series[0].values, generate(_small(seed=8)).series[0].values)


def test_every_anomaly_kind_appears_and_every_event_in_its_span_is_labelled() -> None:
    data = generate(_small())
    seen = set()
    for one in data.series:
        expected = np.zeros(len(one.labels), dtype=np.int8)
        for start, stop, kind, _ in one.anomalies:
            seen.add(kind)
            expected[start:stop] = 1
            assert set(one.kinds[start:stop]) == {kind}
        np.testing.assert_array_equal(one.labels, expected)
        assert set(one.kinds[one.labels == 0]) == {""}
    assert seen == set(ANOMALY_KINDS)


def test_anomaly_spans_never_overlap_and_keep_a_gap() -> None:
    for one in generate(_small(anomalies_per_series=5)).series:
        spans = sorted((start, stop) for start, stop, _, _ in one.anomalies)
        assert all(stop < next_start for (_, stop), (next_start, _) in zip(spans, spans[1:]))


def test_stuck_sensor_is_flat_and_spike_stands_out_from_its_neighbours() -> None:
    data = generate(_small(kinds=("stuck", "spike")))
    names = data.feature_names
    for one in data.series:
        for start, stop, kind, feature in one.anomalies:
            column = one.values[:, names.index(feature)]
            if kind == "stuck":
                assert np.ptp(column[start:stop]) == 0.0
            else:
                neighbours = np.r_[column[max(start - 20, 0) : start], column[stop : stop + 20]]
                assert np.abs(column[start:stop] - np.median(neighbours)).max() > 2 * neighbours.std()


def test_anomalies_change_the_signal_only_inside_labelled_spans() -> None:
    dirty, clean = generate(_small()), generate(_small(clean=True))
    for one, normal in zip(dirty.series, clean.series, strict=True):
        changed = np.any(one.values != normal.values, axis=1)
        assert changed.any()
        assert not changed[one.labels == 0].any()


def test_a_later_start_continues_the_same_machines_with_new_noise() -> None:
    day = 1440
    first = generate(_small(length=day, clean=True)).series[0]
    later = generate(_small(length=day, clean=True, start_ms=_small().start_ms + 7 * day * 60_000)).series[0]
    assert not np.array_equal(first.values, later.values)
    # a week later the daily pattern is in the same phase: only noise and the slow wander differ
    scale_units = np.array([2.0, 0.3, 0.5])  # temp, pressure, vibration
    assert np.all(np.abs(first.values.mean(axis=0) - later.values.mean(axis=0)) < scale_units)
    assert np.corrcoef(first.values[:, 0], later.values[:, 0])[0, 1] > 0.7


def test_clean_data_has_no_labels() -> None:
    data = generate(_small(clean=True))
    assert all(not one.labels.any() and not one.anomalies for one in data.series)


def test_regime_changes_are_recorded_but_not_labelled() -> None:
    data = generate(_small(clean=True, regime_changes=2))
    for one in data.series:
        assert len(one.regime_changes) == 2
        assert not one.labels.any()


def test_timestamps_follow_start_and_interval() -> None:
    one = generate(_small(start_ms=1_000, interval_ms=250)).series[0]
    np.testing.assert_array_equal(one.timestamps[:3], [1_000, 1_250, 1_500])
    assert one.timestamps.dtype == np.int64


def test_features_by_count_use_known_names_first() -> None:
    assert feature_names_for(5) == ("temp", "pressure", "vibration", "feature_3", "feature_4")
    data = generate(_small(features=feature_names_for(5)))
    assert data.series[0].values.shape == (1200, 5)


def test_written_csv_has_the_long_format_and_round_trips(tmp_path) -> None:
    data = generate(_small(n_series=2, length=400, anomalies_per_series=1))
    path = write_csv(data, tmp_path / "sub" / "events.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["series_id", "timestamp", "temp", "pressure", "vibration", "label", "anomaly_kind"]
    assert len(rows) == 800
    second = [r for r in rows if r["series_id"] == "sensor-001"]
    one = data.series[1]
    np.testing.assert_array_equal([int(r["timestamp"]) for r in second], one.timestamps)
    np.testing.assert_allclose([float(r["pressure"]) for r in second], one.values[:, 1], atol=1e-4)
    assert [int(r["label"]) for r in second] == one.labels.tolist()
    assert [r["anomaly_kind"] for r in second] == one.kinds.tolist()


def test_iter_events_is_in_timestamp_order_across_series() -> None:
    data = generate(_small(n_series=3, length=50, anomalies_per_series=0))
    events = list(iter_events(data))
    assert len(events) == 150
    assert [e[1] for e in events] == sorted(e[1] for e in events)
    assert [e[0] for e in events[:3]] == ["sensor-000", "sensor-001", "sensor-002"]


@pytest.mark.parametrize(
    "overrides",
    [{"n_series": 0}, {"length": 0}, {"features": ()}, {"features": ("a", "a")}, {"kinds": ("meteor",)}, {"anomaly_rate": 2.0}],
)
def test_invalid_config_is_rejected(overrides: dict) -> None:
    with pytest.raises(ValueError):
        SynthConfig(**overrides)


# ------------------------------------------------------------------------------------- stream types

from vrae_model.synth import (MULTIVARIATE_KINDS, STREAM_ANOMALIES, STREAM_KINDS, StreamConfig,  # noqa: E402
                              generate_streams)


def _stream(kind: str, **overrides: object):
    return generate_streams(StreamConfig(kind=kind, **{"n_series": 3, "seed": 11, **overrides}))


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_stream_type_is_deterministic_for_a_seed(kind: str) -> None:
    first, second, other = _stream(kind), _stream(kind), _stream(kind, seed=12)
    for a, b in zip(first.series, second.series, strict=True):
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
        assert a.anomalies == b.anomalies and a.benign == b.benign
    assert not np.array_equal(first.series[0].values, other.series[0].values)


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_stream_type_labels_exactly_its_anomaly_spans_after_the_training_part(kind: str) -> None:
    data = _stream(kind)
    quiet = int(0.15 * data.config.length) + 32
    seen = set()
    for one in data.series:
        expected = np.zeros(len(one.labels), np.int8)
        for start, stop, anomaly, _ in one.anomalies:
            assert start >= quiet and anomaly in STREAM_ANOMALIES[kind]
            expected[start:stop] = 1
            seen.add(anomaly)
        np.testing.assert_array_equal(one.labels, expected)
        assert all(start >= quiet and not one.labels[start:stop].any() for start, stop, _ in one.benign)
        assert one.values.shape[1] == (4 if kind in MULTIVARIATE_KINDS else 1)
        assert np.isfinite(one.values).all()
    assert seen == set(STREAM_ANOMALIES[kind][:3]) or seen == set(STREAM_ANOMALIES[kind])


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_clean_stream_type_has_no_labels(kind: str) -> None:
    assert all(not one.labels.any() for one in _stream(kind, clean=True).series)


def test_periodic_edges_are_noise_free_and_repeat_every_day_outside_anomalies() -> None:
    for one in _stream("periodic-edges").series:
        day = 288
        normal = one.labels == 0
        values = one.values[:, 0]
        assert len(np.unique(values[normal])) == 2  # low and high: sharp edges, no noise
        both = normal[:-day] & normal[day:]
        np.testing.assert_array_equal(values[:-day][both], values[day:][both])


def test_flat_steps_are_constant_between_steps_and_a_permanent_step_stays() -> None:
    for one in _stream("flat-steps").series:
        values = one.values[:, 0]
        assert np.count_nonzero(np.diff(values)) <= 2 * len(one.anomalies)
        for start, stop, anomaly, _ in one.anomalies:
            if anomaly == "permanent_step":
                assert values[-1] == values[stop] != values[start - 1]


def test_counts_are_non_negative_integers_with_unlabelled_natural_bursts() -> None:
    data = _stream("counts-bursts")
    for one in data.series:
        assert (one.values >= 0).all() and (one.values == np.round(one.values)).all()
    assert sum(len(one.benign) for one in data.series) > 10


def test_gaps_and_irregular_sampling_are_unlabelled() -> None:
    for one in _stream("gaps-irregular").series:
        steps = np.diff(one.timestamps) / 300_000
        gaps = {start for start, _, kind in one.benign if kind == "gap"}
        assert len(gaps) == 3 and all(steps[i - 1] >= 10 for i in gaps)
        usual = np.delete(steps, [i - 1 for i in gaps])
        assert usual.min() >= 0.5 and usual.max() <= 1.5 and usual.std() > 0.15
        # an outage loses events, it does not delay the rest: the clock and the daily pattern stay together
        lost = sum(int(round(steps[i - 1])) - 1 for i in gaps)
        elapsed = (one.timestamps[-1] - one.timestamps[0]) / 300_000
        assert abs(elapsed - (len(one.timestamps) - 1 + lost)) <= 0.25
        for start, stop, anomaly, _ in one.anomalies:  # spans still point at the changed values
            inside, around = one.values[start:stop, 0], np.r_[one.values[start - 30:start - 5, 0],
                                                               one.values[stop + 5:stop + 30, 0]]
            assert np.abs(inside.mean() - around.mean()) > 2 * around.std()


def test_duplicate_timestamps_repeat_an_hour_step_back_and_resend_events() -> None:
    for one in _stream("duplicate-timestamps").series:
        steps = np.diff(one.timestamps)
        kinds = [kind for _, _, kind in one.benign]
        assert kinds.count("duplicate_event") == 5 and "clock_repeat" in kinds and "clock_step_back" in kinds
        assert (steps == 0).sum() >= 5 and steps.min() <= -3_600_000 + 300_000  # a step back by one interval is 0 too
        for start, _, kind in one.benign:
            if kind == "duplicate_event":  # the same event sent twice
                np.testing.assert_array_equal(one.values[start], one.values[start - 1])
        for start, stop, anomaly, _ in one.anomalies:  # spans still point at the changed values
            inside = one.values[start:stop, 0]
            around = np.r_[one.values[start - 30:start - 5, 0], one.values[stop + 5:stop + 30, 0]]
            assert np.abs(inside.mean() - around.mean()) > 2 * around.std()


def test_stuck_sensor_flat_lines_one_sensor_of_a_noisy_machine() -> None:
    data = _stream("stuck-sensor", n_features=3)
    assert data.feature_names == ["sensor_0", "sensor_1", "sensor_2"]
    for one in data.series:
        for start, stop, anomaly, feature in one.anomalies:
            column = one.values[:, data.feature_names.index(feature)]
            if anomaly == "stuck":
                assert np.ptp(column[start:stop]) == 0.0 and np.ptp(column[start - 20:start]) > 0.0


def test_a_random_walk_wanders_far_more_than_its_noise_and_its_spikes_stand_out_of_the_noise() -> None:
    for one in _stream("random-walk").series:
        values = one.values[:, 0].astype(np.float64)
        normal = one.labels == 0
        noise = np.median(np.abs(np.diff(values[normal]))) / (0.6745 * np.sqrt(2))  # robust sd of the noise
        assert values[normal].std() > 2.5 * noise  # the wander is normal
        for start, stop, anomaly, _ in one.anomalies:
            if anomaly == "spike":
                jump = np.abs(values[start] - np.median(values[start - 6:start]))
                assert jump > 3 * noise


def test_a_trend_doubles_its_rate_over_the_stream_with_a_daily_rhythm() -> None:
    for one in _stream("trend").series:
        values = one.values[:, 0].astype(np.float64)
        first, last = values[:288].mean(), values[-288:].mean()
        assert 1.6 < last / first < 2.4
        day = values[288:576]
        assert day.max() / day.min() > 1.5  # +-30 % a day


def test_weekly_traffic_is_quieter_on_weekends_and_trains_on_two_weekdays() -> None:
    for one in _stream("weekly", clean=True).series:
        values = one.values[:, 0].astype(np.float64)
        days = values.reshape(14, 288)  # 14 whole days from midnight UTC; the epoch was a Thursday
        weekday = (one.timestamps[::288] // 86_400_000) % 7
        weekend = np.isin(weekday, (2, 3))
        # a local time zone moves the day's edges by up to 12 h: compare whole UTC days, far apart
        assert days[~weekend].mean() > 1.3 * days[weekend].mean()
        assert not weekend[:2].any()  # the training part (15 %: two days) holds two weekdays (UTC)
    for one in _stream("weekly").series:
        for start, stop, kind, _ in one.anomalies:
            if kind == "stuck":
                assert np.ptp(one.values[start:stop, 0]) == 0.0


def test_a_noisy_spell_is_louder_noise_at_the_same_level() -> None:
    for one in _stream("noisy-spells").series:
        values = one.values[:, 0].astype(np.float64)
        steps = np.abs(np.diff(values))
        usual = np.median(steps[one.labels[1:] == 0])
        for start, stop, kind, _ in one.anomalies:
            if kind == "noisy_spell":
                assert np.median(steps[start:stop - 1]) > 2.5 * usual
                # the level: the spell's median within the wander of the day around it
                around = np.r_[values[start - 48:start], values[stop:stop + 48]]
                assert abs(np.median(values[start:stop]) - np.median(around)) < 0.5 * np.ptp(around)


def test_sparse_counts_are_mostly_zero_with_storms_of_at_least_a_few() -> None:
    for one in _stream("sparse-counts").series:
        values = one.values[:, 0]
        normal = values[one.labels == 0]
        assert (normal == np.round(normal)).all() and (normal >= 0).all()
        assert (normal == 0).mean() > 0.5
        for start, stop, _, _ in one.anomalies:
            assert values[start:stop].mean() >= 2.0


def test_stream_config_rejects_what_cannot_be_generated() -> None:
    with pytest.raises(ValueError, match="stream kind"):
        StreamConfig(kind="nope")
    with pytest.raises(ValueError, match="multivariate"):
        StreamConfig(kind="stuck-sensor", n_features=1)
    with pytest.raises(ValueError, match="do not fit"):
        generate_streams(StreamConfig(kind="sawtooth", anomalies_per_series=12))
