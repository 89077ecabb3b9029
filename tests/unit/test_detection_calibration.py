"""The per-series calibration and incident policy (worker.detection.calibration): each property the issue
asks for, pinned on model outputs built to show it."""

import dataclasses
import math

import numpy as np
import pytest

from worker.detection import calibration as c2
from worker.state.codec import LAYOUT_VERSION, decode_states, detector_state_bytes, encode_states, state_layout

MINUTE = 60_000
T = 32  # window length in events


def reference(n_features: int = 1, train_windows: int = 0) -> c2.Reference:
    return c2.Reference(median=np.full(n_features, math.log(0.01)), scale=np.full(n_features, 0.5),
                        mean=np.zeros(n_features), std=np.ones(n_features), window=T,
                        train_windows=train_windows)


def replay(errors: np.ndarray, *, levels: np.ndarray | None = None, stamps: np.ndarray | None = None,
           values: np.ndarray | None = None, ref: c2.Reference | None = None,
           settings: c2.CalibrationSettings = c2.CalibrationSettings()) -> list[c2.Verdict]:
    """One series, one window per event after the first T - 1 (stride 1): errors (W,) are the windows'
    mean squared errors; stamps (W + T - 1,) the events' timestamps (default: one a minute); values
    (W + T - 1,) the events themselves, in scaled units, for the spike column (default: none)."""
    ref = ref or reference()
    n = len(errors)
    stamps = np.arange(n + T - 1, dtype=np.int64) * MINUTE if stamps is None else stamps
    spikes = None if values is None else c2.window_spike(
        np.lib.stride_tricks.sliding_window_view(values, T)[:, :, None], ref, settings)
    batch = c2.Batch.fresh(1, 1, settings, wander=ref.wander)
    out = []
    for i in range(n):
        level = None if levels is None else np.array([[levels[i]]])
        spike = None if spikes is None else c2.Spike(spikes.size[i:i + 1], spikes.noise[i:i + 1], spikes.blip[i:i + 1])
        out.append(c2.step(batch, np.array([errors[i]]), np.ones((1, 1)),
                           np.array([stamps[i]]), np.array([stamps[i + T - 1]]), level, ref, settings, spike))
    return out


def wander(n: int, seed: int = 0) -> np.ndarray:
    """(n,) a level that wanders (AR(1), phi 0.999, steps of 0.03) plus noise of sd 0.1, in scaled units: a
    queue depth, whose spikes are small against its range."""
    rng = np.random.default_rng(seed)
    level = np.zeros(n)
    for i in range(1, n):
        level[i] = 0.999 * level[i - 1] + 0.03 * rng.standard_normal()
    return level + 0.1 * rng.standard_normal(n)


def noisy(n: int, seed: int = 0, sd: float = 0.5) -> np.ndarray:
    """Log-normal window errors around the model's median (0.01), smoothed like overlapping windows are."""
    x = np.random.default_rng(seed).standard_normal(n + T)
    x = np.convolve(x, np.ones(8) / math.sqrt(8), mode="valid")[:n]
    return 0.01 * np.exp(sd * x)


def stuck_at(values: np.ndarray, at: int, length: int) -> np.ndarray:
    """`values` (events) with the feed stuck at its last value from the event that ends window `at`, for `length`
    events."""
    values = values.copy()
    values[at + T - 1:at + T - 1 + length] = values[at + T - 2]
    return values


def openings(verdicts: list[c2.Verdict]) -> list[int]:
    return [i for i, v in enumerate(verdicts) if v.opened[0]]


def closings(verdicts: list[c2.Verdict]) -> list[tuple[int, c2.Close]]:
    return [(i, c2.Close(int(v.closed[0]))) for i, v in enumerate(verdicts) if v.closed[0]]


def surprise(verdicts: list[c2.Verdict]) -> np.ndarray:
    return np.array([float(v.surprise[0]) for v in verdicts])


# ------------------------------------------------------------------------------- recurring errors


def test_periodic_stream_opens_nothing_after_second_period() -> None:
    """A noise-free daily pulse: the model renders its flat parts perfectly and both edges badly, the same
    way every day (each edge sits in T windows). The edges are a fifth of the windows: normal."""
    day = 288
    one_day = np.full(day, 1e-9)
    one_day[60:60 + T] = 0.3  # the rising edge passes through T windows
    one_day[160:160 + T] = 0.2  # the falling edge
    verdicts = replay(np.tile(one_day, 14))
    assert [i for i in openings(verdicts) if i >= 2 * day] == []
    assert surprise(verdicts)[3 * day:].max() < 2.0  # not even close to opening on day 3 and after


@pytest.mark.parametrize("shift", [12, -12])
def test_a_daily_pattern_in_local_time_opens_nothing_when_the_clocks_change(shift: int) -> None:
    """Day slots are UTC; a business-hours pattern follows local time and moves an hour on the day daylight
    saving starts or ends. Its edges then err in day slots whose usual error is tiny (the jump column's time
    of day), and the old slots miss theirs: the point column knows edges, and the time of day alone does not
    open. The usual errors of the new slots follow within days."""
    day = 288  # one window every 5 minutes
    one_day = np.full(day, 1e-9)
    one_day[60:60 + T] = 0.3
    one_day[160:160 + T] = 0.2
    errors = np.tile(one_day, 16)
    errors[10 * day:] = np.roll(errors, shift)[10 * day:]  # an hour later (or earlier) from day 10 on
    stamps = np.arange(len(errors) + T - 1, dtype=np.int64) * 300_000
    verdicts = replay(errors, stamps=stamps)
    assert openings(verdicts) == []
    assert surprise(verdicts)[10 * day:].max() < 2.5


def test_a_daily_peak_whose_time_drifts_an_hour_opens_once() -> None:
    """A surprising hour that comes every day, an hour later or earlier than the day before (a daily peak
    moves with the day's load): a recurrence, within two half hours of the day before's, opens only the
    first time."""
    day = 288  # one window every 5 minutes
    errors = noisy(8 * day, seed=3)
    first = 2 * day + 150
    for d in range(2, 8):
        at = d * day + 150 + (12 if d % 2 else 0)  # 60 minutes later on odd days
        errors[at:at + 6] = 0.3
    stamps = np.arange(len(errors) + T - 1, dtype=np.int64) * 300_000
    verdicts = replay(errors, stamps=stamps)
    (opened,) = openings(verdicts)  # every day with a slot either way opened (the code before)
    assert opened in range(first, first + 6)


