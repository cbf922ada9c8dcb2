"""Event queries: history, unreported reportable events, acknowledgement.

Reports are at-least-once: events are marked reported only after the tenant
acknowledged the call that carried them, with ``WHERE reported_ts IS NULL`` so
an event is acknowledged at most once (SPEC §10.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import peewee

from proxy.store import models
from proxy.store.prepared import InList, Prepared, Slot
from proxy.store.records import EventRecord, loads

E = models.MessageEvent
M = models.Message


def _record(row: E, client_id: str) -> EventRecord:
    return EventRecord(
        event_id=row.event_id,
        message_pk=row.message_pk,
        tenant_id=row.tenant_id,
        message_id=client_id,
        event_type=row.event_type,
        event_ts=row.event_ts,
        description=row.description,
        metadata=loads(row.metadata) or {},
        reported_ts=row.reported_ts,
    )


def _chunks(items: Sequence[str], size: int = 500) -> list[list[str]]:
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def _unreported(tenant_id: str) -> peewee.Expression:
    return (E.tenant_id == tenant_id) & (E.reportable == True) & E.reported_ts.is_null()  # noqa: E712


# Run by every sync call: compiled once (proxy/store/prepared.py).
_UNREPORTED = Prepared(
    lambda tenant_id, limit: (
        E.select(E, M.id.alias("client_id"))
        .join(M, on=(M.pk == E.message_pk))
        .where(_unreported(tenant_id))
        .order_by(E.event_ts, E.event_id)
        .limit(limit)
    ),
    Slot.text(),
    Slot.number(),
)
_COUNT_UNREPORTED = Prepared(
    lambda tenant_id: E.select(peewee.fn.COUNT(E.event_id).alias("n")).where(
        _unreported(tenant_id)
    ),
    Slot.text(),
)

_ANY_UNREPORTED = Prepared(  # per sync decision: one index probe, not a count of a backlog
    lambda tenant_id: E.select(E.event_id).where(_unreported(tenant_id)).limit(1),
    Slot.text(),
)


def _fresh(event_ids: list[Any]) -> peewee.Expression:
    return E.event_id.in_(event_ids) & E.reported_ts.is_null()


_FRESH_PKS = InList(lambda ids: E.select(E.message_pk).where(_fresh(ids)), Slot.number)
_MARK_EVENTS = InList(
    lambda ids, now: E.update(reported_ts=now).where(_fresh(ids)), Slot.number, Slot.number
)
_STILL_UNREPORTED = peewee.fn.EXISTS(
    E.select(E.event_id).where(
        (E.message_pk == M.pk) & (E.reportable == True) & E.reported_ts.is_null()  # noqa: E712
    )
)
_MARK_FULLY_REPORTED = InList(
    lambda pks, now: M.update(reported_ts=now).where(M.pk.in_(pks) & ~_STILL_UNREPORTED),
    Slot.text,
    Slot.number,
)


class EventStore:
    def __init__(self, db: peewee.Database) -> None:
        self._db = db

    def history(self, message_pk: str) -> list[EventRecord]:
        client_id = M.select(M.id).where(M.pk == message_pk).scalar()
        query = E.select().where(E.message_pk == message_pk).order_by(E.event_ts, E.event_id)
        return [_record(row, client_id or "") for row in query]

    def histories(self, message_pks: Sequence[str]) -> dict[str, list[EventRecord]]:
        """Every listed message's events, chronological, in one query per 500 messages."""
        found: dict[str, list[EventRecord]] = {pk: [] for pk in message_pks}
        for chunk in _chunks(message_pks):
            query = (
                E.select(E, M.id.alias("client_id"))
                .join(M, on=(M.pk == E.message_pk))
                .where(E.message_pk.in_(chunk))
                .order_by(E.event_ts, E.event_id)
            )
            for row in query:
                found[row.message_pk].append(_record(row, row.message.client_id))
        return found

    def latest_notes(self, message_pks: Sequence[str]) -> dict[str, dict[str, EventRecord]]:
        """The latest ``bounce`` and ``pec_*`` event of each listed message (SPEC §3.9).

        Keyed by pk, then by ``"bounce"`` or ``"pec"``; messages with neither are absent.
        """
        notes: dict[str, dict[str, EventRecord]] = {}
        for chunk in _chunks(message_pks):
            query = (
                E.select()
                .where(
                    E.message_pk.in_(chunk)
                    & ((E.event_type == "bounce") | E.event_type.startswith("pec_"))
                )
                .order_by(E.event_ts, E.event_id)
            )
            for row in query:
                kind = "bounce" if row.event_type == "bounce" else "pec"
                notes.setdefault(row.message_pk, {})[kind] = _record(row, "")
        return notes

    def unreported(self, tenant_id: str, limit: int) -> list[EventRecord]:
        """The oldest unreported reportable events of a tenant, in report order (SPEC §10.3)."""
        return [_record(row, row.client_id) for row in _UNREPORTED.rows(E, tenant_id, limit)]

    def has_unreported(self, tenant_id: str) -> bool:
        return bool(_ANY_UNREPORTED.values(self._db, tenant_id))

    def count_unreported(self, tenant_id: str) -> int:
        return int(_COUNT_UNREPORTED.values(self._db, tenant_id)[0][0])

    def tenants_with_unreported(self) -> list[str]:
        query = (
            E.select(E.tenant_id)
            .where((E.reportable == True) & E.reported_ts.is_null())  # noqa: E712
            .group_by(E.tenant_id)
        )
        return [row.tenant_id for row in query]

    def mark_reported(self, event_ids: Sequence[int], now: int) -> int:
        """Acknowledge events; a message with every reportable event acked gets ``reported_ts``."""
        if not event_ids:
            return 0
        marked = 0
        with self._db.atomic():
            for start in range(0, len(event_ids), 500):
                chunk = list(event_ids[start : start + 500])
                pks = sorted({pk for (pk,) in _FRESH_PKS.values(self._db, chunk)})
                marked += _MARK_EVENTS.execute(self._db, chunk, now)
                if pks:
                    _MARK_FULLY_REPORTED.execute(self._db, pks, now)
        return marked
