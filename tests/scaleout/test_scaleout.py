"""Scale-out: worker processes share one consumer group over a multi-partition topic, and state lives
in Redis (single node or cluster), so a worker can die at any moment without losing a due window.

Every worker runs with threshold 0, so every scored window becomes an alert: the alert topic is then
the record of what was scored, and it must cover every window `vrae_model.windowing.due_positions`
says is due. Delivery is at-least-once: a window may appear twice (same alert id), never zero times.
"""

import json
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterable
from types import ModuleType

import pytest
from kafka import KafkaConsumer, KafkaProducer

from vrae_model.synth import SynthConfig
from vrae_model.windowing import due_positions
from worker.tools import local_services

from scaleout_support import WorkerFleet, topic_record_count, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 6
STRIDE = 3
START_MS = 1_767_225_600_000


def expected_windows(events: Iterable, window: int, stride: int) -> set[tuple[str, int]]:
    """(series_id, window end ms) of every due window in the stream, by the shared windowing rule."""
    timestamps: dict[str, list[int]] = defaultdict(list)
    for event in events:
        timestamps[event.series_id].append(event.ts_ms)
    expected = set()
    for series_id, stamps in timestamps.items():
        stamps.sort()
        expected |= {(series_id, stamps[n]) for n in due_positions(len(stamps), window, stride)}
    return expected


def make_topics(bootstrap_servers: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    names = {"input": f"scaleout-events-{suffix}", "alert": f"scaleout-alerts-{suffix}",
             "dlq": f"scaleout-dlq-{suffix}", "group": f"scaleout-{suffix}"}
    local_services.create_topics(bootstrap_servers, [names["input"]], partitions=PARTITIONS)
    local_services.create_topics(bootstrap_servers, [names["alert"], names["dlq"]])
    return names


def worker_env(bootstrap_servers: str, topics: dict[str, str], redis_url: str, tiny_model, **extra: str) -> dict:
    return {
        "VRAE_KAFKA__BOOTSTRAP_SERVERS": bootstrap_servers,
        "VRAE_KAFKA__INPUT_TOPIC": topics["input"],
        "VRAE_KAFKA__ALERT_TOPIC": topics["alert"],
        "VRAE_KAFKA__DLQ_TOPIC": topics["dlq"],
        "VRAE_KAFKA__GROUP_ID": topics["group"],
        "VRAE_REDIS__URL": redis_url,
        "VRAE_REDIS__KEY_PREFIX": f"vrae-{topics['group']}",
        "VRAE_MODEL__PATH": str(tiny_model.path),
        "VRAE_MODEL__SHA256": tiny_model.sha256,
        "VRAE_MODEL__THRESHOLD": "0",
        "VRAE_DETECTION__MODE": "windows",
        "VRAE_WINDOW__STRIDE": str(STRIDE),
        **extra,
    }


class Producer(threading.Thread):
    """Sends the stream at a steady rate in the background, keyed by series like the simulator."""

    def __init__(self, simulator: ModuleType, bootstrap_servers: str, topic: str, events: list, rate: float) -> None:
        super().__init__(daemon=True)
        self._pacer = simulator.Pacer(rate)
        self._producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5)
        self._topic, self._events = topic, events
        self.sent = 0

    def run(self) -> None:
        try:
            for event in self._events:
                self._pacer.wait()
                self._producer.send(self._topic, key=event.key, value=event.value)
                self.sent += 1
            self._producer.flush()
        finally:
            self._producer.close()


