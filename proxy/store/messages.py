"""Message queries: enqueue (upsert), claim with a lease, attempt, record the outcome.

Every state change of a message commits together with its event (SPEC §5.3),
and an outcome is only recorded while the claim is still ours (§18.3), so a
lost lease or a deleted message is noticed instead of overwritten. The claim
query is the one place that differs by backend (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL; SQLite's single writer serialises ``BEGIN IMMEDIATE``). The API's
read queries live in ``message_reads.py``.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import peewee

from proxy.api.validation import Accepted, Rejection
from proxy.store import models
from proxy.store.message_reads import MessageReads
from proxy.store.outcomes import Outcome, outcome_columns
from proxy.store.prepared import ByShape, InList, Prepared, Slot
from proxy.store.records import (
    ClaimedMessage,
    MessageToSend,
    RecordedOutcome,
    SecretCodec,
    TenantRecord,
    dumps,
    loads,
    map_payload,
)
from proxy.store.retention import Deletion, RetentionStore

M = models.Message
S = models.InstanceSetting
CHUNK = 500  # keeps IN (...) lists under every backend's parameter limit
# Instance setting holding the deployment-wide scheduler switch (SPEC §3.6): "false" = stopped.
SCHEDULER_ACTIVE_KEY = "scheduler_active"


@dataclass(slots=True)
class EnqueueResult:
    queued: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    # (tenant_id, account_id) pairs that got due work, and those with an immediate message.
    touched: set[tuple[str, str]] = field(default_factory=set)
    immediate: set[tuple[str, str]] = field(default_factory=set)


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


def _scheduler_stopped() -> bool:
    """Whether an admin suspended all sending (SPEC §3.6); one primary-key lookup."""
    return bool(_SCHEDULER_STOPPED.rows(S))


def _sent_through_pec() -> peewee.Expression:
    """Whether the row's account is a PEC account (a correlated subquery; false if none)."""
    a = models.Account
    flag = a.select(a.is_pec_account).where((a.tenant_id == M.tenant_id) & (a.id == M.account_id))
    return peewee.fn.COALESCE(flag, False)


# The send path's statements, compiled once (proxy/store/prepared.py).
_SCHEDULER_STOPPED = Prepared(
    lambda: S.select(S.key).where((S.key == SCHEDULER_ACTIVE_KEY) & (S.value == "false"))
)
_BEGIN_ROW = Prepared(  # plain columns, read as raw values: no model instance per send
    lambda pk: M.select(
        M.claimed_by,
        M.status,
        M.batch_code,
        M.deferred_ts,
        M.tenant_id,
        M.id,
        M.account_id,
        M.payload,
        M.retry_count,
    ).where(M.pk == pk),
    Slot.text(),
)
_DUE_ACCOUNTS = Prepared(  # ``now`` twice: a slot appears once in a statement
    lambda now_due, now_free, limit: (
        M.select(M.tenant_id, M.account_id)
        .join(models.Tenant, on=(models.Tenant.id == M.tenant_id))
        .where(_is_due(now_due) & _is_free(now_free) & (models.Tenant.active == True))  # noqa: E712
        .group_by(M.tenant_id, M.account_id)
        .limit(limit)
    ),
    Slot.number(),
    Slot.number(),
    Slot.number(),
)
_UNCLAIM = Prepared(
    lambda pk: M.update(claimed_by=None, lease_expires_ts=None).where(M.pk == pk), Slot.text()
)
_MARK_SENDING = Prepared(
    lambda lease, now, pk: M.update(
        status=models.SENDING,
        lease_expires_ts=lease,
        updated_ts=now,
        is_pec=_sent_through_pec(),  # SPEC §12 rule 1
    ).where(M.pk == pk),
    Slot.number(),
    Slot.number(),
    Slot.text(),
)
_RECORD_OUTCOME = ByShape(
    lambda columns, pk, me: M.update(**columns).where(
        (M.pk == pk) & (M.claimed_by == me) & (M.status == models.SENDING)
    ),
    Slot.text,
    Slot.text,
)
_INSERT_EVENT = ByShape(lambda columns: models.MessageEvent.insert(**columns))
_INSERT_MESSAGE = ByShape(lambda columns: M.insert(**columns))
_EXISTING = InList(  # the upsert's lookup, per add-messages request
    lambda ids, tenant_id: M.select(M.pk, M.id, M.status).where(
        (M.tenant_id == tenant_id) & M.id.in_(ids)
    ),
    Slot.text,
    Slot.text,
)


class _Existing(NamedTuple):
    pk: str
    status: str


def _is_free(now: int) -> peewee.Expression:
    return M.claimed_by.is_null() | (M.lease_expires_ts < now)


def _is_pending_due(now: int) -> peewee.Expression:
    return (M.status == models.PENDING) & (M.deferred_ts.is_null() | (M.deferred_ts <= now))


def _is_due(now: int) -> peewee.Expression:
    """Pending and due, or left ``sending`` by a worker whose lease ran out (SPEC §18.3.3)."""
    return _is_pending_due(now) | (M.status == models.SENDING)


