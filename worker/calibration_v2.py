"""Per-series calibration v2 (pure, vectorised over series): research version, see benchmarks/stream_types.py."""

import math
from dataclasses import dataclass, field, replace

import numpy as np

MIN_ERROR = 1e-12


@dataclass(frozen=True)
class Settings:
    error_floor: float = 1e-3  # scaled mean squared error below which every window is as good as any
    scale_floor: float = 0.25  # ln units: the model's per-feature robust scale is floored here
    halflife: float = 2000.0  # windows: the memory of the histograms
    horizons: tuple[float, ...] = (0.0, 4.0, 32.0)  # EW halflives of the statistic judged; 0: the point
    confirm_point: bool = True
    lower_horizon: int = -1  # index of the horizon whose LOWER tail is also tested (-1: none)
    lower_tail_mass: float = 0.02
    tail_mass: float = 0.002  # the empirical tail is extrapolated beyond the level this share exceeds ...
    tail_count: float = 10.0  # ... or the level `tail_count` windows of the history exceed, if higher
    tail_scale_floor: float = 1.0  # model scales: the exponential tail is never steeper than this
    prior_weight: float = 30.0
    learning_windows: int = 300
    incident_weight: float = 0.05
    quarantine: int = 32  # a judged window is folded in only this many windows later
    settle_windows: int = 1000  # an incident open this long closes: the series settled into a new normal
    gap_factor: float = 5.0
    lo: float = -8.0
    hi: float = 40.0
    step: float = 0.5
    open_surprise: float = 3.0
    close_surprise: float = 2.0
    close_after: int = 5

    @property
    def bins(self) -> int:
        return int(round((self.hi - self.lo) / self.step))

    @property
    def decay(self) -> float:
        return 2.0 ** (-1.0 / self.halflife)


@dataclass
class State:
    """S series side by side."""

    n: np.ndarray  # (S,) int64
    last_end_ms: np.ndarray  # (S,) int64
    span: np.ndarray  # (S,) float64 EW ln(window span ms)
    prev: np.ndarray  # (S,) float64 previous window's statistic
    avg: np.ndarray  # (S, K) float64 EW averages (column 0 unused for the point)
    hist: np.ndarray  # (S, K, B) float64
    # incident
    open: np.ndarray  # (S,) bool
    normal_run: np.ndarray  # (S,) int64
    open_windows: np.ndarray  # (S,) int64
    baseline_at_open: np.ndarray  # (S,) float64
    since_reset: np.ndarray  # (S,) int64 windows folded since the histograms (re)started
    prior: np.ndarray  # (K, B) the histograms a series starts from (shared)
    pending: np.ndarray  # (S, D, K) the last D judged values, folded only once D windows old
    pending_n: np.ndarray  # (S,) int64 how many of them are filled

    @classmethod
    def fresh(cls, s: int, n_features: int, settings: Settings) -> "State":
        k, b = len(settings.horizons), settings.bins
        centres = settings.lo + settings.step * (np.arange(b) + 0.5)
        edges = settings.lo + settings.step * np.arange(b + 1)
        from scipy.stats import norm

        cdf = norm.cdf(edges) ** n_features
        prior = np.diff(cdf)
        prior[-1] += 1.0 - cdf[-1]
        prior[0] += cdf[0]
        prior = settings.prior_weight * prior / prior.sum()
        hist = np.broadcast_to(prior, (s, k, b)).copy()
        del centres
        return cls(np.zeros(s, np.int64), np.full(s, -1, np.int64), np.zeros(s), np.zeros(s), np.zeros((s, k)), hist,
                   np.zeros(s, bool), np.zeros(s, np.int64), np.zeros(s, np.int64), np.zeros(s),
                   np.zeros(s, np.int64), hist[0].copy() if s else np.broadcast_to(prior, (k, b)).copy(),
                   np.zeros((s, max(settings.quarantine, 1), k)), np.zeros(s, np.int64))


def statistic(score: np.ndarray, shares: np.ndarray, median: np.ndarray, scale: np.ndarray,
              settings: Settings) -> np.ndarray:
    """(S,) max over features of the model-standardised, floored log error."""
    f = shares.shape[1]
    shares = np.where(np.isfinite(shares), shares, 1.0 / f)
    errors = np.asarray(score, np.float64)[:, None] * f * shares
    errors = np.where(np.isfinite(errors), errors, 1e30)
    floor = math.log(settings.error_floor)
    x = np.log(np.maximum(errors, MIN_ERROR))
    x = np.maximum(x, floor)
    centre = np.maximum(median, floor)
    s = np.maximum(scale, settings.scale_floor)
    return np.max((x - centre) / s, axis=1)


