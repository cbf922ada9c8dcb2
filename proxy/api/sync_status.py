"""``GET /tenants/sync-status``: each tenant's stored sync state (SPEC §3.11, §10.8).

Computed from what the TenantActors persist (last success, last attempt, DND,
next due time, failure backoff) and the count of unreported events, so every
instance sharing the database answers the same. ``sync_status`` is pure.
"""

from __future__ import annotations

from typing import Any

import falcon
from pydantic import BaseModel, ConfigDict

from proxy.api._body import omit_none
from proxy.api._doc import ADMIN, operation
from proxy.api.deps import Deps
from proxy.store.records import TenantRecord

CLOSED = ConfigDict(extra="forbid")


class TenantSyncStatus(BaseModel):
    model_config = CLOSED
    id: str
    name: str | None = None
    active: bool
    client_base_url: str | None = None
    last_sync_ts: int | None = None
    last_call_ts: int | None = None
    dnd_until: int | None = None
    next_sync_ts: int | None = None
    next_sync_due: bool
    in_dnd: bool
    pending_reports: int
    consecutive_failures: int
    last_error: str | None = None
    last_error_ts: int | None = None


class SyncStatusList(BaseModel):
    model_config = CLOSED
    ok: bool
    sync_interval_seconds: int
    tenants: list[TenantSyncStatus]


def sync_status(
    tenant: TenantRecord, *, pending_reports: int, has_target: bool, now: int
) -> dict[str, Any]:
    """One tenant's row of the table in SPEC §3.11.

    ``last_sync_ts`` shows the DND end while in DND (the original's meaning:
    "a future value is DND"). A heartbeat is due only for an active tenant with
    a sync target, outside DND, when it was never called or its next time
    (heartbeat or backoff retry) has come.
    """
    in_dnd = tenant.dnd_until is not None and tenant.dnd_until > now
    next_ts = tenant.next_sync_ts
    if in_dnd:
        next_ts = max(next_ts or 0, tenant.dnd_until or 0)
    never_called = tenant.last_sync_ts is None and not tenant.consecutive_failures
    due_time = next_ts is None or now >= next_ts or never_called
    return omit_none(
        {
            "id": tenant.id,
            "name": tenant.name,
            "active": tenant.active,
            "client_base_url": tenant.client_base_url,
            "last_sync_ts": tenant.dnd_until if in_dnd else tenant.last_sync_ts,
            "last_call_ts": tenant.last_call_ts,
            "dnd_until": tenant.dnd_until if in_dnd else None,
            "next_sync_ts": next_ts,
            "next_sync_due": tenant.active and has_target and not in_dnd and due_time,
            "in_dnd": in_dnd,
            "pending_reports": pending_reports,
            "consecutive_failures": tenant.consecutive_failures,
            "last_error": tenant.last_error,
            "last_error_ts": tenant.last_error_ts,
        }
    )


class SyncStatus:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @operation(
        summary="Per-tenant sync state",
        description="Last successful call, last attempt, DND, next due time, unreported "
        "events and failure backoff of every tenant, ordered by id.",
        access=ADMIN,
        tag="Tenants",
        response=SyncStatusList,
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        store, settings, now = self.deps.store, self.deps.settings, self.deps.now()
        global_target = bool(settings.client_sync_url)
        tenants = [
            sync_status(
                tenant,
                pending_reports=store.events.count_unreported(tenant.id),
                has_target=global_target or bool(tenant.client_base_url),
                now=now,
            )
            for tenant in store.tenants.list()
        ]
        resp.media = {
            "ok": True,
            "sync_interval_seconds": settings.sync_interval,
            "tenants": tenants,
        }
