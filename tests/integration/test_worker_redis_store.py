"""The Lua state store against a real redis-server, checked event by event against the memory store."""

import random

import numpy as np
import pytest
import redis

from vrae_model.windowing import GapPolicy
from worker.detection.calibration import Batch, CalibrationSettings, Reference, step
from worker.events import Event, SourceRecord
from worker.state.codec import encode_states, state_layout
from worker.state.memory import MemoryStateStore
from worker.state.redis_store import RedisStateStore, detector_key, registry_key, window_key
from worker.windows import Outcome, Peek, WindowSpec

pytestmark = pytest.mark.integration

NOW_MS = 1_764_000_000_000


def random_stream(rng: random.Random, n: int, n_features: int) -> list[Event]:
    """Several series with late events, duplicates, gaps and replays (offsets that go back)."""
    events, offset, last_ts = [], 0, {s: 1_763_942_400_000 for s in ("a", "b", "c")}
    for i in range(n):
        series = rng.choice("abc")
        if rng.random() < 0.1:
            ts = last_ts[series] - rng.choice([0, 0, 500, 3000])
        else:
            ts = last_ts[series] + rng.choice([1000, 1000, 1000, rng.randint(1, 200_000)])
            last_ts[series] = ts
        offset += 1
        if rng.random() < 0.1:
            offset -= rng.randint(1, 6)
        values = np.array([rng.uniform(-5, 5) for _ in range(n_features)], np.float32)
        events.append(Event(series, ts, values, SourceRecord("events", 0, offset, None, b"")))
    return events


def apply(store: RedisStateStore | MemoryStateStore, events: list[Event], detector: dict[str, bytes] | None = None,
          now_ms: int = NOW_MS) -> Peek:
    peek = store.peek(events, detector=True, now_ms=now_ms)
    store.write(peek.pending, detector or {}, now_ms)
    return peek


@pytest.mark.parametrize("window, n_features, stride, gap_factor", [(5, 1, 1, 0.0), (4, 3, 3, 5.0), (1, 2, 1, 0.0),
                                                                    (8, 2, 2, 3.0)])
def test_lua_store_matches_memory_store_event_for_event(redis_url: str, window: int, n_features: int, stride: int,
                                                        gap_factor: float) -> None:
    rng = random.Random(window * 100 + n_features)
    spec = WindowSpec(window=window, n_features=n_features, stride=stride, ttl_s=60,
                      gaps=GapPolicy(factor=gap_factor, interval_ms=1000 if gap_factor else 0))
    lua, reference = RedisStateStore(redis.Redis.from_url(redis_url), spec), MemoryStateStore(spec)
    events = random_stream(rng, 400, n_features)
    position, seen = 0, set()
    while position < len(events):
        batch = events[position:position + rng.randint(1, 25)]
        position += len(batch)
        if rng.random() < 0.2:  # a peek whose write never came (a crash before the write)
            assert lua.peek(batch, detector=False, now_ms=NOW_MS).outcomes == \
                reference.peek(batch, detector=False, now_ms=NOW_MS).outcomes
        got, expected = apply(lua, batch), apply(reference, batch)
        assert got.outcomes == expected.outcomes
        assert got.new_series == expected.new_series
        assert [(w.series_id, w.start_ms, w.end_ms, w.event.record.offset) for w in got.windows] == \
               [(w.series_id, w.start_ms, w.end_ms, w.event.record.offset) for w in expected.windows]
        for lua_window, memory_window in zip(got.windows, expected.windows):
            np.testing.assert_array_equal(lua_window.values, memory_window.values)
        seen.update(expected.outcomes)
    assert {Outcome.ACCEPTED, Outcome.LATE, Outcome.DUPLICATE, Outcome.REPLAYED} <= seen
    if gap_factor:
        assert Outcome.GAP in seen


def test_state_survives_a_new_store_instance_and_replays_are_recognised(redis_url: str) -> None:
    spec = WindowSpec(window=4, n_features=1)
    events = [Event("pump-7", 1000 * (i + 1), np.array([i], np.float32), SourceRecord("e", 0, i, None, b""))
              for i in range(10)]
    client = redis.Redis.from_url(redis_url)
    apply(RedisStateStore(client, spec), events)
    state = client.get(window_key("vrae", "pump-7"))
    restarted = RedisStateStore(redis.Redis.from_url(redis_url), spec)
    replay = apply(restarted, events[6:])
    assert replay.outcomes == [Outcome.REPLAYED] * 4 and replay.windows == []
    assert client.get(window_key("vrae", "pump-7")) == state


