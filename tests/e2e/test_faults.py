"""Faults during a catch-up of a few fast series: `vrae-worker run` killed with SIGKILL, Redis stalled
(SIGSTOP) past the client's timeout, the broker stalled. Each run is compared with a fault-free run of
the same stream: the same alert or incident ids, and the same state left in Redis.

A catch-up means batches of thousands of records holding hundreds of events of one series: exactly
where a replay margin sized by the user lost alerts. `VRAE_SOAK=1` runs the issue's sizes (240,000
events over 8 series, 5 kills; a 40 s Redis stall) instead of the quick ones.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import redis
from redis_state import state_snapshot
from worker_env import environment

from vrae_model.synth import SynthConfig, generate
from worker.app import BackgroundWorker, build_service
from worker.config import DetectionSettings, RedisSettings, Settings
from worker.tools import local_services

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SOAK = os.environ.get("VRAE_SOAK") == "1"
SERIES = 8
EVENTS_PER_SERIES = 30_000 if SOAK else 1_500
KILLS = 5 if SOAK else 3
REDIS_STALL_S = 40.0 if SOAK else 4.0


def stream(features: tuple[str, ...]) -> list[tuple[str, int, list[float]]]:
    """8 machines like the tiny model's training data, interleaved in time, with gross spikes every 500
    events once past the series' learning period, so both modes alert."""
    data = generate(SynthConfig(n_series=SERIES, length=EVENTS_PER_SERIES, features=features, clean=True, seed=1))
    for s, series in enumerate(data.series):
        for start in range(700 + 37 * s, EVENTS_PER_SERIES - 3, 500):
            series.values[start:start + 3, s % len(features)] += 50.0
    events = [(series.series_id, int(ts), [round(float(v), 4) for v in series.values[i]])
              for series in data.series for i, ts in enumerate(series.timestamps)]
    return sorted(events, key=lambda event: (event[1], event[0]))


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    local_services.wait_until(predicate, timeout_s, what)


@dataclass(frozen=True)
class Outcome:
    ids: set[tuple[str, str]]  # (id, phase) of every record on the alert topic
    state: dict[bytes, bytes]  # Redis state, key prefix stripped


def outcome(settings: Settings, kafka_tools, client: redis.Redis, expected_min: int = 1) -> Outcome:
    records = kafka_tools.read(settings.kafka.alert_topic, lambda got: len(got) >= expected_min, timeout_s=20)
    documents = [json.loads(record.value) for record in records]
    ids = {(d.get("incident_id") or d["alert_id"], d.get("phase", "alert")) for d in documents}
    prefix = settings.redis.key_prefix.encode()
    state = {key[len(prefix):]: value for key, value in state_snapshot(client, settings.redis.key_prefix).items()}
    return Outcome(ids, state)


def settings_for(make_settings, mode: str, redis_url: str, prefix: str, **redis_options: object) -> Settings:
    settings = make_settings()
    settings.redis = RedisSettings(url=redis_url, key_prefix=prefix, **redis_options)
    settings.detection = DetectionSettings(mode=mode)
    return settings


def committed(kafka_tools, settings: Settings) -> int:
    return kafka_tools.committed(settings.kafka.group_id).get((settings.kafka.input_topic, 0), 0)


def fault_free(make_settings, kafka_tools, mode: str, redis_url: str, events: list) -> tuple[Outcome, int]:
    settings = settings_for(make_settings, mode, redis_url, "reference")
    produced = kafka_tools.produce_events(settings.kafka.input_topic, events)
    with BackgroundWorker(build_service(settings)):
        wait_for(lambda: committed(kafka_tools, settings) == produced, 300, "the fault-free run")
    return outcome(settings, kafka_tools, redis.Redis.from_url(redis_url)), produced


@contextmanager
def worker_process(settings: Settings) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen([sys.executable, "-m", "worker", "run"], env=environment(settings),
                               stderr=subprocess.DEVNULL)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.fixture(scope="module")
