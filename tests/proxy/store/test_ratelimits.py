"""Rate-limit counters in the database: atomic reservations, release, pruning, restarts."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

from proxy.ratelimit import Allow, Defer, Limit, Reject
from proxy.store import Database, models, open_store
from proxy.store.ratelimits import RateLimitStore

MIDNIGHT = 1_767_225_600  # 2026-01-01T00:00:00Z
NOW = MIDNIGHT + 10 * 3600 + 30 * 60 + 15  # 10:30:15 UTC
NEXT_MINUTE = MIDNIGHT + 10 * 3600 + 31 * 60

PER_MINUTE = Limit("account", "minute", 3, "defer", "account limit_per_minute (3)")
PER_DAY = Limit("account", "day", 5, "defer", "account limit_per_day (5)")
PER_HOUR_REJECT = Limit("account", "hour", 2, "reject", "account limit_per_hour (2)")
TENANT_HOURLY = Limit("tenant", "hour", 4, "defer", "tenant hourly (4)")


def _limits(store: Database) -> RateLimitStore:
    return store.ratelimits


def _reserve(rl: RateLimitStore, limits: list[Limit], *, account: str = "main", now: int = NOW):
    return rl.reserve(limits, tenant_id="acme", account_id=account, now=now)


def _rows() -> set[tuple[str, str, int, int]]:
    rc = models.RateCounter
    return {(r.scope, r.window, r.window_start, r.count) for r in rc.select()}


def test_reservations_fill_a_window_then_defer_to_its_end(store: Database) -> None:
    rl = _limits(store)
    limits = [PER_MINUTE, PER_DAY]
    assert [_reserve(rl, limits) for _ in range(3)] == [Allow()] * 3
    assert _reserve(rl, limits) == Defer(
        until_ts=NEXT_MINUTE, reason="rate limit: account limit_per_minute (3)"
    )
    assert _rows() == {
        ("account:acme:main", "minute", NEXT_MINUTE - 60, 3),
        ("account:acme:main", "day", MIDNIGHT, 3),  # the refused attempt took nothing
    }
    assert _reserve(rl, limits, now=NEXT_MINUTE) == Allow()  # a new minute has room
    assert _reserve(rl, limits, now=NEXT_MINUTE + 1) == Allow()
    assert _reserve(rl, limits, now=NEXT_MINUTE + 2) == Defer(
        until_ts=MIDNIGHT + 86_400, reason="rate limit: account limit_per_day (5)"
    )
    assert rl.counts(limits, tenant_id="acme", account_id="main", now=NEXT_MINUTE) == {
        PER_MINUTE: 2,
        PER_DAY: 5,
    }


def test_no_limits_allow_without_writing(store: Database) -> None:
    assert _reserve(_limits(store), []) == Allow()
    assert _rows() == set()


def test_a_reject_limit_refuses_and_counts_nothing(store: Database) -> None:
    rl = _limits(store)
    limits = [PER_MINUTE, PER_HOUR_REJECT]
    assert [_reserve(rl, limits) for _ in range(2)] == [Allow()] * 2
    assert _reserve(rl, limits) == Reject("rate limit exceeded: account limit_per_hour (2)")
    assert rl.counts(limits, tenant_id="acme", account_id="main", now=NOW) == {
        PER_MINUTE: 2,
        PER_HOUR_REJECT: 2,
    }


def test_tenant_limit_counts_every_account_of_the_tenant(store: Database) -> None:
    rl = _limits(store)
    limits = [PER_MINUTE, TENANT_HOURLY]
    assert [_reserve(rl, limits, account=a) for a in ("a", "b", "a", "b")] == [Allow()] * 4
    tenant_full = Defer(until_ts=MIDNIGHT + 11 * 3600, reason="rate limit: tenant hourly (4)")
    assert _reserve(rl, limits, account="a") == tenant_full
    assert _reserve(rl, limits, account="c") == tenant_full
    assert rl.reserve(limits, tenant_id="other", account_id="a", now=NOW) == Allow()
    assert rl.counts(limits, tenant_id="acme", account_id="c", now=NOW) == {
        PER_MINUTE: 0,
        TENANT_HOURLY: 4,
    }


def test_release_gives_back_the_unit_of_the_reservation_windows(store: Database) -> None:
    rl = _limits(store)
    limits = [PER_MINUTE, PER_DAY]
    for _ in range(3):
        _reserve(rl, limits)
    # The failed attempt ends in the next minute; its unit came from the earlier one.
    _reserve(rl, limits, now=NEXT_MINUTE)
    rl.release(limits, tenant_id="acme", account_id="main", reserved_at=NOW)
    assert rl.counts(limits, tenant_id="acme", account_id="main", now=NOW) == {
        PER_MINUTE: 2,
        PER_DAY: 3,
    }
    assert rl.counts(limits, tenant_id="acme", account_id="main", now=NEXT_MINUTE) == {
        PER_MINUTE: 1,
        PER_DAY: 3,
    }
    assert _reserve(rl, limits) == Allow()  # the freed minute slot is usable again


def test_release_never_drops_a_count_below_zero(store: Database) -> None:
    rl = _limits(store)
    rl.release([PER_MINUTE], tenant_id="acme", account_id="main", reserved_at=NOW)
    _reserve(rl, [PER_MINUTE])
    for _ in range(3):
        rl.release([PER_MINUTE], tenant_id="acme", account_id="main", reserved_at=NOW)
    assert rl.counts([PER_MINUTE], tenant_id="acme", account_id="main", now=NOW) == {PER_MINUTE: 0}
    rl.release([], tenant_id="acme", account_id="main", reserved_at=NOW)  # nothing to do


def test_prune_deletes_rows_older_than_two_days(store: Database) -> None:
    rl = _limits(store)
    limits = [PER_MINUTE, PER_DAY]
    old, recent = NOW - 2 * 86_400 - 60, NOW - 2 * 86_400 + 60
    for at in (old, recent, NOW):
        _reserve(rl, limits, now=at)
    # The old minute row, and the day row of both: that day began over two days ago.
    assert rl.prune(NOW) == 2
    starts = sorted((window, start) for _, window, start, _ in _rows())
    assert starts == [
        ("day", MIDNIGHT),
        ("minute", recent // 60 * 60),
        ("minute", NOW // 60 * 60),
    ]
    assert rl.prune(NOW) == 0


def _race(store: Database, limits: list[Limit], accounts: list[str], attempts: int) -> Counter[str]:
    """Every thread reserves ``attempts`` times at once; returns the decisions' type names."""
    rl = _limits(store)
    results: list[object] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(accounts))

    def worker(account: str) -> None:
        try:
            start.wait(timeout=10)
            mine = [_reserve(rl, limits, account=account) for _ in range(attempts)]
            with lock:
                results.extend(mine)
        except BaseException as exc:  # noqa: BLE001 (reported by the test thread)
            errors.append(exc)
        finally:
            store.release_thread_connection()

    threads = [threading.Thread(target=worker, args=(a,)) for a in accounts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)
    return Counter(type(r).__name__ for r in results)


