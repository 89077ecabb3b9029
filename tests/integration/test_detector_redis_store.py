"""Detector state in a real redis-server through the state store: same results as the memory store,
newer-wins, replays inert, whether states are written whole or only their changed part."""

import numpy as np
import pytest
import redis
from detector_batches import scored_windows

from worker.detection.calibration import Reference
from worker.detection.detector import DetectionResult, DetectorSettings, detect
from worker.scorer import ModelInfo
from worker.state.codec import detector_state_bytes, last_end_ms, state_layout
from worker.state.memory import MemoryStateStore
from worker.state.redis_store import RedisStateStore, detector_key
from worker.windows import WindowSpec

pytestmark = pytest.mark.integration

REFERENCE = Reference(median=np.log([0.06, 0.14]), scale=np.full(2, 0.2), mean=np.zeros(2), std=np.ones(2),
                      window=4)
MODEL = ModelInfo(name="vrae", version="v1", sha256="ab" * 32, window=4, features=("temp", "rpm"), threshold=0.99,
                  reference=REFERENCE)
SPEC = WindowSpec(window=4, n_features=2, ttl_s=60)
NOW_MS = 1_764_000_000_000
LAYOUT = state_layout(2, DetectorSettings().calibration)  # as the worker builds its store: changed parts only


def run(store: RedisStateStore | MemoryStateStore, series: str, first: int, scores: list[float],
        now_ms: int = NOW_MS) -> DetectionResult:
    """Judge windows with the stored state, then write the new states, as a batch does."""
    windows, scored = scored_windows(series, first, scores)
    raw = store.peek([window.event for window in windows], detector=True, now_ms=now_ms).detector_states
    result = detect(windows, scored, raw, MODEL, DetectorSettings())
    store.write({}, result.states, now_ms)
    return result


@pytest.mark.parametrize("cache_bytes, partial", [(0, False), (1 << 20, False), (1 << 20, True)])
def test_redis_store_matches_the_memory_store_and_stays_bounded(redis_url: str, cache_bytes: int,
                                                                partial: bool) -> None:
    client = redis.Redis.from_url(redis_url)
    client.delete(*[detector_key("q", s) for s in ("pump-1", "pump-2")], "q:win:{pump-1}", "q:win:{pump-2}")
    lua = RedisStateStore(client, SPEC, key_prefix="q", detector_cache_bytes=cache_bytes,
                          detector_layout=LAYOUT if partial else None)
    memory = MemoryStateStore(SPEC)
    client.config_resetstat()
    rng = np.random.default_rng(0)
    scores = (0.1 * np.exp(0.2 * rng.standard_normal(700))).tolist()
    scores[500:530] = [5.0] * 30  # one incident, after the learning period
    opened = 0
    batch = 10  # windows a series per batch: fewer than hold_stride, so some batches teach nothing (a part)
    for first in range(0, 700, batch):
        for series in ("pump-1", "pump-2"):
            got, expected = run(lua, series, first + 1, scores[first:first + batch]), \
                run(memory, series, first + 1, scores[first:first + batch])
            assert [v.surprise for v in got.verdicts] == [v.surprise for v in expected.verdicts]
            assert [e.incident_id for e in got.events] == [e.incident_id for e in expected.events]
            opened += len(got.events)
    assert opened >= 2
    for series in ("pump-1", "pump-2"):
        raw = client.get(detector_key("q", series))
        assert raw == memory.detector_raw(series)
        assert len(raw) == detector_state_bytes(2)
        assert 0 < client.pttl(detector_key("q", series)) <= 60_000
    assert bool(setranges(client)) == partial


def setranges(client: redis.Redis) -> int:
    """Changed parts written in scripts so far."""
    return int(client.info("commandstats").get("cmdstat_setrange", {}).get("calls", 0))