def test_a_mild_daily_crossing_two_hours_off_opens_once_and_a_stronger_one_still_opens() -> None:
    """A surprising hour every day, two hours later on odd days than on even ones (a daily peak that outgrows
    the model, whose time wanders with the day's load): beyond the hour and a half of a recurrence, but no
    more surprising than the day before's crossing, it is a mild recurrence and opens only the first time. A
    fault at that time, far worse than the day before's, opens all the same."""
    day = 288  # one window every 5 minutes
    shift = 24  # two hours
    errors = noisy(10 * day, seed=3)
    for d in range(2, 10):
        at = d * day + 150 + (shift if d % 2 else 0)
        errors[at:at + 6] = 0.3
    stamps = np.arange(len(errors) + T - 1, dtype=np.int64) * 300_000
    (opened,) = openings(replay(errors, stamps=stamps))  # every day opened one (the code before)
    assert opened in range(2 * day + 150, 2 * day + 156)
    errors[5 * day + 150 + shift:5 * day + 156 + shift] = 3.0
    assert [i // day for i in openings(replay(errors, stamps=stamps))] == [2, 5]


def test_a_fault_at_yesterdays_time_through_other_columns_is_no_recurrence() -> None:
    """A daily pattern tells through the same columns each day. A fault that comes half an hour after the time
    of the day before's fault but tells through other columns (errors, where the day before the level stepped
    away) is no recurrence: it opens, though it is less than twice as surprising as the day before's (more than
    1.1 times: no mild recurrence either). The same errors at the same time the next day as well are one."""
    day = 288  # one window every 5 minutes
    errors = noisy(5 * day, seed=3)
    levels = 0.1 * np.random.default_rng(4).standard_normal(5 * day)
    levels[2 * day + 150:2 * day + 180] += 2.0  # day 2: the level steps away for 30 windows, errors as usual
    errors[3 * day + 156:3 * day + 162] = 0.3  # day 3, half an hour later: errors, the level as usual
    stamps = np.arange(len(errors) + T - 1, dtype=np.int64) * 300_000
    verdicts = replay(errors, levels=levels, stamps=stamps)
    before = surprise(verdicts)[2 * day + 150:2 * day + 180].max()
    after = surprise(verdicts)[3 * day + 150:3 * day + 200].max()
    assert c2.RECURRENCE_MILD_RATIO * before < after < c2.RECURRENCE_RATIO * before
    assert [i // day for i in openings(verdicts)] == [2, 3]  # the code before: [2], day 3 a recurrence
    errors[4 * day + 156:4 * day + 162] = 0.3  # and day 4 again: a recurrence of day 3's
    assert [i // day for i in openings(replay(errors, levels=levels, stamps=stamps))] == [2, 3]


def test_a_run_the_learning_period_carries_opens_nothing_unless_it_outlasts_two_windows() -> None:
    """Errors that rose while the series learnt (a model that fits its first days and not the next ones), still
    surprising when the learning period ends: what the series did while it learnt is no onset, and the first
    window that can open opens nothing. Once the surprise has fallen below the close level, a new fault opens at
    once; a carried run that lasts more than two window lengths past the learning period opens, late."""
    learn = 300
    errors = noisy(900, seed=5)
    errors[260:330] = 0.3  # rises 40 windows before the learning period ends, back 30 windows after
    errors[600:640] = 3.0  # a fault, worse than the rise
    ref = reference(train_windows=learn)
    verdicts = replay(errors, ref=ref)
    assert surprise(verdicts)[learn] >= 3.0  # it would open
    (opened,) = openings(verdicts)  # the code before opened at 300 too
    assert opened in range(600, 604)
    errors[330:500] = 0.3  # the same rise, lasting 200 windows past the learning period
    late = openings(replay(errors, ref=ref))
    assert late[0] == learn + 2 * T - 1  # 2 T windows of the run, the learning period's last one the first


def test_a_fault_past_the_training_windows_opens_within_the_learning_period_only_far_out() -> None:
    """A model trained on 150 windows, half the learning period: a fault in the 150 windows after them is no longer
    in-sample, and a young history opens on it where it is far out (3 x the open level); one about as surprising as
    a model's misfit past its training part opens nothing, nor does anything on the training windows themselves."""
    ref = reference(train_windows=150)
    errors = noisy(600, seed=7)
    errors[200:240] = 3.0
    verdicts = replay(errors, ref=ref)
    assert surprise(verdicts)[200:240].max() >= c2.YOUNG_OPEN_FACTOR * 3.0
    assert openings(verdicts) == [202]  # the code before opened nothing: the fault was over when the period ended
    errors[200:240] = 0.3
    verdicts = replay(errors, ref=ref)
    assert 3.0 <= surprise(verdicts)[200:240].max() < c2.YOUNG_OPEN_FACTOR * 3.0
    assert openings(verdicts) == []
    errors = noisy(600, seed=7)
    errors[100:140] = 30.0  # on the windows that trained the model
    assert openings(replay(errors, ref=ref)) == []


def test_a_daily_edge_that_grows_opens_once_not_every_day() -> None:
    """A daily pulse whose edge the model renders worse from day 10 on, every day after. The first such day
    opens an incident; its windows are not taught (nothing is while an incident is open), so without more the
    history would never learn the new edge and it would open one every day, more surely as the old edge
    fades from the memory. A window that reaches the open level in the half hour (or the next) where one did
    a day before opens nothing, and teaches as any other: one incident, then the history learns it."""
    day = 288  # one window every 5 minutes
    one_day = noisy(day, seed=3)
    one_day[60:60 + T] = 0.3
    errors = np.tile(one_day, 20)
    for d in range(10, 20):
        errors[d * day + 60:d * day + 60 + T] = 30.0
    stamps = np.arange(len(errors) + T - 1, dtype=np.int64) * 300_000
    daily = [i // day for i in openings(replay(errors, stamps=stamps))]
    assert daily == [10]
    flood = [i // day for i in openings(replay(errors, stamps=stamps, settings=c2.CalibrationSettings(
        skip_daily_recurrences=False)))]
    assert flood == list(range(10, 20))
    # a fault that starts on the edge the day after and is far worse than it (surprise 21 against 9.4) opens
    # all the same: twice as surprising as the day before's most surprising window, it is no recurrence
    errors[11 * day + 60:11 * day + 60 + T] = 30_000.0
    assert [i // day for i in openings(replay(errors, stamps=stamps))] == [10, 11]


def test_errors_near_zero_keep_the_surprise_bounded_and_quiet() -> None:
    """A series the model renders almost perfectly: float noise in a tiny error is not an anomaly (the
    error floor), and a history of identical errors does not make the next one infinitely surprising. (It
    is quieter than the model's calibration expects, so the quiet column finds it surprising while the
    series learns, when nothing can open; by the end of it the series knows its own quiet.)"""
    errors = 1e-9 * np.exp(np.random.default_rng(1).normal(0, 2.0, 5000))
    verdicts = replay(errors)
    assert openings(verdicts) == []
    learnt = [i for i, v in enumerate(verdicts) if not v.learning[0]]
    assert learnt and np.nanmax(surprise(verdicts)[learnt]) < 1.0
    assert np.nanmax(surprise(verdicts)) < 4.0


def direct_tail_probability(hist: np.ndarray, w: float, floor: float, settings: c2.CalibrationSettings) -> float:
    """P(column >= w) of one histogram, from its bins directly (module docstring of calibration)."""
    hist = hist.astype(np.float64)
    total = hist.sum()
    def mass_above(x: float) -> float:  # the histogram's mass above x, each bin's mass uniform across it
        lo = c2.EDGES[:-1]
        return float(np.sum(hist * np.clip((c2.EDGES[1:] - np.maximum(lo, x)) / c2.STEP, 0.0, 1.0)))
    alpha = max(settings.tail_mass, settings.tail_count / total)
    lo_q, hi_q = c2.LO, c2.HI  # q: where the mass above falls to alpha of the total (bisection)
    for _ in range(80):
        mid = (lo_q + hi_q) / 2
        lo_q, hi_q = (mid, hi_q) if mass_above(mid) >= alpha * total else (lo_q, mid)
    q = lo_q
    # the mean excess over q of the mass above it (each bin's mass uniform across it)
    lo, hi = np.maximum(c2.EDGES[:-1], q), c2.EDGES[1:]
    share = np.clip((hi - lo) / c2.STEP, 0.0, 1.0)
    excess = np.sum(hist * share * ((lo + hi) / 2 - q)) / (alpha * total)
    if w <= q:
        return mass_above(w) / total
    return max(alpha * math.exp(-(w - q) / max(excess, floor)), mass_above(w) / total)


def test_the_tail_read_from_a_state_is_the_histograms_tail() -> None:
    """A state keeps each histogram as its mass above every bin, with its tail shape (q, mean excess) beside
    it, so that a window reads its tail probability in O(1): the same as computed from the bins directly."""
    settings = c2.CalibrationSettings()
    rng = np.random.default_rng(5)
    batch = c2.Batch.fresh(3, 1, settings)
    for i in range(400):  # teach some history: a body near 0, a few far values
        values = np.where(rng.random((3, c2.COLUMNS)) < 0.01, rng.uniform(4, 12, (3, c2.COLUMNS)),
                          rng.normal(0, 1, (3, c2.COLUMNS)))
        c2._teach(batch, [(values, np.full((3, c2.COLUMNS), 1.0 + (i % 2) * 11))], settings)
    hist = -np.diff(np.concatenate([batch.above.astype(np.float64), np.zeros((3, c2.COLUMNS, 1))], axis=2), axis=2)
    w = np.array([-1.0, 0.3, 2.0, 3.7, 6.0, 15.0, 9.0, 12.0])
    got = c2.tail_probability(batch.above, batch.tail_q, batch.tail_scale, np.tile(w, (3, 1)), 0.5, settings)
    for r in range(3):
        for c in range(c2.COLUMNS):
            assert got[r, c] == pytest.approx(direct_tail_probability(hist[r, c], w[c], 0.5, settings), rel=2e-4)


def test_surprise_stays_finite_and_ranks_far_beyond_the_history() -> None:
    """Beyond anything the series has seen, a larger error is a larger surprise (a user sweeping a level
    gets a curve), up to the top of the scale, where a non-finite error (an overflow) lands."""
    errors = noisy(2000)

    def last(value: float) -> float:  # three windows in a row: consecutive windows confirm each other
        return float(replay(np.r_[errors, [value, value, value]])[-1].surprise[0])

    assert 3.0 < last(1.0) < last(100.0) < last(1e8) <= last(np.inf) < 300.0


def test_columns_combine_as_bonferroni_when_one_tells_and_as_their_common_p_when_all_agree() -> None:
    """The weighted harmonic mean p-value: one small column costs the total weight over its own (the number
    of columns asked, for a column of weight 1), columns that agree cost nothing, the point and the jump
    (two views of the window's error now) share one column's weight, and the level and spike columns count
    only where levels and spikes are given (the blip, last, tells through the spike column: weight 0)."""
    level, no_level = c2.column_weights(1, True), c2.column_weights(1, False)
    no_spike = c2.column_weights(1, True, with_spike=False)
    one = np.array([[1.0, 1e-4, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])  # the recent column alone
    assert c2.combined_probability(one, level)[0] == pytest.approx(6e-4, rel=1e-3)
    assert c2.combined_probability(one, no_level)[0] == pytest.approx(5e-4, rel=1e-3)
    assert c2.combined_probability(one, no_spike)[0] == pytest.approx(5e-4, rel=1e-3)
    point = np.array([[1e-4, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    assert c2.combined_probability(point, level)[0] == pytest.approx(1.2e-3, rel=2e-3)
    both = np.array([[1e-4, 1.0, 1.0, 1.0, 1e-4, 1.0, 1.0, 1.0]])  # the point and the jump agree: one column's cost
    assert c2.combined_probability(both, level)[0] == pytest.approx(6e-4, rel=1e-3)
    agree = np.full((1, c2.COLUMNS), 1e-4)
    assert c2.combined_probability(agree, level)[0] == pytest.approx(1e-4)
    some = np.array([[1e-4, 3e-4, 1e-2, 1.0, 1e-3, 1e-3, 1e-2, 1.0]])
    assert 1e-4 < c2.combined_probability(some, level)[0] < 1e-3
    assert c2.combined_probability(np.zeros((1, c2.COLUMNS)), level)[0] == pytest.approx(c2.MIN_PROBABILITY)


def test_one_or_two_windows_alone_are_not_confirmed() -> None:
    """An error that jumps in one or two of three overlapping windows is the model rendering those windows
    badly (a fault stays in every window that holds it: T of them)."""
    assert replay(np.r_[noisy(2000), [1.0]])[-1].surprise[0] < 3.0
    assert replay(np.r_[noisy(2000), [1.0, 1.0]])[-1].surprise[0] < 3.0


# ------------------------------------------------------------------------------------ faults


def test_long_fault_opens_within_a_few_windows_and_stays_open_until_it_ends() -> None:
    errors = noisy(3000)
    errors[1500:1900] *= 20.0  # a fault: the error jumps 20x for 400 windows
    verdicts = replay(errors)
    assert openings(verdicts)[0] - 1500 in range(0, 4)
    assert all(v.open[0] for v in verdicts[1505:1900])  # the baseline is frozen: not learnt as normal
    (closed_at, reason), = closings(verdicts)
    assert reason is c2.Close.RECOVERED and 1900 <= closed_at <= 1900 + T + 10


def test_slow_drift_opens_before_it_peaks() -> None:
    """The error creeps up by a factor of 20 over 600 windows (about three model scales): no single window
    stands out from the one before, and the quarantine keeps the ramp out of the history."""
    errors = noisy(3000)
    errors[1500:2100] *= np.exp(np.linspace(0.0, math.log(20.0), 600))
    found = [i for i in openings(replay(errors)) if i >= 1500]
    assert found and found[0] < 2100


def test_a_drift_slower_than_the_quarantine_opens_in_its_first_half() -> None:
    """The error creeps up by a factor of 20 over 1200 windows, many quarantines long: past the learning
    period what leaves the quarantine waits in the hold too, so the drift's start has not taught the history
    its own level by the time it stands out (without the hold it opened 1071 windows in)."""
    errors = noisy(5000)
    errors[1500:2700] *= np.exp(np.linspace(0.0, math.log(20.0), 1200))
    found = [i for i in openings(replay(errors)) if i >= 1500]
    assert found and found[0] - 1500 < 600
    assert [i for i in openings(replay(errors[:1500])) if i >= 1000] == []  # and the stream before it is quiet


def test_level_shift_opens_through_the_level_when_the_model_removes_it() -> None:
    """A model that removes window levels renders a shifted window perfectly: the level column sees it."""
    errors = noisy(3000)
    levels = 0.3 * np.random.default_rng(2).standard_normal(3000)
    levels[2000:] += 4.0
    found = [i for i in openings(replay(errors, levels=levels)) if i >= 2000]
    assert found and found[0] < 2005


def test_level_shift_opens_through_the_level_when_the_model_keeps_it() -> None:
    """A model that keeps window levels errs more as the shifted part fills its windows, slowly; the level
    column sees the shift once it holds most of the window's last 8 events."""
    errors = noisy(3000)
    errors[2000:2000 + T] *= np.exp(np.linspace(0.0, 1.0, T))  # the error grows with the shifted part ...
    errors[2000 + T:] *= math.e  # ... to a lasting 2.7x, a standardised v of 2 (model scale 0.5)
    levels = 0.3 * np.random.default_rng(2).standard_normal(3000)
    levels[2000:] += 4.0
    found = [i for i in openings(replay(errors, levels=levels)) if i >= 2000]
    assert found and found[0] < 2005
    blind = [i for i in openings(replay(errors)) if i >= 2000]  # without the level column
    assert not blind or blind[0] > 2100  # 2243 here: the slow column, hours later


def test_a_level_that_wandered_in_its_training_part_may_leave_its_range() -> None:
    """A random walk's centre and spread are learnt from its first windows (the model's training part), where
    the level column's readings are in-sample; the walk then strays several of those spreads away and, with the
    model's prior, opened incidents on its own wander. The training data's out-of-sample spread
    (`level_wander`, 3.7 here) widens the level column's prior: nothing opens. Where the training part says the
    level stays (1), the prior is the one without it."""
    from vrae_model.data import level_wander

    n, train, step_ms = 4000, 600, 5 * MINUTE
    rng = np.random.default_rng(0)
    walk = np.cumsum(0.05 * rng.standard_normal(n)) + 0.05 * rng.standard_normal(n)
    walk = (walk - walk[:train].mean()) / walk[:train].std()  # scaled as the model's training part
    stamps = np.arange(n + T - 1, dtype=np.int64) * step_ms
    wander = level_wander(np.repeat(walk[:train, None, None], T, axis=1), np.zeros(train, int),
                          stamps[T - 1:T - 1 + train], step_ms)
    assert wander is not None and wander[0] > 3.0
    errors = noisy(n)
    plain = reference(train_windows=train)
    told = dataclasses.replace(plain, level_wander=wander)
    assert openings(replay(errors, levels=walk, stamps=stamps, ref=plain))  # the wander's own excursions
    assert openings(replay(errors, levels=walk, stamps=stamps, ref=told)) == []
    settings = c2.CalibrationSettings()
    for with_one, without in zip(c2.prior_state(1, settings, (1.0,)), c2.prior_state(1, settings), strict=True):
        assert np.array_equal(with_one, without)
    # the artifact's metadata carries it (scaler.level_wander); one from before it reads none
    metadata = {"features": ["x"], "window": T, "scaler": {"mean": [0.0], "std": [1.0], "level_wander": [2.5]}}
    assert c2.Reference.from_metadata(metadata).wander == (2.5,)
    del metadata["scaler"]["level_wander"]
    assert c2.Reference.from_metadata(metadata).wander is None


def test_sparse_counts_open_on_a_storm_not_on_the_grid_they_move_on() -> None:
    """Errors per interval, mostly 0 (Poisson 0.15 with a daily rhythm): the median of 8 flips from 0 to 1 when 5
    of them see one, a move of the whole spread, and a window of zeros is reconstructed almost exactly, far under
    the usual error. Neither is finer than the data's grid (a count moves by 1: `Reference.resolution`), read as
    it, a storm (at least 3 an interval) is what opens; without it, the flips opened too."""
    n, train, storm = 5000, 600, 4000
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.15 * (1 + 0.5 * np.sin(2 * np.pi * np.arange(n + T - 1) / 288))).astype(float)
    counts[storm + T - 1:storm + T - 1 + 20] = np.maximum(rng.poisson(4.0, 20), 3)
    mean, std = counts[:train].mean(), counts[:train].std()
    values = (counts - mean) / std
    levels = np.median(np.lib.stride_tricks.sliding_window_view(values, T)[:, -8:], axis=1)
    # the model reconstructs a window's zeros and misses its counts
    errors = 0.8 * (np.lib.stride_tricks.sliding_window_view(counts, T) > 0).mean(axis=1) / std ** 2 + 1e-4
    log = np.log(errors[:train])
    centre = np.median(log)
    plain = c2.Reference(median=np.array([centre]), scale=np.array([1.4826 * np.median(np.abs(log - centre))]),
                         mean=np.array([mean]), std=np.array([std]), window=T, train_windows=train)
    gridded = dataclasses.replace(plain, resolution=np.array([1.0]))
    assert [i - storm for i in openings(replay(errors, levels=levels, values=values, ref=gridded))] in ([3], [4], [5])
    assert len([i for i in openings(replay(errors, levels=levels, values=values, ref=plain)) if i < storm]) >= 3
    # the artifact's metadata carries it (scaler.resolution); one from before it reads none
    metadata = {"features": ["x"], "window": T, "scaler": {"mean": [0.0], "std": [2.0], "resolution": [1.0]}}
    assert np.array_equal(c2.Reference.from_metadata(metadata).grid(c2.CalibrationSettings()), [0.5])
    del metadata["scaler"]["resolution"]
    assert np.array_equal(c2.Reference.from_metadata(metadata).grid(c2.CalibrationSettings()), [0.0])


def test_a_noise_free_pulses_edges_are_no_grid_so_a_lower_pulse_still_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    """A noise-free daily pulse moves only by its own edges, all one size, and at one event an hour they are enough
    of its steps to read as a grid of the pulse's full height. The model reconstructs the pulse far finer than
    rounding to that would (its median error 0.01 against 2² / 12: 7 model scales above), so it is no grid: a pulse
    at half height, which errs 0.1 where the edges err 0.02, opens. Floored at the grid, nothing would. Counts, whose
    model errs about as much as rounding to 1 does, keep theirs."""
    settings = c2.CalibrationSettings()
    day = 288
    one_day = np.full(day, 1e-9)
    one_day[100 - T + 1:100 + 1] = 0.02  # the edges pass through T windows each
    one_day[200 - T + 1:200 + 1] = 0.015
    errors = np.tile(one_day, 16)
    lower = 12 * day + 100 - T + 1  # the first window holding the lower pulse
    errors[lower:lower + 100 + T] = 0.1
    pulse = dataclasses.replace(reference(), resolution=np.array([2.0]))  # the pulse is 2 high, in scaled units
    assert np.array_equal(pulse.grid(settings), [0.0])
    assert [i - lower for i in openings(replay(errors, ref=pulse))] in ([1], [2], [3])
    monkeypatch.setattr(c2, "GRID_MODEL_SCALES", float("inf"))
    assert openings(replay(errors, ref=pulse)) == []
    monkeypatch.undo()
    counts = dataclasses.replace(pulse, median=np.array([math.log(0.2)]))
    assert np.array_equal(counts.grid(settings), [2.0])


def test_the_level_is_a_median_so_a_lone_spike_does_not_move_it() -> None:
    ref, settings = reference(), c2.CalibrationSettings()
    window = np.full((1, T, 1), 10.0)
    spiked = window.copy()
    spiked[0, -3, 0] = spiked[0, -6, 0] = 40.0  # two spikes among the last 8 events
    shifted = window.copy()
    shifted[0, -5:, 0] = 14.0  # a level change in the last 5 of them
    assert c2.window_level(spiked, ref, settings)[0, 0] == c2.window_level(window, ref, settings)[0, 0] == 10.0
    assert c2.window_level(shifted, ref, settings)[0, 0] == 14.0


def daily_errors(days: int, seed: int = 0) -> np.ndarray:
    """Window errors that swing with the time of day (counts whose noise grows with the rate): far below the
    model's usual at night (v about -3), above it in the afternoon (v about +1), smoothly."""
    t = np.arange(days * 288)
    x = np.random.default_rng(seed).standard_normal(len(t) + T)
    wiggle = np.convolve(x, np.ones(8) / math.sqrt(8), mode="valid")[:len(t)]
    v = -3.0 + 4.0 * (0.5 - 0.5 * np.cos(2 * np.pi * t / 288)) + 0.3 * wiggle
    return 0.01 * np.exp(0.5 * v)  # the reference: median 0.01, scale 0.5


def test_the_spike_is_the_newest_events_distance_from_the_median_before_it_in_noise_scales() -> None:
    settings = c2.CalibrationSettings()
    steps = np.array([0.0, 0.1, 0.0, -0.1] * 8)[:T - 1]  # a noise whose steps are all 0.1: scale 0.1 / sqrt 2
    window = np.r_[steps, 1.0][None, :, None]
    spike = c2.window_spike(window, reference(), settings)
    assert spike.size[0, 0] == pytest.approx(1.0) and spike.noise[0, 0] == pytest.approx(0.1 * 1.4826 / math.sqrt(2))
    # the spike itself is left out of the noise, and an earlier one does not move the median
    earlier = np.r_[steps[:-1], 5.0, 0.0][None, :, None]
    assert c2.window_spike(earlier, reference(), settings).size[0, 0] == pytest.approx(0.0)
    assert c2.window_spike(window[:, -2:], reference(), settings) is None  # no step before the newest
    # at a stride of s, each window's s new events are judged, each against the 8 before it
    strided = c2.CalibrationSettings(stride=3)
    inside = np.r_[steps[:-2], 1.0, 0.0, 0.0][None, :, None]
    assert c2.window_spike(inside, reference(), strided).size[0, 0] == pytest.approx(1.0)
    assert c2.window_spike(inside, reference(), settings).size[0, 0] == pytest.approx(0.0)


def test_the_partial_sort_median_is_numpys() -> None:
    rng = np.random.default_rng(0)
    for shape in [(50, 8, 1), (50, 7, 3), (40, 30, 2), (5, 1, 1), (5, 2, 1)]:
        a = rng.standard_normal(shape)
        assert np.array_equal(c2._median(a), np.median(a, axis=1))


def test_on_a_ramp_an_event_is_judged_against_a_line_so_an_hourly_rhythm_is_no_spike() -> None:
    """At one event an hour a daily rhythm moves far within 8 events: the median of the 8 before lags the
    rush hour's ramp by several noise scales, and every ramp read as a spike. Where a line through the 4 events
    before predicts the window's own events better, the event is judged against it; a spike on the ramp still
    stands out, and plain noise keeps the median (a line through 4 noisy events predicts worse)."""
    settings = c2.CalibrationSettings()
    rng = np.random.default_rng(0)
    noise = 0.1 * rng.standard_normal(T)
    ramp = np.sin(2 * np.pi * (np.arange(T) - (T - 1)) / 24)  # the newest event on the steepest rise
    window = (ramp + noise)[None, :, None]
    median_lag = abs(window[0, -1, 0] - np.median(window[0, -9:-1, 0]))
    assert median_lag > 6 * 0.1  # what the median alone read: 8 noise scales
    assert c2.window_spike(window, reference(), settings).size[0, 0] < 3 * 0.1
    spiked = window.copy()
    spiked[0, -1, 0] += 1.0  # 10 noise scales
    assert c2.window_spike(spiked, reference(), settings).size[0, 0] > 6 * 0.1
    plain = noise[None, :, None]
    assert c2.window_spike(plain, reference(), settings).size[0, 0] == pytest.approx(
        abs(noise[-1] - np.median(noise[-9:-1])))


def test_an_event_that_left_and_came_back_is_a_blip_and_an_edge_is_none() -> None:
    """The blip is judged one event late, once the next event says whether the event before it came back: a
    lone spike is a blip of its size, an edge (it stays where it went) or a ramp is none, and a spike of two
    events is a blip at its second."""
    settings = c2.CalibrationSettings()
    flat = np.zeros(T)

    def blip(window: np.ndarray) -> float:
        return float(c2.window_spike(window[None, :, None], reference(), settings).blip[0, 0])

    spiked = flat.copy()
    spiked[-2] = 1.0  # the event before the newest, and the newest back at 0
    assert blip(spiked) == pytest.approx(1.0)
    assert c2.window_spike(spiked[None, :-1, None], reference(), settings).size[0, 0] == pytest.approx(1.0)
    edge = flat.copy()
    edge[-2:] = 1.0  # a step that stays
    assert blip(edge) == 0.0
    down = flat.copy()
    down[-2], down[-1] = 1.0, 2.0  # it went on, the same way
    assert blip(down) == 0.0
    assert blip(np.linspace(0.0, 3.0, T)) == pytest.approx(0.0, abs=1e-9)  # a ramp: judged against its line
    two = flat.copy()
    two[-3:-1] = 0.8  # a spike of two events, the newest back
    assert blip(two) == pytest.approx(0.8)
    half = flat.copy()
    half[-2], half[-1] = 1.0, 0.7  # came back part of the way: the smaller of its spike and its step back
    assert blip(half) == pytest.approx(0.3)


def test_a_lone_spike_on_a_noise_free_daily_pulse_opens_though_the_edges_are_larger_spikes() -> None:
    """A noise-free daily pulse: both edges are spikes of the pulse's full height every day, which the spike
    column learns as normal, so a lone spike half as high on the pulse's top read as one more edge and opened
    nothing (the code before). It is a blip, and this series has never had one: it opens, the window after
    it arrived. The model's error does not see it here (its worst case: the spike diluted in the windows)."""
    day = 288
    phase = np.arange(16 * day + T - 1) % day
    values = np.where((phase >= 100) & (phase < 200), 1.0, -1.0)  # in scaled units: the pulse is 2 high
    one_day = np.full(day, 1e-9)
    one_day[100 - T + 1:100 + 1] = 0.3  # the edges pass through T windows each
    one_day[200 - T + 1:200 + 1] = 0.2
    errors = np.tile(one_day, 16)
    at = 12 * day + 150  # an event on the pulse's top, in window `at - T + 1` as its newest
    values[at] += 1.0
    verdicts = replay(errors, values=values)
    assert openings(verdicts) == [at - T + 2]
    assert surprise(verdicts)[at - T + 1] < 3.0  # as the newest event, a spike smaller than the edges


def test_where_noise_grows_with_the_level_a_burst_at_night_reads_as_one_in_the_afternoon() -> None:
    """Counts: Poisson noise of sqrt(rate). Judged in the model's scaled units, a doubling at night (6 -> 12) is
    well under one afternoon noise scale, and the series' noise scale is mostly the afternoons'. On the power
    scale the feature's noise_power says (1/2 here), a count's noise is the same at every rate, so the night's
    doubling reads several noise scales; at the training mean the two scales agree."""
    rng = np.random.default_rng(1)
    mean, std = 60.0, 40.0
    plain = c2.Reference(median=np.zeros(1), scale=np.ones(1), mean=np.array([mean]), std=np.array([std]), window=T)
    counted = c2.Reference(median=np.zeros(1), scale=np.ones(1), mean=np.array([mean]), std=np.array([std]),
                           window=T, noise_power=np.array([0.5]))
    settings = c2.CalibrationSettings()
    night = rng.poisson(6.0, size=(200, T)).astype(float)
    afternoon = rng.poisson(110.0, size=(200, T)).astype(float)
    burst = night.copy()
    burst[:, -1] = 2 * 6.0 + 2 * math.sqrt(12.0)  # the rate doubled, and the count came in high for it

    def noise(ref: c2.Reference, windows: np.ndarray) -> float:
        return float(np.median(c2.window_spike(windows[:, :, None], ref, settings).noise))

    def spike(ref: c2.Reference, windows: np.ndarray) -> float:
        return float(np.median(c2.window_spike(windows[:, :, None], ref, settings).size))

    # in scaled units the afternoon's noise scale is ~4x the night's; on the power scale they are alike
    assert noise(plain, afternoon) > 3 * noise(plain, night)
    assert 0.7 < noise(counted, afternoon) / noise(counted, night) < 1.4
    # the night burst in the series' usual (afternoon) noise scale
    assert spike(plain, burst) / noise(plain, afternoon) < 1.5
    assert spike(counted, burst) / noise(counted, afternoon) > 3.0
    # one scaled unit at the training mean is one unit on the power scale
    at_mean = np.array([[[mean], [mean + 1.0]]])
    assert np.diff(c2.spike_units(at_mean, counted)[0, :, 0])[0] == pytest.approx(1.0 / std, rel=0.01)
    # a model without noise_power (an artifact from before it) judges in scaled units, as before
    assert np.array_equal(c2.spike_units(burst[:, :, None], plain), (burst[:, :, None] - mean) / std)


def test_a_lone_spike_that_the_windows_error_dilutes_opens_through_the_spike_column() -> None:
    """A spike of 8 noise scales on a wandering level: the model's window error does not move at all (the
    worst case of the dilution to k²/T), so only the newest event's spike tells; without it nothing opens."""
    n = 4000
    values = wander(n + T - 1)
    at = 3000
    values[at + T - 1] += 0.8
    errors = noisy(n, seed=3)
    with_spike = replay(errors, values=values)
    assert openings(with_spike) == [at]
    assert openings(replay(errors)) == []


def test_a_spike_that_comes_every_day_stops_opening() -> None:
    """How often spikes come is what tells a rare one: the same spike once a day (a cron job) opens an
    incident the first time, and as the spike column learns from every window, incident or not, the next
    day's is known (taught only outside incidents, each one would open as the first did)."""
    day, n = 288, 4000
    values = wander(n + T - 1, seed=1)
    first = 400  # past the learning period (300 windows)
    values[np.arange(first, n, day) + T - 1] += 0.8
    verdicts = replay(noisy(n, seed=4), values=values)
    assert openings(verdicts) == [first]
    assert surprise(verdicts)[np.arange(first + day, n, day)].max() < 3.0


def test_a_feed_stuck_at_its_last_value_opens_through_the_spike_column() -> None:
    """A feed that repeats its last value: the window's error need not move (a flat line can be as likely as
    the rhythm it replaces), but its steps vanish, and once most of a window's steps are zero its noise scale
    is far under the series' own. A signal with no noise to lose (a constant) opens nothing."""
    n, at = 4000, 3000
    values = stuck_at(wander(n + T - 1, seed=2), at, 60)
    errors = noisy(n, seed=5)
    found = openings(replay(errors, values=values))
    assert found and T // 2 - 2 <= found[0] - at <= T // 2 + 2  # half the window's steps are zero
    assert openings(replay(errors)) == []
    assert openings(replay(errors, values=np.zeros(n + T - 1))) == []


def test_a_feed_stuck_for_hours_stays_one_incident_and_does_not_teach_its_flatness_as_a_spike() -> None:
    """A spike is one event and the spike column learns it inside an incident too, but a feed gone flat lasts:
    each window of it, taught as it left the quarantine, made the flat reading common, and the incident closed
    as recovered while the feed was still stuck; the spike that came later then read as nothing special."""
    n, at, stuck = 4000, 1500, 300
    values = stuck_at(wander(n + T - 1, seed=2), at, stuck)
    spike = 3300  # not a day after the opening: a daily recurrence opens nothing
    values[spike + T - 1] += 0.8
    verdicts = replay(noisy(n, seed=5), values=values)
    found = openings(verdicts)
    assert found[0] - at <= T // 2 + 2 and spike in found
    closed = closings(verdicts)[0]
    assert closed[1] == c2.Close.RECOVERED and at + stuck <= closed[0] <= at + stuck + T  # once the window is alive


def test_a_feed_stuck_past_the_settle_time_is_no_new_normal_and_recovers_once_it_reports_again() -> None:
    """Settled as a new normal, a stuck feed's spike column relearnt from its flat windows and its noise scale from
    a flat feed's, so once it reported again its every event read as a spike and was taught so: the spike days
    later read as nothing. It stays open while it is flat and while its windows still hold the flat part."""
    n, at, stuck, spike = 4000, 1500, 400, 3300
    values = stuck_at(wander(n + T - 1, seed=2), at, stuck)
    values[spike + T - 1] += 0.8
    settings = c2.CalibrationSettings(settle_ms=150 * MINUTE)  # a day is 150 windows here; the feed stays 400
    verdicts = replay(noisy(n, seed=5), values=values, settings=settings)
    assert closings(verdicts)[0][1] == c2.Close.RECOVERED and closings(verdicts)[0][0] >= at + stuck
    assert spike in openings(verdicts)


def test_a_louder_stretch_does_not_teach_its_events_as_spikes() -> None:
    """The noise grows five-fold for 100 events at the same level (a failing bearing): it opens, and its events,
    each a spike against the noise scale frozen at the opening, teach the spike column nothing (taught window by
    window as they left the quarantine, they made spikes common, and the lone spike later read as nothing)."""
    n, at, loud, spike = 4000, 1500, 100, 2600
    values = wander(n + T - 1, seed=2)
    rng = np.random.default_rng(7)
    values[at + T - 1:at + T - 1 + loud] += 0.4 * rng.standard_normal(loud)
    values[spike + T - 1] += 0.8
    verdicts = replay(noisy(n, seed=5), values=values)
    found = openings(verdicts)
    assert found[0] - at <= T // 4 and spike in found


def test_the_steps_of_a_level_shift_inside_an_incident_do_not_teach_the_spike_column() -> None:
    """A spike is one event; a step reads as one at every event until the median of the 8 before has caught up
    (4-5 windows), at the shift's start and again at its end. Taught inside the incident, those readings made a
    spike as large common, and the lone spike a day later read as nothing (without this rule it does not open)."""
    n, at, span, spike = 4000, 1500, 100, 2600
    values = wander(n + T - 1, seed=2)
    values[at + T - 1:at + T - 1 + span] += 0.8
    values[spike + T - 1] += 0.8
    found = openings(replay(noisy(n, seed=5), values=values))
    assert found[0] == at and spike in found


def test_a_burst_at_night_opens_through_its_jump_from_the_hours_before() -> None:
    """A burst at night errs no more than a normal afternoon: only its jump from the errors of the hours
    before tells, and it closes once the burst is over. The same days without it open nothing."""
    assert openings(replay(daily_errors(12))) == []
    errors = daily_errors(12)
    start = 10 * 288 + 20  # 20 windows after midnight
    errors[start:start + 40] *= math.exp(0.5 * 4.5)  # v from about -3 to +1.5
    verdicts = replay(errors)
    assert [i - start for i in openings(verdicts)] in ([0], [1], [2], [3])
    # the context was frozen while it was open: the burst's end is no jump from the burst
    (closed_at, reason), = closings(verdicts)
    assert reason is c2.Close.RECOVERED and 40 <= closed_at - start <= 40 + T


def test_a_stuck_feature_opens_through_the_quiet_column() -> None:
    """A stuck sensor renders better than usual: its error drops while the other feature's stays, so the max
    over features sees nothing; the quiet column (minus the min) does."""
    settings = c2.CalibrationSettings()
    ref = reference(n_features=2)
    errors = np.stack([noisy(3000, seed=3), noisy(3000, seed=4)], axis=1)
    errors[2000:2300, 1] /= 30.0  # stuck: feature 1 reconstructs 30x better for 300 windows

    def found(per_feature: np.ndarray) -> list[int]:
        batch = c2.Batch.fresh(1, 2, settings)
        score = per_feature.mean(axis=1)
        shares = per_feature / per_feature.sum(axis=1, keepdims=True)
        opened = []
        for i in range(len(score)):
            verdict = c2.step(batch, score[i:i + 1], shares[i:i + 1], np.array([i * MINUTE]),
                              np.array([(i + T - 1) * MINUTE]), None, ref, settings)
            opened += [i] if verdict.opened[0] else []
            if 2000 <= i < 2300:
                assert verdict.p[0, c2.POINT] > 1e-3  # the max over features is not what finds it
        return [i for i in opened if i >= 1000]

    assert found(errors[:2000]) == []
    assert found(errors) and found(errors)[0] - 2000 in range(0, 20)


def test_nothing_opens_on_the_windows_that_trained_the_model() -> None:
    """A per-series model is replayed over its own training part first: however its (in-sample) errors
    look, the series opens nothing before it has streamed as many windows as trained the model."""
    errors = noisy(2000)
    errors[400:420] *= 1000.0
    verdicts = replay(errors, ref=reference(train_windows=574))
    assert [i for i in openings(verdicts) if i < 574] == []
    assert all(v.learning[0] for v in verdicts[:574]) and not verdicts[600].learning[0]


# --------------------------------------------------------------------------------------- gaps


def test_first_window_after_a_gap_of_ten_intervals_opens_nothing() -> None:
    """A sensor drops out for ten intervals and comes back: the windows holding the outage render badly
    (they join two unrelated stretches) but they are judged as gapped and cannot page."""
    n = 2000
    stamps = np.arange(n + T - 1, dtype=np.int64) * MINUTE
    stamps[1200:] += 10 * MINUTE
    errors = noisy(n)
    errors[1200 - T + 1:1200] *= 1000.0  # every window that holds the outage
    verdicts = replay(errors, stamps=stamps)
    assert all(v.gapped[0] for v in verdicts[1200 - T + 1:1200])
    assert [i for i in openings(verdicts) if i >= 1100] == []


# ------------------------------------------------------------------------------------ closing


def test_a_change_that_stays_closes_as_settled_after_a_day_and_is_then_normal() -> None:
    errors = noisy(6000)
    errors[2000:] *= 50.0  # a recalibrated sensor: the error level moves for good
    verdicts = replay(errors)  # one window a minute: a day is 1440 windows
    assert openings(verdicts)[0] in range(2000, 2004)
    (closed_at, reason), = closings(verdicts)
    assert reason is c2.Close.SETTLED and closed_at == pytest.approx(2000 + 1440, abs=5)
    assert [i for i in openings(verdicts) if i > closed_at] == []  # the new level is the new normal


def test_after_a_settled_step_only_the_columns_it_moved_relearn_and_a_glitch_opens_at_once() -> None:
    """A flat line steps to a level that stays (the level column settles into it), then glitches within the
    relearning period: the error columns did not move, kept their history, and judge it."""
    errors = noisy(5000)
    levels = 0.3 * np.random.default_rng(2).standard_normal(5000)
    levels[2000:] += 4.0
    errors[3600:3632] *= 200.0  # one bad event, in every window that holds it
    verdicts = replay(errors, levels=levels)
    (closed_at, reason), = [(i, r) for i, r in closings(verdicts) if i < 3600]
    assert reason is c2.Close.SETTLED and 3600 - 300 < closed_at < 3600 - 32  # relearning when the glitch comes
    (glitch,) = [i for i in openings(verdicts) if i > closed_at]
    assert glitch in range(3600, 3604)  # the point column: confirmed by the two windows before
    assert not verdicts[glitch].learning[0]


def test_after_a_settled_shift_the_level_column_judges_the_new_level_at_once() -> None:
    """A level that stays settles; the level column moves its centre to the new level rather than relearning,
    so a second shift within what was its relearning period opens at once, and the new level itself opens
    nothing more."""
    errors = noisy(5000)
    levels = 0.3 * np.random.default_rng(2).standard_normal(5000)
    levels[2000:] += 4.0
    levels[3600:3700] += 2.0  # 7 spreads, 150 windows after the settle
    verdicts = replay(errors, levels=levels)
    (closed_at, reason), = [(i, r) for i, r in closings(verdicts) if i < 3600]
    assert reason is c2.Close.SETTLED and 3600 - 300 < closed_at < 3600 - 32
    assert [i for i in openings(verdicts) if closed_at < i < 3600] == []
    (second,) = [i for i in openings(verdicts) if i >= 3600]
    assert second in range(3600, 3605)
    assert max(surprise(verdicts)[closed_at + 1:3600]) < 3.0


def test_after_a_settled_shift_of_one_feature_only_that_feature_moves_its_centre() -> None:
    """Two features, the first shifts for good: once settled, its centre moves to the new level, the other's
    stays where it was, and a second shift of the first opens at once."""
    ref, settings = reference(n_features=2), c2.CalibrationSettings()
    rng = np.random.default_rng(0)
    errors = noisy(5000, seed=1)
    levels = 0.3 * rng.standard_normal((5000, 2))
    levels[2000:, 0] += 4.0
    levels[3600:3700, 0] += 2.0
    batch = c2.Batch.fresh(1, 2, settings)
    verdicts, before = [], None
    for i, error in enumerate(errors):
        if i == 1999:
            before = batch.centre[0].copy()
        verdicts.append(c2.step(batch, np.array([error]), np.full((1, 2), 0.5), np.array([i * MINUTE]),
                                np.array([(i + T - 1) * MINUTE]), levels[i:i + 1], ref, settings))
        if i == 3500:
            assert abs(batch.centre[0, 0] - 4.0) < 0.3 and batch.centre[0, 1] == pytest.approx(before[1], abs=0.05)
    (settled, reason), = [(i, r) for i, r in closings(verdicts) if i < 3600]
    assert reason is c2.Close.SETTLED
    assert [i for i in openings(verdicts) if i > settled][0] in range(3600, 3605)


def test_a_fault_that_settles_at_an_hourly_cadence_keeps_the_error_columns_watching() -> None:
    """One window an hour: a day is 24 windows, so a fault settles once it has been open a quarantine past
    its onset (96 windows), not a day. By then the error columns are back to normal (a step's edge moved them
    only while it passed through the windows) and only the level column relearns: the fault's end and a later
    step each open an incident. (Settled at 64 windows, before any column was seen past the onset, every
    column relearnt, taught the fault's end as normal and missed the later step.)"""
    n = 1600
    errors = noisy(n)
    levels = 0.3 * np.random.default_rng(5).standard_normal(n)
    levels[400:520] += 4.0  # a fault for five days
    levels[1100:] += 4.0  # and again, for good
    for edge in (400, 520, 1100):
        errors[edge:edge + T] *= 200.0  # a model that removes levels errs while the step is inside the window
    hourly = np.arange(n + T - 1, dtype=np.int64) * 3_600_000
    verdicts = replay(errors, levels=levels, stamps=hourly)
    assert [reason for i, reason in closings(verdicts) if i < 520] == [c2.Close.SETTLED]
    opened = openings(verdicts)
    assert opened[0] in range(400, 404)
    assert any(i in range(520, 524) for i in opened)  # the settled fault ended: a change from the new normal
    assert any(i in range(1100, 1104) for i in opened)


def test_at_an_hourly_cadence_a_settled_column_relearns_for_a_day_and_a_quarantine_not_300_windows() -> None:
    """One window an hour: the error level moves for good (a recalibrated sensor), the incident settles and
    the error columns relearn. They judge again once they have been taught a day (24 windows, after a
    quarantine; at least 96 windows in all), so a glitch eight days later opens an incident. (Relearning for
    300 windows, 12.5 days at this cadence, they judged nothing then and the glitch was missed.)"""
    n = 1200
    errors = noisy(n)
    errors[400:] *= 50.0
    errors[700:732] *= 200.0  # one bad event, in every window that holds it
    hourly = np.arange(n + T - 1, dtype=np.int64) * 3_600_000
    verdicts = replay(errors, stamps=hourly)
    (closed_at, reason), = [(i, r) for i, r in closings(verdicts) if i < 700]
    assert reason is c2.Close.SETTLED and closed_at < 700 - 96
    assert any(i in range(700, 704) for i in openings(verdicts))
    five_minutes = np.log(np.array([31 * 300_000.0]))  # a window's span at 5 min: a day is 288 windows
    assert c2.relearning_windows(five_minutes, reference(), c2.CalibrationSettings()) == 300


def test_a_night_burst_that_errs_like_an_afternoon_opens_once_the_time_of_day_is_known() -> None:
    """Counts whose errors swing with the daily rate: low at night, high in the afternoon. A burst at night
    that comes on over two hours errs like any afternoon (the point column sees nothing) and moves too slowly
    for a jump from the last hours to tell; against the series' usual error at that time of day it opens."""
    day = 288  # windows at 5 minutes
    n = 12 * day
    t = np.arange(n)
    smooth = np.convolve(np.random.default_rng(7).standard_normal(n + 7), np.ones(8) / math.sqrt(8), mode="valid")[:n]
    v = -1.0 + 2.0 * np.sin(2 * np.pi * t / day) + 0.3 * smooth  # model-standardised: night -3, afternoon +1
    start = 10 * day + 3 * day // 4 - 24  # two hours before the night's lowest error
    ramp = np.linspace(0.0, 1.0, 24)
    burst = np.concatenate([ramp, np.ones(24), ramp[::-1]])
    v[start:start + len(burst)] += (1.0 - v[start:start + len(burst)]) * burst  # up to the afternoon's level
    errors = 0.01 * np.exp(0.5 * v)  # reference(): median ln 0.01, scale 0.5
    stamps = np.arange(n + T - 1, dtype=np.int64) * 300_000
    found = openings(replay(errors, stamps=stamps))
    assert found and all(start <= i < start + len(burst) for i in found)
    blind = openings(replay(errors, stamps=stamps, settings=c2.CalibrationSettings(season_days=1e9)))
    assert not any(start <= i < start + len(burst) for i in blind)


def test_a_fault_that_ends_just_after_it_settles_does_not_teach_its_end_as_the_time_of_day() -> None:
    """A fault that lasts a day and a few hours settles (a new normal) while its last windows still err. Those
    windows do not teach their half hours: after a settle the time of day waits until the restarted columns
    have relearnt. Had they taught it, the normal windows of the next days there would err far less than
    "usual" (a daily pulse that did not come): 5 false openings on day 9, surprise up to 6.0."""
    day = 288  # windows at 5 minutes
    errors = noisy(12 * day, seed=5)
    start = 6 * day + 100
    end = start + day + 3 * T + 40  # the settle comes at a day and 3 quarantines; 40 windows later it ends
    errors[start:end] *= 300.0  # ~11 model scales
    stamps = np.arange(len(errors) + T - 1, dtype=np.int64) * 300_000
    verdicts = replay(errors, stamps=stamps)
    assert [i // day for i in openings(verdicts)] == [6]
    assert [reason for _, reason in closings(verdicts)] == [c2.Close.SETTLED]
    assert surprise(verdicts)[end + day:].max() < 2.0


# ------------------------------------------------------------------------- state and batching


def test_state_round_trips_through_bytes_and_has_a_fixed_size() -> None:
    settings = c2.CalibrationSettings()
    batch = c2.Batch.fresh(2, 3, settings)
    ref = reference(n_features=3)
    rng = np.random.default_rng(3)
    for i in range(100):
        rows = np.array([0, 1] if i % 2 == 0 else [0])  # the second series has a window every other round
        part = batch.take(rows)
        c2.step(part, rng.uniform(0.005, 0.02, len(rows)), np.full((len(rows), 3), 1 / 3),
                np.full(len(rows), i) * MINUTE, np.full(len(rows), i + T) * MINUTE, rng.normal(0, 1, (len(rows), 3)),
                ref, settings)
        batch.put(rows, part)
    raws = encode_states(batch)
    assert {len(raw) for raw in raws} == {detector_state_bytes(3)} and detector_state_bytes(3) < 6200
    again = decode_states(raws, 0, 3, settings)
    for name in ("last_end_ms", "seen", "taught", "open", "pending_incident", "opened_ms", "peak_end_ms", "context",
                 "context_quiet"):
        np.testing.assert_array_equal(getattr(again, name), getattr(batch, name))
    for name in ("above", "tail_q", "tail_scale", "season", "season_n"):  # kept at the precision it is stored
        np.testing.assert_array_equal(getattr(again, name), getattr(batch, name))
    assert int.from_bytes(raws[0][:8], "little", signed=True) == batch.last_end_ms[0]  # the replay mark first


def test_a_state_of_another_model_or_layout_restarts_fresh_keeping_its_replay_mark() -> None:
    settings = c2.CalibrationSettings()
    batch = c2.Batch.fresh(1, 1, settings, model_key=7)
    for i in range(50):
        c2.step(batch, np.array([0.01]), np.ones((1, 1)), np.array([i * MINUTE]),
                np.array([(i + T) * MINUTE]), None, reference(), settings)
    raw = encode_states(batch)[0]
    loaded = decode_states([raw, raw[:100], None], model_key=7, n_features=1, settings=settings)
    assert loaded.seen.tolist() == [50, 0, 0]  # an older layout (another size) restarts too
    assert loaded.last_end_ms.tolist() == [batch.last_end_ms[0]] * 2 + [-1]
    swapped = decode_states([raw], model_key=8, n_features=1, settings=settings)
    assert swapped.seen[0] == 0 and swapped.model_key[0] == 8 and swapped.last_end_ms[0] == batch.last_end_ms[0]
    relaid = bytearray(raw)
    relaid[16:24] = ((LAYOUT_VERSION + 1) << 32 | len(raw)).to_bytes(8, "little")  # same size, another order
    moved = decode_states([bytes(relaid)], model_key=7, n_features=1, settings=settings)
    assert moved.seen[0] == 0 and moved.last_end_ms[0] == batch.last_end_ms[0]
    # a new series starts from the model's prior, its level column's as wide as the model's training data says;
    # a kept state keeps its own history
    wide = decode_states([raw, None], model_key=7, n_features=1, settings=settings, wander=(3.0,))
    assert np.array_equal(wide.above[0], loaded.above[0])
    assert np.array_equal(wide.above[1, c2.LEVEL], c2.prior_state(1, settings, (3.0,))[0][c2.LEVEL])
    assert wide.tail_q[1, c2.LEVEL] > loaded.tail_q[2, c2.LEVEL]
    assert np.array_equal(wide.above[1, c2.POINT], loaded.above[2, c2.POINT])


def test_most_windows_change_only_the_start_of_a_state() -> None:
    """The layout orders a state's parts by how often they change, so a store can write only the changed
    start: past the learning period, every window but one in hold_stride changes only the quarantine, the
    spikes waiting and the scalars (while the hold fills, the spikes teach alone once in 2 x hold_stride
    windows); while the series learns, the hold gathers what leaves the quarantine and only one window in
    hold_stride changes the histograms."""
    settings = c2.CalibrationSettings(learning_windows=100, max_learning_windows=100)
    layout = state_layout(1, settings)
    batch = c2.Batch.fresh(1, 1, settings)
    rng = np.random.default_rng(5)
    cuts = []
    for i in range(400):
        before = encode_states(batch)[0]
        c2.step(batch, np.array([0.01 * np.exp(0.2 * rng.standard_normal())]), np.ones((1, 1)),
                np.array([i * MINUTE]), np.array([(i + T) * MINUTE]), None, reference(), settings)
        after = encode_states(batch)[0]
        cut = layout.changed_prefix(after, before)
        assert after[cut:] == before[cut:] and len(after) == layout.size
        cuts.append(cut)
    short, hist = min(layout.stable_offsets), max(layout.stable_offsets)  # hist: the histograms' tail shapes
    k = settings.hold_stride
    assert all(cut == short for cut in cuts[:settings.quarantine])  # nothing taught yet
    learning, filling, past = cuts[settings.quarantine:100], cuts[100 + settings.quarantine:300], cuts[300:]
    assert sum(cut <= hist for cut in learning) >= len(learning) - (len(learning) // k + 1)
    assert sum(cut <= hist for cut in filling) >= len(filling) - (len(filling) // (2 * k) + 1)
    assert sum(cut == short for cut in past) >= len(past) - (len(past) // k + 1)
    assert short < 0.35 * layout.size and hist < layout.size / 2


def test_a_learning_series_teaches_in_blocks_what_it_would_teach_window_by_window() -> None:
    """The blocks change when a window teaches, never what: a series whose hold is too small for a block
    (so every window teaches as it leaves the quarantine) ends its learning period with the same histograms."""
    blocks = c2.CalibrationSettings(learning_windows=100, max_learning_windows=100)
    alone = c2.CalibrationSettings(learning_windows=100, max_learning_windows=100, hold_slots=0)
    errors = noisy(200, seed=4)
    runs = []
    for settings in (blocks, alone):
        batch = c2.Batch.fresh(1, 1, settings)
        taught, hists = [], []
        for i, error in enumerate(errors):
            c2.step(batch, np.array([error]), np.ones((1, 1)), np.array([i * MINUTE]),
                    np.array([(i + T) * MINUTE]), None, reference(), settings)
            taught.append(int(batch.taught[0]))
            hists.append(batch.above[0].copy())
        runs.append((taught, hists))
    (taught_blocks, hist_blocks), (taught_alone, hist_alone) = runs
    # windows 0..99 learn; each teaches once a quarantine (32) has followed it: 68 by the last of them
    d, k = blocks.quarantine, blocks.hold_stride
    assert taught_alone[99] == 100 - d
    assert taught_blocks[99] == 100 - d - (100 - d) % k  # in blocks of 12: 60, the last 8 still gather
    assert taught_blocks[100] == taught_alone[99]  # and teach with the first window past the learning period
    # within float32's rounding, which window by window happens 68 times and in blocks once a block; the spikes
    # (and blips) teach from every window that leaves the quarantine, so with the block they taught the 69th's too
    spikes = [c2.SPIKE, c2.BLIP]
    np.testing.assert_allclose(np.delete(hist_blocks[100], spikes, 0), np.delete(hist_alone[99], spikes, 0),
                               rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(hist_blocks[100][spikes], hist_alone[100][spikes], rtol=1e-5, atol=1e-9)


def test_the_hold_lasts_hours_not_windows_at_one_event_an_hour() -> None:
    """Past the learning period, what leaves the quarantine waits in the hold for hold_slots slots of an hour:
    at one event a minute a slot is hold_stride windows (192 windows in all, teaching 12 at a time), at one event
    an hour a single window (16 windows, each teaching for itself): 192 windows were 8 days there, and the
    history lagged a growing series by as much."""
    settings = c2.CalibrationSettings(learning_windows=100, max_learning_windows=100)
    past, h = 100 - settings.quarantine, settings.hold_slots  # past: taught by the end of the learning period
    errors = noisy(400, seed=9)
    taught = {}
    for cadence in (MINUTE, 60 * MINUTE):
        batch = c2.Batch.fresh(1, 1, settings)
        counts = []
        for i, error in enumerate(errors):
            c2.step(batch, np.array([error]), np.ones((1, 1)), np.array([i * cadence]),
                    np.array([(i + T - 1) * cadence]), None, reference(), settings)
            counts.append(int(batch.taught[0]))
        taught[cadence] = np.array(counts)
    minute, hourly = taught[MINUTE], taught[60 * MINUTE]
    np.testing.assert_array_equal(minute[:101], hourly[:101])  # the learning period is the same
    # the windows leaving the quarantine past the learning period wait in the hold, and the first teaches once
    # the hold is full: 16 windows later at one event an hour, then one a window
    first = 100 + h
    assert hourly[first - 1] == past and hourly[first] == past + 1
    np.testing.assert_array_equal(np.diff(hourly[first - 1:]), 1)
    # ... and more than 192 windows later at one event a minute, 12 at a time
    assert minute[100 + 12 * h] == past and set(np.diff(minute[100:])) == {0, 12}


def test_a_batch_judges_each_series_as_if_it_were_alone() -> None:
    """Vectorised over series: three series stepped together give what each gives alone, also when a round
    holds only some of them (the detector steps those rows: Batch.take, then Batch.put)."""
    settings = c2.CalibrationSettings()
    series = [noisy(1500, seed=s) for s in range(3)]
    series[1][900:1100] *= 30.0
    together = c2.Batch.fresh(3, 1, settings)
    joint: list[dict[int, tuple[float, bool]]] = []  # per window: series -> (surprise, opened)
    for i in range(1500):
        rows = np.array([0, 1, 2] if i < 1200 else [0, 1])
        part = together.take(rows)
        verdict = c2.step(part, np.array([series[k][i] for k in rows]), np.ones((len(rows), 1)),
                          np.full(len(rows), i * MINUTE), np.full(len(rows), (i + T - 1) * MINUTE), None,
                          reference(), settings)
        together.put(rows, part)
        joint.append({int(k): (float(verdict.surprise[j]), bool(verdict.opened[j])) for j, k in enumerate(rows)})
    for k, errors in enumerate(series):
        alone = replay(errors[:1200] if k == 2 else errors)
        np.testing.assert_allclose([v[k][0] for v in joint[:len(alone)]], surprise(alone))
        assert [i for i, v in enumerate(joint) if k in v and v[k][1]] == openings(alone)


def test_rounds_take_each_series_once_per_round_in_order() -> None:
    groups = c2.rounds(["a", "b", "a", "c", "a", "b"])
    assert [g.tolist() for g in groups] == [[0, 1, 3], [2, 5], [4]]


def test_same_inputs_give_the_same_verdicts() -> None:
    errors = noisy(1000)
    assert surprise(replay(errors)).tolist() == surprise(replay(errors)).tolist()


def test_settings_refuse_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="hysteresis"):
        c2.CalibrationSettings(open_surprise=2.0, close_surprise=3.0)
    with pytest.raises(ValueError, match="quarantine"):
        c2.CalibrationSettings(quarantine=100)
    with pytest.raises(ValueError, match="hold_slots"):
        c2.CalibrationSettings(hold_slots=63)
    with pytest.raises(ValueError, match="hold_stride"):
        c2.CalibrationSettings(hold_stride=0)
    with pytest.raises(ValueError, match="stride must be at least 1"):
        c2.CalibrationSettings(stride=0)
    with pytest.raises(ValueError, match="spike_noise_floor"):
        c2.CalibrationSettings(spike_noise_floor=0.0)
