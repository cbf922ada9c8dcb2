"""Pure rate-limit policy: windows, applicable limits, the verdict and its wording (SPEC §7)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.ratelimit import (
    WINDOWS,
    Allow,
    Defer,
    Limit,
    Reject,
    decide,
    deferred_metadata,
    limits_for,
    scope_key,
    window_end,
    window_start,
)
from proxy.store.records import AccountRecord, TenantRecord

MIDNIGHT = 1_767_225_600  # 2026-01-01T00:00:00Z
NOW = MIDNIGHT + 10 * 3600 + 30 * 60 + 15  # 10:30:15 UTC

PER_MINUTE = Limit("account", "minute", 60, "defer", "account limit_per_minute (60)")
PER_HOUR_REJECT = Limit("account", "hour", 100, "reject", "account limit_per_hour (100)")
PER_DAY = Limit("account", "day", 500, "defer", "account limit_per_day (500)")
TENANT_HOURLY = Limit("tenant", "hour", 1000, "defer", "tenant hourly (1000)")
TENANT_DAILY = Limit("tenant", "day", 5000, "defer", "tenant daily (5000)")


def _account(**limits: object) -> AccountRecord:
    fields = dict.fromkeys(AccountRecord.__dataclass_fields__)
    fields |= {"tenant_id": "acme", "id": "main", "host": "smtp.example", "port": 25}
    fields |= {"tls_verify": True, "ttl": 300, "limit_behavior": "defer"}
    fields |= {"is_pec_account": False, "created_ts": 0, "updated_ts": 0}
    return AccountRecord(**(fields | limits))


def _tenant(rate_limits: dict[str, object] | None) -> TenantRecord:
    fields = dict.fromkeys(TenantRecord.__dataclass_fields__)
    fields |= {"id": "acme", "active": True, "suspended_batches": ()}
    fields |= {"consecutive_failures": 0, "created_ts": 0, "updated_ts": 0}
    return TenantRecord(**(fields | {"rate_limits": rate_limits}))


# -- windows -------------------------------------------------------------------


def _utc(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def test_windows_align_to_utc_boundaries() -> None:
    last_second = MIDNIGHT + 86_399  # 23:59:59 UTC
    assert window_start("minute", last_second) == MIDNIGHT + 86_340
    assert window_start("hour", last_second) == MIDNIGHT + 82_800
    assert window_start("day", last_second) == MIDNIGHT
    for window in WINDOWS:
        assert window_end(window, last_second) == MIDNIGHT + 86_400
        assert window_start(window, MIDNIGHT) == MIDNIGHT  # a boundary starts its window
        assert window_end(window, MIDNIGHT) == MIDNIGHT + WINDOWS[window]
    assert _utc(window_start("day", NOW)).strftime("%H:%M:%S") == "00:00:00"
    assert _utc(window_start("hour", NOW)).strftime("%H:%M:%S") == "10:00:00"
    assert _utc(window_start("minute", NOW)).strftime("%H:%M:%S") == "10:30:00"


# -- applicable limits -------------------------------------------------------------


def test_limits_for_lists_account_then_tenant_limits_with_their_behaviour() -> None:
    account = _account(
        limit_per_minute=60, limit_per_hour=0, limit_per_day=None, limit_behavior="reject"
    )
    tenant = _tenant({"hourly": 1000, "daily": 0})
    assert limits_for(account, tenant) == (
        Limit("account", "minute", 60, "reject", "account limit_per_minute (60)"),
        Limit("tenant", "hour", 1000, "defer", "tenant hourly (1000)"),
    )


def test_limits_for_every_window() -> None:
    account = _account(limit_per_minute=1, limit_per_hour=2, limit_per_day=3)
    tenant = _tenant({"hourly": 4, "daily": 5, "behavior": "reject"})
    labels = [(lim.window, lim.behavior, lim.label) for lim in limits_for(account, tenant)]
    assert labels == [
        ("minute", "defer", "account limit_per_minute (1)"),
        ("hour", "defer", "account limit_per_hour (2)"),
        ("day", "defer", "account limit_per_day (3)"),
        ("hour", "reject", "tenant hourly (4)"),
        ("day", "reject", "tenant daily (5)"),
    ]


@pytest.mark.parametrize("rate_limits", [None, {}, {"hourly": 0, "daily": None}])
def test_no_limits_configured_means_none_apply(rate_limits: dict[str, object] | None) -> None:
    assert limits_for(_account(limit_per_minute=0), _tenant(rate_limits)) == ()
    assert limits_for(_account(), None) == ()


def test_error_is_an_alias_of_reject() -> None:
    (limit,) = limits_for(_account(limit_per_day=9, limit_behavior="error"), None)
    assert limit.behavior == "reject"


@pytest.mark.parametrize(("window", "value"), [("week", 5), ("minute", 0), ("hour", -1)])
def test_a_limit_needs_a_known_window_and_a_positive_value(window: str, value: int) -> None:
    with pytest.raises(ValueError, match=r"window|at least 1"):
        Limit("account", window, value, "defer", "x")


# -- decisions and their wording -------------------------------------------------------


def test_below_every_limit_allows() -> None:
    limits = [PER_MINUTE, PER_HOUR_REJECT, TENANT_HOURLY]
    counts = {PER_MINUTE: 59, PER_HOUR_REJECT: 99, TENANT_HOURLY: 999}
    assert decide(counts, limits, NOW) == Allow()
    assert decide({}, limits, NOW) == Allow()  # a missing count is 0
    assert decide({}, [], NOW) == Allow()


def test_reaching_the_minute_limit_defers_to_the_next_minute() -> None:
    assert decide({PER_MINUTE: 60}, [PER_MINUTE, PER_DAY], NOW) == Defer(
        until_ts=MIDNIGHT + 10 * 3600 + 31 * 60, reason="rate limit: account limit_per_minute (60)"
    )


def test_minute_and_day_reached_defers_to_the_next_utc_midnight() -> None:
    decision = decide({PER_MINUTE: 60, PER_DAY: 500}, [PER_MINUTE, PER_DAY], NOW)
    assert decision == Defer(
        until_ts=MIDNIGHT + 86_400, reason="rate limit: account limit_per_day (500)"
    )
    assert _utc(decision.until_ts).strftime("%Y-%m-%d %H:%M:%S") == "2026-01-02 00:00:00"


def test_reject_wins_when_a_defer_and_a_reject_limit_are_both_reached() -> None:
    counts = {PER_MINUTE: 60, PER_HOUR_REJECT: 100}
    assert decide(counts, [PER_MINUTE, PER_HOUR_REJECT], NOW) == Reject(
        "rate limit exceeded: account limit_per_hour (100)"
    )


def test_tenant_limit_reached_uses_the_tenant_wording() -> None:
    decision = decide({TENANT_HOURLY: 1000}, [PER_MINUTE, TENANT_HOURLY], NOW)
    assert decision == Defer(
        until_ts=MIDNIGHT + 11 * 3600, reason="rate limit: tenant hourly (1000)"
    )


def test_equal_window_ends_name_the_first_limit_given() -> None:
    counts = {PER_DAY: 500, TENANT_DAILY: 5000}
    assert decide(counts, [PER_DAY, TENANT_DAILY], NOW).reason == (
        "rate limit: account limit_per_day (500)"
    )


def test_deferred_metadata_keeps_the_retry_count() -> None:
    defer = Defer(until_ts=NOW + 45, reason="rate limit: account limit_per_minute (60)")
    assert deferred_metadata(defer, retry_count=2) == {
        "next_attempt_ts": NOW + 45,
        "retry_count": 2,
        "reason": "rate_limit",
    }


# -- a model of the counters: what the store does, in memory -------------------------


class Counters:
    """In-memory stand-in for ``RateLimitStore``: same keys, same decide-then-increment."""

    def __init__(self) -> None:
        self.rows: Counter[tuple[str, str, int]] = Counter()
        self.caps: dict[tuple[str, str, int], int] = {}

    def _key(self, limit: Limit, tenant_id: str, account_id: str, at: int) -> tuple[str, str, int]:
        key = (
            scope_key(limit, tenant_id=tenant_id, account_id=account_id),
            limit.window,
            window_start(limit.window, at),
        )
        self.caps[key] = min(self.caps.get(key, limit.limit), limit.limit)
        return key

    def reserve(self, limits: list[Limit], tenant_id: str, account_id: str, now: int) -> object:
        keys = {lim: self._key(lim, tenant_id, account_id, now) for lim in limits}
        decision = decide({lim: self.rows[key] for lim, key in keys.items()}, limits, now)
        if decision == Allow():
            for key in set(keys.values()):
                self.rows[key] += 1
        return decision

    def release(self, limits: list[Limit], tenant_id: str, account_id: str, at: int) -> None:
        for key in {self._key(lim, tenant_id, account_id, at) for lim in limits}:
            self.rows[key] = max(0, self.rows[key] - 1)


def test_tenant_limit_is_shared_by_the_tenants_accounts() -> None:
    counters = Counters()
    limits = [PER_MINUTE, TENANT_HOURLY]
    for i in range(1000):  # 500 sends each, spread so no minute fills
        now = window_start("hour", NOW) + i * 3
        assert counters.reserve(limits, "acme", "a" if i % 2 else "b", now) == Allow()
    late = window_start("hour", NOW) + 3500
    for account in ("a", "b", "c"):
        assert counters.reserve(limits, "acme", account, late) == Defer(
            until_ts=MIDNIGHT + 11 * 3600, reason="rate limit: tenant hourly (1000)"
        )
    assert counters.reserve(limits, "other", "a", late) == Allow()  # another tenant's own counter


# -- properties ---------------------------------------------------------------------

behaviors = st.sampled_from(["defer", "reject"])


@st.composite
def limits_strategy(draw: st.DrawFn, *, max_limit: int = 5) -> Limit:
    scope = draw(st.sampled_from(["account", "tenant"]))
    window = draw(st.sampled_from(list(WINDOWS)))
    value = draw(st.integers(1, max_limit))
    return Limit(scope, window, value, draw(behaviors), f"{scope} {window} ({value})")


timestamps = st.integers(0, 4_000_000_000)


@given(
    limits=st.lists(limits_strategy(), min_size=1, max_size=5, unique=True),
    operations=st.lists(
        st.tuples(st.sampled_from(["reserve", "commit", "release"]), st.integers(0, 2)),
        max_size=60,
    ),
    steps=st.lists(st.sampled_from([0, 1, 7, 59, 600, 3599, 86_000]), min_size=1),
    start=timestamps,
)
def test_no_sequence_of_operations_lets_a_window_exceed_its_limit(
    limits: list[Limit], operations: list[tuple[str, int]], steps: list[int], start: int
) -> None:
    counters = Counters()
    in_flight: list[tuple[str, int]] = []  # (account, reserved_at)
    now = start
    for i, (operation, who) in enumerate(operations):
        now += steps[i % len(steps)]
        account = f"acct{who}"
        if operation == "reserve":
            if counters.reserve(limits, "acme", account, now) == Allow():
                in_flight.append((account, now))
        elif in_flight and operation == "commit":
            in_flight.pop(who % len(in_flight))  # the successful send keeps its unit
        elif in_flight:
            account, reserved_at = in_flight.pop(who % len(in_flight))
            counters.release(limits, "acme", account, reserved_at)
        for key, count in counters.rows.items():
            assert 0 <= count <= counters.caps[key], key


@given(
    limits=st.lists(limits_strategy(max_limit=3), min_size=1, max_size=5, unique=True),
    counts=st.lists(st.integers(0, 4), min_size=5, max_size=5),
    now=timestamps,
)
def test_a_deferral_ends_on_the_latest_window_boundary_after_now(
    limits: list[Limit], counts: list[int], now: int
) -> None:
    decision = decide(dict(zip(limits, counts, strict=False)), limits, now)
    reached = [lim for lim, n in zip(limits, counts, strict=False) if n >= lim.limit]
    assert isinstance(decision, Allow) == (not reached)
    if isinstance(decision, Defer):
        assert decision.until_ts > now
        assert decision.until_ts % 60 == 0
        assert decision.until_ts == max(window_end(lim.window, now) for lim in reached)
        assert all(lim.behavior == "defer" for lim in reached)
        assert decision.reason.startswith("rate limit: ")
    if isinstance(decision, Reject):
        assert any(lim.behavior == "reject" for lim in reached)
        assert decision.reason.startswith("rate limit exceeded: ")


@given(
    limits=st.lists(limits_strategy(), min_size=1, max_size=5, unique=True),
    counts=st.lists(st.integers(0, 6), min_size=5, max_size=5),
    bump=st.tuples(st.integers(0, 4), st.integers(1, 6)),
    now=timestamps,
)
def test_raising_a_count_never_relaxes_the_decision(
    limits: list[Limit], counts: list[int], bump: tuple[int, int], now: int
) -> None:
    before = dict(zip(limits, counts, strict=False))
    target = limits[bump[0] % len(limits)]
    after = before | {target: before.get(target, 0) + bump[1]}
    first, second = decide(before, limits, now), decide(after, limits, now)
    if not isinstance(first, Allow):
        assert not isinstance(second, Allow)
    if isinstance(first, Reject):
        assert isinstance(second, Reject)


def test_limits_are_hashable_values() -> None:
    copy = dataclasses.replace(PER_MINUTE)
    assert {PER_MINUTE: 1}[copy] == 1