def test_racing_reservations_never_exceed_the_limit(store: Database) -> None:
    limit = Limit("account", "hour", 40, "defer", "account limit_per_hour (40)")
    assert _race(store, [limit], ["main"] * 8, attempts=8) == {"Allow": 40, "Defer": 24}
    assert _limits(store).counts([limit], tenant_id="acme", account_id="main", now=NOW) == {
        limit: 40
    }


def test_racing_accounts_of_one_tenant_share_its_limit(store: Database) -> None:
    tenant_daily = Limit("tenant", "day", 25, "defer", "tenant daily (25)")
    accounts = ["a", "b", "c", "a", "b", "c"]
    assert _race(store, [tenant_daily], accounts, attempts=6) == {"Allow": 25, "Defer": 11}


def test_counters_survive_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "restart.db")
    store = open_store(path)
    try:
        for _ in range(3):
            assert _reserve(_limits(store), [PER_MINUTE]) == Allow()
    finally:
        store.close()
    reopened = open_store(path)
    try:
        rl = _limits(reopened)
        assert rl.counts([PER_MINUTE], tenant_id="acme", account_id="main", now=NOW) == {
            PER_MINUTE: 3
        }
        assert isinstance(_reserve(rl, [PER_MINUTE]), Defer)
    finally:
        reopened.close()
