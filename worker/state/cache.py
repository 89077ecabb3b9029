"""The detector states a worker wrote or read, kept in its memory so a batch's peek reads back only those
that changed in the store since, and its write sends only the part of a state that changed (pure: no I/O).

A series' detector state is written after every batch that judged one of its windows, and read back by
the next batch's peek: at 1,000 series and a 2,000-event batch, megabytes a batch read back unchanged.
The peek sends each series' mark instead (the state's first bytes, `worker.state.codec.MARK_BYTES`:
the end of the last window it judged and the model it belongs to); the store answers "yours is current"
where the stored state starts with that mark, and sends the stored state where it does not (another
worker judged the series after a rebalance, the write failed, the key expired). Two states with the same
mark judged the same windows under the same model, so either is the series' history. The write sends a
state's changed start with the mark of the copy it changes (worker.state.codec.StateLayout), applied only
where the stored state still starts with that mark. A part keeps the key's TTL as it is (SETRANGE does), so
the cache also notes when this store last set each series' TTL, and the store refreshes it only when that
note is older than a small share of the TTL (`RedisStateStore.TTL_SLACK`).
"""

from collections.abc import Iterable

from worker.state.codec import MARK_BYTES

NO_MARK = b"\xff" * MARK_BYTES  # no state is cached: no stored state starts with it (last_end_ms -1 is never stored)


class DetectorStateCache:
    """Per series the state last written or read, within `max_bytes`; the series written longest ago go first."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._states: dict[str, bytes] = {}
        self._ttl_set_ms: dict[str, int] = {}  # when this store last set the series' TTL (its clock)
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._states)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def mark(self, series_id: str) -> bytes:
        state = self._states.get(series_id)
        return state[:MARK_BYTES] if state is not None else NO_MARK

    def get(self, series_id: str) -> bytes | None:
        return self._states.get(series_id)

    def ttl_set_ms(self, series_id: str) -> int | None:
        """When this store last set the series' TTL (None: not known). Another worker's write since can only
        have set it later, and a key that expired since holds no state a part could change."""
        return self._ttl_set_ms.get(series_id)

    def put(self, states: dict[str, bytes], ttl_set: Iterable[str] = (), now_ms: int = 0) -> None:
        """States the store now holds (or refused for a newer one: the next mark then differs); those of
        `ttl_set` had their TTL set at `now_ms`."""
        for series_id, state in states.items():
            old = self._states.pop(series_id, None)
            self._bytes -= len(old) if old is not None else 0
            if len(state) > self._max_bytes:
                self._ttl_set_ms.pop(series_id, None)
                continue
            self._states[series_id] = state
            self._bytes += len(state)
        for series_id in ttl_set:
            if series_id in self._states:
                self._ttl_set_ms[series_id] = now_ms
        while self._bytes > self._max_bytes:
            oldest = next(iter(self._states))
            self._bytes -= len(self._states.pop(oldest))
            self._ttl_set_ms.pop(oldest, None)
