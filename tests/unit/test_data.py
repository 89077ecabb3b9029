from pathlib import Path

import numpy as np
import pytest

from vrae_model.data import (Scaler, choose_window_level, fingerprint, level_share, level_wander, load_windows, noise_power,
                             read_long_csv, resolution)
from vrae_model.exceptions import DataError
from vrae_model.windowing import due_positions

HEADER = "series_id,timestamp,temp,pressure,label,anomaly_kind\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def long_csv(tmp_path: Path, events_per_series: int = 6) -> Path:
    rows = [HEADER]
    for sid in ("b", "a"):
        # Written newest first: the loader must sort by timestamp.
        for n in reversed(range(events_per_series)):
            label = 1 if (sid == "a" and n == 4) else 0
            rows.append(f"{sid},{1000 + n * 60},{n}.0,{n * 10}.0,{label},{'spike' if label else ''}\n")
    return write(tmp_path / "events.csv", "".join(rows))


def test_long_csv_cuts_due_windows_per_series_in_time_order(tmp_path: Path) -> None:
    data = load_windows(long_csv(tmp_path), window=3, stride=2)
    per_series = len(due_positions(6, 3, 2))
    assert data.windows.shape == (2 * per_series, 3, 2)
    assert data.feature_names == ["temp", "pressure"]
    first_a = np.flatnonzero(data.series_ids == "a")[0]
    assert data.windows[first_a, :, 0].tolist() == [0.0, 1.0, 2.0]
    assert data.end_timestamps[first_a] == 1000 + 2 * 60
    assert data.stride == 2


def test_window_label_is_the_label_of_its_end_event(tmp_path: Path) -> None:
    data = load_windows(long_csv(tmp_path), window=3, stride=1)
    a = data.series_ids == "a"
    assert data.labels[a].tolist() == [0, 0, 1, 0]


def test_feature_selection_keeps_the_requested_order(tmp_path: Path) -> None:
    data = load_windows(long_csv(tmp_path), window=3, features=["pressure"])
    assert data.feature_names == ["pressure"]
    assert data.windows.shape[2] == 1


def test_iso_timestamps_become_epoch_ms_and_replays_are_dropped(tmp_path: Path) -> None:
    path = write(
        tmp_path / "iso.csv",
        "series_id,timestamp,v\ns,2026-01-01T00:00:01Z,2\ns,2026-01-01T00:00:00Z,1\ns,2026-01-01T00:00:01Z,9\n",
    )
    series = read_long_csv(path).series["s"]
    assert series.timestamps.tolist() == [1767225600000, 1767225601000]
    assert series.values[:, 0].tolist() == [1.0, 2.0]


def test_a_csv_without_series_id_is_one_series_named_after_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "cpu_utilization.csv",
                 "timestamp,value\n2014-04-01 00:05:00,2.5\n2014-04-01 00:00:00,1.5\n2014-04-01 00:10:00,3.5\n")
    data = read_long_csv(path)
    assert list(data.series) == ["cpu_utilization"] and data.feature_names == ["value"]
    series = data.series["cpu_utilization"]
    assert series.values[:, 0].tolist() == [1.5, 2.5, 3.5]
    assert np.diff(series.timestamps).tolist() == [300_000, 300_000]
    assert load_windows(path, window=2).windows.shape == (2, 2, 1)


def test_read_long_csv_keeps_labels_and_kinds_per_series(tmp_path: Path) -> None:
    data = read_long_csv(long_csv(tmp_path))
    assert data.labels["a"].tolist() == [0, 0, 0, 0, 1, 0]
    assert data.kinds["a"][4] == "spike"


def test_rows_out_of_order_keep_their_values_labels_and_kinds_together(tmp_path: Path) -> None:
    """Rows are read column by column; sorting by time and dropping a replayed timestamp must move every
    column of a row together."""
    path = write(
        tmp_path / "shuffled.csv",
        "series_id,timestamp,a,b,label,anomaly_kind\n"
        "s,3,3.5,30,1,spike\nt,1,7,70,0,\ns,1,1.5,10,0,\ns,3,9,90,0,\ns,2,2.5,20,1,drift\n",
    )
    data = read_long_csv(path)
    s = data.series["s"]
    assert s.timestamps.tolist() == [1, 2, 3]
    assert s.values.tolist() == [[1.5, 10.0], [2.5, 20.0], [3.5, 30.0]]  # the first row of timestamp 3 stays
    assert data.labels["s"].tolist() == [0, 1, 1] and data.kinds["s"].tolist() == ["", "drift", "spike"]
    assert data.series["t"].values.tolist() == [[7.0, 70.0]]


