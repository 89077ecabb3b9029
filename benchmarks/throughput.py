"""Throughput: how fast one worker process drains a pre-loaded topic, against two references.

Per window length, the topic holds a warm-up (window - 1 events per series, so every later event ends
a due window) followed by the timed events, all interleaved by time step as sensors report. Three
consumers read the same records, one after the other:
- raw: a plain kafka-python consumer that only polls and decodes JSON: the client's ceiling;
- worker: `python -m worker run`, timed from the first commit past the warm-up to the last commit
  (alerts produced and confirmed before each commit);
- naive: the same parser, Lua script, model and alert code, one event at a time, timed on a prefix
  of the steady-state events and extrapolated as a rate;
- worker, incidents mode: the same worker with VRAE_DETECTION__MODE=incidents (per-series online
  calibration and incident records: the detector states ride in the same two Redis round trips, plus
  a per-window judgement);
- with `--baseline REV`: the worker of another git revision, in both modes, on the same records (its
  own code, and an artifact written by its own code), so a change's cost is a ratio from one run.
Redis memory per series and the worker's peak RSS come from the same run. With `--lead-windows N` every
consumer first drains N more windows per series, untimed: with N = 600 incidents mode is timed past each
series' learning period (300 windows, its hold filled after 192 more), as a long-running worker is.

Run alone: `python benchmarks/throughput.py --events 200000 --series 1000 --windows 24,64`.
"""

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import redis
import torch
from kafka import KafkaConsumer, TopicPartition

import options
from bench_models import write_artifact
from harness import (Stack, Topics, WorkerProcess, bulk_producer, local_stack, preload, redis_cost, report, time_drain,
                     workdir_for, worker_env)
from naive_worker import NaiveWorker, run_naive
from worker.config import KafkaSettings, ModelSettings, RedisSettings
from worker.events import EventParser
from worker.kafka_io import KafkaSink
from worker.scorer import Scorer
from worker.state.redis_store import RedisStateStore, connect
from worker.tools import local_services
from worker.windows import WindowSpec

BASELINE_ROUNDS = 3  # runs of the --baseline worker per mode, alternated with as many of this one (medians)
MAX_POLL_RECORDS = KafkaSettings().max_poll_records  # the worker's default, so the raw consumer polls the same way


@dataclass(frozen=True)
class Rate:
    events_per_s: float
    cpu_us_per_event: float


def raw_consume(bootstrap: str, topic: str, start_offset: int, n_events: int, timeout_s: float = 600.0) -> Rate:
    """Poll + JSON decode alone, from `start_offset`, for `n_events` records."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=MAX_POLL_RECORDS,
                             fetch_max_wait_ms=100)
    tp = TopicPartition(topic, 0)
    try:
        consumer.assign([tp])
        consumer.seek(tp, start_offset)
        seen = 0
        started, cpu_started = time.perf_counter(), time.process_time()
        deadline = time.monotonic() + timeout_s
        while seen < n_events and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    json.loads(record.value)
                seen += len(records)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        consumer.close()
    if seen < n_events:
        raise TimeoutError(f"raw consumer read {seen} of {n_events} events in {timeout_s:.0f} s")
    return Rate(seen / elapsed, 1e6 * cpu / seen)


def run_worker(stack: Stack, topics: Topics, model: Path, key_prefix: str, warm_end: int, total: int,
               workdir: Path, opts: options.BenchOptions, mode: str = "windows",
               code: Path | None = None) -> dict[str, float]:
    """One worker process draining the topic; `code`: run another checkout's packages instead of these."""
    metrics_port = local_services.free_port()
    overrides = {"VRAE_DETECTION__MODE": mode, **opts.worker_env}
    if code is not None:
        overrides["PYTHONPATH"] = str(code)
    env = worker_env(stack, topics, model, metrics_port=metrics_port, heartbeat=workdir / f"{key_prefix}.heartbeat",
                     key_prefix=key_prefix, overrides=overrides)
    profile_path = workdir / f"profile-{key_prefix}.txt" if opts.profile else None
    with WorkerProcess(env, metrics_port, workdir / f"worker-{key_prefix}.log", profile_path) as worker:
        drain = time_drain(stack, topics, warm_end, total, timeout_s=max(120.0, total / 500),
                           cpu_seconds=worker.cpu_seconds)
        worker.check_alive()
        metrics = worker.metrics()
        peak_rss = worker.peak_rss_bytes()
    return {
        "events_per_s": drain.events_per_s,
        "cpu_us_per_event": drain.cpu_us_per_event,
        "timed_events": drain.events,
        "seconds": drain.seconds,
        "windows_scored": metrics.get("vrae_windows_scored_total", math.nan),
        "alerts": metrics.get("vrae_alerts_total", math.nan),
        "batches": metrics.get("vrae_batches_total", math.nan),
        "inference_s": metrics.get("vrae_inference_seconds_sum", math.nan),
        "batch_s": metrics.get("vrae_batch_seconds_sum", math.nan),
        "peak_rss_bytes": float(peak_rss) if peak_rss is not None else math.nan,
    }