def test_a_write_that_timed_out_and_ran_later_is_just_a_replay(redis_url: str) -> None:
    """The client gave up on the write (Redis stalled), Redis ran it when it came back: the retried batch
    peeks at the written state, ends no window and writes nothing new."""
    spec = WindowSpec(window=3, n_features=1)
    client = redis.Redis.from_url(redis_url)
    store = RedisStateStore(client, spec)
    events = [Event("s", 1000 * (i + 1), np.array([i], np.float32), SourceRecord("e", 0, i, None, b""))
              for i in range(600)]  # one series, hundreds of events in one batch
    store.write(store.peek(events, detector=False, now_ms=NOW_MS).pending, {}, NOW_MS)  # never confirmed
    state = client.get(window_key("vrae", "s"))
    retry = apply(store, events)
    assert retry.outcomes == [Outcome.REPLAYED] * 600 and retry.windows == []
    assert client.get(window_key("vrae", "s")) == state


def test_detector_states_are_read_by_the_peek_and_written_newer_wins(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = RedisStateStore(client, WindowSpec(window=2, n_features=1, ttl_s=60))
    one = [Event("s", 1000, np.zeros(1, np.float32), SourceRecord("e", 0, 0, None, b""))]
    newer, older = (20_000).to_bytes(8, "little") + b"new", (10_000).to_bytes(8, "little") + b"old"
    apply(store, one, {"s": newer})
    store.write({}, {"s": older}, NOW_MS)
    assert client.get(detector_key("vrae", "s")) == newer
    assert store.peek(one, detector=True, now_ms=NOW_MS).detector_states == {"s": newer}
    assert store.peek(one, detector=False, now_ms=NOW_MS).detector_states == {}
    assert 0 < client.pttl(detector_key("vrae", "s")) <= 60_000


def test_series_state_fits_600_bytes_at_window_64_and_expires(redis_url: str) -> None:
    spec = WindowSpec(window=64, n_features=1, ttl_s=3600)
    events = [Event("pump-0007", 1_763_942_400_000 + 1000 * i, np.array([0.5], np.float32),
                    SourceRecord("e", 0, 10**9 + i, None, b"")) for i in range(500)]
    client = redis.Redis.from_url(redis_url)
    apply(RedisStateStore(client, spec), events)
    key = window_key("vrae", "pump-0007")
    assert client.memory_usage(key) <= 600
    assert 3590 <= client.ttl(key) <= 3600


def test_the_registry_caps_the_series_and_renews_active_ones(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    spec = WindowSpec(window=2, n_features=1, ttl_s=60)
    store = RedisStateStore(client, spec, max_series=2)
    events = [Event(s, 1000, np.zeros(1, np.float32), SourceRecord("e", 0, i, None, b""))
              for i, s in enumerate("abc")]
    peek = store.peek(events, detector=False, now_ms=NOW_MS)
    assert peek.new_series == ["a", "b", "c"]
    assert store.admit(peek.new_series, peek.refresh, NOW_MS) == ({"a", "b"}, 2)
    store.write({sid: state for sid, state in peek.pending.items() if sid != "c"}, {}, NOW_MS)
    later = NOW_MS + 40_000  # past half the TTL: a and b are due for a refresh
    more = [Event(s, 2000, np.zeros(1, np.float32), SourceRecord("e", 0, 3 + i, None, b"")) for i, s in enumerate("ab")]
    peek = store.peek(more, detector=False, now_ms=later)
    assert peek.new_series == [] and sorted(peek.refresh) == ["a", "b"]
    assert store.admit([], peek.refresh, later) == (set(), 2)
    store.write(peek.pending, {}, later)
    assert store.admit(["c"], [], NOW_MS + 70_000) == (set(), 2)  # renewed: a and b still count
    assert store.admit(["c"], [], later + 61_000) == ({"c"}, 1)
    assert client.zcard(registry_key("vrae")) == 1


def test_script_is_reloaded_after_a_script_flush(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = RedisStateStore(client, WindowSpec(window=2, n_features=1))
    apply(store, [Event("s", 1, np.zeros(1, np.float32), SourceRecord("e", 0, 0, None, b""))])
    client.script_flush()
    result = apply(store, [Event("s", 2, np.zeros(1, np.float32), SourceRecord("e", 0, 1, None, b""))])
    assert result.outcomes == [Outcome.ACCEPTED] and len(result.windows) == 1


def test_store_runs_on_redis_cluster(tmp_path) -> None:
    """One-node cluster owning every slot: the cluster client, pipeline and hash-tagged keys work."""
    from worker.config import RedisSettings
    from worker.state.redis_store import connect
    from worker.tools import local_services

    flags = ["--cluster-enabled", "yes", "--cluster-config-file", str(tmp_path / "nodes.conf"),
             "--cluster-port", str(local_services.free_port())]
    with local_services.start_redis(log_dir=tmp_path, extra_args=flags) as node:
        admin = redis.Redis(port=node.port)
        admin.execute_command("CLUSTER ADDSLOTSRANGE", 0, 16383)
        local_services.wait_until(lambda: admin.cluster("info")["cluster_state"] == "ok", 10, "cluster")
        client = connect(RedisSettings(url=local_services.redis_url(node), cluster=True))
        spec = WindowSpec(window=2, n_features=1)
        events = [Event(series, ts, np.zeros(1, np.float32), SourceRecord("e", 0, offset, None, b""))
                  for offset, (series, ts) in enumerate([("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 2)])]
        store = RedisStateStore(client, spec, max_series=10)
        assert store.admit(["a", "b"], [], NOW_MS)[0] == {"a", "b"}
        result = apply(store, events, {"a": (2).to_bytes(8, "little")})
        assert result.outcomes[-1] == Outcome.DUPLICATE
        assert [(w.series_id, w.end_ms) for w in result.windows] == [("a", 2), ("b", 2)]
        assert store.peek(events[:1], detector=True, now_ms=NOW_MS).detector_states == {"a": (2).to_bytes(8, "little")}
        # a detector state's changed start alone, as the worker writes it (worker.state.codec.StateLayout)
        first, second = detector_states(2)
        partial = RedisStateStore(client, spec, key_prefix="p", detector_cache_bytes=1 << 20,
                                  detector_layout=state_layout(1))
        partial.write({}, {"a": first}, NOW_MS)
        partial.write({}, {"a": second}, NOW_MS)
        assert client.get(detector_key("p", "a")) == second
        assert client.info("commandstats").get("cmdstat_setrange", {}).get("calls", 0) == 1
        client.close()


def detector_states(n: int) -> list[bytes]:
    """One series' detector states after each of its first n windows (they differ in their start only)."""
    settings = CalibrationSettings()
    batch = Batch.fresh(1, 1, settings)
    reference = Reference(median=np.zeros(1), scale=np.ones(1), mean=np.zeros(1), std=np.ones(1),
                          window=2)
    states = []
    for i in range(n):
        step(batch, np.array([0.5]), np.ones((1, 1)), np.array([i * 1000]), np.array([(i + 1) * 1000]),
             np.zeros((1, 1)), reference, settings)
        states.append(encode_states(batch)[0])
    return states


def test_state_from_a_model_of_another_shape_is_reused_or_restarted_safely(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)

    def events(n: int, n_features: int, first_offset: int) -> list[Event]:
        return [Event("s", 1000 * (first_offset + i + 1), np.full(n_features, i, np.float32),
                      SourceRecord("e", 0, first_offset + i, None, b"")) for i in range(n)]

    apply(RedisStateStore(client, WindowSpec(window=4, n_features=1)), events(10, 1, 0))
    longer = apply(RedisStateStore(client, WindowSpec(window=6, n_features=1)), events(3, 1, 10))
    assert [w.values.shape for w in longer.windows] == [(6, 1)]  # buffer of 3 grows to 6 first
    wider = apply(RedisStateStore(client, WindowSpec(window=2, n_features=3)), events(2, 3, 13))
    assert wider.new_series == ["s"] and [w.values.shape for w in wider.windows] == [(2, 3)]
