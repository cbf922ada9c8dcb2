"""Message queries: enqueue (upsert), claim with a lease, attempt, record the outcome.

Every state change of a message commits together with its event (SPEC §5.3),
and an outcome is only recorded while the claim is still ours (§18.3), so a
lost lease or a deleted message is noticed instead of overwritten. The claim
query is the one place that differs by backend (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL; SQLite's single writer serialises ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import peewee

from proxy import retry
from proxy.api.validation import Accepted, Rejection
from proxy.smtp.errors import Outcome, PermFailure, Sent, TempFailure
from proxy.store import models
from proxy.store.records import (
    ClaimedMessage,
    MessageToSend,
    RecordedOutcome,
    TenantRecord,
    dumps,
    loads,
)

M = models.Message
CHUNK = 500  # keeps IN (...) lists under every backend's parameter limit


@dataclass(slots=True)
class EnqueueResult:
    queued: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    # (tenant_id, account_id) pairs that got due work, and those with an immediate message.
    touched: set[tuple[str, str]] = field(default_factory=set)
    immediate: set[tuple[str, str]] = field(default_factory=set)


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


def _row(row: M) -> MessageRow:
    return MessageRow(
        **{
            name: getattr(row, name)
            for name in MessageRow.__dataclass_fields__
            if name != "payload"
        },
        payload=loads(row.payload),
    )


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _event(
    pk: str,
    tenant_id: str,
    event_type: str,
    *,
    now: int,
    description: str | None,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    return {
        "message_pk": pk,
        "tenant_id": tenant_id,
        "event_type": event_type,
        "event_ts": now,
        "description": description,
        "metadata": dumps(metadata),
        "reportable": models.is_reportable(event_type),
    }


def _is_free(now: int) -> peewee.Expression:
    return M.claimed_by.is_null() | (M.lease_expires_ts < now)


def _is_due(now: int) -> peewee.Expression:
    """Pending and due, or left ``sending`` by a worker whose lease ran out (SPEC §18.3.3)."""
    pending = (M.status == models.PENDING) & (M.deferred_ts.is_null() | (M.deferred_ts <= now))
    return pending | (M.status == models.SENDING)


class MessageStore:
    def __init__(self, db: peewee.Database, *, is_sqlite: bool) -> None:
        self._db = db
        self._is_sqlite = is_sqlite

    # -- enqueue ---------------------------------------------------------------

    def enqueue(self, accepted: Sequence[Accepted], now: int) -> EnqueueResult:
        """Upsert on (tenant_id, id) in one transaction (SPEC §4.5).

        New ids are inserted; unsent ones are replaced (keeping pk, created_ts
        and the acceptance order); a message being sent or already terminal is
        rejected and left unchanged.
        """
        result = EnqueueResult()
        if not accepted:
            return result
        with self._db.atomic():
            existing = self._existing(accepted)
            inserts: list[dict[str, Any]] = []
            events: list[dict[str, Any]] = []
            for item in accepted:
                old = existing.get((item.tenant_id, item.id))
                if old is not None and old.status in models.TERMINAL:
                    result.rejected.append(Rejection(item.id, "id", "already sent"))
                    continue
                if old is not None and old.status == models.SENDING:
                    result.rejected.append(
                        Rejection(item.id, "id", "message is being sent, retry later")
                    )
                    continue
                pk = old.pk if old is not None else str(uuid.uuid4())
                columns = {
                    "account_id": item.account_id,
                    "priority": item.priority,
                    "batch_code": item.batch_code,
                    "payload": dumps(item.payload),
                    "deferred_ts": item.deferred_ts,
                    "retry_count": 0,
                    "status": models.PENDING,
                    "message_id": item.payload.get("message_id"),
                    "claimed_by": None,
                    "lease_expires_ts": None,
                    "updated_ts": now,
                }
                if old is None:
                    inserts.append(
                        {"pk": pk, "tenant_id": item.tenant_id, "id": item.id, "created_ts": now}
                        | columns
                    )
                else:
                    M.update(**columns).where(M.pk == pk).execute()
                events.append(
                    _event(
                        pk,
                        item.tenant_id,
                        "queued",
                        now=now,
                        description=None,
                        metadata={"replaced": old is not None},
                    )
                )
                result.queued += 1
                key = (item.tenant_id, item.account_id)
                if item.deferred_ts is None or item.deferred_ts <= now:
                    result.touched.add(key)
                    if item.priority == 0:
                        result.immediate.add(key)
            for chunk in _chunks(inserts, 100):
                M.insert_many(chunk).execute()
            for chunk in _chunks(events, 100):
                models.MessageEvent.insert_many(chunk).execute()
        return result

    def _existing(self, accepted: Sequence[Accepted]) -> dict[tuple[str, str], M]:
        by_tenant: dict[str, list[str]] = {}
        for item in accepted:
            by_tenant.setdefault(item.tenant_id, []).append(item.id)
        found: dict[tuple[str, str], M] = {}
        for tenant_id, ids in by_tenant.items():
            for chunk in _chunks(ids):
                query = M.select(M.pk, M.tenant_id, M.id, M.status).where(
                    (M.tenant_id == tenant_id) & M.id.in_(list(chunk))
                )
                for row in query:
                    found[(row.tenant_id, row.id)] = row
        return found

    # -- claiming and sending ----------------------------------------------------

    def claim_due(
        self,
        tenant: TenantRecord,
        account_id: str,
        *,
        me: str,
        now: int,
        lease_s: int,
        limit: int,
        max_priority: int | None = None,
    ) -> list[ClaimedMessage]:
        """Reserve up to ``limit`` due rows of one account, in send order, under a lease."""
        if not tenant.active or "*" in tenant.suspended_batches:
            return []
        condition = (
            (M.tenant_id == tenant.id) & (M.account_id == account_id) & _is_due(now) & _is_free(now)
        )
        if tenant.suspended_batches:
            condition &= M.batch_code.is_null() | M.batch_code.not_in(
                list(tenant.suspended_batches)
            )
        if max_priority is not None:
            condition &= M.priority <= max_priority
        with self._db.atomic():
            query = (
                M.select(M.seq, M.pk, M.priority)
                .where(condition)
                .order_by(M.priority, M.seq)
                .limit(limit)
            )
            if not self._is_sqlite:
                query = query.for_update("FOR UPDATE SKIP LOCKED")
            rows = list(query)
            if not rows:
                return []
            # A row left in ``sending`` by a dead worker may have reached the
            # server; it is attempted again (at most one duplicate, SPEC §18.3).
            M.update(claimed_by=me, lease_expires_ts=now + lease_s, status=models.PENDING).where(
                M.seq.in_([row.seq for row in rows]) & _is_free(now)
            ).execute()
        return [ClaimedMessage(pk=row.pk, priority=row.priority, seq=row.seq) for row in rows]

    def renew_leases(self, pks: Sequence[str], *, me: str, now: int, lease_s: int) -> None:
        """Keep a long batch's claims alive while its holder works through it."""
        for chunk in _chunks(list(pks)):
            M.update(lease_expires_ts=now + lease_s).where(
                M.pk.in_(list(chunk)) & (M.claimed_by == me)
            ).execute()

    def begin_attempt(
        self, pk: str, tenant: TenantRecord | None, *, me: str, now: int, lease_s: int
    ) -> MessageToSend | None:
        """Re-read a claimed row and mark it ``sending``; None when it must be skipped.

        A replacement, deletion, suspension or new ``deferred_ts`` that arrived
        after the claim takes effect here (SPEC §18.3); a skipped row's claim is
        released so it can be claimed again when due.
        """
        with self._db.atomic():
            row = M.get_or_none(M.pk == pk)
            if row is None or row.claimed_by != me or row.status != models.PENDING:
                return None
            held = tenant is None or tenant.is_suspended(row.batch_code)
            not_due = row.deferred_ts is not None and row.deferred_ts > now
            if held or not_due:
                M.update(claimed_by=None, lease_expires_ts=None).where(M.pk == pk).execute()
                return None
            M.update(status=models.SENDING, lease_expires_ts=now + lease_s, updated_ts=now).where(
                M.pk == pk
            ).execute()
        return MessageToSend(
            pk=row.pk,
            tenant_id=row.tenant_id,
            id=row.id,
            account_id=row.account_id,
            payload=loads(row.payload),
            attempt=row.retry_count + 1,
            retry_count=row.retry_count,
        )

    def record_outcome(
        self,
        sending: MessageToSend,
        outcome: Outcome,
        *,
        me: str,
        now: int,
        message_id: str | None,
        max_retries: int,
        retry_delays: Sequence[int],
        rng: random.Random,
    ) -> RecordedOutcome | None:
        """Write the attempt's outcome and its event and release the claim, in one transaction.

        Returns None (and writes nothing) when the claim is no longer ours:
        the message was deleted or its lease was taken over.
        """
        columns, event_type, description, metadata = _outcome_columns(
            sending, outcome, now=now, max_retries=max_retries, retry_delays=retry_delays, rng=rng
        )
        columns |= {"claimed_by": None, "lease_expires_ts": None, "updated_ts": now}
        if message_id is not None:
            columns["message_id"] = message_id
        with self._db.atomic():
            updated = (
                M.update(**columns)
                .where((M.pk == sending.pk) & (M.claimed_by == me) & (M.status == models.SENDING))
                .execute()
            )
            if not updated:
                return None
            models.MessageEvent.insert(
                **_event(
                    sending.pk,
                    sending.tenant_id,
                    event_type,
                    now=now,
                    description=description,
                    metadata=metadata,
                )
            ).execute()
        return RecordedOutcome(
            pk=sending.pk,
            tenant_id=sending.tenant_id,
            account_id=sending.account_id,
            status=columns["status"],
            event_type=event_type,
            deferred_ts=columns.get("deferred_ts"),
        )

    def release_claims(self, me: str) -> int:
        """Give back rows claimed but not yet attempted (graceful shutdown, SPEC §17)."""
        return (
            M.update(claimed_by=None, lease_expires_ts=None)
            .where((M.claimed_by == me) & (M.status == models.PENDING))
            .execute()
        )

    def release_claims_of(self, pks: Sequence[str], *, me: str) -> None:
        """Give back specific claimed rows not yet attempted (an account actor stopping)."""
        for chunk in _chunks(list(pks)):
            M.update(claimed_by=None, lease_expires_ts=None).where(
                M.pk.in_(list(chunk)) & (M.claimed_by == me) & (M.status == models.PENDING)
            ).execute()

    def release_account_claims(self, tenant_id: str, account_id: str, *, me: str) -> int:
        """Release what a previous worker of this account on this instance left claimed.

        Within one instance only one worker serves an account, so such claims
        belong to a predecessor that crashed; its work resumes at once.
        """
        with self._db.atomic():
            return (
                M.update(
                    claimed_by=None,
                    lease_expires_ts=None,
                    status=peewee.Case(
                        None, [(M.status == models.SENDING, models.PENDING)], M.status
                    ),
                )
                .where(
                    (M.tenant_id == tenant_id) & (M.account_id == account_id) & (M.claimed_by == me)
                )
                .execute()
            )

    def recover_after_crash(self, me: str | None = None) -> int:
        """Release claims left by a dead process so its work resumes at once (SPEC §18.1, §18.3).

        ``me=None`` (SQLite, the only instance) releases every claim; otherwise
        only the claims recorded under this instance id. A row that was
        ``sending`` may have reached the server: it is sent again (at most once).
        """
        where = M.claimed_by.is_null(False) if me is None else (M.claimed_by == me)
        with self._db.atomic():
            return (
                M.update(
                    claimed_by=None,
                    lease_expires_ts=None,
                    status=peewee.Case(
                        None, [(M.status == models.SENDING, models.PENDING)], M.status
                    ),
                )
                .where(where)
                .execute()
            )

    def due_accounts(self, now: int, limit: int = 10_000) -> list[tuple[str, str]]:
        """Accounts with at least one due, unclaimed message (the supervisor's wake-up scan)."""
        query = (
            M.select(M.tenant_id, M.account_id)
            .join(models.Tenant, on=(models.Tenant.id == M.tenant_id))
            .where(_is_due(now) & _is_free(now) & (models.Tenant.active == True))  # noqa: E712
            .group_by(M.tenant_id, M.account_id)
            .limit(limit)
        )
        return [(row.tenant_id, row.account_id) for row in query]

    # -- reading -------------------------------------------------------------------

    def get(self, tenant_id: str, message_id: str) -> MessageRow | None:
        row = M.get_or_none((M.tenant_id == tenant_id) & (M.id == message_id))
        return None if row is None else _row(row)

    def get_by_pk(self, pk: str) -> MessageRow | None:
        row = M.get_or_none(M.pk == pk)
        return None if row is None else _row(row)

    def list(
        self,
        tenant_id: str | None,
        *,
        active_only: bool = False,
        batch_code: str | None = None,
        message_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[MessageRow]:
        query = M.select()
        if tenant_id is not None:
            query = query.where(M.tenant_id == tenant_id)
        if active_only:
            query = query.where(M.status.not_in(models.TERMINAL))
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

    def pending_count(self, tenant_id: str | None = None) -> int:
        query = M.select().where(M.status.not_in(models.TERMINAL))
        if tenant_id is not None:
            query = query.where(M.tenant_id == tenant_id)
        return query.count()


def _outcome_columns(
    sending: MessageToSend,
    outcome: Outcome,
    *,
    now: int,
    max_retries: int,
    retry_delays: Sequence[int],
    rng: random.Random,
) -> tuple[dict[str, Any], str, str | None, dict[str, Any]]:
    """Columns, event type, description and metadata for one attempt's outcome (SPEC §5.3, §6.5)."""
    metadata: dict[str, Any] = {"attempt": sending.attempt}
    match outcome:
        case Sent():
            metadata |= {"smtp_code": outcome.smtp_code, "smtp_response": outcome.smtp_response}
            if outcome.refused:
                metadata["refused"] = [
                    {"address": r.address, "smtp_code": r.smtp_code, "message": r.message}
                    for r in outcome.refused
                ]
            columns = {"status": models.SENT, "sent_ts": now, "smtp_ts": now, "deferred_ts": None}
            return columns, "sent", None, metadata
        case TempFailure() if sending.retry_count < max_retries:
            retry_count = sending.retry_count + 1
            next_ts = retry.next_attempt_ts(now, retry_count, retry_delays, rng)
            if outcome.smtp_code is not None:
                metadata["smtp_code"] = outcome.smtp_code
            metadata |= {
                "next_attempt_ts": next_ts,
                "retry_count": retry_count,
                "reason": outcome.reason,
            }
            columns = {"status": models.PENDING, "deferred_ts": next_ts, "retry_count": retry_count}
            return columns, "deferred", outcome.description, metadata
        case TempFailure():
            text = f"Max retries ({max_retries}) exceeded: {outcome.description}"
            return _error_columns(now, text, outcome.smtp_code, metadata)
        case PermFailure():
            return _error_columns(now, outcome.description, outcome.smtp_code, metadata)
    raise TypeError(f"unknown outcome {outcome!r}")


def _error_columns(
    now: int, text: str, smtp_code: int | None, metadata: dict[str, Any]
) -> tuple[dict[str, Any], str, str | None, dict[str, Any]]:
    if smtp_code is not None:
        metadata["smtp_code"] = smtp_code
    columns = {
        "status": models.ERROR,
        "error": text,
        "error_ts": now,
        "smtp_ts": now,
        "deferred_ts": None,
    }
    return columns, "error", text, metadata
