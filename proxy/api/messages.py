"""``GET /messages`` (SPEC §3.9): a tenant's messages with the original's field names."""

from __future__ import annotations

from typing import Any

import falcon

from proxy.api import _auth
from proxy.api._body import omit_none, query_bool, query_int
from proxy.api._doc import AUTH, Param, operation
from proxy.api._errors import Unprocessable, problem
from proxy.api.deps import Deps
from proxy.clock import iso_utc
from proxy.store import models
from proxy.store.messages import MessageRow
from proxy.store.records import MASK, TenantRecord

STATUSES = ("pending", "deferred", "suspended", "sending", "sent", "error")


def display_status(row: MessageRow, tenant: TenantRecord | None, now: int) -> str:
    """The contract's status (§5.1): suspended wins over deferred and pending."""
    if row.status in models.TERMINAL:
        return row.status
    if tenant is None or tenant.is_suspended(row.batch_code):
        return "suspended"
    if (
        row.status == models.SENDING
        and row.lease_expires_ts is not None
        and row.lease_expires_ts >= now
    ):
        return "sending"
    if row.deferred_ts is not None and row.deferred_ts > now:
        return "deferred"
    return "pending"


def masked_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The stored payload with attachment credentials masked."""
    attachments = payload.get("attachments")
    if not attachments:
        return payload
    masked = []
    for item in attachments:
        auth = item.get("auth")
        if isinstance(auth, dict):
            secrets = {k: MASK for k in ("token", "password") if auth.get(k)}
            masked.append(item | {"auth": auth | secrets})
        else:
            masked.append(item)
    return payload | {"attachments": masked}


def message_record(row: MessageRow, tenant: TenantRecord | None, status: str) -> dict[str, Any]:
    payload = masked_payload(row.payload)
    return omit_none(
        {
            "pk": row.pk,
            "id": row.id,
            "tenant_id": row.tenant_id,
            "tenant_name": tenant.display_name if tenant else row.tenant_id,
            "account_id": row.account_id,
            "priority": row.priority,
            "batch_code": row.batch_code,
            "status": status,
            "retry_count": row.retry_count,
            "created_ts": row.created_ts,
            "created_at": iso_utc(row.created_ts),
            "updated_at": iso_utc(row.updated_ts),
            "deferred_ts": row.deferred_ts if status == "deferred" else None,
            "smtp_ts": row.smtp_ts,
            "sent_ts": row.sent_ts,
            "error_ts": row.error_ts,
            "error": row.error,
            "reported_ts": row.reported_ts,
            "is_pec": row.is_pec or None,
            "payload": payload,
            "message": payload,
        }
    )


class MessageCollection:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @operation(
        summary="List messages",
        access=AUTH,
        tag="Messages",
        errors=(403, 422),
        query=(
            Param("tenant_id", description="optional with the admin token"),
            Param("active_only", "boolean"),
            Param("include_history", "boolean"),
            Param("status", enum=STATUSES),
            Param("batch_code"),
            Param("id", description="one client id"),
            Param("limit", "integer"),
            Param("offset", "integer"),
        ),
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        tenant_id = _auth.require_tenant(req.context.principal, req.get_param("tenant_id"))
        status = req.get_param("status")
        if status is not None and status not in STATUSES:
            raise Unprocessable([problem(["query", "status"], "unknown status", "enum")])
        store, now = self.deps.store, self.deps.now()
        rows = store.messages.list(
            tenant_id,
            active_only=query_bool(req, "active_only"),
            batch_code=req.get_param("batch_code"),
            message_id=req.get_param("id"),
            limit=None if status else query_int(req, "limit", minimum=1),
            offset=0 if status else query_int(req, "offset") or 0,
        )
        tenants: dict[str, TenantRecord | None] = {}
        with_history = query_bool(req, "include_history")
        records = []
        for row in rows:
            if row.tenant_id not in tenants:
                tenants[row.tenant_id] = store.tenants.get(row.tenant_id)
            tenant = tenants[row.tenant_id]
            row_status = display_status(row, tenant, now)
            if status is not None and row_status != status:
                continue
            record = message_record(row, tenant, row_status)
            if with_history:
                record["history"] = [
                    omit_none(
                        {
                            "event_id": e.event_id,
                            "event_type": e.event_type,
                            "event_ts": e.event_ts,
                            "description": e.description,
                            "metadata": e.metadata or None,
                            "reported_ts": e.reported_ts,
                        }
                    )
                    for e in store.events.history(row.pk)
                ]
            records.append(record)
        if status is not None:
            offset = query_int(req, "offset") or 0
            limit = query_int(req, "limit", minimum=1)
            records = records[offset : None if limit is None else offset + limit]
        resp.media = {"ok": True, "messages": records}
