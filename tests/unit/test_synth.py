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
