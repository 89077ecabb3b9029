"""The Lua window store against a real redis-server, checked event by event against the memory store."""

import random

import numpy as np
import pytest
import redis

from worker.events import Event, SourceRecord
from worker.state.memory import MemoryWindowStore
from worker.state.redis_store import RedisWindowStore, window_key
from worker.windows import Outcome, WindowSpec

pytestmark = pytest.mark.integration


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


@pytest.mark.parametrize("window, n_features, stride, margin", [(5, 1, 1, 3), (4, 3, 3, 0), (1, 2, 1, 0),
                                                                (8, 2, 2, 8)])
def test_lua_store_matches_memory_store_event_for_event(redis_url: str, window: int, n_features: int, stride: int,
                                                        margin: int) -> None:
    rng = random.Random(window * 100 + n_features)
    spec = WindowSpec(window=window, n_features=n_features, stride=stride, replay_margin=margin, ttl_s=60)
    lua, reference = RedisWindowStore(redis.Redis.from_url(redis_url), spec), MemoryWindowStore(spec)
    events = random_stream(rng, 400, n_features)
    position, seen = 0, set()
    while position < len(events):
        batch = events[position:position + rng.randint(1, 25)]
        position += len(batch)
        got, expected = lua.apply(batch), reference.apply(batch)
        assert got.outcomes == expected.outcomes
        assert got.new_series == expected.new_series
        assert [(w.series_id, w.start_ms, w.end_ms, w.event.record.offset) for w in got.windows] == \
               [(w.series_id, w.start_ms, w.end_ms, w.event.record.offset) for w in expected.windows]
        for lua_window, memory_window in zip(got.windows, expected.windows):
            np.testing.assert_array_equal(lua_window.values, memory_window.values)
        seen.update(expected.outcomes)
    assert {Outcome.ACCEPTED, Outcome.LATE, Outcome.DUPLICATE, Outcome.REPLAYED} <= seen


def test_state_survives_a_new_store_instance_and_replays_are_recognised(redis_url: str) -> None:
    spec = WindowSpec(window=4, n_features=1, replay_margin=4)
    events = [Event("pump-7", 1000 * (i + 1), np.array([i], np.float32), SourceRecord("e", 0, i, None, b""))
              for i in range(10)]
    client = redis.Redis.from_url(redis_url)
    first = RedisWindowStore(client, spec).apply(events)
    state = client.get(window_key("vrae", "pump-7"))
    restarted = RedisWindowStore(redis.Redis.from_url(redis_url), spec)
    replay = restarted.apply(events[6:])
    assert replay.outcomes == [Outcome.REPLAYED] * 4
    assert [w.end_ms for w in replay.windows] == [w.end_ms for w in first.windows[-4:]]
    assert client.get(window_key("vrae", "pump-7")) == state


def test_series_state_fits_600_bytes_at_window_64_and_expires(redis_url: str) -> None:
    spec = WindowSpec(window=64, n_features=1, replay_margin=8, ttl_s=3600)
    events = [Event("pump-0007", 1_763_942_400_000 + 1000 * i, np.array([0.5], np.float32),
                    SourceRecord("e", 0, 10**9 + i, None, b"")) for i in range(500)]
    client = redis.Redis.from_url(redis_url)
    RedisWindowStore(client, spec).apply(events)
    key = window_key("vrae", "pump-0007")
    assert client.memory_usage(key) <= 600
    assert 3590 <= client.ttl(key) <= 3600


def test_script_is_reloaded_after_a_script_flush(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = RedisWindowStore(client, WindowSpec(window=2, n_features=1))
    store.apply([Event("s", 1, np.zeros(1, np.float32), SourceRecord("e", 0, 0, None, b""))])
    client.script_flush()
    result = store.apply([Event("s", 2, np.zeros(1, np.float32), SourceRecord("e", 0, 1, None, b""))])
    assert result.outcomes == [Outcome.ACCEPTED] and len(result.windows) == 1


def test_store_runs_on_redis_cluster(tmp_path) -> None:
    """One-node cluster owning every slot: the cluster client, pipeline and hash-tagged keys work."""
    from worker.tools import local_services
    from worker.config import RedisSettings
    from worker.state.redis_store import connect

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
        result = RedisWindowStore(client, spec).apply(events)
        assert result.outcomes[-1] == Outcome.DUPLICATE
        assert [(w.series_id, w.end_ms) for w in result.windows] == [("a", 2), ("b", 2)]
        client.close()


def test_state_from_a_model_of_another_shape_is_reused_or_restarted_safely(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)

    def events(n: int, n_features: int, first_offset: int) -> list[Event]:
        return [Event("s", 1000 * (first_offset + i + 1), np.full(n_features, i, np.float32),
                      SourceRecord("e", 0, first_offset + i, None, b"")) for i in range(n)]

    RedisWindowStore(client, WindowSpec(window=4, n_features=1, replay_margin=0)).apply(events(10, 1, 0))
    longer = RedisWindowStore(client, WindowSpec(window=6, n_features=1, replay_margin=0)).apply(events(3, 1, 10))
    assert [w.values.shape for w in longer.windows] == [(6, 1)]  # buffer of 3 grows to 6 first
    wider = RedisWindowStore(client, WindowSpec(window=2, n_features=3)).apply(events(2, 3, 13))
    assert wider.new_series == 1 and [w.values.shape for w in wider.windows] == [(2, 3)]