def test_past_the_learning_period_a_write_sends_a_part_of_the_state(redis_url: str) -> None:
    """One window a batch, as a series at a slow rate: its quarantine and scalars change with every window, its
    histograms and hold with one window in hold_stride (12) once it has learnt (300 windows)."""
    client = redis.Redis.from_url(redis_url)
    scores = (0.1 * np.exp(0.2 * np.random.default_rng(1).standard_normal(700))).tolist()
    sent: dict[bool, int] = {}
    for partial in (False, True):
        store = RedisStateStore(client, SPEC, key_prefix=f"p{partial:d}", detector_cache_bytes=1 << 20,
                                detector_layout=LAYOUT if partial else None)
        for first in range(400):
            run(store, "s", first + 1, scores[first:first + 1])
        client.config_resetstat()
        for first in range(400, 700):
            run(store, "s", first + 1, scores[first:first + 1])
        sent[partial] = int(client.info("stats")["total_net_input_bytes"])
    assert client.get(detector_key("p1", "s")) == client.get(detector_key("p0", "s"))
    assert sent[True] < 0.5 * sent[False]  # 0.43 here: the peek and the window state go whole either way


def test_a_changed_part_refreshes_the_ttl_only_once_a_share_of_it_has_passed(redis_url: str) -> None:
    """SETRANGE keeps a key's TTL: a part refreshes it only when the store's own last refresh is older than
    TTL_SLACK of the TTL (60 s / 64 here), so a state still expires within 1 TTL of its series' last write."""
    client = redis.Redis.from_url(redis_url)
    key = detector_key("t", "s")
    client.delete(key)
    store = RedisStateStore(client, SPEC, key_prefix="t", detector_cache_bytes=1 << 20, detector_layout=LAYOUT)
    run(store, "s", 1, [0.1] * 20)  # written whole: its TTL set now
    client.pexpire(key, 5_000)
    client.config_resetstat()
    run(store, "s", 21, [0.1], now_ms=NOW_MS + 900)
    assert setranges(client) == 1 and pexpires(client) == 0 and client.pttl(key) <= 5_000
    run(store, "s", 22, [0.1], now_ms=NOW_MS + 950)  # 950 ms since the TTL was set: past 60 s / 64
    assert setranges(client) == 2 and pexpires(client) == 1 and client.pttl(key) > 59_000
    run(store, "s", 23, [0.1], now_ms=NOW_MS + 1_000)
    assert setranges(client) == 3 and pexpires(client) == 1


