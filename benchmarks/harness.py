"""The benchmark bench: real services, a synthetic sensor stream, a worker process and its observables.

Everything runs on a redis-server and a Tansu broker started on free ports (worker/tools/local_services.py),
and the worker under test is a separate `python -m worker run` process, exactly as deployed, so its
CPU, GIL and peak RSS are its own and the harness cannot slow it down.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

import options
from worker.tools import local_services

START_MS = 1_763_942_400_000  # 2025-11-24T00:00:00Z: a fixed origin keeps preloaded runs identical
INTERVAL_MS = 1000  # one event per series per second, the cadence the window store is sized for
FAST_GROUP_JOIN = {"SESSION_TIMEOUT_MS": "6000", "HEARTBEAT_INTERVAL_MS": "1000"}


@dataclass(frozen=True)
class Stack:
    bootstrap: str
    redis_url: str
    log_dir: Path


@contextmanager
def local_stack(log_dir: Path) -> Iterator[Stack]:
    """redis-server and Tansu on free ports, stopped on exit whatever happens."""
    with local_services.start_redis(log_dir=log_dir) as redis_server, \
            local_services.start_tansu(log_dir=log_dir) as broker:
        yield Stack(bootstrap=local_services.bootstrap(broker), redis_url=local_services.redis_url(redis_server),
                    log_dir=log_dir)


@dataclass(frozen=True)
class Topics:
    events: str
    alerts: str
    dead_letters: str
    group: str

    @classmethod
    def fresh(cls, stack: Stack, label: str, partitions: int = 1) -> "Topics":
        suffix = f"{label}-{uuid.uuid4().hex[:6]}"
        topics = cls(events=f"events-{suffix}", alerts=f"alerts-{suffix}", dead_letters=f"dlq-{suffix}",
                     group=f"worker-{suffix}")
        local_services.create_topics(stack.bootstrap, [topics.events], partitions=partitions)
        local_services.create_topics(stack.bootstrap, [topics.alerts, topics.dead_letters])
        return topics


def series_ids(n_series: int) -> list[str]:
    return [f"sensor-{i:05d}" for i in range(n_series)]


def stream_values(n_steps: int, n_series: int, n_features: int, seed: int = 0) -> np.ndarray:
    """(steps, series, F) float32 noisy sinusoids, one phase per series and feature."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_steps, dtype=np.float64)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, size=(1, n_series, n_features))
    noise = 0.1 * rng.standard_normal((n_steps, n_series, n_features))
    return (np.sin(2 * np.pi * t / 60.0 + phase) + noise).astype(np.float32)


def encode_event(series_id: str, ts_ms: int, values: np.ndarray) -> bytes:
    """The documented event JSON: `value` for one feature, `values` in feature order otherwise."""
    if len(values) == 1:
        return f'{{"series_id":"{series_id}","ts":{ts_ms},"value":{float(values[0]):.5g}}}'.encode()
    joined = ",".join(f"{float(v):.5g}" for v in values)
    return f'{{"series_id":"{series_id}","ts":{ts_ms},"values":[{joined}]}}'.encode()


def bulk_producer(bootstrap: str) -> KafkaProducer:
    """Tuned for loading fast, not for latency: big batches, leader acks."""
    return KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20, batch_size=512 * 1024,
                         max_request_size=4 * 1024 * 1024)


def preload(bootstrap: str, topic: str, n_series: int, n_steps: int, n_features: int,
            first_step: int = 0) -> int:
    """Produce `n_steps` time steps of every series, time step by time step (as sensors report)."""
    ids = series_ids(n_series)
    keys = [sid.encode() for sid in ids]
    values = stream_values(first_step + n_steps, n_series, n_features)
    producer = bulk_producer(bootstrap)
    try:
        for step in range(first_step, first_step + n_steps):
            ts_ms = START_MS + step * INTERVAL_MS
            for index, sid in enumerate(ids):
                producer.send(topic, key=keys[index], value=encode_event(sid, ts_ms, values[step, index]))
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=10)
    return n_series * n_steps


def committed_offset(admin: KafkaAdminClient, group: str, topic: str) -> int:
    """Sum of the group's committed offsets over the topic's partitions (0 before the first commit)."""
    offsets = admin.list_group_offsets({group: None}).get(group, {})
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0)


@dataclass(frozen=True)
class Drain:
    events: int
    seconds: float
    cpu_seconds: float  # CPU time the worker process used over the same span (nan if unknown)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")

    @property
    def cpu_us_per_event(self) -> float:
        """What one event costs the worker in CPU: steadier than wall time on a shared machine."""
        return 1e6 * self.cpu_seconds / self.events if self.events else float("nan")


