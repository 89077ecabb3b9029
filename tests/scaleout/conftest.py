"""Scale-out fixtures: a worker fleet, a local 3-master Redis Cluster, the demo's simulator module.

The broker, the single-node Redis and the tiny model come from tests/conftest.py.
"""

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from scaleout_support import RedisCluster, WorkerFleet
from worker.tools import local_services

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def simulator() -> ModuleType:
    """deploy/simulator.py as a module: the tests stream the very events the compose demo sends."""
    spec = importlib.util.spec_from_file_location("vrae_deploy_simulator", REPO / "deploy/simulator.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[WorkerFleet]:
    fleet = WorkerFleet(directory=tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop_all()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """Three masters, no replicas, slots spread by `redis-cli --cluster create`."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail(local_services.REDIS_INSTALL_HINT)
    directory = tmp_path_factory.mktemp("redis-cluster")
    nodes = []
    try:
        for _ in range(3):
            port = local_services.free_port()
            # An explicit bus port: the default (port + 10000) overflows for ephemeral ports above 55535.
            command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                       "--cluster-port", str(local_services.free_port()),
                       "--cluster-config-file", str(directory / f"nodes-{port}.conf"), "--save", "",
                       "--appendonly", "no", "--dir", str(directory)]
            log = (directory / f"redis-{port}.log").open("wb")
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            nodes.append(local_services.LocalProcess("redis-cluster-node", port, process, None, log))
        for node in nodes:
            local_services.wait_until(lambda node=node: local_services.port_open(node.port), 10, "redis cluster node")
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{node.port}" for node in nodes),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=30)
        cluster = RedisCluster(nodes)
        local_services.wait_until(lambda: all(state == "ok" for state in cluster.states()), 20,
                                  "redis cluster state ok")
        yield cluster
    finally:
        for node in nodes:
            node.stop()
