"""Latency: event produce time -> alert received by a consumer, at a steady offered rate.

Each event's `ts` is the wall-clock time at which the producer sent it, and the alert carries that
`ts` back as `window_end`, so latency = alert receive time - window_end, on one machine clock. It
covers the whole path: produce, broker, poll, Redis, forward pass, alert produce (acks=all), and the
alert consumer's fetch.

Which windows alert: by default the worker's threshold is overridden to 0.99 (VRAE_MODEL__THRESHOLD),
so about 1% of scored windows alert, a sample of the scored-window latency through the alert output
(an alert leaves with the batch its window was scored in, so its latency is that batch's latency).
`--latency-threshold 0` makes every window alert instead: the worst case, where building and
producing one alert per event roughly doubles the worker's cost per event.

The listener (alert_listener.py) is a separate process, so the producer's pacing and the listener's
decoding do not share a GIL. Series are warmed up (window - 1 events each) before the timed phase,
so every timed event ends a due window.

Run alone: `python benchmarks/latency.py --latency-rate 5000 --windows 24` (the default rate, half
of the maximum, needs the throughput run: use run_all.py).
"""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from kafka import KafkaProducer

import options
from bench_models import write_artifact
from harness import (Stack, Topics, WorkerProcess, encode_event, local_stack, preload, report, series_ids,
                     stream_values, time_drain, workdir_for, worker_env)
from worker.tools import local_services

TICK_S = 0.005  # the producer's pacing step: events due in each 5 ms slice are sent together


def latency_producer(bootstrap: str) -> KafkaProducer:
    """A typical low-latency sensor gateway: small linger, leader acks."""
    return KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=2)


def offer_steady(bootstrap: str, topic: str, ids: list[str], n_features: int, rate: float,
                 duration_s: float) -> tuple[int, float]:
    """Send events round-robin over the series at `rate`/s for `duration_s`; ts = send time (ms)."""
    values = stream_values(1000, len(ids), n_features, seed=2)
    keys = [sid.encode() for sid in ids]
    last_ts = [0] * len(ids)
    producer = latency_producer(bootstrap)
    sent = 0
    started = time.perf_counter()
    try:
        while (elapsed := time.perf_counter() - started) < duration_s:
            due = int(rate * elapsed) - sent
            for _ in range(due):
                index = sent % len(ids)
                ts_ms = max(time.time_ns() // 1_000_000, last_ts[index] + 1)
                last_ts[index] = ts_ms
                step = (sent // len(ids)) % values.shape[0]
                producer.send(topic, key=keys[index], value=encode_event(ids[index], ts_ms, values[step, index]))
                sent += 1
            time.sleep(TICK_S)
        achieved = sent / (time.perf_counter() - started)
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)
    return sent, achieved


def run_window(stack: Stack, opts: options.BenchOptions, window: int, rate: float, workdir: Path) -> dict[str, float]:
    model = write_artifact(workdir / f"latency-{opts.preset}-w{window}.pt", opts.preset, window, opts.features)
    topics = Topics.fresh(stack, f"latency-w{window}")
    ids = series_ids(opts.series)
    # Warm-up events carry the harness' fixed past origin, so every live `ts` (wall clock) is later.
    warm_total = preload(stack.bootstrap, topics.events, opts.series, window - 1, opts.features)
    metrics_port = local_services.free_port()
    # Windows mode: every alert is one window's latency. No gap rule: the warm-up's fixed past origin is
    # days before the live timestamps, which would start every series afresh.
    overrides = {"VRAE_DETECTION__MODE": "windows", "VRAE_WINDOW__GAP_FACTOR": "0", **opts.worker_env}
    env = worker_env(stack, topics, model, metrics_port=metrics_port, heartbeat=workdir / f"latency-w{window}.hb",
                     key_prefix=f"latency-w{window}", threshold=opts.latency_threshold, overrides=overrides)
    samples_path = workdir / f"latency-w{window}.npy"
    profile_path = workdir / f"profile-latency-w{window}.txt" if opts.profile else None
    with WorkerProcess(env, metrics_port, workdir / f"worker-latency-w{window}.log", profile_path) as worker:
        time_drain(stack, topics, warm_total, warm_total, timeout_s=120)
        listener = subprocess.Popen([sys.executable, str(Path(__file__).with_name("alert_listener.py")),
                                     stack.bootstrap, topics.alerts, str(samples_path),
                                     "--timeout-seconds", str(opts.latency_s + 120)], stdout=subprocess.PIPE)
        try:
            if listener.stdout is None or listener.stdout.readline().strip() != b"ready":
                raise RuntimeError("the alert listener did not start")
            sent, achieved = offer_steady(stack.bootstrap, topics.events, ids, opts.features, rate, opts.latency_s)
            listener.wait(timeout=opts.latency_s + 180)
        finally:
            if listener.poll() is None:
                listener.kill()
                listener.wait()
        worker.check_alive()
    latencies_ms = np.load(samples_path)
    suffix = f"_w{window}"
    return {
        f"latency_offered_events_per_s{suffix}": rate,
        f"latency_achieved_events_per_s{suffix}": achieved,
        f"latency_events{suffix}": sent,
        f"latency_threshold{suffix}": opts.latency_threshold,
        f"latency_alerts_received{suffix}": int(latencies_ms.size),
        f"latency_p50_ms{suffix}": float(np.percentile(latencies_ms, 50)) if latencies_ms.size else float("nan"),
        f"latency_p99_ms{suffix}": float(np.percentile(latencies_ms, 99)) if latencies_ms.size else float("nan"),
        f"latency_max_ms{suffix}": float(latencies_ms.max()) if latencies_ms.size else float("nan"),
    }


def run(stack: Stack, opts: options.BenchOptions, rates: dict[int, float], workdir: Path) -> dict[str, float]:
    """`rates[window]`: events/s to offer for each window length."""
    figures: dict[str, float] = {}
    for window, rate in rates.items():
        figures.update(run_window(stack, opts, window, rate, workdir))
    return figures


def main() -> None:
    opts = options.parse(__doc__.splitlines()[0])
    if opts.latency_rate is None:
        print("latency.py: give --latency-rate, e.g. --latency-rate 5000 (run_all.py derives it from the measured "
              "maximum)", file=sys.stderr)
        raise SystemExit(2)
    with workdir_for(opts.workdir) as workdir:
        with local_stack(workdir) as stack:
            figures = run(stack, opts, {window: opts.latency_rate for window in opts.windows}, workdir)
    report(figures, opts.json_out)


if __name__ == "__main__":
    main()
