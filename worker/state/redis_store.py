"""The Redis state store: one pipelined round trip to peek at a batch, one to write it (one script call
per chunk of series each), and the series registry when the number of series is capped.

A Redis Cluster script call may only touch keys of one slot, so there the chunks are per slot; a
series' window and detector keys share its hash tag, so both are always in one call.
"""

import hashlib
import struct
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import redis
from redis.cluster import RedisCluster

from worker.config import RedisSettings
from worker.events import Event
from worker.state.cache import DetectorStateCache
from worker.state.codec import MARK_BYTES, StateLayout
from worker.state.scripts import ADMIT, KEEP_TTL, PEEK, WRITE
from worker.windows import DueWindow, Outcome, Peek, WindowSpec, group_by_series

_OUTCOME_BY_LETTER = {
    "a": Outcome.ACCEPTED,
    "g": Outcome.GAP,
    "d": Outcome.DUPLICATE,
    "l": Outcome.LATE,
    "r": Outcome.REPLAYED,
}

RedisClient = redis.Redis | RedisCluster
T = TypeVar("T")

_EVENT_HEAD = struct.Struct("<qq")  # offset, ts_ms: then the event's float32 values (STATE)

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
    """`vrae:win:{pump-7}`: the braces make the series id the cluster hash tag."""
    return f"{prefix}:win:{{{series_id}}}"


def detector_key(prefix: str, series_id: str) -> str:
    """`vrae:det:{pump-7}`: same hash tag as the window key, so both live on one cluster slot."""
    return f"{prefix}:det:{{{series_id}}}"


def registry_key(prefix: str) -> str:
    return f"{prefix}:series"


