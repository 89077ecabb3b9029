"""Detection per stream type, by the protocol the project is judged by: default settings, nothing tuned.

    python benchmarks/stream_outputs.py --seeds 0-2 --skab          # models + cached outputs, once
    python benchmarks/stream_types.py --seeds 0-2 --skab            # the tables, seconds

Per stream (benchmarks/stream_outputs.py): a VRAE trained with `vrae train --window 32` defaults on the
stream's first 15 % of events, its outputs on every window of the whole stream (stride 1) cached. Every
detector below then replays the whole stream, training part included, window by window; a detection is
an incident OPENING (open at surprise 3, close after 5 windows below 2: the worker's defaults). Every
detector's surprise comes from the same label-free rule, a tail probability:

    VRAE v2 (new default)   worker.calibration_v2: per-series decayed histograms of the model-standardised
                            error (and of the window level the model removes), and its incident policy
    VRAE worker (current)   worker.adaptive + worker.incidents with their defaults: the worker today
    VRAE static             -log10 of the model's own calibrated tail probability of the window's score
                            (float64, from the artifact's calibration: no float32 saturation)
    rolling z-score         max over features of |x - mean| / sd of the previous 288 events
    PCA T2+Q (windows)      Hotelling T2 and the residual Q of the standardised, flattened window, PCA
                            fitted on the training windows (90 % of the variance)
    PCA T2+Q (rows)         the same on single rows (multivariate streams only: SKAB's own baseline)

The baselines' statistics get their tail probability from the training part itself (the empirical
distribution there, a generalised Pareto tail above its 98th percentile: vrae_model.calibration, the
fit the model's own calibration uses); T2 and Q are combined as 2 min(p_T2, p_Q).

Scores per stream type, pooled over the seeds given: NAB standard profile (A_FP -0.11) and low-FP
profile (A_FP -0.22) as worker.evaluation computes them (an anomaly's NAB window is its labelled span
plus window - 1 events; openings in the training part count as false alarms), event F1, false incidents
per 10k windows, openings on the training part, openings within a window after a benign event (gap,
clock trouble, natural burst), mean detection delay in events.

SKAB valve1, by SKAB's protocol: the model trains on each file's first 400 rows; every later row is
predicted anomalous while an incident is open at the window ending there; F1, FAR and MAR come from one
confusion matrix over the test rows of all files. NAB-style event scores are given beside it.
"""

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))

from stream_outputs import WINDOW, Stream, load, parse_seeds  # noqa: E402
from vrae_model.calibration import Calibration, FeatureCalibration, fit_calibration, gpd_survival  # noqa: E402
from vrae_model.synth import STREAM_KINDS  # noqa: E402
from worker.evaluation import anomaly_windows, matches, sigmoid  # noqa: E402

OPEN, CLOSE, CLOSE_AFTER = 3.0, 2.0, 5
PROFILES = {"standard": -0.11, "low_fp": -0.22}
Z_WINDOW = 288


# ---------------------------------------------------------------------------------------- detections


@dataclass
class Run:
    """One detector on one stream: per-window surprise, open state and the openings (window indices)."""

    surprise: np.ndarray  # (W,)
    open: np.ndarray  # (W,) bool: an incident is open after this window
    openings: list[int]  # window indices
    closings: list[tuple[int, str]] = field(default_factory=list)  # (window index, reason)


def incidents_of(surprise: np.ndarray, gapped: np.ndarray | None = None, open_level: float = OPEN,
                 close_level: float = CLOSE, close_after: int = CLOSE_AFTER) -> Run:
    """The worker's incident machine (worker.incidents.step) on any per-window surprise."""
    is_open = np.zeros(len(surprise), bool)
    openings, closings = [], []
    state, run = False, 0
    for i, s in enumerate(surprise.tolist()):
        if gapped is not None and gapped[i]:
            is_open[i] = state
            continue
        if not state:
            if not s < open_level:
                state, run = True, 0
                openings.append(i)
        else:
            run = run + 1 if s < close_level else 0
            if run >= close_after:
                state = False
                closings.append((i, "normal"))
        is_open[i] = state
    return Run(surprise, is_open, openings, closings)


# ---------------------------------------------------------------------------------------- detectors