def run_naive_worker(stack: Stack, topics: Topics, model: Path, key_prefix: str, warm_end: int,
                     n_events: int) -> Rate:
    scorer = Scorer.from_settings(ModelSettings(path=model, torch_threads=1))
    spec = WindowSpec(window=scorer.info.window, n_features=len(scorer.info.features))
    store = RedisStateStore(connect(RedisSettings(url=stack.redis_url)), spec, key_prefix=key_prefix)
    parser = EventParser(feature_names=scorer.info.features)
    sink = KafkaSink(bulk_producer(stack.bootstrap))
    consumer = KafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=f"{topics.group}-naive",
                             enable_auto_commit=False, max_poll_records=MAX_POLL_RECORDS)
    try:
        run = run_naive(NaiveWorker(parser, store, scorer, sink, topics.alerts, topics.dead_letters), consumer,
                        topics.events, warm_end, n_events)
    finally:
        consumer.close()
        sink.close()
    return Rate(run.events_per_s, 1e6 * run.cpu_seconds / run.events)


def measure_window(stack: Stack, opts: options.BenchOptions, window: int, workdir: Path) -> dict[str, float]:
    """Every throughput and cost figure for one window length, suffixed `_w<window>`."""
    model = write_artifact(workdir / f"{opts.preset}-w{window}.pt", opts.preset, window, opts.features)
    topics = Topics.fresh(stack, f"w{window}")
    warm_steps = window - 1 + opts.lead_windows  # untimed: every window filled (and the lead drained)
    timed_steps = math.ceil(opts.events / opts.series)
    warm_end = opts.series * warm_steps
    started = time.perf_counter()
    total = preload(stack.bootstrap, topics.events, opts.series, warm_steps + timed_steps, opts.features)
    preload_s = time.perf_counter() - started

    raw = raw_consume(stack.bootstrap, topics.events, warm_end, total - warm_end)
    key_prefix = f"bench-w{window}"
    worker = run_worker(stack, topics, model, key_prefix, warm_end, total, workdir, opts)
    cost = redis_cost(stack.redis_url, key_prefix)
    # Its own consumer group and key prefix: the same records, drained again from the start.
    incidents = run_worker(stack, replace(topics, group=f"{topics.group}-incidents"), model, f"{key_prefix}-incidents",
                           warm_end, total, workdir, opts, mode="incidents")
    detector_cost = redis_cost(stack.redis_url, f"{key_prefix}-incidents", kind="det")
    naive = run_naive_worker(stack, topics, model, f"naive-w{window}", warm_end, opts.naive_events)
    flush_prefix(stack.redis_url, f"naive-w{window}")

    suffix = f"_w{window}"
    baseline = measure_baseline(stack, opts, window, workdir, topics, warm_end, total, worker, incidents)
    return {
        **{f"{name}{suffix}": value for name, value in baseline.items()},
        f"preload_events_per_s{suffix}": total / preload_s,
        f"worker_events_per_s{suffix}": worker["events_per_s"],
        f"raw_consume_events_per_s{suffix}": raw.events_per_s,
        f"naive_events_per_s{suffix}": naive.events_per_s,
        f"worker_incidents_events_per_s{suffix}": incidents["events_per_s"],
        f"worker_incidents_cpu_us_per_event{suffix}": incidents["cpu_us_per_event"],
        f"incidents_vs_windows_mode{suffix}": incidents["events_per_s"] / worker["events_per_s"],
        f"ratio_vs_raw{suffix}": worker["events_per_s"] / raw.events_per_s,
        f"speedup_vs_naive{suffix}": worker["events_per_s"] / naive.events_per_s,
        f"worker_cpu_us_per_event{suffix}": worker["cpu_us_per_event"],
        f"raw_consume_cpu_us_per_event{suffix}": raw.cpu_us_per_event,
        f"naive_cpu_us_per_event{suffix}": naive.cpu_us_per_event,
        f"cpu_ratio_vs_raw{suffix}": raw.cpu_us_per_event / worker["cpu_us_per_event"],
        f"cpu_speedup_vs_naive{suffix}": naive.cpu_us_per_event / worker["cpu_us_per_event"],
        f"worker_timed_events{suffix}": int(worker["timed_events"]),
        f"worker_windows_scored{suffix}": int(worker["windows_scored"]),
        f"worker_alerts{suffix}": int(worker["alerts"]),
        f"worker_batches{suffix}": int(worker["batches"]),
        f"worker_inference_share{suffix}": worker["inference_s"] / worker["batch_s"],
        f"worker_peak_rss_mb{suffix}": worker["peak_rss_bytes"] / 2**20,
        f"redis_bytes_per_series{suffix}": cost.memory_usage_bytes,
        f"redis_value_bytes_per_series{suffix}": cost.value_bytes,
        f"redis_detector_bytes_per_series{suffix}": detector_cost.memory_usage_bytes,
    }