def _tail(hist: np.ndarray, w: np.ndarray, settings: Settings, lower: bool = False) -> np.ndarray:
    """(S,) P(stat >= w) from (S, B) histograms, extrapolated exponentially beyond the tail_mass level."""
    if lower:  # P(stat <= w) = P(-stat >= -w) on the mirrored grid
        settings = replace(settings, lo=-settings.hi)
        hist, w = hist[:, ::-1], -w
    s, b = hist.shape
    total = hist.sum(axis=1)
    above = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # above[:, j] = mass in bins >= j
    above_next = np.concatenate([above[:, 1:], np.zeros((s, 1))], axis=1)
    pos = np.clip((w - settings.lo) / settings.step, 0.0, b - 1e-9)
    j = pos.astype(np.int64)
    frac_above = (j + 1) - pos
    rows = np.arange(s)
    mass_w = above_next[rows, j] + frac_above * hist[rows, j]
    # the attach level q: where the mass above reaches alpha * total, alpha = max(tail_mass, tail_count / total)
    alpha = np.maximum(settings.tail_mass, settings.tail_count / np.maximum(total, 1e-12))
    target = alpha * total
    jq = np.clip(np.sum(above >= target[:, None], axis=1) - 1, 0, b - 1)  # last bin with above >= target
    hq = hist[rows, jq]
    inside = np.clip(np.where(hq > 0, (target - above_next[rows, jq]) / np.where(hq > 0, hq, 1.0), 0.0), 0.0, 1.0)
    q = settings.lo + settings.step * (jq + 1 - inside)  # `inside` of bin jq's mass lies above q
    centres = settings.lo + settings.step * (np.arange(b) + 0.5)
    beyond = np.arange(b)[None, :] > jq[:, None]
    excess_sum = np.sum(hist * beyond * (centres[None, :] - q[:, None]), axis=1) \
        + inside * hq * (settings.step * inside / 2.0)
    sigma_emp = excess_sum / np.maximum(target, 1e-12)
    sigma = np.maximum(sigma_emp, settings.tail_scale_floor)
    p_emp = mass_w / np.maximum(total, 1e-12)
    p_ext = alpha * np.exp(-(w - q) / sigma)
    return np.clip(np.where(w > q, np.maximum(p_ext, p_emp), p_emp), 1e-300, 1.0)


@dataclass
class Step:
    surprise: np.ndarray
    may_open: np.ndarray
    gapped: np.ndarray
    opened: np.ndarray
    closed: np.ndarray
    settled: np.ndarray


