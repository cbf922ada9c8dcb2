"""Sync coordination queries: the per-tenant call lease and what the sync loop must know.

The lease makes "one call per tenant in flight" hold across instances and
across a TenantActor being reaped and respawned (SPEC §10.3 rule 5). The
other queries answer the accelerated loop (were messages accepted since the
call began?) and the Supervisor's wake-up scan (which tenants are due?).
"""

from __future__ import annotations

import peewee

from proxy.store import models
from proxy.store.prepared import Prepared, Slot

L = models.SyncLease
T = models.Tenant
E = models.MessageEvent

# The sync path's statements, compiled once (proxy/store/prepared.py).
_LEASE_ROW = Prepared(
    lambda tenant_id, holder, expires: L.insert(
        tenant_id=tenant_id, holder=holder, expires_ts=expires
    ).on_conflict_ignore(),
    Slot.text(),
    Slot.text(),
    Slot.number(),
)
_TAKE_LEASE = Prepared(  # the holder twice: a slot appears once in a statement
    lambda holder, expires, tenant_id, same_holder, now: L.update(
        holder=holder, expires_ts=expires
    ).where((L.tenant_id == tenant_id) & ((L.holder == same_holder) | (L.expires_ts <= now))),
    Slot.text(),
    Slot.number(),
    Slot.text(),
    Slot.text(),
    Slot.number(),
)
_RELEASE_LEASE = Prepared(
    lambda tenant_id, holder: L.delete().where((L.tenant_id == tenant_id) & (L.holder == holder)),
    Slot.text(),
    Slot.text(),
)
_LAST_EVENT_ID = Prepared(
    lambda tenant_id: E.select(peewee.fn.MAX(E.event_id).alias("n")).where(
        E.tenant_id == tenant_id
    ),
    Slot.text(),
)


def _needing_sync(has_global_target: bool) -> Prepared:
    """The scan's query; ``now`` three times (a slot appears once in a statement)."""

    def build(now_waiting: int, now_dnd: int, now_backoff: int) -> peewee.Query:
        targeted = T.id.is_null(False) if has_global_target else T.client_base_url.is_null(False)
        heartbeat = (
            (T.active == True)  # noqa: E712 (peewee expression)
            & (T.next_sync_ts.is_null() | (T.next_sync_ts <= now_waiting))
            & (T.dnd_until.is_null() | (T.dnd_until <= now_dnd))
        )
        unreported = peewee.fn.EXISTS(
            E.select(E.event_id).where(
                (E.tenant_id == T.id) & (E.reportable == True) & E.reported_ts.is_null()  # noqa: E712
            )
        )
        backing_off = (
            (T.consecutive_failures > 0)
            & T.next_sync_ts.is_null(False)
            & (T.next_sync_ts > now_backoff)
        )
        return T.select(T.id).where(targeted & (heartbeat | (unreported & ~backing_off)))

    return Prepared(build, Slot.number(), Slot.number(), Slot.number())


_NEEDING_SYNC = {flag: _needing_sync(flag) for flag in (False, True)}


class SyncStateStore:
    def __init__(self, db: peewee.Database) -> None:
        self._db = db

    def acquire(self, tenant_id: str, holder: str, *, now: int, lease_s: int) -> bool:
        """Take (or renew) the tenant's call lease; False while another holder's is live.

        One conditional UPDATE decides, so two instances racing for an expired
        lease cannot both win (PostgreSQL re-checks the condition on the locked row).
        """
        expires = now + lease_s
        with self._db.atomic():
            _LEASE_ROW.execute(self._db, tenant_id, holder, expires)
            taken = _TAKE_LEASE.execute(self._db, holder, expires, tenant_id, holder, now)
        return taken == 1

    def release(self, tenant_id: str, holder: str) -> None:
        _RELEASE_LEASE.execute(self._db, tenant_id, holder)

    def release_instance(self, instance_id: str | None) -> int:
        """Drop leases left by a dead process: all of them (SQLite) or one instance's."""
        query = L.delete()
        if instance_id is not None:
            query = query.where(L.holder.startswith(f"{instance_id}/"))
        return query.execute()

    def last_event_id(self, tenant_id: str) -> int:
        """The newest event id of the tenant (0 when none): a cursor for "accepted since"."""
        return _LAST_EVENT_ID.values(self._db, tenant_id)[0][0] or 0

    def accepted_since(self, tenant_id: str, event_id: int) -> bool:
        """Whether a message was accepted (a ``queued`` event written) after ``event_id``."""
        return (
            E.select()
            .where(
                (E.tenant_id == tenant_id) & (E.event_id > event_id) & (E.event_type == "queued")
            )
            .exists()
        )

    def tenants_needing_sync(self, now: int, *, has_global_target: bool) -> list[str]:
        """Tenants with a sync target whose heartbeat is due or that have reports to send.

        The Supervisor's wake-up scan for reaped TenantActors. A tenant in
        failure backoff is not due before its retry time, even with events.
        """
        due = _NEEDING_SYNC[has_global_target]
        return [tenant_id for (tenant_id,) in due.values(self._db, now, now, now)]
