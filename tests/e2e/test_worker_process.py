"""The worker as an operator runs it: `vrae-worker run` in a process, stopped by SIGTERM; Redis outages."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from worker_env import environment

from worker.app import BackgroundWorker, build_service
from worker.config import RedisSettings
from worker.tools import local_services

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def events(series: str, n: int, start_ms: int = 1_763_942_400_000) -> list[tuple[str, int, list[float]]]:
    return [(series, start_ms + 1000 * i, [20.0 + (i % 5) * 0.1, 5.0]) for i in range(n)]


def wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def unread_bytes(port: int) -> int:
    """Bytes sent to a local server on `port` that it has not read yet (Linux: /proc/net/tcp): with the
    server stopped, a command the worker sent to it."""
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # ESTABLISHED
                total += int(fields[4].split(":")[1], 16)  # tx_queue:rx_queue
    return total


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


def test_sigterm_while_the_broker_hangs_exits_non_zero_and_says_the_last_batch_was_not_committed(
        make_settings, kafka_tools, tmp_path) -> None:
    """A batch is taken, then the broker hangs (SIGSTOP) before the batch's alerts are confirmed: SIGTERM
    cannot commit it, so the process must not report a clean stop (exit 0), though nothing is lost."""
    broker = local_services.start_tansu(log_dir=tmp_path)
    redis = local_services.start_redis(log_dir=tmp_path)
    bootstrap = local_services.bootstrap(broker)
    settings = make_settings(create=False, mode="windows", delivery_timeout_s=3.0)
    settings.kafka.bootstrap_servers = bootstrap
    local_services.create_topics(bootstrap, [settings.kafka.input_topic, settings.kafka.alert_topic,
                                             settings.kafka.dlq_topic])
    # Redis waits out its stall below (no client timeout); the hard exit must not be what fails the run.
    settings.redis = RedisSettings(url=local_services.redis_url(redis), socket_timeout_s=60)
    settings.service.shutdown_timeout_s = 90
    settings.model.threshold = 0.0  # every window alerts: the batch has records to deliver
    tools = dataclasses.replace(kafka_tools, bootstrap=bootstrap)  # this test's own broker
    process = subprocess.Popen([sys.executable, "-m", "worker", "run"], env=environment(settings),
                               stderr=subprocess.PIPE, text=True)
    try:
        first = tools.produce_events(settings.kafka.input_topic, events("pump-3", 20))
        assert wait_for(lambda: tools.committed(settings.kafka.group_id).get(
            (settings.kafka.input_topic, 0)) == first, 60), "the worker never committed its first batch"
        redis.process.send_signal(signal.SIGSTOP)  # holds the next batch between poll and delivery
        tools.produce_events(settings.kafka.input_topic, events("pump-3", 10, start_ms=1_763_942_500_000))
        assert wait_for(lambda: unread_bytes(redis.port) > 0, 30), "the worker never polled the second batch"
        broker.process.send_signal(signal.SIGSTOP)
        redis.process.send_signal(signal.SIGCONT)  # the batch's alerts now go to a broker that never answers
        time.sleep(1)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for service in (broker, redis):
            service.process.send_signal(signal.SIGCONT)
            service.stop()
    stderr = process.stderr.read()
    assert code == 1, stderr[-3000:]
    messages = [json.loads(line)["msg"] for line in stderr.splitlines()]  # JSON lines only: no traceback
    assert "the last batch could not be committed; its records will be consumed again" in messages
    assert "shutdown exceeded its time limit; exiting without commit" not in messages


def test_worker_backs_off_while_redis_is_down_and_resumes(make_settings, kafka_tools, tiny_model, tmp_path) -> None:
    redis = local_services.start_redis(log_dir=tmp_path)
    port = redis.port
    settings = make_settings(mode="windows")
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
