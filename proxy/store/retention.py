"""Removing messages: deletion by client id (SPEC §14.3) and retention cleanup (§14.1, §14.2).

A message always leaves together with its events, in one transaction. The
retention rules live here once, for the cleanup command and for the periodic
retention alike: only terminal messages go, and, for a tenant with a sync
target, only once every reportable event was acknowledged. Nothing here
decides *which* cutoff applies; callers pass it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import peewee

from proxy.store import models

M = models.Message
E = models.MessageEvent
CHUNK = 500  # keeps IN (...) lists under every backend's parameter limit


@dataclass(frozen=True, slots=True)
class Deletion:
    """What ``delete_messages`` did with each distinct id (sorted)."""

    removed: int
    not_found: tuple[str, ...]
    unauthorized: tuple[str, ...]


def _chunks(items: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield list(items[start : start + CHUNK])


def _fully_reported() -> peewee.Expression:
    """No reportable event of the message still waits for acknowledgement."""
    waiting = E.select(E.message_pk).where(
        (E.message_pk == M.pk) & (E.reportable == True) & E.reported_ts.is_null()  # noqa: E712
    )
    return ~peewee.fn.EXISTS(waiting)


class RetentionStore:
    def __init__(self, db: peewee.Database) -> None:
        self._db = db

    def delete_messages(self, tenant_id: str, ids: Iterable[str]) -> Deletion:
        """Delete the tenant's messages with these client ids, whatever their state.

        An id absent from the tenant is ``unauthorized`` when another tenant has
        it and ``not_found`` otherwise; another tenant's rows are never touched.
        A message being sent may still go out: its outcome finds no row and is
        discarded (``record_outcome`` checks the claim).
        """
        wanted = sorted(set(ids))
        removed = 0
        missing: list[str] = []
        with self._db.atomic():
            for chunk in _chunks(wanted):
                found = {
                    row.id: row.pk
                    for row in M.select(M.id, M.pk).where(
                        (M.tenant_id == tenant_id) & M.id.in_(chunk)
                    )
                }
                missing.extend(i for i in chunk if i not in found)
                removed += self._delete_pks(list(found.values()))
            elsewhere: set[str] = set()
            for chunk in _chunks(missing):
                query = M.select(M.id).where((M.tenant_id != tenant_id) & M.id.in_(chunk))
                elsewhere.update(row.id for row in query)
        return Deletion(
            removed=removed,
            not_found=tuple(i for i in missing if i not in elsewhere),
            unauthorized=tuple(i for i in missing if i in elsewhere),
        )

    def cleanup(self, tenant_id: str, *, cutoff_ts: int, has_sync_target: bool) -> int:
        """Remove the tenant's terminal messages that retention may take (SPEC §14.1).

        With a sync target: fully reported and ``reported_ts < cutoff_ts``.
        Without one (its events can never be acknowledged): ``smtp_ts < cutoff_ts``.
        Returns how many messages were removed.
        """
        condition = (M.tenant_id == tenant_id) & M.status.in_(models.TERMINAL)
        if has_sync_target:
            condition &= (
                M.reported_ts.is_null(False) & (M.reported_ts < cutoff_ts) & _fully_reported()
            )
        else:
            condition &= M.smtp_ts.is_null(False) & (M.smtp_ts < cutoff_ts)
        removed = 0
        with self._db.atomic():
            pks = [row.pk for row in M.select(M.pk).where(condition)]
            for chunk in _chunks(pks):
                removed += self._delete_pks(chunk)
        return removed

    def _delete_pks(self, pks: list[str]) -> int:
        if not pks:
            return 0
        E.delete().where(E.message_pk.in_(pks)).execute()
        return M.delete().where(M.pk.in_(pks)).execute()
