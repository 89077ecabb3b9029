"""The Redis stores: window state (one pipelined round trip per batch, one script call per chunk of
series) and detector state (newer-wins writes), both keyed by series with the series id as hash tag.

A Redis Cluster script call may only touch keys of one slot, so there the chunks are per slot.
"""

import hashlib
import struct
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import redis
from redis.cluster import RedisCluster

from worker.config import RedisSettings
from worker.detection.detector import DetectorState
from worker.events import Event
from worker.state.codec import decode_detector_state, encode_detector_state
from worker.state.scripts import APPLY_EVENTS, SAVE_DETECTOR_STATE
from worker.windows import ApplyResult, DueWindow, Outcome, WindowSpec, group_by_series

_OUTCOME_BY_LETTER = {
    "a": Outcome.ACCEPTED,
    "d": Outcome.DUPLICATE,
    "l": Outcome.LATE,
    "r": Outcome.REPLAYED,
    "u": Outcome.REPLAY_UNRECOVERABLE,
}

RedisClient = redis.Redis | RedisCluster
T = TypeVar("T")

_EVENT_HEAD = struct.Struct("<qq")  # offset, ts_ms: then the event's float32 values (APPLY_EVENTS)

# Series per script call: few enough that one call blocks Redis for about a millisecond, many enough
# that per-command costs (client packing and parsing, Redis dispatch) stop mattering.
MAX_SERIES_PER_CALL = 128


def connect(settings: RedisSettings) -> RedisClient:
    """A binary-safe client (windows are raw float32 bytes) for a single node or a cluster."""
    options = settings.client_options()
    if settings.cluster:
        return RedisCluster.from_url(settings.url, **options)
    return redis.Redis.from_url(settings.url, **options)


class LoadedScript:
    """A Lua script called by EVALSHA in pipelines, loaded before its first use and again after Redis lost it.

    Loaded lazily, not at construction: a worker must start, and wait, while Redis is still down. And
    explicitly: a cluster pipeline cannot load scripts on demand. EVALSHA on the pipeline directly, because
    passing a pipeline to redis-py's Script adds a SCRIPT EXISTS round trip per batch, and its cluster
    pipeline blocks the evalsha() helper while it routes the raw command by key.
    """

    def __init__(self, client: RedisClient, source: str) -> None:
        self._client = client
        self._source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self._loaded = False

    def run(self, calls: Callable[[str], T]) -> T:
        """`calls(sha)` sends the EVALSHA commands. After a failover or SCRIPT FLUSH it is sent again, so
        every script here must make a repeated call harmless."""
        if not self._loaded:
            self._load()
        try:
            return calls(self.sha)
        except redis.exceptions.NoScriptError:
            self._load()
            return calls(self.sha)

    def _load(self) -> None:
        self._client.script_load(self._source)  # on every primary of a cluster
        self._loaded = True


def chunks_by_slot(client: RedisClient, series_ids: list[str], key: Callable[[str], str]) -> list[list[str]]:
    """Series per multi-key command, at most MAX_SERIES_PER_CALL, all of one slot on a cluster (a
    script or MGET there may only touch one slot)."""
    if isinstance(client, RedisCluster):
        by_slot: dict[int, list[str]] = {}
        for series_id in series_ids:
            by_slot.setdefault(client.keyslot(key(series_id)), []).append(series_id)
        groups = list(by_slot.values())
    else:
        groups = [series_ids]
    return [group[start:start + MAX_SERIES_PER_CALL] for group in groups
            for start in range(0, len(group), MAX_SERIES_PER_CALL)]


def window_key(prefix: str, series_id: str) -> str:
    """`vrae:w:{pump-7}`: the braces make the series id the cluster hash tag."""
    return f"{prefix}:w:{{{series_id}}}"