def events(tiny_model) -> list[tuple[str, int, list[float]]]:
    return stream(tiny_model.features)


@pytest.mark.parametrize("mode", ["windows", "incidents"])
def test_sigkills_during_a_catch_up_leave_the_ids_and_the_state_of_a_fault_free_run(make_settings, kafka_tools,
                                                                                    redis_url, events, mode) -> None:
    reference, produced = fault_free(make_settings, kafka_tools, mode, redis_url, events)
    assert reference.ids, "the stream must alert for the comparison to mean something"
    settings = settings_for(make_settings, mode, redis_url, "faulty")
    kafka_tools.produce_events(settings.kafka.input_topic, events)
    for kill in range(1, KILLS + 1):
        with worker_process(settings) as process:
            mark = produced * kill // (KILLS + 1)
            wait_for(lambda: committed(kafka_tools, settings) >= mark, 300, f"progress before kill {kill}")
            process.send_signal(signal.SIGKILL)
    with worker_process(settings):
        wait_for(lambda: committed(kafka_tools, settings) == produced, 300, "the catch-up after the kills")
    faulty = outcome(settings, kafka_tools, redis.Redis.from_url(redis_url), len(reference.ids))
    assert faulty.ids == reference.ids
    assert faulty.state == reference.state


def test_a_redis_stall_longer_than_the_client_timeout_is_just_a_replay(make_settings, kafka_tools, events,
                                                                       tmp_path) -> None:
    """Redis stops (SIGSTOP) mid catch-up for longer than the client waits; each try times out, Redis runs
    the queued scripts when it resumes, and the retried batches must find nothing lost and nothing twice."""
    with local_services.start_redis(log_dir=tmp_path) as stalled:
        url = local_services.redis_url(stalled)
        reference, produced = fault_free(make_settings, kafka_tools, "incidents", url, events)
        settings = settings_for(make_settings, "incidents", url, "faulty", socket_timeout_s=1.0)
        kafka_tools.produce_events(settings.kafka.input_topic, events)
        with BackgroundWorker(build_service(settings)) as running:
            wait_for(lambda: committed(kafka_tools, settings) >= produced // 3, 300, "progress before the stall")
            os.kill(stalled.process.pid, signal.SIGSTOP)
            try:
                time.sleep(REDIS_STALL_S)
            finally:
                os.kill(stalled.process.pid, signal.SIGCONT)
            wait_for(lambda: committed(kafka_tools, settings) == produced, 300, "the catch-up after the stall")
            failures = running.service.metrics.registry.get_sample_value("vrae_batch_failures_total",
                                                                         {"cause": "redis"})
        faulty = outcome(settings, kafka_tools, redis.Redis.from_url(url), len(reference.ids))
    assert failures and failures >= 1
    assert faulty.ids == reference.ids
    assert faulty.state == reference.state


def test_a_broker_stall_mid_catch_up_loses_nothing(make_settings, kafka_tools, redis_url, events, kafka_broker) -> None:
    reference, produced = fault_free(make_settings, kafka_tools, "windows", redis_url, events)
    settings = settings_for(make_settings, "windows", redis_url, "faulty")
    settings.kafka.delivery_timeout_s = 2.0
    kafka_tools.produce_events(settings.kafka.input_topic, events)
    with BackgroundWorker(build_service(settings)):
        wait_for(lambda: committed(kafka_tools, settings) >= produced // 3, 300, "progress before the stall")
        os.kill(kafka_broker.process.pid, signal.SIGSTOP)
        try:
            time.sleep(6.0)
        finally:
            os.kill(kafka_broker.process.pid, signal.SIGCONT)
        wait_for(lambda: committed(kafka_tools, settings) == produced, 300, "the catch-up after the stall")
    faulty = outcome(settings, kafka_tools, redis.Redis.from_url(redis_url), len(reference.ids))
    assert faulty.ids == reference.ids
    assert faulty.state == reference.state
