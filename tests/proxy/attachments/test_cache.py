"""The tiered attachment cache (SPEC §9.3 rule 4): LRU, TTL, caps, promotion, tenant keys."""

from __future__ import annotations

import os

from proxy.attachments.budget import Spool
from proxy.attachments.cache import CacheConfig, TieredCache, cache_key


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def spool_of(data: bytes) -> Spool:
    spool = Spool(None)
    spool.write(data)
    return spool


def make(clock: Clock, lookups: list[tuple[str, str]] | None = None, **config) -> TieredCache:
    seen = lookups if lookups is not None else []
    return TieredCache(
        CacheConfig(**config),
        on_lookup=lambda tier, result: seen.append((tier, result)),
        clock=clock,
    )


def read(cache: TieredCache, key: str) -> bytes | None:
    spool = cache.get(key)
    if spool is None:
        return None
    data = spool.read_bytes()
    spool.close()
    return data


def test_keys_belong_to_one_tenant() -> None:
    assert cache_key("acme", "ABC") == "acme:abc"
    assert cache_key("acme", "abc") != cache_key("other", "abc")


def test_memory_hit_and_miss_are_counted() -> None:
    clock, lookups = Clock(), []
    cache = make(clock, lookups)
    assert read(cache, "t:1") is None
    cache.put("t:1", spool_of(b"data"))
    assert read(cache, "t:1") == b"data"
    assert lookups == [("memory", "miss"), ("memory", "hit")]


def test_expired_memory_entries_are_never_served() -> None:
    clock = Clock()
    cache = make(clock, memory_ttl_s=10)
    cache.put("t:1", spool_of(b"data"))
    clock.now += 9.9
    assert read(cache, "t:1") == b"data"
    clock.now += 0.1
    assert read(cache, "t:1") is None


def test_the_memory_tier_evicts_least_recently_used_to_fit_its_cap() -> None:
    cache = make(Clock(), memory_max_bytes=25, threshold_bytes=100)
    for key in ("t:a", "t:b"):
        cache.put(key, spool_of(b"x" * 10))
    assert read(cache, "t:a") is not None  # a is now more recent than b
    cache.put("t:c", spool_of(b"y" * 10))
    assert read(cache, "t:b") is None
    assert read(cache, "t:a") is not None
    assert read(cache, "t:c") is not None


def test_items_at_the_threshold_skip_memory_and_zero_mb_disables_it() -> None:
    lookups: list[tuple[str, str]] = []
    cache = make(Clock(), lookups, threshold_bytes=10)
    cache.put("t:big", spool_of(b"z" * 10))
    assert read(cache, "t:big") is None
    off = make(Clock(), lookups, memory_max_bytes=0)
    off.put("t:1", spool_of(b"data"))
    lookups.clear()
    assert read(off, "t:1") is None
    assert lookups == []  # no tier asked, nothing counted


def test_the_disk_tier_serves_large_items_and_promotes_small_ones(tmp_path) -> None:
    clock, lookups = Clock(), []
    cache = make(clock, lookups, disk_dir=str(tmp_path), threshold_bytes=100)
    big, small = os.urandom(1000), b"small"
    cache.put("t:big", spool_of(big))
    cache.put("t:small", spool_of(small))
    cache._memory.clear()
    cache._memory_bytes = 0
    lookups.clear()
    assert read(cache, "t:big") == big
    assert lookups == [("memory", "miss"), ("disk", "hit")]
    assert read(cache, "t:small") == small
    lookups.clear()
    assert read(cache, "t:small") == small
    assert lookups == [("memory", "hit")]


def test_expired_disk_entries_are_deleted_not_served(tmp_path) -> None:
    clock = Clock()
    cache = make(clock, disk_dir=str(tmp_path), disk_ttl_s=60, memory_max_bytes=0)
    cache.put("t:1", spool_of(b"data"))
    clock.now += 60
    assert read(cache, "t:1") is None
    assert [p for p in os.listdir(tmp_path) if p.endswith(".bin")] == []


def test_the_disk_tier_evicts_the_oldest_to_fit_its_cap(tmp_path) -> None:
    clock = Clock()
    cache = make(clock, disk_dir=str(tmp_path), disk_max_bytes=250, memory_max_bytes=0)
    for index in range(3):
        cache.put(f"t:{index}", spool_of(bytes([index]) * 100))
        clock.now += 1
    assert read(cache, "t:0") is None
    assert read(cache, "t:1") == b"\x01" * 100
    assert read(cache, "t:2") == b"\x02" * 100


def test_a_new_process_finds_the_disk_entries_of_the_last(tmp_path) -> None:
    cache = make(Clock(), disk_dir=str(tmp_path), memory_max_bytes=0)
    cache.put("t:1", spool_of(b"kept"))
    again = TieredCache(CacheConfig(disk_dir=str(tmp_path), memory_max_bytes=0))
    assert read(again, "t:1") == b"kept"


def test_an_entry_evicted_while_read_stays_readable(tmp_path) -> None:
    cache = make(Clock(), disk_dir=str(tmp_path), memory_max_bytes=0, disk_max_bytes=150)
    cache.put("t:1", spool_of(b"1" * 100))
    spool = cache.get("t:1")
    assert spool is not None
    cache.put("t:2", spool_of(b"2" * 100))  # evicts t:1 from disk
    assert spool.read_bytes() == b"1" * 100
    spool.close()
