"""``GET /messages`` (SPEC §3.9) and ``GET /messages/{id}/events`` (§3.10).

Records use the original's field names. The displayed status (§5.1) is derived
when read, from the stored state, ``deferred_ts``, the claim lease and the
tenant's suspension, so it never goes stale.
"""

from __future__ import annotations

import uuid
from typing import Any

import falcon
from pydantic import BaseModel, ConfigDict

from proxy.api import _auth
from proxy.api._body import MAX_INT64, omit_none, query_bool, query_int
from proxy.api._doc import AUTH, Param, operation
from proxy.api._errors import NotFound, Unprocessable, problem
from proxy.api.accounts import tenant_scope
from proxy.api.deps import Deps
from proxy.clock import iso_utc
from proxy.store import models
from proxy.store.message_reads import MessageRow
from proxy.store.records import MASK, EventRecord, TenantRecord

STATUSES = ("pending", "deferred", "suspended", "sending", "sent", "error")
CLOSED = ConfigDict(extra="forbid")


class EventItem(BaseModel):
    model_config = CLOSED
    event_id: int
    event_type: str
    event_ts: int
    description: str | None = None
    metadata: dict[str, Any] | None = None
    event_data: dict[str, Any] | None = None  # alias of metadata, for the original's clients
    reported_ts: int | None = None


class EventList(BaseModel):
    model_config = CLOSED
    ok: bool
    tenant_id: str
    id: str
    pk: str
    events: list[EventItem]


class MessageRecord(BaseModel):
    model_config = CLOSED
    pk: str
    id: str
    tenant_id: str
    tenant_name: str
    account_id: str
    priority: int
    batch_code: str | None = None
    status: str
    retry_count: int
    created_ts: int
    created_at: str
    updated_at: str
    deferred_ts: int | None = None
    smtp_ts: int | None = None
    sent_ts: int | None = None
    error_ts: int | None = None
    error: str | None = None
    reported_ts: int | None = None
    bounce_type: str | None = None
    bounce_code: str | None = None
    bounce_reason: str | None = None
    bounce_ts: int | None = None
    is_pec: bool
    pec_status: str | None = None
    payload: dict[str, Any]
    message: dict[str, Any]  # the same object as payload (the original's name)
    history: list[EventItem] | None = None


class MessageList(BaseModel):
    model_config = CLOSED
    ok: bool
    messages: list[MessageRecord]


def classify(stored: str, *, held: bool, is_future: bool, is_live_sending: bool) -> str:
    """The contract's status (§5.1): suspended wins over deferred and pending, not sending.

    A message being attempted right now is ``sending`` even when its tenant or batch
    was suspended meanwhile: the attempt goes on, so "suspended" would be untrue.
    """
    if stored in models.TERMINAL:
        return stored
    if is_live_sending:
        return "sending"
    if held:
        return "suspended"
    return "deferred" if is_future else "pending"


def display_status(row: MessageRow, tenant: TenantRecord | None, now: int) -> str:
    return classify(
        row.status,
        held=tenant is None or tenant.is_suspended(row.batch_code),
        is_future=row.deferred_ts is not None and row.deferred_ts > now,
        is_live_sending=row.status == models.SENDING
        and row.lease_expires_ts is not None
        and row.lease_expires_ts >= now,
    )


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


def event_item(event: EventRecord) -> dict[str, Any]:
    """One event as §3.10 shows it; ``event_data`` repeats ``metadata``."""
    metadata = event.metadata or None
    return omit_none(
        {
            "event_id": event.event_id,
            "event_type": event.event_type,
            "event_ts": event.event_ts,
            "description": event.description,
            "metadata": metadata,
            "event_data": metadata,
            "reported_ts": event.reported_ts,
        }
    )


def note_fields(notes: dict[str, EventRecord]) -> dict[str, Any]:
    """``bounce_*`` from the latest bounce event and ``pec_status`` from the latest PEC one."""
    fields: dict[str, Any] = {}
    bounce = notes.get("bounce")
    if bounce is not None:
        fields |= {
            "bounce_type": bounce.metadata.get("bounce_type"),
            "bounce_code": bounce.metadata.get("bounce_code"),
            "bounce_reason": bounce.description,
            "bounce_ts": bounce.event_ts,
        }
    pec = notes.get("pec")
    if pec is not None:
        fields["pec_status"] = pec.event_type
    return fields


