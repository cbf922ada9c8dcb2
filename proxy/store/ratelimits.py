"""Rate-limit counters (SPEC §7.1, §18.4): reserve a unit in every window at once, give it back.

The policy is ``proxy.ratelimit.decide``; this module only makes it atomic.
A reservation reads the counts of every applicable window, decides and, when
allowed, increments them all in one transaction, so two accounts of one tenant
racing, or several instances on one PostgreSQL database, never exceed a limit.
On PostgreSQL the counter rows are created if missing and locked
(``SELECT … FOR UPDATE``, in one fixed order so racers cannot deadlock); on
SQLite the ``BEGIN IMMEDIATE`` transaction already serialises writers.

Rows are keyed by scope (``account:<tenant_id>:<account_id>`` or
``tenant:<tenant_id>``), window (``minute`` | ``hour`` | ``day``) and the
epoch-aligned start of that window.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Collection, Sequence
from typing import NamedTuple

import peewee

from proxy import ratelimit
from proxy.ratelimit import Allow, Decision, Limit
from proxy.store import models
from proxy.store.db import locked

RC = models.RateCounter
RETENTION_S = 2 * ratelimit.WINDOWS["day"]  # SPEC §7.1 rule 4: rows older than two days go


class CounterKey(NamedTuple):
    scope: str
    window: str
    window_start: int


def counter_key(limit: Limit, *, tenant_id: str, account_id: str, at: int) -> CounterKey:
    """The row counting ``limit``'s window that holds the time ``at``."""
    return CounterKey(
        ratelimit.scope_key(limit, tenant_id=tenant_id, account_id=account_id),
        limit.window,
        ratelimit.window_start(limit.window, at),
    )


def _match(key: CounterKey) -> peewee.Expression:
    return (
        (RC.scope == key.scope) & (RC.window == key.window) & (RC.window_start == key.window_start)
    )


def _matches(keys: Collection[CounterKey]) -> peewee.Expression:
    return functools.reduce(operator.or_, (_match(key) for key in keys))


class RateLimitStore:
    def __init__(self, db: peewee.Database, *, is_sqlite: bool) -> None:
        self._db = db
        self._is_sqlite = is_sqlite

    def reserve(
        self, limits: Sequence[Limit], *, tenant_id: str, account_id: str, now: int
    ) -> Decision:
        """Take one unit in every window of ``limits`` if all have room; else say why not.

        On ``Allow`` the unit is held (a successful send keeps it, a failed
        attempt calls ``release``); on ``Defer`` or ``Reject`` no count changes
        (PostgreSQL may keep a zero row it created to lock).
        """
        if not limits:
            return Allow()
        keys = {
            limit: counter_key(limit, tenant_id=tenant_id, account_id=account_id, at=now)
            for limit in limits
        }
        distinct = sorted(set(keys.values()))
        with self._db.atomic():
            found = self._read_for_update(distinct)
            counts = {limit: found.get(key, 0) for limit, key in keys.items()}
            decision = ratelimit.decide(counts, limits, now)
            if isinstance(decision, Allow):
                for key in distinct:
                    _increment(key)
        return decision

    def release(
        self, limits: Sequence[Limit], *, tenant_id: str, account_id: str, reserved_at: int
    ) -> None:
        """Give back a failed attempt's unit, in the windows of the reservation, not of now.

        A send that straddled a window boundary thus frees the unit where it
        was counted; a count never goes below zero.
        """
        keys = sorted(
            {
                counter_key(limit, tenant_id=tenant_id, account_id=account_id, at=reserved_at)
                for limit in limits
            }
        )
        if not keys:
            return
        with self._db.atomic():
            for key in keys:
                RC.update(count=RC.count - 1).where(_match(key) & (RC.count > 0)).execute()

    def counts(
        self, limits: Sequence[Limit], *, tenant_id: str, account_id: str, now: int
    ) -> dict[Limit, int]:
        """The current count of each limit's window (0 when no row exists yet)."""
        keys = {
            limit: counter_key(limit, tenant_id=tenant_id, account_id=account_id, at=now)
            for limit in limits
        }
        if not keys:
            return {}
        found = _read(set(keys.values()))
        return {limit: found.get(key, 0) for limit, key in keys.items()}

    def prune(self, now: int) -> int:
        """Delete counter rows whose window started more than two days before ``now``."""
        with self._db.atomic():
            return RC.delete().where(RC.window_start < now - RETENTION_S).execute()

    def _read_for_update(self, keys: Sequence[CounterKey]) -> dict[CounterKey, int]:
        """Read the counts inside the caller's transaction, locking the rows on PostgreSQL.

        Missing rows are created first (count 0) so there is a row to lock;
        ``ON CONFLICT DO NOTHING`` makes a racer wait for, then skip, ours.
        """
        if self._is_sqlite:
            return _read(keys)
        RC.insert_many(
            [{"scope": k.scope, "window": k.window, "window_start": k.window_start} for k in keys]
        ).on_conflict_ignore().execute()
        query = locked(
            RC.select(RC.scope, RC.window, RC.window_start, RC.count)
            .where(_matches(keys))
            .order_by(RC.scope, RC.window, RC.window_start),
            self._db,
        )
        return {CounterKey(r.scope, r.window, r.window_start): r.count for r in query}


def _read(keys: Collection[CounterKey]) -> dict[CounterKey, int]:
    query = RC.select(RC.scope, RC.window, RC.window_start, RC.count).where(_matches(keys))
    return {CounterKey(r.scope, r.window, r.window_start): r.count for r in query}


def _increment(key: CounterKey) -> None:
    RC.insert(
        scope=key.scope, window=key.window, window_start=key.window_start, count=1
    ).on_conflict(
        conflict_target=[RC.scope, RC.window, RC.window_start],
        update={RC.count: RC.count + 1},
    ).execute()
