"""Run-now requests passed between instances through the database (SPEC §18.5).

An instance that receives ``POST /commands/run-now`` acts on it itself (when
active) and posts it here; every other active instance picks it up at its next
store scan, within ``send_loop_interval``. An API-only instance thus forwards
run-now to the instances that send (§10.9 rule 3). Requests are kept an hour.
"""

from __future__ import annotations

from dataclasses import dataclass

import peewee

from proxy.store import models

W = models.WakeRequest
KEEP_S = 3600


@dataclass(frozen=True, slots=True)
class Wakeup:
    id: int
    tenant_id: str | None
    origin: str


class WakeupStore:
    def __init__(self, db: peewee.Database) -> None:
        self._db = db

    def post(self, tenant_id: str | None, *, origin: str, origin_active: bool, now: int) -> None:
        """Record a run-now; an active origin has made its forced sync call itself."""
        with self._db.atomic():
            W.delete().where(W.created_ts < now - KEEP_S).execute()
            W.insert(
                tenant_id=tenant_id,
                origin=origin,
                taken_by=origin if origin_active else None,
                created_ts=now,
            ).execute()

    def take(self, wake_id: int, instance_id: str) -> bool:
        """Whether this instance makes the request's forced sync call (exactly one does)."""
        with self._db.atomic():
            updated = (
                W.update(taken_by=instance_id)
                .where((W.id == wake_id) & W.taken_by.is_null())
                .execute()
            )
        return updated == 1

    def latest_id(self) -> int:
        """Where a starting instance begins: requests made before it started are not its."""
        return int(W.select(peewee.fn.MAX(W.id)).scalar() or 0)

    def after(self, seen_id: int, *, exclude_origin: str) -> tuple[int, list[Wakeup]]:
        """Requests newer than ``seen_id`` from other instances, and the new high mark."""
        rows = list(W.select().where(W.id > seen_id).order_by(W.id))
        mark = rows[-1].id if rows else seen_id
        found = [Wakeup(r.id, r.tenant_id, r.origin) for r in rows if r.origin != exclude_origin]
        return mark, found