def step(state: State, active: np.ndarray, v: np.ndarray, start_ms: np.ndarray, end_ms: np.ndarray,
         settings: Settings) -> Step:
    """Judge, advance incidents and fold, in place, for the series where `active`."""
    k = len(settings.horizons)
    rates = np.array([1.0 if h <= 0 else 1.0 - 2.0 ** (-1.0 / h) for h in settings.horizons])
    span = np.log(np.maximum(end_ms - start_ms, 1).astype(np.float64))
    young = state.n == 0
    usual = np.where(young, span, state.span)
    # gapped: the window spans more than usual + (gap_factor - 1) usual intervals
    excess = np.exp(span) - np.exp(usual)
    gapped = (~young) & (excess > (settings.gap_factor - 1.0) * np.exp(usual) / (31.0))
    point = np.where((~young) & settings.confirm_point, np.minimum(v, state.prev), v)
    judged = np.empty((len(v), k))
    for i, rate in enumerate(rates):
        if i == 0:
            judged[:, 0] = point
        else:
            r = np.maximum(rate, 1.0 / (state.n + 1))
            judged[:, i] = state.avg[:, i] + r * (v - state.avg[:, i])
    questions = k + (settings.lower_horizon >= 0)
    p = np.ones((len(v), questions))
    for i in range(k):
        p[:, i] = _tail(state.hist[:, i, :], judged[:, i], settings)
    if settings.lower_horizon >= 0:
        h = settings.lower_horizon
        p[:, k] = _tail(state.hist[:, h, :], judged[:, h], replace(settings, tail_mass=settings.lower_tail_mass),
                        lower=True)
    p_min = np.clip(questions * p.min(axis=1), 1e-300, 1.0)
    surprise = -np.log10(p_min)
    may_open = active & (state.since_reset >= settings.learning_windows) & ~gapped
    # incidents
    opened = may_open & ~state.open & (surprise >= settings.open_surprise)
    cont = active & state.open & ~gapped
    normal = surprise < settings.close_surprise
    state.normal_run = np.where(cont, np.where(normal, state.normal_run + 1, 0), state.normal_run)
    state.open_windows = np.where(cont, state.open_windows + 1, state.open_windows)
    forced = cont & (state.open_windows >= settings.settle_windows)
    closed = cont & ((state.normal_run >= settings.close_after) | forced)
    long_avg = judged[:, -1]
    settled = closed & (forced | (long_avg > state.baseline_at_open + 2.0))
    state.open = (state.open & ~closed) | opened
    state.normal_run = np.where(opened | closed, 0, state.normal_run)
    state.open_windows = np.where(opened, 1, np.where(closed, 0, state.open_windows))
    median = _quantile(state.hist[:, -1, :], 0.5, settings)
    state.baseline_at_open = np.where(opened, median, state.baseline_at_open)
    # fold: the value judged `quarantine` windows ago (so a fault that ramps up does not teach the history
    # its own ramp before it opens an incident), at the weight of the incident state now
    fold = active & ~gapped
    d = state.pending.shape[1]
    if settings.quarantine > 0:
        ready = fold & (state.pending_n >= d)
        oldest = state.pending[:, 0, :].copy()
        state.pending = np.where(fold[:, None, None], np.roll(state.pending, -1, axis=1), state.pending)
        state.pending[:, -1, :] = np.where(fold[:, None], judged, state.pending[:, -1, :])
        state.pending_n = np.where(fold, np.minimum(state.pending_n + 1, d), state.pending_n)
        to_fold = oldest
    else:
        ready = fold
        to_fold = judged
    weight = np.where(state.open, settings.incident_weight, 1.0) * ready
    decay = settings.decay ** weight
    b = settings.bins
    pos = np.clip((to_fold - settings.lo) / settings.step - 0.5, 0.0, b - 1.0)  # (S, K) in bin-centre units
    j0 = np.floor(pos).astype(np.int64)
    j1 = np.minimum(j0 + 1, b - 1)
    f1 = pos - j0
    state.hist *= decay[:, None, None]
    rows = np.arange(len(v))[:, None]
    cols = np.arange(k)[None, :]
    np.add.at(state.hist, (rows, cols, j0), (weight[:, None] * (1.0 - f1)))
    np.add.at(state.hist, (rows, cols, j1), (weight[:, None] * f1))
    for i, rate in enumerate(rates):
        if i > 0:
            state.avg[:, i] = np.where(fold, judged[:, i], state.avg[:, i])
    state.prev = np.where(fold, v, state.prev)
    state.since_reset = np.where(forced, 0, state.since_reset + fold)
    state.hist = np.where(forced[:, None, None], state.prior[None], state.hist)
    state.pending_n = np.where(forced, 0, state.pending_n)
    state.span = np.where(active & ~gapped, np.where(young, span, state.span + 0.01 * (span - state.span)), state.span)
    state.n = state.n + fold
    state.last_end_ms = np.where(active, end_ms, state.last_end_ms)
    return Step(np.where(active, surprise, np.nan), may_open, gapped & active, opened, closed, settled)


def _quantile(hist: np.ndarray, q: float, settings: Settings) -> np.ndarray:
    c = np.cumsum(hist, axis=1)
    total = c[:, -1]
    j = np.argmax(c >= q * total[:, None], axis=1)
    return settings.lo + settings.step * (j + 0.5)


def replay_streams(streams, settings: Settings | None = None):
    """Bench helper: all streams in lockstep; returns stream_types.Run per stream."""
    from stream_types import Run

    settings = settings or Settings()
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(streams):
        groups.setdefault(s.values.shape[1], []).append(i)
    runs: list = [None] * len(streams)
    for f, members in groups.items():
        group = [streams[i] for i in members]
        s_count = len(group)
        lengths = np.array([len(s.due) for s in group])
        w = int(lengths.max())
        v_all = np.zeros((s_count, w))
        start = np.zeros((s_count, w), np.int64)
        end = np.zeros((s_count, w), np.int64)
        for j, s in enumerate(group):
            fc = s.model["feature_calibration"]
            med = np.array(fc["log_error_median"])
            sc = np.array(fc["log_error_scale"])
            v_all[j, :lengths[j]] = statistic(s.score, s.feature_scores.astype(np.float64), med[None, :], sc[None, :],
                                              settings)
            start[j, :lengths[j]] = s.start_ms
            end[j, :lengths[j]] = s.end_ms
        state = State.fresh(s_count, f, settings)
        surprise = np.full((s_count, w), np.nan)
        is_open = np.zeros((s_count, w), bool)
        openings: list[list[int]] = [[] for _ in range(s_count)]
        closings: list[list[tuple[int, str]]] = [[] for _ in range(s_count)]
        for t in range(w):
            active = t < lengths
            out = step(state, active, v_all[:, t], start[:, t], end[:, t], settings)
            surprise[:, t] = out.surprise
            is_open[:, t] = state.open
            for j in np.flatnonzero(out.opened):
                openings[j].append(t)
            for j in np.flatnonzero(out.closed):
                closings[j].append((t, "settled" if out.settled[j] else "normal"))
        for j, i in enumerate(members):
            n = lengths[j]
            runs[i] = Run(surprise[j, :n], is_open[j, :n], openings[j], closings[j])
    return runs