class AlertLog:
    """Everything on the alert topic so far, read without a consumer group."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self._consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap_servers, group_id=None,
                                       auto_offset_reset="earliest", enable_auto_commit=False)
        self.alerts: list[dict] = []

    def read(self) -> list[dict]:
        for records in self._consumer.poll(timeout_ms=200).values():
            self.alerts.extend(json.loads(record.value) for record in records)
        return self.alerts

    def windows(self) -> set[tuple[str, int]]:
        return {(alert["series_id"], alert["window_end"]) for alert in self.read()}

    def close(self) -> None:
        self._consumer.close()


def sim_events(simulator: ModuleType, tiny_model, n_series: int, length: int) -> list:
    config = SynthConfig(n_series=n_series, length=length, features=tiny_model.features, anomaly_rate=0.0,
                         seed=7, start_ms=START_MS)
    return list(simulator.stream(config, laps=1))


def test_killing_one_of_three_workers_mid_stream_loses_no_due_window(
    fleet: WorkerFleet, simulator: ModuleType, bootstrap_servers: str, redis_url: str, tiny_model
) -> None:
    topics = make_topics(bootstrap_servers)
    all_partitions = {f"{topics['input']}-{p}" for p in range(PARTITIONS)}
    env = worker_env(bootstrap_servers, topics, redis_url, tiny_model)
    workers = [fleet.start(env) for _ in range(3)]
    wait_for(lambda: all(w.assigned_partitions() for w in workers)
             and set().union(*(w.assigned_partitions() for w in workers)) == all_partitions,
             60, "3 workers sharing the 6 partitions", fleet)

    events = sim_events(simulator, tiny_model, n_series=12, length=60)
    expected = expected_windows(events, tiny_model.window, STRIDE)
    alerts = AlertLog(bootstrap_servers, topics["alert"])
    producer = Producer(simulator, bootstrap_servers, topics["input"], events, rate=250)
    producer.start()
    try:
        wait_for(lambda: producer.sent >= len(events) // 2 and alerts.windows(), 30, "first half scored", fleet)
        victim, survivors = workers[0], workers[1:]
        victim_partitions = victim.assigned_partitions()
        victim.kill()  # SIGKILL: no revoke, no commit, no goodbye to the group
        producer.join(timeout=30)
        assert producer.sent == len(events)

        wait_for(lambda: expected <= alerts.windows(), 60, "every due window scored after the kill", fleet)
        # A survivor can miss the rebalance that follows the kill and get its partitions only a generation
        # later: once, with another job loading both cores, 18 s after its revocation. Hence 30 s.
        wait_for(lambda: set().union(*(w.assigned_partitions() for w in survivors)) == all_partitions,
                 30, "survivors own every partition", fleet)
        scored = alerts.read()
    finally:
        alerts.close()

    assert victim_partitions, "the killed worker owned partitions when it died"
    assert victim.process.returncode == -9 and all(w.alive() for w in survivors)
    assert {(a["series_id"], a["window_end"]) for a in scored} == expected, "no window outside the due rule"
    # Duplicates (replays after the kill) carry the same deterministic id, so consumers can dedupe.
    ids_per_window = defaultdict(set)
    for alert in scored:
        ids_per_window[(alert["series_id"], alert["window_end"])].add(alert["alert_id"])
    assert all(len(ids) == 1 for ids in ids_per_window.values())
    assert topic_record_count(bootstrap_servers, topics["dlq"]) == 0


def test_worker_on_a_three_master_redis_cluster_scores_every_due_window(
    fleet: WorkerFleet, simulator: ModuleType, bootstrap_servers: str, redis_cluster, tiny_model
) -> None:
    topics = make_topics(bootstrap_servers)
    env = worker_env(bootstrap_servers, topics, redis_cluster.url, tiny_model, VRAE_REDIS__CLUSTER="true")
    workers = [fleet.start(env) for _ in range(2)]
    wait_for(lambda: all(w.assigned_partitions() for w in workers), 45, "2 workers assigned", fleet)

    events = sim_events(simulator, tiny_model, n_series=24, length=40)
    expected = expected_windows(events, tiny_model.window, STRIDE)
    alerts = AlertLog(bootstrap_servers, topics["alert"])
    producer = Producer(simulator, bootstrap_servers, topics["input"], events, rate=2000)
    producer.start()
    try:
        producer.join(timeout=30)
        wait_for(lambda: expected <= alerts.windows(), 45, "every due window scored on the cluster", fleet)
        scored = alerts.windows()
    finally:
        alerts.close()

    assert scored == expected
    # Series ids are the hash tag of their keys, so 24 series land on every master, not one.
    assert all(count > 0 for count in redis_cluster.key_counts())
    assert topic_record_count(bootstrap_servers, topics["dlq"]) == 0
