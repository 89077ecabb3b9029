"""The worker's copy of the detector states it wrote: marks, and a bounded size."""

from worker.state.cache import NO_MARK, DetectorStateCache
from worker.state.codec import MARK_BYTES


def state(mark: int, size: int = 100) -> bytes:
    return mark.to_bytes(MARK_BYTES, "little") + bytes(size - MARK_BYTES)


def test_a_series_without_a_cached_state_sends_no_mark() -> None:
    cache = DetectorStateCache(1000)
    assert cache.mark("s") == NO_MARK and cache.get("s") is None
    cache.put({"s": state(7)})
    assert cache.mark("s") == state(7)[:MARK_BYTES] and cache.get("s") == state(7)


def test_the_series_written_longest_ago_go_first() -> None:
    cache = DetectorStateCache(300)
    cache.put({"a": state(1), "b": state(2), "c": state(3)})
    cache.put({"a": state(4)})  # written again: now the newest
    cache.put({"d": state(5)})
    assert cache.get("b") is None and [cache.get(s) for s in "cad"] == [state(3), state(4), state(5)]
    assert len(cache) == 3 and cache.nbytes == 300


def test_a_state_larger_than_the_budget_is_not_kept() -> None:
    cache = DetectorStateCache(50)
    cache.put({"s": state(1)})
    assert cache.get("s") is None and cache.nbytes == 0


def test_when_the_ttl_was_set_is_kept_with_the_state_and_forgotten_with_it() -> None:
    cache = DetectorStateCache(200)
    cache.put({"a": state(1), "b": state(2)}, ttl_set=["a"], now_ms=1_000)
    assert cache.ttl_set_ms("a") == 1_000 and cache.ttl_set_ms("b") is None
    cache.put({"a": state(3)})  # a part that kept the TTL: the note stays
    assert cache.ttl_set_ms("a") == 1_000
    cache.put({"c": state(4)}, ttl_set=["c"], now_ms=2_000)  # "b" goes first, then "a"
    cache.put({"b": state(5)})
    assert cache.get("a") is None and cache.ttl_set_ms("a") is None and cache.ttl_set_ms("c") == 2_000