def test_ucr_rows_are_windows_with_class_labels(tmp_path: Path) -> None:
    path = write(tmp_path / "d.txt", "1 0.1 0.2 0.3\n2 1.0 2.0 3.0\n")
    data = load_windows(path)
    assert data.windows.shape == (2, 3, 1)
    assert data.labels.tolist() == [1, 2]


def test_one_column_text_file_is_one_long_series(tmp_path: Path) -> None:
    path = write(tmp_path / "long.txt", "\n".join(str(v) for v in range(10)) + "\n")
    data = load_windows(path, window=4, stride=3)
    assert data.windows[:, :, 0].tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]


def test_npy_two_dimensional_means_one_feature(tmp_path: Path) -> None:
    np.save(tmp_path / "w.npy", np.zeros((5, 8)))
    data = load_windows(tmp_path / "w.npy")
    assert data.windows.shape == (5, 8, 1)
    assert data.windows.dtype == np.float32


@pytest.mark.parametrize(
    "name,content,kwargs,message",
    [
        ("missing.csv", None, {"window": 3}, "no such file"),
        ("nan.csv", "series_id,timestamp,v\ns,1,nan\ns,2,1\ns,3,1\n", {"window": 3}, "NaN/inf"),
        ("inf.txt", "1 0.5 inf 0.2\n", {}, "NaN/inf"),
        ("short.csv", "series_id,timestamp,v\ns,1,1\ns,2,2\n", {"window": 3}, "fewer than --window"),
        ("feat.csv", "series_id,timestamp,v\ns,1,1\n", {"window": 3, "features": ["w"]}, "unknown feature"),
        ("nofeat.csv", "series_id,timestamp,label\ns,1,0\n", {"window": 3}, "no feature columns"),
        ("nots.csv", "series_id,v\ns,2\n", {"window": 3}, "missing column timestamp"),
        ("header.csv", "series_id,timestamp,v\n", {"window": 3}, "no data rows"),
        ("empty.csv", "", {"window": 3}, "empty file"),
        ("nowin.csv", "series_id,timestamp,v\ns,1,1\n", {}, "--window"),
        ("text.csv", "series_id,timestamp,v\ns,1,abc\n", {"window": 3}, "not a number"),
        ("ragged.txt", "1 0.1 0.2\n1 0.1\n", {}, "different lengths"),
        ("empty.txt", "\n", {}, "empty file"),
        ("data.parquet", "x", {}, "unknown file type"),
    ],
)
def test_bad_input_is_a_one_line_data_error(tmp_path: Path, name: str, content: str | None, kwargs: dict, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message) as error:
        load_windows(path, **kwargs)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "array,kwargs,message",
    [
        (np.zeros((2, 3, 4, 5)), {}, "shape"),
        (np.zeros((0, 3, 1)), {}, "no windows"),
        (np.zeros((2, 3, 1)), {"window": 5}, "--window"),
        (np.array(["a", "b"]), {}, "not numeric"),
    ],
)
def test_bad_npy_is_a_data_error(tmp_path: Path, array: np.ndarray, kwargs: dict, message: str) -> None:
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DataError, match=message):
        load_windows(tmp_path / "bad.npy", **kwargs)


def test_scaler_standardises_each_feature_and_round_trips() -> None:
    windows = np.stack([np.full((4, 2), [1.0, 10.0]), np.full((4, 2), [3.0, 30.0])]).astype(np.float32)
    scaler = Scaler.fit(windows)
    scaled = scaler.transform(windows)
    assert np.allclose(scaled.mean(axis=(0, 1)), 0.0)
    assert np.allclose(scaled.std(axis=(0, 1)), 1.0)
    again = Scaler.from_dict(scaler.to_dict())
    assert np.array_equal(again.transform(windows), scaled)