def time_drain(stack: Stack, topics: Topics, start_offset: int, end_offset: int, timeout_s: float,
               cpu_seconds: Callable[[], float] = lambda: float("nan"), poll_s: float = 0.05) -> Drain:
    """Time the committed offset going from `start_offset` (or just past it) to `end_offset`.

    The clock starts at the first commit seen at or past `start_offset`, so group join, model load and
    warm-up events are not counted; the events are counted from that same observed offset.
    """
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap, request_timeout_ms=10_000)
    try:
        deadline = time.monotonic() + timeout_s
        first: tuple[float, int, float] | None = None
        while time.monotonic() < deadline:
            offset = committed_offset(admin, topics.group, topics.events)
            now, cpu_now = time.perf_counter(), cpu_seconds()
            if first is None and offset >= start_offset:
                first = (now, offset, cpu_now)
            if offset >= end_offset and first is not None:
                return Drain(events=end_offset - first[1], seconds=now - first[0], cpu_seconds=cpu_now - first[2])
            time.sleep(poll_s)
    finally:
        admin.close()
    raise TimeoutError(f"the worker did not commit offset {end_offset} of {topics.events} within {timeout_s:.0f} s")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc (Linux); nan elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_env(stack: Stack, topics: Topics, model_path: Path, *, metrics_port: int, heartbeat: Path,
               key_prefix: str, threshold: float | None = None,
               overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The `VRAE_*` environment of one benchmarked worker: production defaults except group-join timing."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("VRAE_")}
    env.update({
        "VRAE_KAFKA__BOOTSTRAP_SERVERS": stack.bootstrap,
        "VRAE_KAFKA__INPUT_TOPIC": topics.events,
        "VRAE_KAFKA__ALERT_TOPIC": topics.alerts,
        "VRAE_KAFKA__DLQ_TOPIC": topics.dead_letters,
        "VRAE_KAFKA__GROUP_ID": topics.group,
        "VRAE_REDIS__URL": stack.redis_url,
        "VRAE_REDIS__KEY_PREFIX": key_prefix,
        "VRAE_MODEL__PATH": str(model_path),
        "VRAE_MODEL__TORCH_THREADS": "1",
        "VRAE_SERVICE__METRICS_PORT": str(metrics_port),
        "VRAE_SERVICE__METRICS_HOST": "127.0.0.1",
        "VRAE_SERVICE__HEARTBEAT_FILE": str(heartbeat),
        "VRAE_SERVICE__LOG_LEVEL": "WARNING",
        "OMP_NUM_THREADS": "1",
    })
    env.update({f"VRAE_KAFKA__{key}": value for key, value in FAST_GROUP_JOIN.items()})
    if threshold is not None:
        env["VRAE_MODEL__THRESHOLD"] = str(threshold)
    env.update(overrides or {})
    return env


class WorkerProcess:
    """`python -m worker run` in its own process; reads its metrics and peak RSS while it runs."""

    def __init__(self, env: dict[str, str], metrics_port: int, log_path: Path, profile_path: Path | None = None) -> None:
        self.metrics_port = metrics_port
        self.log_path = log_path
        self._log = log_path.open("wb")
        command = [sys.executable, "-m", "worker", "run"]
        if profile_path is not None:
            # pyinstrument samples the whole run and writes its call tree when SIGTERM ends the worker.
            command[1:1] = ["-m", "pyinstrument", "-r", "text", "--show-all", "-o", str(profile_path)]
        # cwd is the log directory so a developer's `.env` cannot leak into the measured configuration.
        self.process = subprocess.Popen(command, env=env, cwd=log_path.parent, stdout=self._log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"the worker exited with code {self.process.returncode}; see {self.log_path}")

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def peak_rss_bytes(self) -> int | None:
        """VmHWM from /proc (Linux); None elsewhere."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return None

    def metrics(self) -> dict[str, float]:
        """Counter totals and histogram sums/counts from the worker's /metrics endpoint."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
        return totals

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        self._log.close()

    def __enter__(self) -> "WorkerProcess":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(frozen=True)
class RedisCost:
    series: int
    memory_usage_bytes: float  # mean MEMORY USAGE of a window key: value, key, and Redis' own overhead
    value_bytes: float  # mean STRLEN: the packed window record alone


def redis_cost(redis_url: str, key_prefix: str, sample: int = 1000, kind: str = "win") -> RedisCost:
    """Mean Redis memory of the window keys (`kind` win; det: detector state) under `key_prefix` (first
    `sample` keys scanned)."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = []
        for key in client.scan_iter(match=f"{key_prefix}:{kind}:*", count=1000):
            keys.append(key)
            if len(keys) >= sample:
                break
        if not keys:
            return RedisCost(series=0, memory_usage_bytes=float("nan"), value_bytes=float("nan"))
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key, samples=0)
            pipe.strlen(key)
        replies = pipe.execute()
    finally:
        client.close()
    return RedisCost(series=len(keys), memory_usage_bytes=float(np.mean(replies[0::2])),
                     value_bytes=float(np.mean(replies[1::2])))


def format_figures(figures: dict[str, float | int | str]) -> str:
    """One `name=value` line per figure, floats with 4 significant digits."""
    lines = []
    for name, value in figures.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"{name}={shown}")
    return "\n".join(lines)


def write_json(path: Path | None, figures: dict[str, float | int | str]) -> None:
    if path is not None:
        path.write_text(json.dumps(figures, indent=2) + "\n")


@contextmanager
def workdir_for(chosen: Path | None) -> Iterator[Path]:
    """The user's --workdir (kept, to inspect logs and models) or a scratch folder removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="vrae-bench-") as scratch:
        workdir = chosen or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir


def report(figures: dict[str, float | int | str], json_out: Path | None) -> None:
    """The final `name=value` block on stdout, and the same figures as JSON when asked."""
    print(format_figures(figures))
    write_json(json_out, figures)


def run_script(doc: str, run: Callable[[options.BenchOptions, Path], dict[str, float]]) -> None:
    """The `main()` of a benchmark that needs only its options and a work folder."""
    opts = options.parse(doc.splitlines()[0])
    with workdir_for(opts.workdir) as workdir:
        figures = run(opts, workdir)
    report(figures, opts.json_out)