def tail_surprise(calibration: Calibration, values: np.ndarray) -> np.ndarray:
    """-log10 P(statistic >= value) by a calibration fitted to the statistic (empirical body, GPD tail),
    in float64 and in log space above the tail threshold, so nothing saturates."""
    s = np.asarray(values, np.float64)
    body = 1.0 - np.interp(s, calibration.knots_score, calibration.knots_prob, left=0.0)
    tail = (1.0 - calibration.q_u) * gpd_survival(s - calibration.u, calibration.gpd_shape, calibration.gpd_scale)
    p = np.where(s >= calibration.u, tail, body)
    return -np.log10(np.clip(p, 1e-300, 1.0))


def vrae_static(stream: Stream) -> np.ndarray:
    return tail_surprise(Calibration.from_dict(stream.model["calibration"]), stream.score)


def rolling_z(stream: Stream) -> np.ndarray:
    """max_f |x_f - mean_f| / sd_f over the previous Z_WINDOW events, at each window's last event."""
    x = stream.values.astype(np.float64)
    c1 = np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    c2 = np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x * x, axis=0)])
    due = stream.due
    lo = np.maximum(due - Z_WINDOW, 0)
    count = np.maximum(due - lo, 1)[:, None]
    mean = (c1[due] - c1[lo]) / count
    var = np.maximum((c2[due] - c2[lo]) / count - mean * mean, 1e-12)
    return np.max(np.abs(x[due] - mean) / np.sqrt(var), axis=1)


def calibrated(stream: Stream, statistic: np.ndarray) -> np.ndarray:
    """Surprise of a baseline's statistic by its own distribution on the training part's windows."""
    train = statistic[: max(stream.train_events - WINDOW + 1, 8)]
    train = train[np.isfinite(train)]
    return tail_surprise(fit_calibration(train), np.nan_to_num(statistic, nan=np.inf))


