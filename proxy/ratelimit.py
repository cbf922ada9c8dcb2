"""Pure rate-limit policy (SPEC §7): which limits apply, their windows, and the verdict.

No database, network, actor or clock here: ``now`` is an argument and the
counts come from the caller (``proxy.store.ratelimits`` reads and updates them
atomically). Windows are aligned to the Unix epoch in UTC and nest (a minute
divides an hour, an hour a day), so the end of any window is also a boundary
of every shorter one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # annotations only: importing the store package would pull in peewee
    from proxy.store.records import AccountRecord, TenantRecord

WINDOWS: Mapping[str, int] = {"minute": 60, "hour": 3600, "day": 86400}

Scope = Literal["account", "tenant"]
Behavior = Literal["defer", "reject"]

# (window, field on the account) and (window, key in tenant.rate_limits), in check order.
_ACCOUNT_FIELDS = (
    ("minute", "limit_per_minute"),
    ("hour", "limit_per_hour"),
    ("day", "limit_per_day"),
)
_TENANT_KEYS = (("hour", "hourly"), ("day", "daily"))


@dataclass(frozen=True, slots=True)
class Limit:
    """One cap on one window; ``label`` is the wording of SPEC §7.4 (``tenant hourly (1000)``)."""

    scope: Scope
    window: str
    limit: int
    behavior: Behavior
    label: str

    def __post_init__(self) -> None:
        if self.window not in WINDOWS:
            raise ValueError(f"unknown rate-limit window {self.window!r}")
        if self.limit < 1:
            raise ValueError("a limit must be at least 1 (0 or null means no limit)")


@dataclass(frozen=True, slots=True)
class Allow:
    """Every applicable window has room: send, keeping the reserved unit."""


@dataclass(frozen=True, slots=True)
class Defer:
    """Try again at ``until_ts`` (a window boundary); ``reason`` goes into the deferred event."""

    until_ts: int
    reason: str


@dataclass(frozen=True, slots=True)
class Reject:
    """End the message as ``error`` with ``reason`` (SPEC §7.4 rule 3)."""

    reason: str


Decision = Allow | Defer | Reject


def normalize_behavior(value: object) -> Behavior:
    """``reject`` (or its alias ``error``) rejects; anything else defers, the safe default."""
    return "reject" if value in ("reject", "error") else "defer"


def limits_for(account: AccountRecord, tenant: TenantRecord | None) -> tuple[Limit, ...]:
    """The limits one send of ``account`` must respect: its own, then its tenant's (SPEC §7.2-3).

    A null or 0 value means no limit for that window, so it yields no ``Limit``.
    """
    limits: list[Limit] = []
    account_behavior = normalize_behavior(account.limit_behavior)
    for window, name in _ACCOUNT_FIELDS:
        value = getattr(account, name)
        if value:
            limits.append(
                Limit("account", window, int(value), account_behavior, f"account {name} ({value})")
            )
    rate_limits = (tenant.rate_limits if tenant is not None else None) or {}
    tenant_behavior = normalize_behavior(rate_limits.get("behavior"))
    for window, key in _TENANT_KEYS:
        value = rate_limits.get(key)
        if value:
            limits.append(
                Limit("tenant", window, int(value), tenant_behavior, f"tenant {key} ({value})")
            )
    return tuple(limits)


def window_start(window: str, now: int) -> int:
    """Start of the epoch-aligned UTC window holding ``now`` (SPEC §7.1 rule 1)."""
    size = WINDOWS[window]
    return now // size * size


def window_end(window: str, now: int) -> int:
    """Start of the next window: the first second no longer counted in ``now``'s window."""
    return window_start(window, now) + WINDOWS[window]


def scope_key(limit: Limit, *, tenant_id: str, account_id: str) -> str:
    """The counter's scope: ``account:<tenant_id>:<account_id>`` or ``tenant:<tenant_id>``.

    Tenant limits share one counter across all the tenant's accounts.
    """
    if limit.scope == "account":
        return f"account:{tenant_id}:{account_id}"
    return f"tenant:{tenant_id}"


def decide(counts: Mapping[Limit, int], limits: Sequence[Limit], now: int) -> Decision:
    """Check every limit together (SPEC §7.4); a missing count is 0.

    A limit is reached when its window's count (sent plus in flight) is at
    least the limit. ``reject`` wins over ``defer``; a deferral lasts until the
    end of the latest-ending reached window, so a message that hit both the
    minute and the day limit waits for the next UTC midnight, not the next
    minute. Among reached limits ending together, the first in ``limits`` names
    the reason.
    """
    reached = [limit for limit in limits if counts.get(limit, 0) >= limit.limit]
    if not reached:
        return Allow()
    rejecting = [limit for limit in reached if limit.behavior == "reject"]
    if rejecting:
        return Reject(f"rate limit exceeded: {_latest_ending(rejecting, now).label}")
    latest = _latest_ending(reached, now)
    return Defer(until_ts=window_end(latest.window, now), reason=f"rate limit: {latest.label}")


def deferred_metadata(defer: Defer, *, retry_count: int) -> dict[str, object]:
    """Metadata of the ``deferred`` event a rate-limit deferral writes (SPEC §5.3).

    Its description is ``defer.reason``; ``retry_count`` is the message's
    unchanged count (rate-limit deferrals never increment it, SPEC §6.5 rule 7).
    """
    return {"next_attempt_ts": defer.until_ts, "retry_count": retry_count, "reason": "rate_limit"}


def _latest_ending(limits: Sequence[Limit], now: int) -> Limit:
    # max() keeps the first of equal keys, so the order of ``limits`` breaks ties.
    return max(limits, key=lambda limit: window_end(limit.window, now))
