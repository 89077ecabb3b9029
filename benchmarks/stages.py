"""Where a batch's CPU goes: each stage of the worker's hot path in CPU microseconds per event.

Builds one realistic batch (every series sends `events_per_series` events, all ending due windows,
on warmed-up state in a real redis-server) and times each stage of `Pipeline.process` the way the
worker runs it: parse, window store (Redis round trip), tensor building, forward pass, alert
decisions and metrics. CPU time, not wall time, so the figures hold on a busy machine. Use it to see
what to optimise; throughput.py says what the whole worker achieves.

Run: `python benchmarks/stages.py --series 1000 --windows 24,64`.
"""

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import redis
import torch

import options
from bench_models import write_artifact
from harness import INTERVAL_MS, START_MS, encode_event, run_script, series_ids, stream_values
from worker.config import KafkaSettings, ModelSettings, RedisSettings
from worker.detection.alerts import decide_alerts
from worker.detection.detector import DetectionResult, Detector
from worker.events import Event, EventParser, SourceRecord
from worker.metrics import Metrics
from worker.records import alert_message, detection_messages
from worker.scorer import Scorer, Scores
from worker.state.codec import state_layout
from worker.state.redis_store import RedisStateStore
from worker.tools import local_services
from worker.windows import Peek, WindowSpec

BATCH_RECORDS = KafkaSettings().max_poll_records  # the worker's default batch
REPEATS = 5
INCIDENT_WARM_BATCHES = 20  # batches before incidents mode is timed: its detector states exist by then


def records_for(ids: list[str], first_step: int, n_steps: int, n_features: int, topic: str = "bench") -> list[SourceRecord]:
    values = stream_values(first_step + n_steps, len(ids), n_features)
    records = []
    for step in range(first_step, first_step + n_steps):
        for index, sid in enumerate(ids):
            payload = encode_event(sid, START_MS + step * INTERVAL_MS, values[step, index])
            records.append(SourceRecord(topic=topic, partition=0, offset=len(records) + first_step * len(ids),
                                        key=sid.encode(), value=payload))
    return records


def best_us_per_event(stage: Callable[[], object], n_events: int, clock: Callable[[], float]) -> float:
    """The fastest of REPEATS runs: the least disturbed by whatever else the machine is doing."""
    best = math.inf
    for _ in range(REPEATS):
        started = clock()
        stage()
        best = min(best, clock() - started)
    return 1e6 * best / n_events


def cpu_us_per_event(stage: Callable[[], object], n_events: int) -> float:
    return best_us_per_event(stage, n_events, time.process_time)


def wall_us_per_event(stage: Callable[[], object], n_events: int) -> float:
    """Includes waiting (for redis-server's scripts, for the CPU on a busy machine)."""
    return best_us_per_event(stage, n_events, time.perf_counter)


def apply(store: RedisStateStore, events: list, detect: Callable[[Peek], dict[str, bytes]] | None = None) -> Peek:
    """The store's two round trips of a batch: the peek before scoring, the write after delivery (with
    `detect`, incidents mode: the detector states it returns are written beside the windows)."""
    now_ms = int(time.time() * 1000)
    peek = store.peek(events, detector=detect is not None, now_ms=now_ms)
    store.write(peek.pending, detect(peek) if detect is not None else {}, now_ms)
    return peek


def measure_incidents(client: redis.Redis, spec: WindowSpec, scorer: Scorer, batches: list[list],
                      n: int) -> dict[str, float]:
    """Incidents mode's own stages on `batches` (fresh, in order; the last REPEATS are timed). A shadow copy
    of the state under another key prefix computes each timed batch's detector states first, so the timed
    store writes real, newer states without paying for the detector."""
    detector = Detector()
    judged: list[tuple[Peek, np.ndarray, Scores, DetectionResult]] = []

    def detect(peek: Peek) -> dict[str, bytes]:
        if not peek.windows:
            return {}
        values = np.stack([w.values for w in peek.windows])
        scores = scorer.score(values)
        judged.append((peek, values, scores, detector.detect(peek.windows, scores, scorer.info, peek.detector_states,
                                                             values)))
        return judged[-1][3].states

    cache_bytes = int(RedisSettings().detector_cache_mb * 2**20)  # the worker's default
    layout = state_layout(spec.n_features, detector.settings.calibration)
    shadow, store = (RedisStateStore(client, spec, key_prefix=prefix, detector_cache_bytes=cache_bytes,
                                     detector_layout=layout) for prefix in ("shadow", "timed"))
    warm = len(batches) - REPEATS
    for events in batches[:warm]:
        apply(shadow, events, detect)
        apply(store, events, detect)
    judged.clear()
    for events in batches[warm:]:
        apply(shadow, events, detect)
    fresh, states = iter(batches[warm:]), iter([result.states for *_, result in judged])
    peek, values, scores, result = judged[-1]
    now = datetime.now(timezone.utc)
    client.config_resetstat()
    store_cpu = cpu_us_per_event(lambda: apply(store, next(fresh), lambda _: next(states)), n)
    server_us = client.info("commandstats").get("cmdstat_evalsha", {}).get("usec", math.nan) / (REPEATS * n)
    return {
        "incidents_window_store": store_cpu,
        "incidents_redis_server": server_us,
        "incidents_detect": cpu_us_per_event(
            lambda: detector.detect(peek.windows, scores, scorer.info, peek.detector_states, values), n),
        "incidents_records": cpu_us_per_event(lambda: detection_messages(
            result, scores, scorer.info, alert_topic="alerts", scores_topic=None, top_k=3, now=now), n),
    }