@dataclass
class PCA:
    mean: np.ndarray
    std: np.ndarray
    components: np.ndarray  # (k, D)
    eigenvalues: np.ndarray  # (k,)
    centre: np.ndarray

    @classmethod
    def fit(cls, rows: np.ndarray, explained: float = 0.9) -> "PCA":
        mean, std = rows.mean(axis=0), rows.std(axis=0) + 1e-8
        flat = (rows - mean) / std
        centre = flat.mean(axis=0)
        _, sv, vt = np.linalg.svd(flat - centre, full_matrices=False)
        share = np.cumsum(sv**2) / np.sum(sv**2)
        k = int(min(np.searchsorted(share, explained) + 1, len(sv)))
        return cls(mean, std, vt[:k], np.maximum(sv[:k] ** 2 / max(len(rows) - 1, 1), 1e-12), centre)

    def t2_q(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flat = (rows - self.mean) / self.std - self.centre
        scores = flat @ self.components.T
        residual = flat - scores @ self.components
        return np.sum(scores**2 / self.eigenvalues, axis=1), np.sum(residual**2, axis=1)


def pca_surprise(stream: Stream, rows: np.ndarray, n_train: int) -> np.ndarray:
    pca = PCA.fit(rows[:n_train])
    t2, q = pca.t2_q(rows)
    s_t2 = tail_surprise(fit_calibration(t2[:n_train]), t2)
    s_q = tail_surprise(fit_calibration(q[:n_train]), q)
    return np.maximum(s_t2, s_q) - math.log10(2.0)


def pca_windows(stream: Stream) -> np.ndarray:
    view = np.lib.stride_tricks.sliding_window_view(stream.values.astype(np.float64), WINDOW, axis=0)
    flat = view.transpose(0, 2, 1).reshape(len(view), -1)
    return pca_surprise(stream, flat, stream.train_events - WINDOW + 1)


def pca_rows(stream: Stream) -> np.ndarray:
    rows = stream.values.astype(np.float64)
    return pca_surprise(stream, rows, stream.train_events)[stream.due]


def worker_current(stream: Stream) -> Run:
    """worker.adaptive + worker.incidents, defaults, window by window as worker.detection.detect runs them."""
    from worker.adaptive import AdaptiveSettings, ScoreHistory, feature_errors, fold, judge
    from worker.incidents import IncidentSettings, IncidentState, Observation, step

    adaptive, incident_settings = AdaptiveSettings(), IncidentSettings()
    reference = FeatureCalibration.from_dict(stream.model["feature_calibration"], stream.values.shape[1])
    history, incident = ScoreHistory.fresh(0), IncidentState()
    starts, ends = stream.start_ms.tolist(), stream.end_ms.tolist()
    surprise = np.zeros(len(stream.due))
    is_open = np.zeros(len(stream.due), bool)
    openings, closings = [], []
    for i, (score, anomaly) in enumerate(zip(stream.score.tolist(), stream.anomaly_score.tolist())):
        errors = feature_errors(score, stream.feature_scores[i])
        judgement = judge(history, errors, anomaly, adaptive, start_ms=starts[i], end_ms=ends[i], reference=reference)
        seen = Observation(starts[i], ends[i], score, judgement.surprise, stream.feature_scores[i])
        incident, transition = step("s", incident, seen, incident_settings)
        history = fold(history, errors, adaptive, start_ms=starts[i], end_ms=ends[i], anomaly_score=anomaly,
                       surprise=judgement.surprise)
        surprise[i] = judgement.surprise
        is_open[i] = incident.open
        if transition is not None:
            (openings if transition.phase.value == "opened" else closings).append(i)
    return Run(surprise, is_open, openings, [(i, "normal") for i in closings])


def v2(streams: Sequence[Stream], settings=None, with_level: bool = True) -> list[Run]:
    """worker.calibration_v2 with its defaults: the streams of a set with the same feature count judged
    together, one window per series per round (as the worker would judge a batch), window by window."""
    from worker import calibration_v2 as c2

    settings = settings or c2.Settings()
    runs: list[Run | None] = [None] * len(streams)
    by_width: dict[int, list[int]] = {}
    for i, s in enumerate(streams):
        by_width.setdefault(s.values.shape[1], []).append(i)
    for f, members in by_width.items():
        group = [streams[i] for i in members]
        refs = [c2.Reference.from_metadata(s.model) for s in group]
        lengths = np.array([len(s.due) for s in group])
        width = int(lengths.max())
        n = len(group)
        score = np.zeros((n, width))
        shares = np.full((n, width, f), 1.0 / f)
        start, end = np.zeros((n, width), np.int64), np.zeros((n, width), np.int64)
        level = np.zeros((n, width, f))
        removes = np.array([r.removes_level and with_level for r in refs])
        for j, (s, r) in enumerate(zip(group, refs)):
            m = lengths[j]
            score[j, :m], shares[j, :m] = s.score, s.feature_scores
            start[j, :m], end[j, :m] = s.start_ms, s.end_ms
            view = np.lib.stride_tricks.sliding_window_view(s.values, WINDOW, axis=0).transpose(0, 2, 1)
            level[j, :m] = c2.window_level(view, r, settings)
        # one Reference per series: stack theirs (the step takes per-series arrays through broadcasting)
        reference = c2.Reference(np.stack([r.median for r in refs]), np.stack([r.scale for r in refs]),
                                 np.stack([r.mean for r in refs]), np.stack([r.std for r in refs]),
                                 removes, WINDOW, np.array([r.train_windows for r in refs]))
        batch = c2.Batch.fresh(n, f, settings)
        surprise = np.full((n, width), np.nan)
        is_open = np.zeros((n, width), bool)
        openings: list[list[int]] = [[] for _ in range(n)]
        closings: list[list[tuple[int, str]]] = [[] for _ in range(n)]
        for t in range(width):
            active = t < lengths
            lv = np.where(removes[:, None], level[:, t], 0.0) if removes.any() else None
            out = c2.step(batch, active, score[:, t], shares[:, t], start[:, t], end[:, t], lv, reference, settings)
            surprise[:, t] = out.surprise
            is_open[:, t] = out.open
            for j in np.flatnonzero(out.opened):
                openings[j].append(t)
            for j in np.flatnonzero(out.closed):
                closings[j].append((t, c2.Close(out.closed[j]).name.lower()))
        for j, i in enumerate(members):
            m = lengths[j]
            runs[i] = Run(surprise[j, :m], is_open[j, :m], openings[j], closings[j])
    return runs


BASELINES: dict[str, Callable[[Stream], np.ndarray]] = {
    "VRAE static": vrae_static,
    "rolling z-score": lambda s: calibrated(s, rolling_z(s)),
    "PCA T2+Q (windows)": pca_windows,
}


# ------------------------------------------------------------------------------------------- scoring


@dataclass
class Card:
    nab: dict[str, float]
    f1: float
    precision: float
    recall: float
    false_per_10k: float
    false_alarms: int
    detected: int
    anomalies: int
    windows: int
    train_openings: int
    benign_openings: int
    delay: float
    missed_by_kind: dict[str, int] = field(default_factory=dict)
    skab: dict[str, float] = field(default_factory=dict)


def event_card(streams: Sequence[Stream], runs: Sequence[Run]) -> Card:
    """NAB (both profiles), event F1 and false incidents over a set of streams, pooled."""
    raw = {name: 0.0 for name in PROFILES}
    perfect = null = 0.0
    detected = false_alarms = n_windows = train_open = benign_open = 0
    delays: list[int] = []
    missed: dict[str, int] = {}
    anomalies = 0
    for stream, run in zip(streams, runs, strict=True):
        openings = [int(stream.due[i]) for i in run.openings]  # event index ending the opening window
        areas = anomaly_windows(stream.labels, WINDOW)
        hit = [False] * len(areas)
        n_windows += len(stream.due)
        for d, k in matches(areas, openings):
            if k >= 0:
                if not hit[k]:
                    a, b = areas[k]
                    hit[k] = True
                    for name in PROFILES:
                        raw[name] += sigmoid(-(b - d + 1) / (b - a + 1))
                    delays.append(d - a)
                continue
            false_alarms += 1
            train_open += d < stream.train_events
            benign_open += any(a <= d < b + WINDOW for a, b, _ in stream.benign)
            for name, a_fp in PROFILES.items():
                if k < -1:
                    a, b = areas[-k - 2]
                    raw[name] += -a_fp * sigmoid(abs(d - b) / max(b - a, 1))
                else:
                    raw[name] += a_fp
        for (a, _), h in zip(areas, hit, strict=True):
            kind = next((kd for lo, hi, kd in stream.anomaly_kinds if lo == a), "?")
            if not h:
                missed[kind] = missed.get(kind, 0) + 1
        detected += sum(hit)
        anomalies += len(areas)
        for name in PROFILES:
            raw[name] -= len(hit) - sum(hit)
        perfect += sigmoid(-1.0) * len(areas)
        null -= len(areas)
    precision = detected / max(detected + false_alarms, 1)
    recall = detected / max(anomalies, 1)
    nab = {name: 100.0 * (raw[name] - null) / (perfect - null) if perfect > null else math.nan for name in PROFILES}
    return Card(nab=nab, f1=2 * precision * recall / max(precision + recall, 1e-12), precision=precision,
                recall=recall, false_per_10k=1e4 * false_alarms / max(n_windows, 1), false_alarms=false_alarms,
                detected=detected, anomalies=anomalies, windows=n_windows, train_openings=train_open,
                benign_openings=benign_open, delay=float(np.mean(delays)) if delays else math.nan,
                missed_by_kind=missed)


def skab_card(streams: Sequence[Stream], runs: Sequence[Run], train_rows: int = 400) -> dict[str, float]:
    """SKAB's protocol: point-wise predictions on every row after the first `train_rows`, one confusion
    matrix over all files. A row is predicted anomalous while an incident is open at the window ending
    there (every test row ends a window: train_rows >= WINDOW)."""
    tp = fp = fn = tn = 0
    late: list[int] = []
    open_at_end = 0
    for stream, run in zip(streams, runs, strict=True):
        predicted = np.zeros(len(stream.labels), bool)
        predicted[stream.due] = run.open
        truth = stream.labels.astype(bool)
        p, t = predicted[train_rows:], truth[train_rows:]
        tp += int(np.sum(p & t))
        fp += int(np.sum(p & ~t))
        fn += int(np.sum(~p & t))
        tn += int(np.sum(~p & ~t))
        first = int(np.flatnonzero(truth)[0])
        hits = [int(stream.due[i]) for i in run.openings if int(stream.due[i]) >= first] + \
               [first] * bool(predicted[first])
        late.append(min(hits) - first if hits else 10**6)
        open_at_end += bool(run.open[-1])
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return {"f1": 2 * precision * recall / max(precision + recall, 1e-12), "far": 100.0 * fp / max(fp + tn, 1),
            "mar": 100.0 * fn / max(fn + tp, 1), "median_delay_rows": float(np.median(late)),
            "open_at_end": float(open_at_end)}


# ------------------------------------------------------------------------------------------------ run


def detectors(streams: Sequence[Stream], only: set[str] | None, settings=None) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    want = (lambda name: only is None or name in only)
    if want("VRAE v2"):
        out["VRAE v2"] = v2(streams, settings)
    if want("VRAE worker"):
        out["VRAE worker"] = [worker_current(s) for s in streams]
    for name, surprise_of in BASELINES.items():
        if want(name):
            out[name] = [incidents_of(surprise_of(s)) for s in streams]
    if want("PCA T2+Q (rows)") and all(s.values.shape[1] > 1 for s in streams):
        out["PCA T2+Q (rows)"] = [incidents_of(pca_rows(s)) for s in streams]
    return out


def table(title: str, cards: dict[str, Card], skab: bool = False) -> str:
    any_card = next(iter(cards.values()))
    lines = [f"#### {title}: {any_card.anomalies} anomalies, {any_card.windows} windows", ""]
    head = "| detector | NAB std | NAB low-FP | F1 | false / 10k | false (train, benign) | delay |"
    rule = "|---|---:|---:|---:|---:|---:|---:|"
    if skab:
        head += " SKAB F1 | FAR % | MAR % | median delay (rows) | open at end |"
        rule += "---:|---:|---:|---:|---:|"
    lines += [head, rule]
    for name, c in cards.items():
        row = (f"| {name} | {c.nab['standard']:.1f} | {c.nab['low_fp']:.1f} | {c.f1:.2f} | {c.false_per_10k:.1f} "
               f"| {c.false_alarms} ({c.train_openings}, {c.benign_openings}) | {c.delay:.0f} |")
        if skab:
            k = c.skab
            row += (f" {k['f1']:.2f} | {k['far']:.1f} | {k['mar']:.1f} | {k['median_delay_rows']:.0f} "
                    f"| {k['open_at_end']:.0f} |")
        lines.append(row)
    return "\n".join(lines)


def evaluate(streams: Sequence[Stream], only: set[str] | None = None, settings=None,
             ) -> dict[str, dict[str, Card]]:
    """{stream kind: {detector: card}} plus an "all synthetic" row set."""
    by_kind: dict[str, list[Stream]] = {}
    for s in streams:
        by_kind.setdefault(s.kind, []).append(s)
    result: dict[str, dict[str, Card]] = {}
    pooled: dict[str, tuple[list[Stream], list[Run]]] = {}
    for kind, group in by_kind.items():
        runs = detectors(group, only, settings)
        result[kind] = {}
        for name, rs in runs.items():
            card = event_card(group, rs)
            if kind == "skab-valve1":
                card.skab = skab_card(group, rs)
            else:
                pooled.setdefault(name, ([], []))
                pooled[name][0].extend(group)
                pooled[name][1].extend(rs)
            result[kind][name] = card
    if pooled:  # detectors that judged every synthetic stream (row PCA only judges multivariate ones)
        n_synthetic = sum(len(group) for kind, group in by_kind.items() if kind != "skab-valve1")
        result["all synthetic"] = {name: event_card(g, r) for name, (g, r) in pooled.items() if len(g) == n_synthetic}
    return result


def summary(result: dict[str, dict[str, Card]], seeds: str) -> str:
    """One row per stream type: v2, the current worker and the best untuned baseline (by NAB std)."""
    lines = [f"| stream type (seeds {seeds}) | v2: NAB std / low-FP / F1 / false per 10k | current worker | "
             "best baseline (by NAB std) |", "|---|---|---|---|"]

    def cell(c: Card) -> str:
        return f"{c.nab['standard']:.1f} / {c.nab['low_fp']:.1f} / {c.f1:.2f} / {c.false_per_10k:.1f}"

    for kind in [*STREAM_KINDS, "all synthetic", "skab-valve1"]:
        if kind not in result or "VRAE v2" not in result[kind]:
            continue
        cards = result[kind]
        baselines = {n: c for n, c in cards.items() if n not in ("VRAE v2", "VRAE worker")}
        best = max(baselines, key=lambda n: cards[n].nab["standard"]) if baselines else None
        extra = f" (SKAB F1 {cards['VRAE v2'].skab['f1']:.2f})" if cards["VRAE v2"].skab else ""
        lines.append(f"| {kind} | {cell(cards['VRAE v2'])}{extra} | "
                     f"{cell(cards['VRAE worker']) if 'VRAE worker' in cards else ''} | "
                     f"{best}: {cell(cards[best]) if best else ''} |")
    return "\n".join(lines)


def report(result: dict[str, dict[str, Card]], seeds: str) -> str:
    parts = []
    for kind in [*STREAM_KINDS, "all synthetic", "skab-valve1"]:
        if kind in result:
            parts.append(table(f"{kind} (seeds {seeds})" if kind != "skab-valve1" else "SKAB valve1, 16 files",
                               result[kind], skab=kind == "skab-valve1"))
    return "\n\n".join(parts)


def ablations(streams: Sequence[Stream]) -> str:
    """The default against one change at a time (VRAE v2 only), pooled synthetic and SKAB."""
    from dataclasses import replace

    from worker.calibration_v2 import Settings

    base = Settings()
    variants = {
        "default": (base, True),
        "no level column": (base, False),
        "no quarantine (teach at once)": (replace(base, quarantine=1), True),
        "learning period 300, not the model's size": (replace(base, max_learning_windows=300), True),
        "no learning period": (replace(base, learning_windows=0, max_learning_windows=0), True),
        "tail floor 0.35 (steeper tail)": (replace(base, tail_floor=0.35), True),
        "tail floor 0.75": (replace(base, tail_floor=0.75), True),
        "prior weight 30": (replace(base, prior_weight=30.0), True),
        "open after 2 windows": (replace(base, open_after=2), True),
        "settle after 4 days": (replace(base, settle_ms=4 * 86_400_000), True),
    }
    synthetic = [s for s in streams if s.kind != "skab-valve1"]
    skab = [s for s in streams if s.kind == "skab-valve1"]
    lines = ["| v2 variant | NAB std | NAB low-FP | F1 | false / 10k | worst type false / 10k | SKAB F1 | FAR % | MAR % |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (settings, level) in variants.items():
        runs = v2(synthetic, settings, level) if synthetic else []
        card = event_card(synthetic, runs) if synthetic else None
        worst = max((event_card([s for s in synthetic if s.kind == k], [r for s, r in zip(synthetic, runs) if s.kind == k])
                     .false_per_10k for k in {s.kind for s in synthetic}), default=math.nan)
        k = skab_card(skab, v2(skab, settings, level)) if skab else {"f1": math.nan, "far": math.nan, "mar": math.nan}
        lines.append(f"| {name} | {card.nab['standard'] if card else math.nan:.1f} "
                     f"| {card.nab['low_fp'] if card else math.nan:.1f} | {card.f1 if card else math.nan:.2f} "
                     f"| {card.false_per_10k if card else math.nan:.1f} | {worst:.1f} | {k['f1']:.2f} | {k['far']:.1f} "
                     f"| {k['mar']:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0-2")
    parser.add_argument("--kinds", default=",".join(STREAM_KINDS))
    parser.add_argument("--series", type=int, default=3)
    parser.add_argument("--cache", default=".cache/streams")
    parser.add_argument("--skab", action="store_true")
    parser.add_argument("--no-synthetic", action="store_true")
    parser.add_argument("--only", help="comma-separated detector names")
    parser.add_argument("--ablations", action="store_true", help="also the v2 default against one change at a time")
    parser.add_argument("--clean", action="store_true",
                        help="the stream types without labelled anomalies: every opening is false")
    args = parser.parse_args(argv)
    from pathlib import Path

    started = time.perf_counter()
    kinds = [] if args.no_synthetic else args.kinds.split(",")
    streams = load(kinds, parse_seeds(args.seeds), args.series, Path(args.cache), args.skab, clean=args.clean)
    only = set(args.only.split(",")) if args.only else None
    result = evaluate(streams, only)
    print(summary(result, args.seeds) + "\n\n" + report(result, args.seeds))
    if args.ablations:
        print(f"\n#### Ablations (seeds {args.seeds}{', SKAB' if args.skab else ''})\n\n{ablations(streams)}")
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