def measure_baseline(stack: Stack, opts: options.BenchOptions, window: int, workdir: Path, topics: Topics,
                     warm_end: int, total: int, worker: dict[str, float],
                     incidents: dict[str, float]) -> dict[str, float]:
    """The `--baseline` revision's worker in both modes on the same records, and this one's rates as ratios."""
    if opts.baseline is None:
        return {}
    code = checkout(opts.baseline, workdir)
    model = workdir / f"baseline-{opts.preset}-w{window}.pt"
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
                    "from bench_models import write_artifact; write_artifact(Path(sys.argv[2]), sys.argv[3], "
                    "int(sys.argv[4]), int(sys.argv[5]))", str(code / "benchmarks"), str(model), opts.preset,
                    str(window), str(opts.features)], env={**os.environ, "PYTHONPATH": str(code)}, cwd=code, check=True)
    figures: dict[str, float] = {}
    medians: dict[str, tuple[float, float]] = {}  # mode: this revision's (events/s, CPU us per event)
    current_model = workdir / f"{opts.preset}-w{window}.pt"
    for mode, first in (("windows", worker), ("incidents", incidents)):
        # Alternated, so load that comes and goes on a shared machine hits both sides alike.
        current, base = [first], []
        for round_ in range(BASELINE_ROUNDS):
            base.append(run_worker(stack, replace(topics, group=f"{topics.group}-baseline-{mode}-{round_}"), model,
                                   f"baseline-w{window}-{mode}-{round_}", warm_end, total, workdir, opts, mode=mode,
                                   code=code))
            if round_ < BASELINE_ROUNDS - 1:
                current.append(run_worker(stack, replace(topics, group=f"{topics.group}-again-{mode}-{round_}"),
                                          current_model, f"again-w{window}-{mode}-{round_}", warm_end, total, workdir,
                                          opts, mode=mode))
        rate = float(np.median([run["events_per_s"] for run in current]))
        base_rate = float(np.median([run["events_per_s"] for run in base]))
        cpu = float(np.median([run["cpu_us_per_event"] for run in current]))
        base_cpu = float(np.median([run["cpu_us_per_event"] for run in base]))
        figures[f"baseline_{mode}_events_per_s"] = base_rate
        figures[f"{mode}_vs_baseline"] = rate / base_rate
        figures[f"{mode}_cpu_vs_baseline"] = base_cpu / cpu
        medians[mode] = (rate, cpu)
    # the same ratio as incidents_vs_windows_mode, from this revision's medians (steadier than one run each)
    figures["incidents_vs_windows_mode_median"] = medians["incidents"][0] / medians["windows"][0]
    figures["incidents_vs_windows_mode_cpu_median"] = medians["windows"][1] / medians["incidents"][1]
    return figures


def checkout(revision: str, workdir: Path) -> Path:
    """The packages and benchmarks of a git revision, unpacked once per run (no worktree is registered)."""
    target = workdir / f"baseline-{revision.replace('/', '_')}"
    if not target.exists():
        target.mkdir(parents=True)
        root = Path(__file__).resolve().parents[1]
        archive = subprocess.run(["git", "-C", str(root), "archive", revision, "worker", "vrae_model", "benchmarks"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def flush_prefix(redis_url: str, key_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{key_prefix}:*:{{*}}", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start:start + 1000])
    finally:
        client.close()


def run(stack: Stack, opts: options.BenchOptions, workdir: Path) -> dict[str, float]:
    torch.set_num_threads(1)
    figures: dict[str, float] = {}
    for window in opts.windows:
        figures.update(measure_window(stack, opts, window, workdir))
    return figures


def main() -> None:
    opts = options.parse(__doc__.splitlines()[0])
    with workdir_for(opts.workdir) as workdir:
        with local_stack(workdir) as stack:
            figures = run(stack, opts, workdir)
    report(figures, opts.json_out)


if __name__ == "__main__":
    main()