def test_scale_floor_keeps_a_barely_moving_sensor_from_exploding() -> None:
    rng = np.random.default_rng(2)
    # A thermocouple at ~26 degrees that moved 0.03 degrees in its short history, and a noisy current.
    windows = np.stack([26.0 + 0.03 * rng.normal(size=(50, 8)), rng.normal(size=(50, 8))], axis=2)
    plain, floored = Scaler.fit(windows), Scaler.fit(windows, scale_floor=0.01)
    assert plain.std[0] == pytest.approx(0.03, rel=0.2)
    assert floored.std[0] == pytest.approx(0.26, rel=0.01)  # 1 % of the reading
    assert floored.std[1] == plain.std[1]  # a feature whose spread is above the floor keeps it


def _daily_windows(values: np.ndarray, t: int = 32) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(values, t, axis=0).transpose(0, 2, 1).copy()


def test_noise_power_reads_how_a_features_noise_grows_with_its_level() -> None:
    """Counts are Poisson-like (noise ~ level^1/2), traffic multiplicative (level^1), a sensor's noise
    additive (level^0); a feature that goes negative, or whose level barely moves, is left at 0."""
    rng = np.random.default_rng(0)
    n = 2000
    rate = 60.0 * (1.0 + 0.9 * np.sin(2 * np.pi * np.arange(n) / 288))  # 6 at night, 114 in the afternoon
    counts = rng.poisson(rate).astype(float)
    traffic = rate * (1.0 + 0.05 * rng.standard_normal(n))
    sensor = rate + rng.standard_normal(n)
    centred = rate - 60.0 + rng.standard_normal(n) * np.sqrt(rate)  # goes negative
    narrow = 1000.0 + 0.1 * rate + rng.standard_normal(n) * np.sqrt(rate)  # 1000-1011: the level never doubles
    power = noise_power(_daily_windows(np.stack([counts, traffic, sensor, centred, narrow], axis=1)))
    assert 0.35 <= power[0] <= 0.7
    assert power[1] >= 0.85
    assert power[2] == 0.0 and power[3] == 0.0 and power[4] == 0.0
    scaler = Scaler.fit(_daily_windows(counts[:, None]))
    assert scaler.noise_power is not None and scaler.noise_power[0] > 0.3
    assert np.array_equal(Scaler.from_dict(scaler.to_dict()).noise_power, scaler.noise_power)
    # an artifact's scaler from before it was recorded
    assert Scaler.from_dict({"mean": [1.0], "std": [2.0]}).noise_power is None