def message_record(
    row: MessageRow,
    tenant: TenantRecord | None,
    status: str,
    notes: dict[str, EventRecord] | None = None,
) -> dict[str, Any]:
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
            "sent_ts": row.sent_ts if status == models.SENT else None,
            "error_ts": row.error_ts if status == models.ERROR else None,
            "error": row.error if status == models.ERROR else None,
            "reported_ts": row.reported_ts,
            "is_pec": bool(row.is_pec),
            "payload": payload,
            "message": payload,
        }
        | note_fields(notes or {})
    )


class MessageCollection:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @operation(
        summary="List messages",
        description="Ordered by priority, then created_ts, then id. All matches without limit.",
        access=AUTH,
        tag="Messages",
        response=MessageList,
        errors=(403, 422),
        query=(
            Param("tenant_id", description="optional with the admin token: all tenants"),
            Param("active_only", "boolean", description="only messages not yet terminal"),
            Param("include_history", "boolean", description="add each message's events"),
            Param("status", enum=STATUSES),
            Param("batch_code"),
            Param("id", description="one client id"),
            Param("limit", "integer", description=">= 1"),
            Param("offset", "integer", description=">= 0"),
        ),
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        tenant_id = _auth.require_tenant(req.context.principal, req.get_param("tenant_id"))
        status = req.get_param("status") or None
        if status is not None and status not in STATUSES:
            raise Unprocessable([problem(["query", "status"], "unknown status", "enum")])
        # Beyond a 64-bit integer a limit means "all" and an offset "none" (no SQL overflow).
        limit = query_int(req, "limit", minimum=1, maximum=None)
        limit = None if limit is None or limit > MAX_INT64 else limit
        offset = min(query_int(req, "offset", maximum=None) or 0, MAX_INT64)
        message_id = req.get_param("id")
        # A terminal status is stored as such; the others depend on the tenant and time.
        # An id matches at most one record (SPEC §3.9), though with the admin token and
        # no tenant it may exist in several tenants: the first in list order is shown.
        status_is_live = status is not None and status not in models.TERMINAL
        in_sql = not status_is_live and message_id is None
        store, now = self.deps.store, self.deps.now()
        rows = store.messages.list(
            tenant_id,
            active_only=query_bool(req, "active_only") or status_is_live,
            stored_status=status if status in models.TERMINAL else None,
            batch_code=req.get_param("batch_code"),
            message_id=message_id,
            limit=limit if in_sql else None,
            offset=offset if in_sql else 0,
        )
        tenants = {t: store.tenants.get(t) for t in {row.tenant_id for row in rows}}
        shown = [(row, display_status(row, tenants[row.tenant_id], now)) for row in rows]
        if not in_sql:
            shown = [(row, s) for row, s in shown if status is None or s == status]
            shown = shown[:1] if message_id is not None else shown
            shown = shown[offset : None if limit is None else offset + limit]
        pks = [row.pk for row, _ in shown]
        notes = store.events.latest_notes(pks)
        records = [
            message_record(row, tenants[row.tenant_id], s, notes.get(row.pk)) for row, s in shown
        ]
        if query_bool(req, "include_history"):
            histories = store.events.histories(pks)
            for record in records:
                record["history"] = [event_item(e) for e in histories[record["pk"]]]
        resp.media = {"ok": True, "messages": records}


class MessageEvents:
    """``GET /messages/{message_id}/events``: one message's history, chronological."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @operation(
        summary="One message's event history",
        description=(
            "{message_id} is the client id within the tenant; if none matches and it is a "
            "UUID, it is looked up as the message's pk (within the tenant)."
        ),
        access=AUTH,
        tag="Messages",
        response=EventList,
        errors=(403, 404, 422),
        query=(Param("tenant_id", description="required with the admin token"),),
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response, message_id: str) -> None:
        tenant_id = tenant_scope(
            req.context.principal, req.get_param("tenant_id"), loc=["query", "tenant_id"]
        )
        store = self.deps.store
        row = store.messages.get(tenant_id, message_id)
        if row is None and (pk := _as_uuid(message_id)) is not None:
            row = store.messages.get_by_pk(pk, tenant_id)
        if row is None:
            raise NotFound(f"Message '{message_id}' not found")
        events = store.events.history(row.pk)
        resp.media = {
            "ok": True,
            "tenant_id": row.tenant_id,
            "id": row.id,
            "pk": row.pk,
            "events": [event_item(e) for e in events],
        }


def _as_uuid(text: str) -> str | None:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None
