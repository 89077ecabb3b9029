"""The Redis window store: one pipelined script call per series per batch (see `scripts.py`)."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script

from worker.config import RedisSettings
from worker.events import Event
from worker.scripts import APPLY_EVENTS
from worker.windows import ApplyResult, DueWindow, Outcome, WindowSpec, group_by_series

_OUTCOME_BY_LETTER = {
    "a": Outcome.ACCEPTED,
    "d": Outcome.DUPLICATE,
    "l": Outcome.LATE,
    "r": Outcome.REPLAYED,
    "u": Outcome.REPLAY_UNRECOVERABLE,
}

RedisClient = redis.Redis | RedisCluster


def connect(settings: RedisSettings) -> RedisClient:
    """A binary-safe client (windows are raw float32 bytes) for a single node or a cluster."""
    options = settings.client_options()
    if settings.cluster:
        return RedisCluster.from_url(settings.url, **options)
    return redis.Redis.from_url(settings.url, **options)


def window_key(prefix: str, series_id: str) -> str:
    """`vrae:w:{pump-7}`: the braces make the series id the cluster hash tag."""
    return f"{prefix}:w:{{{series_id}}}"


class RedisWindowStore:
    """Window state in Redis, updated atomically per series by the APPLY_EVENTS script."""

    def __init__(self, client: RedisClient, spec: WindowSpec, key_prefix: str = "vrae") -> None:
        self.spec = spec
        self._client = client
        self._prefix = key_prefix
        self._script: Script = client.register_script(APPLY_EVENTS)
        self._value_bytes = 4 * spec.n_features
        self._script_loaded = False

    def _load_script(self) -> None:
        # A cluster pipeline cannot load scripts lazily, so load on every primary before the first batch
        # (not in __init__: a worker must start, and wait, while Redis is still down).
        self._client.script_load(APPLY_EVENTS)
        self._script_loaded = True

    def close(self) -> None:
        self._client.close()

    def key(self, series_id: str) -> str:
        return window_key(self._prefix, series_id)

    def apply(self, events: Sequence[Event]) -> ApplyResult:
        groups = group_by_series(events)
        if not groups:
            return ApplyResult(outcomes=[])
        if not self._script_loaded:
            self._load_script()
        try:
            replies = self._call(events, groups)
        except redis.exceptions.NoScriptError:
            # A failover or SCRIPT FLUSH dropped the script. On one node nothing ran; on a cluster, series
            # whose node still had it are applied twice, which the second call sees as a replay.
            self._load_script()
            replies = self._call(events, groups)
        result = ApplyResult(outcomes=[Outcome.ACCEPTED] * len(events))
        for (series_id, indices), reply in zip(groups.items(), replies):
            self._collect(series_id, indices, events, reply, result)
        return result

    def _call(self, events: Sequence[Event], groups: dict[str, list[int]]) -> list[Any]:
        spec = self.spec
        head = (spec.window, spec.stride, spec.capacity, self._value_bytes, spec.ttl_s * 1000)
        pipe = self._client.pipeline(transaction=False)
        for series_id, indices in groups.items():
            args: list[Any] = list(head)
            for index in indices:
                event = events[index]
                args += (event.record.offset, event.ts_ms, event.values.astype("<f4", copy=False).tobytes())
            # EVALSHA on the pipeline directly: passing the pipeline to Script.__call__ would add a
            # SCRIPT EXISTS round trip to every batch (the script is loaded up front instead), and
            # redis-py's cluster pipeline blocks its evalsha() helper but routes the raw command by key.
            pipe.execute_command("EVALSHA", self._script.sha, 1, self.key(series_id), *args)
        return pipe.execute()

    def _collect(self, series_id: str, indices: list[int], events: Sequence[Event], reply: list[Any],
                 result: ApplyResult) -> None:
        statuses = reply[0].decode("ascii")
        if statuses.startswith("+"):
            result.new_series += 1
            statuses = statuses[1:]
        for index, letter in zip(indices, statuses):
            result.outcomes[index] = _OUTCOME_BY_LETTER[letter]
        shape = (self.spec.window, self.spec.n_features)
        for position, values, start_ms in zip(reply[1::3], reply[2::3], reply[3::3]):
            event = events[indices[position]]
            window = np.frombuffer(values, dtype="<f4").reshape(shape).astype(np.float32)
            result.windows.append(DueWindow(series_id=series_id, start_ms=int(start_ms), end_ms=event.ts_ms,
                                            values=window, event=event))
