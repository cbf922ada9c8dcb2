"""Bounce and PEC queries: correlation, recording each mail once, mailbox cursors and leases.

Bounces and receipts add events to a sent message and never change its status
(SPEC §5.1). A mail is recorded in one transaction together with one
``ProcessedMail`` row per recipient, so the same mail seen again (after a crash
before flagging, a UIDVALIDITY change, or on a server without custom keywords)
records nothing. The mailbox lease lets one instance poll a mailbox at a time
(§18.4); a lease left by an earlier incarnation on this instance is taken over.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import getaddresses
from typing import Any

import peewee

from proxy.bounce.parse import Bounce, Original
from proxy.bounce.pec import Receipt
from proxy.store import models
from proxy.store.records import dumps, loads

M = models.Message
E = models.MessageEvent
P = models.ProcessedMail
B = models.MailboxState
S = models.InstanceSetting

BOUNCE_MAILBOX = "bounce"
EVENT, UNMATCHED, UNPARSEABLE = "event", "unmatched", "unparseable"
CANDIDATES = 50  # same client id in many tenants: the most recent 50 are enough to choose
TIMEOUT_BATCH = 500
PEC_ANSWERED = ("pec_acceptance", "pec_error", "pec_timeout")


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    message_pk: str
    tenant_id: str
    account_id: str
    event_type: str
    label: str  # bounce_type of a bounce, the event type of a PEC event (metric labels)


@dataclass(frozen=True, slots=True)
class Recorded:
    events: tuple[RecordedEvent, ...] = ()
    matched: bool = False  # some block matched a message, now or when first seen
    unmatched: int = 0  # blocks newly found to match nothing


@dataclass(frozen=True, slots=True)
class Cursor:
    uidvalidity: int | None
    last_uid: int


def pec_mailbox(tenant_id: str, account_id: str) -> str:
    return f"pec:{tenant_id}:{account_id}"


def _id_variants(message_id: str) -> list[str]:
    bare = message_id.strip().strip("<>")
    return [f"<{bare}>", bare]


def _recipients(payload_text: str) -> set[str]:
    payload = loads(payload_text) or {}
    values: list[str] = []
    for name in ("to", "cc", "bcc"):
        field = payload.get(name)
        values.extend([field] if isinstance(field, str) else list(field or []))
    return {addr.lower() for _, addr in getaddresses(values) if addr}


def _sent(condition: peewee.Expression) -> list[M]:
    return list(
        M.select(M.pk, M.tenant_id, M.id, M.account_id, M.payload, M.sent_ts, M.seq)
        .where(condition & (M.status == models.SENT))
        .order_by(M.sent_ts.desc(), M.seq.desc())
        .limit(CANDIDATES)
    )


def _pick(rows: list[M], recipient: str | None) -> M | None:
    """One candidate: the only one, else the one sent to ``recipient``, else the latest."""
    if len(rows) <= 1:
        return rows[0] if rows else None
    if recipient:
        for row in rows:
            if recipient.lower() in _recipients(row.payload):
                return row
    return rows[0]


def _add_reportable_event(row: M, event: dict[str, Any]) -> None:
    """Insert the event; the message is no longer fully reported until it is acknowledged."""
    E.insert(**event).execute()
    M.update(reported_ts=None).where(M.pk == row.pk).execute()


def _event_row(row: M, event_type: str, ts: int, text: str | None, meta: dict) -> dict[str, Any]:
    return {
        "message_pk": row.pk,
        "tenant_id": row.tenant_id,
        "event_type": event_type,
        "event_ts": ts,
        "description": text,
        "metadata": dumps({k: v for k, v in meta.items() if v is not None}),
        "reportable": models.is_reportable(event_type),
    }


def _remember(mail_key: str, recipient: str, outcome: str, pk: str | None, now: int) -> None:
    P.insert(
        mail_key=mail_key, recipient=recipient, outcome=outcome, message_pk=pk, processed_ts=now
    ).execute()


class BounceStore:
    def __init__(self, db: peewee.Database) -> None:
        self._db = db

    # -- correlation -----------------------------------------------------------------------

    def _match_bounce(self, original: Original, recipient: str | None) -> M | None:
        """SPEC §11.4: the stored Message-ID first, then the client id with its tie-break."""
        if original.message_id:
            rows = _sent(M.message_id.in_(_id_variants(original.message_id)))
            if rows:
                return _pick(rows, recipient)
        if original.genro_id:
            return _pick(_sent(M.id == original.genro_id), recipient)
        return None

    def _match_receipt(self, tenant_id: str, account_id: str, receipt: Receipt) -> M | None:
        """SPEC §12 rule 4, within the PEC account the receipt came to."""
        scope = (M.tenant_id == tenant_id) & (M.account_id == account_id)
        for reference in receipt.reference_ids:
            rows = _sent(scope & M.message_id.in_(_id_variants(reference)))
            if rows:
                return rows[0]
        if receipt.genro_id:
            rows = _sent(scope & (M.id == receipt.genro_id))
            return rows[0] if rows else None
        return None

    # -- recording -----------------------------------------------------------------------------

    def record_bounce(self, mail_key: str, bounce: Bounce, now: int) -> Recorded:
        """One ``bounce`` event per matched recipient block, in one transaction (§11.4)."""
        events: list[RecordedEvent] = []
        matched, unmatched = False, 0
        with self._db.atomic():
            for block in bounce.recipients:
                recipient = (block.recipient or "").lower()[:320]
                seen = P.get_or_none((P.mail_key == mail_key) & (P.recipient == recipient))
                if seen is not None:
                    matched |= seen.outcome == EVENT
                    continue
                row = self._match_bounce(bounce.original, block.recipient)
                if row is None:
                    _remember(mail_key, recipient, UNMATCHED, None, now)
                    unmatched += 1
                    continue
                meta = {
                    "bounce_type": block.bounce_type,
                    "bounce_code": block.bounce_code,
                    "bounce_smtp_code": block.smtp_code,
                    "recipient": block.recipient,
                }
                _add_reportable_event(row, _event_row(row, "bounce", now, block.reason, meta))
                _remember(mail_key, recipient, EVENT, row.pk, now)
                events.append(
                    RecordedEvent(
                        row.pk, row.tenant_id, row.account_id, "bounce", block.bounce_type
                    )
                )
                matched = True
        return Recorded(tuple(events), matched, unmatched)

    def record_receipt(
        self, tenant_id: str, account_id: str, mail_key: str, receipt: Receipt, now: int
    ) -> Recorded:
        """One ``pec_*`` event for a receipt, once per receipt and recipient (§12 rule 7)."""
        recipient = (receipt.recipient or "").lower()[:320]
        with self._db.atomic():
            seen = P.get_or_none((P.mail_key == mail_key) & (P.recipient == recipient))
            if seen is not None:
                return Recorded(matched=seen.outcome == EVENT)
            row = self._match_receipt(tenant_id, account_id, receipt)
            if row is None:
                _remember(mail_key, recipient, UNMATCHED, None, now)
                return Recorded(unmatched=1)
            meta = {
                "receipt": receipt.receipt,
                "recipient": receipt.recipient,
                "receipt_message_id": receipt.receipt_message_id,
            }
            ts = min(receipt.pec_ts or now, now)  # an event is never in the future (§5.3)
            _add_reportable_event(
                row, _event_row(row, receipt.event_type, ts, receipt.details, meta)
            )
            _remember(mail_key, recipient, EVENT, row.pk, now)
        event = RecordedEvent(
            row.pk, row.tenant_id, row.account_id, receipt.event_type, receipt.event_type
        )
        return Recorded((event,), matched=True)

    def remember_unparseable(self, mail_key: str, now: int) -> bool:
        """Note an unparseable mail; True the first time (it is counted once)."""
        with self._db.atomic():
            if P.select().where((P.mail_key == mail_key) & (P.recipient == "")).exists():
                return False
            _remember(mail_key, "", UNPARSEABLE, None, now)
            return True

    def record_pec_timeouts(
        self, tenant_id: str, account_id: str, *, poll_started_ts: int, timeout_s: int, now: int
    ) -> list[RecordedEvent]:
        """``pec_timeout`` for PEC messages with no acceptance or error in time (§12 rule 6).

        Called after a successful poll that began at ``poll_started_ts``; a message
        is due when ``sent_ts + timeout_s < poll_started_ts``. One event per message.
        """
        answered = E.select(E.event_id).where(
            (E.message_pk == M.pk) & E.event_type.in_(PEC_ANSWERED)
        )
        text = f"no acceptance or error receipt within {timeout_s} s"
        with self._db.atomic():
            rows = list(
                M.select(M.pk, M.tenant_id, M.account_id)
                .where(
                    (M.tenant_id == tenant_id)
                    & (M.account_id == account_id)
                    & (M.is_pec == True)  # noqa: E712 (peewee expression)
                    & (M.status == models.SENT)
                    & (M.sent_ts < poll_started_ts - timeout_s)
                    & ~peewee.fn.EXISTS(answered)
                )
                .limit(TIMEOUT_BATCH)
            )
            for row in rows:
                meta = {"timeout_s": timeout_s}
                E.insert(**_event_row(row, "pec_timeout", now, text, meta)).execute()
        return [
            RecordedEvent(row.pk, row.tenant_id, row.account_id, "pec_timeout", "pec_timeout")
            for row in rows
        ]

    def prune_processed(self, before_ts: int) -> int:
        """Forget processed mails older than ``before_ts`` (their mailbox copies are flagged)."""
        return P.delete().where(P.processed_ts < before_ts).execute()

    # -- cursors and leases ------------------------------------------------------------------

    def acquire_poll(
        self, mailbox: str, holder: str, *, instance_id: str, now: int, lease_s: int
    ) -> bool:
        """Take or renew the mailbox's poll lease; False while another instance holds it.

        One conditional UPDATE decides (see ``SyncStateStore.acquire``).
        """
        free_or_ours = (
            B.holder.is_null()
            | B.holder.startswith(f"{instance_id}/")
            | (peewee.fn.COALESCE(B.lease_expires_ts, 0) <= now)
        )
        with self._db.atomic():
            B.insert(
                mailbox=mailbox, holder=holder, lease_expires_ts=now + lease_s
            ).on_conflict_ignore().execute()
            taken = (
                B.update(holder=holder, lease_expires_ts=now + lease_s)
                .where((B.mailbox == mailbox) & free_or_ours)
                .execute()
            )
        return taken == 1

    def release_poll(self, mailbox: str, holder: str) -> None:
        B.update(holder=None, lease_expires_ts=None).where(
            (B.mailbox == mailbox) & (B.holder == holder)
        ).execute()

    def cursor(self, mailbox: str, identity: str) -> Cursor:
        """The stored cursor; a cursor of another server, user or folder reads as none."""
        row = B.get_or_none(B.mailbox == mailbox)
        if row is None or row.identity != identity:
            return Cursor(uidvalidity=None, last_uid=0)
        return Cursor(uidvalidity=row.uidvalidity, last_uid=row.last_uid or 0)

    def save_cursor(self, mailbox: str, identity: str, cursor: Cursor) -> None:
        """Store the cursor; the bounce mailbox's also shows in ``GET /instance`` (§3.12)."""
        values = {B.identity: identity, B.uidvalidity: cursor.uidvalidity}
        values[B.last_uid] = cursor.last_uid
        with self._db.atomic():
            B.insert({B.mailbox: mailbox, **values}).on_conflict(
                conflict_target=[B.mailbox], update=values
            ).execute()
            if mailbox != BOUNCE_MAILBOX:
                return
            for key, value in (
                ("bounce_last_uid", cursor.last_uid),
                ("bounce_uidvalidity", cursor.uidvalidity),
            ):
                text = None if value is None else str(value)
                S.insert(key=key, value=text).on_conflict(
                    conflict_target=[S.key], update={S.value: text}
                ).execute()

    def poll_succeeded(self, mailbox: str, started_ts: int) -> None:
        B.update(last_poll_ts=started_ts).where(B.mailbox == mailbox).execute()