def pexpires(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_pexpire", {}).get("calls", 0))


@pytest.mark.parametrize("elsewhere", ["expired", "older", "newer"])
def test_a_changed_part_is_applied_only_to_the_state_it_changes(redis_url: str, elsewhere: str) -> None:
    """When the stored state is not the one the worker's copy says (expired, or another worker's), the part
    is not applied: the state goes whole, or not at all if the stored one is newer."""
    client = redis.Redis.from_url(redis_url)
    key = detector_key("x", elsewhere)
    client.delete(key)
    store = RedisStateStore(client, SPEC, key_prefix="x", detector_cache_bytes=1 << 20, detector_layout=LAYOUT)
    run(store, elsewhere, 1, [0.1] * 20)
    other = {"expired": None, "older": run(MemoryStateStore(SPEC), elsewhere, 1, [0.1] * 10).states[elsewhere],
             "newer": run(MemoryStateStore(SPEC), elsewhere, 1, [0.2] * 40).states[elsewhere]}[elsewhere]
    client.delete(key)
    if other is not None:
        client.set(key, other)
    mine = run(MemoryStateStore(SPEC), elsewhere, 1, [0.1] * 21).states[elsewhere]
    client.config_resetstat()
    store.write({}, {elsewhere: mine}, NOW_MS)  # its copy (the 20 windows) says a part suffices
    assert client.get(key) == (other if elsewhere == "newer" else mine)
    assert setranges(client) == 0


def test_replayed_batch_leaves_the_stored_history_unchanged(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = RedisStateStore(client, SPEC, key_prefix="r")
    run(store, "s", 1, [0.1] * 40)
    before = client.get(detector_key("r", "s"))
    replay = run(store, "s", 21, [9.0] * 20)  # windows 21..40 again, with other scores
    assert replay.skipped == 20 and not replay.verdicts and not replay.events
    assert client.get(detector_key("r", "s")) == before


def test_an_older_state_never_overwrites_a_newer_one(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = RedisStateStore(client, SPEC, key_prefix="o")
    older = run(MemoryStateStore(SPEC), "s", 1, [0.1] * 10).states["s"]
    run(store, "s", 1, [0.1] * 20)
    newer = client.get(detector_key("o", "s"))
    store.write({}, {"s": older}, NOW_MS)
    assert client.get(detector_key("o", "s")) == newer
    assert last_end_ms(newer) == 20_000


def detector_reads(client: redis.Redis) -> int:
    """Full GETs in scripts so far: one per series peeked for its window state, one more where the detector
    state is read back."""
    return int(client.info("commandstats").get("cmdstat_get", {}).get("calls", 0))


@pytest.mark.parametrize("layout", [None, LAYOUT])
def test_a_cached_state_is_not_read_back_unless_another_worker_changed_it(redis_url: str, layout) -> None:
    client = redis.Redis.from_url(redis_url)
    client.delete(detector_key("c", "s"), "c:win:{s}")
    mine = RedisStateStore(client, SPEC, key_prefix="c", detector_cache_bytes=1 << 20, detector_layout=layout)
    other = RedisStateStore(client, SPEC, key_prefix="c", detector_cache_bytes=1 << 20, detector_layout=layout)
    memory = MemoryStateStore(SPEC)
    run(mine, "s", 1, [0.1] * 20)
    run(memory, "s", 1, [0.1] * 20)
    event = scored_windows("s", 21, [0.1])[0][0].event
    assert mine.peek([event], detector=True, now_ms=NOW_MS).detector_cached == 1
    assert other.peek([event], detector=True, now_ms=NOW_MS).detector_cached == 0
    client.config_resetstat()
    run(mine, "s", 21, [0.1] * 20)  # its own copy is current: only the window state is read
    run(memory, "s", 21, [0.1] * 20)
    assert detector_reads(client) == 1
    run(other, "s", 41, [0.1] * 20)  # another worker (a rebalance) judges the series: it reads the state
    run(memory, "s", 41, [0.1] * 20)
    assert detector_reads(client) == 3
    # and the first worker, on the series again, reads what the other wrote, not its own stale copy
    got, expected = run(mine, "s", 61, [0.1] * 10 + [5.0] * 10), run(memory, "s", 61, [0.1] * 10 + [5.0] * 10)
    assert detector_reads(client) == 5
    assert [v.surprise for v in got.verdicts] == [v.surprise for v in expected.verdicts]
    assert client.get(detector_key("c", "s")) == memory.detector_raw("s")


def test_after_a_write_that_timed_out_the_peek_reads_what_is_stored(redis_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    client = redis.Redis.from_url(redis_url)
    store = RedisStateStore(client, SPEC, key_prefix="f", detector_cache_bytes=1 << 20)
    run(store, "s", 1, [0.1] * 20)
    newer = run(MemoryStateStore(SPEC), "s", 1, [0.1] * 30).states["s"]
    stored = store._store

    def timed_out(*args: object) -> None:  # the script ran, its reply was lost
        stored(*args)
        raise redis.exceptions.TimeoutError("reply lost")

    monkeypatch.setattr(store, "_store", timed_out)
    with pytest.raises(redis.exceptions.TimeoutError):
        store.write({}, {"s": newer}, NOW_MS)
    event = scored_windows("s", 31, [0.1])[0][0].event
    assert store.peek([event], detector=True, now_ms=NOW_MS).detector_states["s"] == newer


def test_after_a_write_that_failed_the_copy_still_matches_what_is_stored(redis_url: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    client = redis.Redis.from_url(redis_url)
    store = RedisStateStore(client, SPEC, key_prefix="g", detector_cache_bytes=1 << 20)
    run(store, "s", 1, [0.1] * 20)
    stored = client.get(detector_key("g", "s"))
    newer = run(MemoryStateStore(SPEC), "s", 1, [0.1] * 30).states["s"]

    def refused(*args: object) -> None:  # nothing reached Redis
        raise redis.exceptions.ConnectionError("down")

    monkeypatch.setattr(store, "_store", refused)
    with pytest.raises(redis.exceptions.ConnectionError):
        store.write({}, {"s": newer}, NOW_MS)
    event = scored_windows("s", 21, [0.1])[0][0].event
    peek = store.peek([event], detector=True, now_ms=NOW_MS)
    assert peek.detector_states["s"] == stored and peek.detector_cached == 1