class MessageStore(MessageReads):
    """Writes and the send path here; the API's read queries in ``MessageReads``."""

    def __init__(
        self, db: peewee.Database, *, is_sqlite: bool, codec: SecretCodec | None = None
    ) -> None:
        self._db = db
        self._is_sqlite = is_sqlite
        self._codec = codec if codec is not None else SecretCodec()  # attachment auth (§16)
        self._retention = RetentionStore(db)

    def scheduler_active(self) -> bool:
        """False while the deployment-wide scheduler is suspended (SPEC §3.6)."""
        return not _scheduler_stopped()

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
                    "payload": dumps(map_payload(item.payload, self._codec.seal)),
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
            _INSERT_MESSAGE.execute_many(self._db, inserts)
            _INSERT_EVENT.execute_many(self._db, events)
        return result

    def _existing(self, accepted: Sequence[Accepted]) -> dict[tuple[str, str], _Existing]:
        by_tenant: dict[str, list[str]] = {}
        for item in accepted:
            by_tenant.setdefault(item.tenant_id, []).append(item.id)
        found: dict[tuple[str, str], _Existing] = {}
        for tenant_id, ids in by_tenant.items():
            for chunk in _chunks(ids):
                for pk, message_id, status in _EXISTING.values(self._db, chunk, tenant_id):
                    found[(tenant_id, message_id)] = _Existing(pk, status)
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
        """Reserve up to ``limit`` due rows of one account, in send order, under a lease.

        Nothing is claimed while the deployment-wide scheduler is suspended; the
        flag is read inside the claim's transaction, so a claim never follows a
        committed suspension.
        """
        if not tenant.active or "*" in tenant.suspended_batches:
            return []
        condition = (M.tenant_id == tenant.id) & (M.account_id == account_id) & _is_free(now)
        if tenant.suspended_batches:
            condition &= M.batch_code.is_null() | M.batch_code.not_in(
                list(tenant.suspended_batches)
            )
        if max_priority is not None:
            condition &= M.priority <= max_priority
        with self._db.atomic():
            if _scheduler_stopped():
                return []
            # One query per status, each walking the (tenant, account, status, priority,
            # seq) index in send order and stopping at ``limit``: with both statuses in
            # one query the database sorts the account's whole backlog on every claim.
            rows = []
            for status_condition in (_is_pending_due(now), M.status == models.SENDING):
                query = (
                    M.select(M.seq, M.pk, M.priority)
                    .where(condition & status_condition)
                    .order_by(M.priority, M.seq)
                    .limit(limit)
                )
                if not self._is_sqlite:
                    query = query.for_update("FOR UPDATE SKIP LOCKED")
                rows.extend(query)
            if not rows:
                return []
            rows = sorted(rows, key=lambda row: (row.priority, row.seq))[:limit]
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

        A replacement, deletion, suspension (of the tenant, a batch or the whole
        scheduler) or new ``deferred_ts`` that arrived after the claim takes
        effect here (SPEC §18.3); a skipped row's claim is
        released so it can be claimed again when due.
        """
        with self._db.atomic():
            found = _BEGIN_ROW.values(self._db, pk)
            if not found:
                return None
            claimed_by, status, batch_code, deferred_ts, tenant_id, *rest = found[0]
            message_id, account_id, payload, retry_count = rest
            if claimed_by != me or status != models.PENDING:
                return None
            held = tenant is None or tenant.is_suspended(batch_code) or _scheduler_stopped()
            not_due = deferred_ts is not None and deferred_ts > now
            if held or not_due:
                _UNCLAIM.execute(self._db, pk)
                return None
            _MARK_SENDING.execute(self._db, now + lease_s, now, pk)
        return MessageToSend(
            pk=pk,
            tenant_id=tenant_id,
            id=message_id,
            account_id=account_id,
            payload=map_payload(
                loads(payload),
                self._codec.opener(
                    f"attachment auth of message {pk}", {"tenant_id": tenant_id, "pk": pk}
                ),
            ),
            attempt=retry_count + 1,
            retry_count=retry_count,
        )

    def abandon_attempt(self, pk: str, *, me: str) -> bool:
        """Undo ``begin_attempt`` for a row that was never transmitted; the claim stays ours.

        Returns whether the row was still ours and ``sending`` (and is now pending).
        """
        return bool(
            M.update(status=models.PENDING)
            .where((M.pk == pk) & (M.claimed_by == me) & (M.status == models.SENDING))
            .execute()
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
        columns, event_type, description, metadata = outcome_columns(
            sending, outcome, now=now, max_retries=max_retries, retry_delays=retry_delays, rng=rng
        )
        columns |= {"claimed_by": None, "lease_expires_ts": None, "updated_ts": now}
        # A new reportable event: not fully reported until the tenant acknowledges it (§5.1).
        columns["reported_ts"] = None
        if message_id is not None:
            columns["message_id"] = message_id
        event = _event(
            sending.pk,
            sending.tenant_id,
            event_type,
            now=now,
            description=description,
            metadata=metadata,
        )
        with self._db.atomic():
            if not _RECORD_OUTCOME.execute(self._db, columns, sending.pk, me):
                return None
            _INSERT_EVENT.execute(self._db, event)
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
        """Accounts with at least one due, unclaimed message (the supervisor's wake-up scan).

        None while the deployment-wide scheduler is suspended.
        """
        if _scheduler_stopped():
            return []
        return [(t, a) for t, a in _DUE_ACCOUNTS.values(self._db, now, now, limit)]

    # -- removing (queries in ``retention.py``) ----------------------------------------

    def delete_many(self, tenant_id: str, ids: Iterable[str]) -> Deletion:
        """Delete by client id within the tenant (SPEC §14.3)."""
        return self._retention.delete_messages(tenant_id, ids)

    def cleanup(self, tenant_id: str, *, cutoff_ts: int, has_sync_target: bool) -> int:
        """Remove the tenant's messages retention may take (SPEC §14.1, §14.2)."""
        return self._retention.cleanup(
            tenant_id, cutoff_ts=cutoff_ts, has_sync_target=has_sync_target
        )
