"""Scale-out test support: worker OS processes (killable) and what the tests wait for.

Kept out of conftest.py so test modules import it by a unique name.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from worker.tools import local_services

# The values tests/conftest.py uses in-process: a group forms in ~3 s and a dead member is dropped
# after 6 s, instead of the production 45 s.
FAST_CONSUMER_ENV = {
    "VRAE_KAFKA__SESSION_TIMEOUT_MS": "6000",
    "VRAE_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
    "VRAE_KAFKA__MAX_POLL_INTERVAL_MS": "5000",
    "VRAE_KAFKA__POLL_TIMEOUT_MS": "200",
    "VRAE_KAFKA__PRODUCER_LINGER_MS": "0",
    "VRAE_SERVICE__METRICS_PORT": "0",
    "VRAE_SERVICE__BACKOFF_INITIAL_S": "0.1",
    "VRAE_SERVICE__BACKOFF_MAX_S": "1.0",
}


@dataclass
class WorkerProcess:
    """`python -m worker run` in its own process, its JSON log lines in a file."""

    name: str
    process: subprocess.Popen
    log_path: Path
    killed: bool = False

    def log_records(self) -> list[dict]:
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
        return records

    def assigned_partitions(self) -> set[str]:
        """The partitions of this worker's latest assignment, from its `partitions assigned` log line."""
        assigned: set[str] = set()
        for record in self.log_records():
            if record.get("msg") == "partitions revoked":
                assigned = set()
            elif record.get("msg") == "partitions assigned":
                assigned = set(record.get("partitions", []))
        return assigned

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.killed = True
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


@dataclass
class WorkerFleet:
    """Starts workers sharing one environment; stops every one at teardown, killed or not."""

    directory: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def start(self, env: dict[str, str]) -> WorkerProcess:
        name = f"worker-{len(self.workers)}"
        log_path = self.directory / f"{name}.log"
        clean = {key: value for key, value in os.environ.items() if not key.startswith("VRAE_")}
        environment = {**clean, **FAST_CONSUMER_ENV, **env,
                       "VRAE_SERVICE__HEARTBEAT_FILE": str(self.directory / f"{name}.heartbeat"),
                       "VRAE_SERVICE__WORKER_ID": name}
        with log_path.open("wb") as log:
            # cwd: a scratch directory, so a developer's .env cannot leak into the test.
            process = subprocess.Popen([sys.executable, "-m", "worker", "run"], cwd=self.directory, env=environment,
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        worker = WorkerProcess(name=name, process=process, log_path=log_path)
        self.workers.append(worker)
        return worker

    def crashed(self) -> list[WorkerProcess]:
        """Workers that exited although nobody stopped them."""
        return [worker for worker in self.workers if not worker.killed and not worker.alive()]

    def stop_all(self) -> None:
        """SIGTERM every live worker first, then wait: shutdowns overlap instead of queueing."""
        # One SIGTERM each: a second one tells the worker to exit without finishing its batch.
        for worker in self.workers:
            if worker.alive():
                worker.process.terminate()
        for worker in self.workers:
            try:
                worker.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {w.name}\n{w.log_path.read_text(errors='replace')[-3000:]}" for w in self.workers)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, fleet: WorkerFleet | None = None) -> None:
    """Poll `condition`; fail at the deadline, or at once when a worker of `fleet` died on its own."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        if fleet is not None and fleet.crashed():
            pytest.fail(f"{', '.join(w.name for w in fleet.crashed())} exited while waiting for {what}\n{fleet.logs()}")
        time.sleep(0.2)
    details = f"\n{fleet.logs()}" if fleet is not None else ""
    pytest.fail(f"{what} within {timeout_s:.0f} s{details}")


def topic_record_count(bootstrap_servers: str, topic: str, idle_s: float = 2.0) -> int:
    """Records in `topic`, counted by reading it until nothing arrives for `idle_s` once assigned.

    Not end offsets: Tansu answers ListOffsets with one offset per record batch, not per record.
    """
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap_servers, group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        count, quiet_since, deadline = 0, None, time.monotonic() + 30
        while quiet_since is None or time.monotonic() - quiet_since < idle_s:
            batch = sum(len(records) for records in consumer.poll(timeout_ms=200).values())
            if batch or (quiet_since is None and consumer.assignment()):
                count, quiet_since = count + batch, time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not finish within 30 s")
        return count
    finally:
        consumer.close()


@dataclass
class RedisCluster:
    nodes: list[local_services.LocalProcess]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def states(self) -> list[str]:
        return [self._on(node, lambda client: client.execute_command("CLUSTER INFO")["cluster_state"])
                for node in self.nodes]

    def key_counts(self) -> list[int]:
        return [self._on(node, lambda client: client.dbsize()) for node in self.nodes]

    @staticmethod
    def _on(node: local_services.LocalProcess, call: Callable[[redis.Redis], object]):
        client = redis.Redis(port=node.port)
        try:
            return call(client)
        finally:
            client.close()