def measure_window(redis_url: str, opts: options.BenchOptions, window: int, workdir: Path) -> dict[str, float]:
    model = write_artifact(workdir / f"stages-{opts.preset}-w{window}.pt", opts.preset, window, opts.features)
    scorer = Scorer.from_settings(ModelSettings(path=model, torch_threads=1))
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    store = RedisStateStore(client, WindowSpec(window=window, n_features=opts.features))
    parser = EventParser(feature_names=scorer.info.features)
    ids = series_ids(opts.series)
    steps = max(1, BATCH_RECORDS // opts.series)
    warm = [parser.parse(r) for r in records_for(ids, 0, window - 1, opts.features)]
    warm_events = [e for e in warm if isinstance(e, Event)]
    apply(store, warm_events)
    # The store is timed on fresh batches (a re-applied batch would take the replay path instead).
    batches = [[parser.parse(r) for r in records_for(ids, window - 1 + k * steps, steps, opts.features)]
               for k in range(REPEATS + 1)]
    applied = apply(store, batches[0])
    fresh = iter(batches[1:])
    client.config_resetstat()
    store_cpu = cpu_us_per_event(lambda: apply(store, next(fresh)), len(batches[0]))
    evalsha = client.info("commandstats").get("cmdstat_evalsha", {})
    server_us = evalsha.get("usec", math.nan) / (REPEATS * len(batches[0]))
    fresh = iter(batches[1:])
    client.flushall()
    apply(store, warm_events)
    apply(store, batches[0])
    store_wall = wall_us_per_event(lambda: apply(store, next(fresh)), len(batches[0]))
    records = records_for(ids, window - 1, steps, opts.features)
    n = len(records)
    windows = np.stack([w.values for w in applied.windows])
    scores = scorer.score(windows)
    now = datetime.now(timezone.utc)
    metrics = Metrics()

    def count() -> None:  # as the pipeline counts outcomes: one increment per outcome kind
        for outcome, n_outcome in Counter(applied.outcomes).items():
            metrics.events.labels(outcome.value).inc(n_outcome)

    figures = {
        "parse": cpu_us_per_event(lambda: [parser.parse(r) for r in records], n),
        "window_store": store_cpu,
        "stack": cpu_us_per_event(lambda: np.stack([w.values for w in applied.windows]), n),
        "forward": cpu_us_per_event(lambda: scorer.score(windows), n),
        "decide_alerts": cpu_us_per_event(lambda: decide_alerts(applied.windows, scores, scorer.info, top_k=3,
                                                                now=now), n),
        "metrics": cpu_us_per_event(count, n),
    }
    every_window_alerts = replace(scorer.info, threshold=0.0)
    per_alert = cpu_us_per_event(lambda: [alert_message(a, "alerts") for a in decide_alerts(
        applied.windows, scores, every_window_alerts, top_k=3, now=now)], len(applied.windows))
    client.flushall()
    incidents_batches = [[parser.parse(r) for r in records_for(ids, window - 1 + k * steps, steps, opts.features)]
                         for k in range(INCIDENT_WARM_BATCHES + REPEATS)]
    figures.update(measure_incidents(client, store.spec, scorer, [warm_events] + incidents_batches, n))
    client.close()
    suffix = f"_w{window}"
    result = {f"stage_{name}_cpu_us_per_event{suffix}": value for name, value in figures.items()}
    windows_mode = ("parse", "window_store", "stack", "forward", "decide_alerts", "metrics")
    result[f"stage_total_cpu_us_per_event{suffix}"] = sum(figures[name] for name in windows_mode)
    result[f"stage_incidents_total_cpu_us_per_event{suffix}"] = sum(
        figures[name] for name in ("parse", "incidents_window_store", "stack", "forward", "incidents_detect",
                                   "incidents_records", "metrics"))
    result[f"stage_alert_build_cpu_us_per_alert{suffix}"] = per_alert
    result[f"stage_window_store_wall_us_per_event{suffix}"] = store_wall
    result[f"stage_redis_server_us_per_event{suffix}"] = server_us
    result[f"stage_batch_events{suffix}"] = n
    return result


def run(opts: options.BenchOptions, workdir: Path) -> dict[str, float]:
    """On a redis-server of its own: the stages flush their database between windows."""
    torch.set_num_threads(1)
    figures: dict[str, float] = {}
    with local_services.start_redis(log_dir=workdir) as redis_server:
        for window in opts.windows:
            figures.update(measure_window(local_services.redis_url(redis_server), opts, window, workdir))
    return figures


def main() -> None:
    run_script(__doc__, run)


if __name__ == "__main__":
    main()