def test_resolution_reads_the_grid_of_counts_and_rounded_readings_and_none_elsewhere() -> None:
    """Errors per interval move by 1 and a reading rounded to 0.1 by 0.1; a noisy sensor at full precision has no
    grid, nor has a noise-free pulse, whose few edges are the signal's own moves, nor a count that moves once."""
    rng = np.random.default_rng(0)
    n = 2000
    errors = rng.poisson(0.2, n).astype(float)
    rounded = np.round(50.0 + rng.standard_normal(n), 1)
    sensor = 50.0 + rng.standard_normal(n)
    pulse = np.where(np.arange(n) % 288 < 100, 10.0, 0.0)
    once = np.r_[np.zeros(n // 2), np.ones(n - n // 2)]
    windows = _daily_windows(np.stack([errors, rounded, sensor, pulse, once], axis=1).astype(np.float32))
    grid = resolution(windows)
    assert grid[0] == 1.0
    assert grid[1] == pytest.approx(0.1, rel=1e-4)
    assert np.array_equal(grid[2:], np.zeros(3))
    scaler = Scaler.fit(windows)
    assert scaler.resolution is not None and np.array_equal(Scaler.from_dict(scaler.to_dict()).resolution, grid)
    assert Scaler.from_dict({"mean": [1.0], "std": [2.0]}).resolution is None  # an artifact from before it


def test_level_wander_tells_a_level_that_wanders_from_one_that_stays() -> None:
    """A random walk's second half strays far from the first half's centre (and back), a daily swing with noise
    does not; a constant feature reads 1; windows that are no series (UCR files) read nothing; halves shorter
    than a day are not read."""
    rng = np.random.default_rng(0)
    n, five_minutes = 600, 300_000  # 50 hours
    walk = np.cumsum(rng.standard_normal(n))
    daily = np.sin(2 * np.pi * np.arange(n) / 288) + 0.3 * rng.standard_normal(n)
    constant = np.full(n, 5.0)
    windows = _daily_windows(np.stack([walk, daily, constant], axis=1))
    ids, ends = np.zeros(len(windows), int), (np.arange(len(windows)) + 31) * five_minutes
    wander = level_wander(windows, ids, ends, five_minutes)
    assert wander is not None and wander[0] > 1.5
    assert 1.0 <= wander[1] < 1.1 and wander[2] == 1.0
    # one series per half of the windows: each is read for itself, and the median taken over them
    two = level_wander(np.concatenate([windows, windows]), np.r_[ids, ids + 1], np.r_[ends, ends], five_minutes)
    assert two is not None and np.allclose(two, wander)
    assert level_wander(windows, None, None, 0) is None
    # the same values a second apart: part of any slower process, not read (1)
    assert np.array_equal(level_wander(windows, ids, np.arange(len(windows)) * 1000, 1000), np.ones(3))
    assert np.array_equal(level_wander(windows[:40], ids[:40], ends[:40] * 100, five_minutes), np.ones(3))
    scaler = Scaler(mean=np.zeros(3), std=np.ones(3), level_wander=wander)
    assert np.array_equal(Scaler.from_dict(scaler.to_dict()).level_wander, wander)
    assert Scaler.from_dict({"mean": [1.0], "std": [2.0]}).level_wander is None  # an artifact from before it


def test_constant_feature_is_not_blown_up() -> None:
    scaler = Scaler.fit(np.ones((3, 4, 1), dtype=np.float32))
    assert scaler.std.tolist() == [1.0]


def test_fingerprint_depends_on_values_and_shape() -> None:
    data = np.arange(12, dtype=np.float32)
    assert fingerprint(data.reshape(2, 6, 1)) != fingerprint(data.reshape(3, 4, 1))
    assert fingerprint(data.reshape(2, 6, 1)) == fingerprint(data.reshape(2, 6, 1).astype(np.float64))
    assert fingerprint(data.reshape(2, 6, 1)) != fingerprint((data + 1).reshape(2, 6, 1))


def test_level_share_tells_shapes_from_levels() -> None:
    rng = np.random.default_rng(0)
    window = 24
    noise = rng.normal(size=(2000, window, 2))
    assert level_share(noise) == pytest.approx(1 / window, rel=0.15)  # white noise: the mean of T values
    assert choose_window_level(level_share(noise)) == "keep"
    # A slow load that moves the level from window to window, plus a little noise inside each window.
    drifting = rng.normal(size=(2000, 1, 2)).cumsum(axis=0) + 0.2 * rng.normal(size=(2000, window, 2))
    assert level_share(drifting) > 0.9
    assert choose_window_level(level_share(drifting)) == "remove"


def test_the_typical_feature_decides_the_window_level() -> None:
    rng = np.random.default_rng(3)
    window = 24
    noisy = rng.normal(size=(2000, window, 6))
    slow = rng.normal(size=(2000, 1, 2)).cumsum(axis=0) + 0.2 * rng.normal(size=(2000, window, 2))
    # Two slow sensors among six noisy ones (a pump's temperatures beside its flow, current, vibration):
    # the noisy sensors' levels are what a fault moves, so they stay.
    assert choose_window_level(level_share(np.concatenate([noisy, slow], axis=2))) == "keep"
    # Most sensors slow: the levels wander, and a model that kept them would flood on drift.
    assert choose_window_level(level_share(np.concatenate([noisy[..., :1], slow], axis=2))) == "remove"


def test_a_constant_feature_does_not_count_towards_the_level_share() -> None:
    rng = np.random.default_rng(1)
    windows = np.concatenate([rng.normal(size=(500, 8, 1)), np.full((500, 8, 1), 3.0)], axis=2)
    assert level_share(windows) == pytest.approx(level_share(windows[..., :1]))
    # no feature varies: the windows are nothing but their levels, and a model that keeps them can only
    # learn the one constant (after a step to a new level every window reconstructs equally badly)
    assert level_share(np.full((10, 8, 2), 1.0)) == 1.0
    assert choose_window_level(level_share(np.full((10, 8, 2), 1.0))) == "remove"
