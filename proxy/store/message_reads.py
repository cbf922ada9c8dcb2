"""Message read queries for the API: one message, listings, counts by displayed status.

Split from ``messages.py`` (writes and the send path); ``MessageStore`` inherits
these, so callers keep using ``store.messages``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import peewee

from proxy.store import models
from proxy.store.records import loads

M = models.Message


@dataclass(frozen=True, slots=True)
class MessageRow:
    """One message as the API shows it (status still raw; see ``api.messages``)."""

    pk: str
    id: str
    tenant_id: str
    account_id: str
    priority: int
    batch_code: str | None
    status: str
    payload: dict[str, Any]
    message_id: str | None
    deferred_ts: int | None
    retry_count: int
    created_ts: int
    updated_ts: int
    sent_ts: int | None
    error_ts: int | None
    smtp_ts: int | None
    error: str | None
    reported_ts: int | None
    is_pec: bool
    claimed_by: str | None
    lease_expires_ts: int | None


@dataclass(frozen=True, slots=True)
class StatusGroup:
    """Rows sharing everything the displayed status depends on (``status_groups``)."""

    tenant_id: str | None  # None for terminal rows
    batch_code: str | None
    stored_status: str
    is_future: bool  # deferred_ts in the future
    is_live_sending: bool  # sending under an unexpired lease
    count: int


def _row(row: M) -> MessageRow:
    return MessageRow(
        **{
            name: getattr(row, name)
            for name in MessageRow.__dataclass_fields__
            if name != "payload"
        },
        payload=loads(row.payload),
    )


class MessageReads:
    def get(self, tenant_id: str, message_id: str) -> MessageRow | None:
        row = M.get_or_none((M.tenant_id == tenant_id) & (M.id == message_id))
        return None if row is None else _row(row)

    def get_by_pk(self, pk: str, tenant_id: str | None = None) -> MessageRow | None:
        """The message with this pk; with ``tenant_id``, only if that tenant owns it."""
        condition = M.pk == pk
        if tenant_id is not None:
            condition &= M.tenant_id == tenant_id
        row = M.get_or_none(condition)
        return None if row is None else _row(row)

    def list(
        self,
        tenant_id: str | None,
        *,
        active_only: bool = False,
        stored_status: str | None = None,
        batch_code: str | None = None,
        message_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[MessageRow]:
        """Messages in the contract's order (SPEC §3.9): priority, created_ts, id."""
        query = M.select()
        if tenant_id is not None:
            query = query.where(M.tenant_id == tenant_id)
        if active_only:
            query = query.where(M.status.not_in(models.TERMINAL))
        if stored_status is not None:
            query = query.where(M.status == stored_status)
        if batch_code is not None:
            query = query.where(M.batch_code == batch_code)
        if message_id is not None:
            query = query.where(M.id == message_id)
        query = query.order_by(M.priority, M.created_ts, M.id, M.seq)
        if limit is not None:
            query = query.limit(limit)
        if offset:
            query = query.offset(offset)
        return [_row(row) for row in query]

    def pending_count(self, tenant_id: str | None = None, batch_code: str | None = None) -> int:
        """Messages not yet terminal, optionally of one tenant and one batch."""
        query = M.select().where(M.status.not_in(models.TERMINAL))
        if tenant_id is not None:
            query = query.where(M.tenant_id == tenant_id)
        if batch_code is not None:
            query = query.where(M.batch_code == batch_code)
        return query.count()

    def status_groups(self, tenant_id: str | None, now: int) -> list[StatusGroup]:
        """Counts grouped by what decides the displayed status (SPEC §5.1), in one query.

        The displayed status also depends on the tenant's suspension, which the
        caller applies; terminal rows are grouped by status alone.
        """
        is_open = M.status.not_in(models.TERMINAL)
        future = peewee.Case(None, [(is_open & (M.deferred_ts > now), 1)], 0)
        live = peewee.Case(
            None, [((M.status == models.SENDING) & (M.lease_expires_ts >= now), 1)], 0
        )
        tenant = peewee.Case(None, [(is_open, M.tenant_id)], None)
        batch = peewee.Case(None, [(is_open, M.batch_code)], None)
        # Grouped by position: PostgreSQL would not match the parameterised CASE
        # expressions if they were repeated in GROUP BY.
        query = M.select(
            tenant.alias("tenant"),
            batch.alias("batch"),
            M.status,
            future.alias("future"),
            live.alias("live"),
            peewee.fn.COUNT(M.seq).alias("n"),
        ).group_by(*(peewee.SQL(str(n)) for n in range(1, 6)))
        if tenant_id is not None:
            query = query.where(M.tenant_id == tenant_id)
        return [
            StatusGroup(
                tenant_id=row["tenant"],
                batch_code=row["batch"],
                stored_status=row["status"],
                is_future=bool(row["future"]),
                is_live_sending=bool(row["live"]),
                count=row["n"],
            )
            for row in query.dicts()
        ]
