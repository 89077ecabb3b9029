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
from worker.config import KafkaSettings, ModelSettings
from worker.detection.alerts import decide_alerts
from worker.events import Event, EventParser, SourceRecord
from worker.metrics import Metrics
from worker.records import alert_message
from worker.scorer import Scorer
from worker.state.redis_store import RedisStateStore
from worker.tools import local_services
from worker.windows import Peek, WindowSpec

BATCH_RECORDS = KafkaSettings().max_poll_records  # the worker's default batch
REPEATS = 5


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


def apply(store: RedisStateStore, events: list) -> Peek:
    """The store's two round trips of a batch: the peek before scoring, the write after delivery."""
    now_ms = int(time.time() * 1000)
    peek = store.peek(events, detector=False, now_ms=now_ms)
    store.write(peek.pending, {}, now_ms)
    return peek


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
    apply(store, [e for e in warm if isinstance(e, Event)])
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
    apply(store, [e for e in warm if isinstance(e, Event)])
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
    client.close()
    suffix = f"_w{window}"
    result = {f"stage_{name}_cpu_us_per_event{suffix}": value for name, value in figures.items()}
    result[f"stage_total_cpu_us_per_event{suffix}"] = sum(figures.values())
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
