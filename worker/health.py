"""Liveness: the run loop touches a heartbeat file; `vrae-worker check` fails when it is stale.

A file, not a Redis key, so the container healthcheck needs no credentials and keeps working when
Redis is down (a worker that is waiting for Redis is alive; restarting it would not help).
"""

import os
import time
from pathlib import Path


class Heartbeat:
    """Writes the current time to `path` at most every `interval_s` seconds (cheap in a hot loop)."""

    def __init__(self, path: Path, interval_s: float = 1.0) -> None:
        self.path = path
        self._interval_s = interval_s
        self._last = 0.0

    def beat(self) -> None:
        now = time.time()
        if now - self._last < self._interval_s:
            return
        self._last = now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text(f"{now:.3f}\n")
        os.replace(temporary, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def heartbeat_age_s(path: Path, now: float | None = None) -> float | None:
    """Seconds since the last beat, or None when there is no (readable) heartbeat."""
    try:
        beat = float(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return (time.time() if now is None else now) - beat