class RedisWindowStore:
    """Window state in Redis, updated atomically per series by the APPLY_EVENTS script."""

    def __init__(self, client: RedisClient, spec: WindowSpec, key_prefix: str = "vrae") -> None:
        self.spec = spec
        self._client = client
        self._prefix = key_prefix
        self._script = LoadedScript(client, APPLY_EVENTS)
        self._value_bytes = 4 * spec.n_features

    def close(self) -> None:
        self._client.close()

    def key(self, series_id: str) -> str:
        return window_key(self._prefix, series_id)

    def apply(self, events: Sequence[Event]) -> ApplyResult:
        groups = group_by_series(events)
        if not groups:
            return ApplyResult(outcomes=[])
        # Repeated after a lost script: on one node nothing ran; on a cluster, series whose node still had
        # it are applied twice, which the second call sees as a replay.
        replies = self._script.run(lambda sha: self._call(sha, events, groups))
        result = ApplyResult(outcomes=[Outcome.ACCEPTED] * len(events))
        due: list[tuple[str, Event, int, bytes]] = []
        for (series_id, indices), reply in zip(groups.items(), replies):
            self._collect(series_id, indices, events, reply, result, due)
        self._add_windows(due, result)
        return result

    def _call(self, sha: str, events: Sequence[Event], groups: dict[str, list[int]]) -> list[Any]:
        """One reply per series, in `groups` order."""
        spec = self.spec
        head = (spec.window, spec.stride, spec.capacity, self._value_bytes, spec.ttl_s * 1000)
        chunks = self._chunks(list(groups))
        pipe = self._client.pipeline(transaction=False)
        pack = _EVENT_HEAD.pack
        for chunk in chunks:
            args: list[Any] = list(head)
            for series_id in chunk:
                args.append(b"".join([pack(event.record.offset, event.ts_ms)
                                      + event.values.astype("<f4", copy=False).tobytes()
                                      for event in map(events.__getitem__, groups[series_id])]))
            keys = [self.key(series_id) for series_id in chunk]
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        replies = {series_id: reply for chunk, chunk_replies in zip(chunks, pipe.execute())
                   for series_id, reply in zip(chunk, chunk_replies)}
        return [replies[series_id] for series_id in groups]

    def _chunks(self, series_ids: list[str]) -> list[list[str]]:
        return chunks_by_slot(self._client, series_ids, self.key)

    def _collect(self, series_id: str, indices: list[int], events: Sequence[Event], reply: list[Any],
                 result: ApplyResult, due: list[tuple[str, Event, int, bytes]]) -> None:
        """Outcomes into `result`; each due window as (series, ending event, start ms, raw values)."""
        statuses = reply[0].decode("ascii")
        if statuses.startswith("+"):
            result.new_series += 1
            statuses = statuses[1:]
        for index, letter in zip(indices, statuses):
            result.outcomes[index] = _OUTCOME_BY_LETTER[letter]
        for position, values, start_ms in zip(reply[1::3], reply[2::3], reply[3::3]):
            due.append((series_id, events[indices[position]], int(start_ms), values))

    def _add_windows(self, due: list[tuple[str, Event, int, bytes]], result: ApplyResult) -> None:
        """Decode every due window of the batch with one numpy call (one per window cost ~2 us each)."""
        if not due:
            return
        shape = (len(due), self.spec.window, self.spec.n_features)
        values = np.frombuffer(b"".join(item[3] for item in due), dtype="<f4").astype(np.float32).reshape(shape)
        for (series_id, event, start_ms, _), window in zip(due, values):
            result.windows.append(DueWindow(series_id=series_id, start_ms=start_ms, end_ms=event.ts_ms,
                                            values=window, event=event))


def detector_key(prefix: str, series_id: str) -> str:
    """`vrae:d:{pump-7}`: same hash tag as the window key, so both live on one cluster slot."""
    return f"{prefix}:d:{{{series_id}}}"


class RedisDetectorStore:
    """Per-series detector state (score history + incident), written newer-wins by SAVE_DETECTOR_STATE."""

    def __init__(self, client: RedisClient, key_prefix: str = "vrae", ttl_s: int = 7 * 24 * 3600) -> None:
        self._client = client
        self._prefix = key_prefix
        self._ttl_ms = ttl_s * 1000
        self._script = LoadedScript(client, SAVE_DETECTOR_STATE)

    def key(self, series_id: str) -> str:
        return detector_key(self._prefix, series_id)

    def load(self, series_ids: Sequence[str]) -> dict[str, DetectorState]:
        """One round trip: an MGET per chunk of series (one GET each cost ~10 µs of client CPU)."""
        chunks = chunks_by_slot(self._client, list(series_ids), self.key)
        pipe = self._client.pipeline(transaction=False)
        for chunk in chunks:
            pipe.execute_command("MGET", *[self.key(series_id) for series_id in chunk])
        return {sid: decode_detector_state(raw) for chunk, raws in zip(chunks, pipe.execute())
                for sid, raw in zip(chunk, raws) if raw}

    def save(self, states: dict[str, DetectorState]) -> None:
        # The writes are newer-wins, so repeating them after a lost script is safe.
        self._script.run(lambda sha: self._save(sha, states))

    def _save(self, sha: str, states: dict[str, DetectorState]) -> None:
        """One round trip: a script call per chunk of series."""
        pipe = self._client.pipeline(transaction=False)
        for chunk in chunks_by_slot(self._client, list(states), self.key):
            keys = [self.key(series_id) for series_id in chunk]
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, self._ttl_ms,
                                 *[encode_detector_state(states[series_id]) for series_id in chunk])
        pipe.execute()
