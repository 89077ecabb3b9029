"""Liveness: the run loop touches a heartbeat file; `vrae-worker check` fails when it is stale.

A file, not a Redis key, so the container healthcheck needs no credentials and keeps working when
Redis is down (a worker that is waiting for Redis is alive; restarting it would not help).
"""

import math
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


# How far in the future a heartbeat may lie (the clocks of the worker and of the checker, e.g. a
# container and its host's exec, can disagree a little) before it means a broken clock or file.
CLOCK_SKEW_S = 5.0


def heartbeat_age_s(path: Path, now: float | None = None) -> float | None:
    """Seconds since the last beat, or None when there is no heartbeat or it is not a finite time."""
    try:
        beat = float(path.read_text().strip())
    except (OSError, ValueError):
        return None
    if not math.isfinite(beat):  # `nan` and `inf` parse as floats, and nan compares as fresh
        return None
    return (time.time() if now is None else now) - beat


def check_heartbeat(path: Path, stale_s: float, now: float | None = None,
                    skew_s: float = CLOCK_SKEW_S) -> tuple[bool, str]:
    """Whether the heartbeat at `path` says the worker is alive, and the one line saying why.

    Healthy only for a finite time at most `stale_s` old and at most `skew_s` in the future: a time
    further ahead would stay "fresh" for as long as it lies ahead, whatever the worker does."""
    if not path.exists():
        return False, f"no heartbeat at {path}"
    age_s = heartbeat_age_s(path, now)
    if age_s is None:
        return False, f"heartbeat at {path} is not a time in epoch seconds"
    if age_s < -skew_s:
        return False, (f"heartbeat is {-age_s:.0f} s in the future (clock skew allowed: {skew_s:.0f} s); "
                       "check the clock, or remove the file")
    if age_s > stale_s:
        return False, f"heartbeat is {age_s:.0f} s old (limit {stale_s:.0f} s)"
    return True, f"heartbeat {max(age_s, 0.0):.1f} s old"