class RedisStateStore:
    """Each series' window and detector state in Redis, read by the PEEK script and stored by WRITE."""

    def __init__(self, client: RedisClient, spec: WindowSpec, key_prefix: str = "vrae", *,
                 max_series: int = 0, detector_cache_bytes: int = 0, detector_layout: StateLayout | None = None
                 ) -> None:
        self.spec = spec
        self._client = client
        self._prefix = key_prefix
        self._max_series = max_series
        self._peek = LoadedScript(client, PEEK)
        self._write = LoadedScript(client, WRITE)
        self._admit = LoadedScript(client, ADMIT)
        self._value_bytes = 4 * spec.n_features
        # the detector states this store wrote or read: a peek reads back only those changed since (0: none kept)
        self._cache = DetectorStateCache(detector_cache_bytes) if detector_cache_bytes > 0 else None
        # with the detector state's layout (and the cache) a write sends only the part of a state that changed
        self._layout = detector_layout

    def close(self) -> None:
        self._client.close()

    def key(self, series_id: str) -> str:
        return window_key(self._prefix, series_id)

    def peek(self, events: Sequence[Event], *, detector: bool, now_ms: int) -> Peek:
        groups = group_by_series(events)
        result = Peek(outcomes=[Outcome.ACCEPTED] * len(events))
        if not groups:
            return result
        # Repeated after a lost script: peeking twice reads twice.
        replies = self._peek.run(lambda sha: self._call(sha, events, groups, now_ms, detector))
        due: list[tuple[str, Event, int, bytes]] = []
        read: dict[str, bytes] = {}
        for (series_id, indices), reply in zip(groups.items(), replies):
            self._collect(series_id, indices, events, reply, result, due, read)
        self._add_windows(due, result)
        if self._cache is not None and read:
            self._cache.put(read)  # what the store holds now: the next peek may skip it, a write change it
        return result

    def admit(self, new: Sequence[str], refresh: Sequence[str], now_ms: int) -> tuple[set[str], int | None]:
        if not self._max_series:
            return set(new), None
        if not new and not refresh:
            return set(), None
        reply = self._admit.run(lambda sha: self._client.evalsha(
            sha, 1, registry_key(self._prefix), now_ms, self.spec.ttl_s * 1000, self._max_series, len(refresh),
            *refresh, *new))
        return {raw.decode("utf-8") for raw in reply[:-1]}, int(reply[-1])

    # A changed part keeps the detector key's TTL as it is (SETRANGE does); the store refreshes it with the
    # part only once its own last refresh is older than this share of the TTL, so a detector state expires
    # between (1 - TTL_SLACK) and 1 TTL after its series' last write (a PEXPIRE was ~a quarter of a part's
    # cost in Redis: benchmarks/RESULTS.md)
    TTL_SLACK = 1 / 64

    def write(self, windows: dict[str, Any], detector_states: dict[str, bytes], now_ms: int) -> None:
        series = list(dict.fromkeys([*windows, *detector_states]))
        if not series:
            return
        # Repeated after a lost script: a state already stored is not replaced by an equal or older one, and
        # a part applied already no longer finds the mark it changes. A write that fails leaves the copy as
        # it was: where it went through anyway, the marks differ.
        parts, ttl_set = self._parts(detector_states, now_ms)
        whole = self._write.run(lambda sha: self._store(sha, series, windows, parts))
        if whole:  # the stored state was not the one the part changes (another worker's, expired): rare
            self._write.run(lambda sha: self._store(sha, whole, {}, {sid: (detector_states[sid], b"")
                                                                     for sid in whole}))
            ttl_set += whole
        if self._cache is not None:
            self._cache.put(detector_states, ttl_set, now_ms)

    def _parts(self, states: dict[str, bytes], now_ms: int) -> tuple[dict[str, tuple[bytes, bytes]], list[str]]:
        """Per series what to send: the changed start of its state and the mark of the stored state it changes
        (then KEEP_TTL where this store set the key's TTL lately), where this store knows the stored state and
        it has the same size; else the whole state and no mark. And the series whose TTL the write sets."""
        if self._cache is None or self._layout is None:
            return {sid: (state, b"") for sid, state in states.items()}, list(states)
        parts: dict[str, tuple[bytes, bytes]] = {}
        ttl_set: list[str] = []
        fresh_after = now_ms - int(self.spec.ttl_s * 1000 * self.TTL_SLACK)
        for sid, state in states.items():
            base = self._cache.get(sid)
            cut = self._layout.changed_prefix(state, base) if base is not None else len(state)
            if base is None or cut == len(state):
                parts[sid] = (state, b"")
                ttl_set.append(sid)
                continue
            set_ms = self._cache.ttl_set_ms(sid)
            if set_ms is not None and set_ms > fresh_after:
                parts[sid] = (state[:cut], base[:MARK_BYTES] + KEEP_TTL)
            else:
                parts[sid] = (state[:cut], base[:MARK_BYTES])
                ttl_set.append(sid)
        return parts, ttl_set

    def _store(self, sha: str, series: list[str], windows: dict[str, Any],
               parts: dict[str, tuple[bytes, bytes]]) -> list[str]:
        """One WRITE call per chunk of series, all in one pipeline; the series whose part found another
        state stored, to send whole."""
        pipe = self._client.pipeline(transaction=False)
        chunks = chunks_by_slot(self._client, series, self.key)
        for chunk in chunks:
            keys: list[str] = []
            args: list[Any] = [self.spec.ttl_s * 1000]
            for series_id in chunk:
                keys += [self.key(series_id), detector_key(self._prefix, series_id)]
                args += [windows.get(series_id, b""), *parts.get(series_id, (b"", b""))]
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        return [chunk[int(position) - 1] for chunk, reply in zip(chunks, pipe.execute()) for position in reply]

    def _call(self, sha: str, events: Sequence[Event], groups: dict[str, list[int]], now_ms: int,
              detector: bool) -> list[Any]:
        """One PEEK reply per series, in `groups` order."""
        spec = self.spec
        registry_ms = spec.ttl_s * 1000 if self._max_series else 0
        marks = self._cache.mark if detector and self._cache is not None else None
        head = (spec.window, spec.stride, self._value_bytes, repr(float(spec.gaps.factor)), spec.gaps.interval_ms,
                now_ms, registry_ms, (2 if marks is not None else 1) if detector else 0)
        chunks = chunks_by_slot(self._client, list(groups), self.key)
        pipe = self._client.pipeline(transaction=False)
        pack = _EVENT_HEAD.pack
        for chunk in chunks:
            args: list[Any] = list(head)
            keys: list[str] = []
            for series_id in chunk:
                keys += [self.key(series_id), detector_key(self._prefix, series_id)]
                args.append(b"".join([marks(series_id) if marks is not None else b"",
                                      *[pack(event.record.offset, event.ts_ms)
                                        + event.values.astype("<f4", copy=False).tobytes()
                                        for event in map(events.__getitem__, groups[series_id])]]))
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        by_series = {series_id: reply for chunk, chunk_replies in zip(chunks, pipe.execute())
                     for series_id, reply in zip(chunk, chunk_replies)}
        return [by_series[series_id] for series_id in groups]

    def _collect(self, series_id: str, indices: list[int], events: Sequence[Event], reply: list[Any],
                 result: Peek, due: list[tuple[str, Event, int, bytes]], read: dict[str, bytes]) -> None:
        """Outcomes, flags and the detector state into `result`; each due window as (series, ending event,
        start ms, raw values); each detector state read from Redis into `read`."""
        statuses, flags, detector, window = reply[0].decode("ascii"), reply[1], reply[2], reply[3]
        for index, letter in zip(indices, statuses):
            result.outcomes[index] = _OUTCOME_BY_LETTER[letter]
        if flags == b"n":
            result.new_series.append(series_id)
        elif flags == b"f":
            result.refresh.append(series_id)
        if detector == 1 and self._cache is not None:  # the stored state is the one this store has
            detector = self._cache.get(series_id)
            result.detector_cached += 1
        elif detector:
            read[series_id] = detector
        if detector:
            result.detector_states[series_id] = detector
        if window:
            result.pending[series_id] = window
        for position, values, start_ms in zip(reply[4::3], reply[5::3], reply[6::3]):
            due.append((series_id, events[indices[position]], int(start_ms), values))

    def _add_windows(self, due: list[tuple[str, Event, int, bytes]], result: Peek) -> None:
        """Decode every due window of the batch with one numpy call (one per window cost ~2 us each)."""
        if not due:
            return
        shape = (len(due), self.spec.window, self.spec.n_features)
        values = np.frombuffer(b"".join(item[3] for item in due), dtype="<f4").astype(np.float32).reshape(shape)
        for (series_id, event, start_ms, _), window in zip(due, values):
            result.windows.append(DueWindow(series_id=series_id, start_ms=start_ms, end_ms=event.ts_ms,
                                            values=window, event=event))
