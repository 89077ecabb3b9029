"""The worker as an operator runs it: `vrae-worker run` in a process, stopped by SIGTERM; Redis outages."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from worker.app import BackgroundWorker, build_service
from worker.config import RedisSettings, Settings
from worker.tools import local_services

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def environment(settings: Settings) -> dict[str, str]:
    """The VRAE_* variables that reproduce `settings` in a child process."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("VRAE_")}
    for group, values in settings.model_dump(mode="json").items():
        for name, value in values.items():
            if value is not None and not isinstance(value, dict):
                env[f"VRAE_{group.upper()}__{name.upper()}"] = str(value)
    return env


def events(series: str, n: int, start_ms: int = 1_763_942_400_000) -> list[tuple[str, int, list[float]]]:
    return [(series, start_ms + 1000 * i, [20.0 + (i % 5) * 0.1, 5.0]) for i in range(n)]


def wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_sigterm_finishes_commits_and_exits_zero_with_json_logs(make_settings, kafka_tools) -> None:
    settings = make_settings()
    env = environment(settings)
    heartbeat = settings.service.heartbeat_file
    process = subprocess.Popen([sys.executable, "-m", "worker", "run"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(heartbeat.exists, 60), "the worker never beat its heartbeat"
        check = subprocess.run([sys.executable, "-m", "worker", "check"], env=env, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        produced = kafka_tools.produce_events(settings.kafka.input_topic, events("pump-1", 30))
        assert wait_for(lambda: kafka_tools.committed(settings.kafka.group_id).get(
            (settings.kafka.input_topic, 0)) == produced, 60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=settings.service.shutdown_timeout_s + 5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = process.stderr.read().splitlines()
    logs = [json.loads(line) for line in lines]
    assert {"worker started", "stop requested", "worker stopped"} <= {entry["msg"] for entry in logs}
    assert all({"ts", "level", "logger", "msg"} <= entry.keys() for entry in logs)
    assert not heartbeat.exists()
    unhealthy = subprocess.run([sys.executable, "-m", "worker", "check"], env=env, capture_output=True, text=True)
    assert unhealthy.returncode == 1


def test_worker_backs_off_while_redis_is_down_and_resumes(make_settings, kafka_tools, tiny_model, tmp_path) -> None:
    redis = local_services.start_redis(log_dir=tmp_path)
    port = redis.port
    settings = make_settings()
    settings.redis = RedisSettings(url=local_services.redis_url(redis), socket_timeout_s=0.5)
    settings.model.threshold = 0.0
    try:
        with BackgroundWorker(build_service(settings)) as running:
            metrics = running.service.metrics.registry
            first = kafka_tools.produce_events(settings.kafka.input_topic, events("pump-2", 20))
            assert wait_for(lambda: kafka_tools.committed(settings.kafka.group_id).get(
                (settings.kafka.input_topic, 0)) == first, 60)
            redis.stop()
            total = first + kafka_tools.produce_events(settings.kafka.input_topic,
                                                       events("pump-2", 20, start_ms=1_763_942_500_000))
            assert wait_for(lambda: (metrics.get_sample_value("vrae_batch_failures_total", {"cause": "redis"})
                                     or 0) >= 2, 30)
            assert kafka_tools.committed(settings.kafka.group_id)[(settings.kafka.input_topic, 0)] == first
            redis = local_services.start_redis(port=port, log_dir=tmp_path)
            assert wait_for(lambda: kafka_tools.committed(settings.kafka.group_id).get(
                (settings.kafka.input_topic, 0)) == total, 60)
        # Redis came back empty, so pump-2 starts a new window: as many windows again alert.
        assert metrics.get_sample_value("vrae_alerts_total") == 2 * (20 - tiny_model.window + 1)
    finally:
        redis.stop()


@pytest.mark.parametrize("mode, quality_line", [("incidents", "precision         "), ("windows", "precision/recall")])
def test_demo_streams_prints_a_summary_and_stops_what_it_started(tiny_model, tmp_path, mode: str,
                                                                quality_line: str) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VRAE_")}
    run = subprocess.run([sys.executable, "-m", "worker", "demo", "--model", str(tiny_model.path), "--series", "2",
                          "--events", "60", "--rate", "0", "--out", str(tmp_path), "--mode", mode], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "── summary" in out and quality_line in out and "p99" in out
    assert "dead letters      3 (bad_timestamp 1, not_json 1, unknown_feature 1)" in out
    ports = [int(line.rsplit(" ", 1)[1]) for line in out.splitlines() if line.startswith("started ")]
    assert len(ports) == 2 and not any(local_services.port_open(port) for port in ports)
