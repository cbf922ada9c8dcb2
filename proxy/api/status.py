"""``GET /status`` (SPEC §3.4): what this instance is doing and how full the queue is.

Uptime counts from this module's import, which happens once per process while
the app is built (``Deps`` carries no start time).
"""

from __future__ import annotations

import importlib.metadata
import time

import falcon
from pydantic import BaseModel, ConfigDict

from proxy.api import _auth
from proxy.api._doc import AUTH, operation
from proxy.api.deps import Deps
from proxy.api.messages import STATUSES, classify
from proxy.store import models
from proxy.store.records import TenantRecord

FALLBACK_VERSION = "0.1.0"
STARTED_MONOTONIC = time.monotonic()
CLOSED = ConfigDict(extra="forbid")


def _version() -> str:
    try:
        return importlib.metadata.version("mail-proxy")
    except importlib.metadata.PackageNotFoundError:
        return FALLBACK_VERSION


VERSION = _version()


class MessagesByStatus(BaseModel):
    model_config = CLOSED
    pending: int
    deferred: int
    suspended: int
    sending: int
    sent: int
    error: int


class LiveInstance(BaseModel):
    model_config = CLOSED
    instance_id: str
    started_ts: int
    last_heartbeat_ts: int
    active: bool


class StatusResponse(BaseModel):
    model_config = CLOSED
    ok: bool
    active: bool
    scheduler_active: bool
    test_mode: bool
    auth: str  # "enabled" | "disabled"
    version: str
    instance_id: str
    uptime_seconds: int
    pending_messages: int
    messages_by_status: MessagesByStatus
    instances: list[LiveInstance] | None = None  # admin token only


class Status:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @operation(
        summary="Instance status",
        description=(
            "Message counts cover the tenant of a tenant token, else every tenant. "
            "instances (admin token only) lists those with a heartbeat younger than 30 s."
        ),
        access=AUTH,
        tag="Status",
        response=StatusResponse,
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        principal = req.context.principal
        store, settings, now = self.deps.store, self.deps.settings, self.deps.now()
        by_status = self._counts(principal.tenant_id, now)
        body = {
            "ok": True,
            "active": settings.start_active,
            "scheduler_active": store.messages.scheduler_active(),
            "test_mode": settings.test_mode,
            "auth": "enabled" if _auth.admin_digest(settings, store) else "disabled",
            "version": VERSION,
            "instance_id": settings.effective_instance_id,
            "uptime_seconds": int(time.monotonic() - STARTED_MONOTONIC),
            "pending_messages": sum(
                n for name, n in by_status.items() if name not in models.TERMINAL
            ),
            "messages_by_status": by_status,
        }
        if principal.is_admin:
            body["instances"] = [
                {
                    "instance_id": i.instance_id,
                    "started_ts": i.started_ts,
                    "last_heartbeat_ts": i.last_heartbeat_ts,
                    "active": i.active,
                }
                for i in store.instances.live(now)
            ]
        resp.media = body

    def _counts(self, tenant_id: str | None, now: int) -> dict[str, int]:
        store = self.deps.store
        groups = store.messages.status_groups(tenant_id, now)
        tenants: dict[str, TenantRecord | None] = {}
        counts = dict.fromkeys(STATUSES, 0)
        for group in groups:
            tenant = None
            if group.tenant_id is not None:
                if group.tenant_id not in tenants:
                    tenants[group.tenant_id] = store.tenants.get(group.tenant_id)
                tenant = tenants[group.tenant_id]
            status = classify(
                group.stored_status,
                held=tenant is None or tenant.is_suspended(group.batch_code),
                is_future=group.is_future,
                is_live_sending=group.is_live_sending,
            )
            counts[status] += group.count
        return counts
