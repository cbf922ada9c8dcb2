"""Command log queries (SPEC §3.13): append, page through, export and purge audit entries.

Payloads arrive already masked (``proxy.api.audit``); this module stores and
reads them and knows nothing about secrets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import peewee

from proxy.store import models
from proxy.store.prepared import ByShape
from proxy.store.records import dumps, loads

C = models.CommandLogEntry
_INSERT = ByShape(lambda columns: C.insert(**columns))  # after every command: compiled once


@dataclass(frozen=True, slots=True)
class CommandRecord:
    id: int
    command_ts: int
    endpoint: str
    tenant_id: str | None
    actor: str  # admin | tenant
    payload: dict[str, Any] | None
    response_status: int


@dataclass(frozen=True, slots=True)
class CommandFilter:
    """Which entries a query reads; every bound is optional and inclusive."""

    tenant_id: str | None = None
    since_ts: int | None = None
    until_ts: int | None = None
    endpoint_filter: str | None = None  # substring of the command name, any case

    def select(self) -> peewee.ModelSelect:
        """The matching entries, unordered."""
        clauses = self._clauses()
        return C.select().where(*clauses) if clauses else C.select()

    def _clauses(self) -> list[peewee.Expression]:
        found = []
        if self.tenant_id is not None:
            found.append(C.tenant_id == self.tenant_id)
        if self.since_ts is not None:
            found.append(C.command_ts >= self.since_ts)
        if self.until_ts is not None:
            found.append(C.command_ts <= self.until_ts)
        if self.endpoint_filter:
            found.append(C.endpoint.contains(self.endpoint_filter))  # LIKE, wildcards escaped
        return found


def _record(row: C) -> CommandRecord:
    return CommandRecord(
        id=row.id,
        command_ts=row.command_ts,
        endpoint=row.endpoint,
        tenant_id=row.tenant_id,
        actor=row.actor,
        payload=loads(row.payload),
        response_status=row.response_status,
    )


class CommandLogStore:
    def __init__(self, db: peewee.Database) -> None:
        self._db = db

    def append(
        self,
        *,
        command_ts: int,
        endpoint: str,
        tenant_id: str | None,
        actor: str,
        payload: dict[str, Any] | None,
        response_status: int,
    ) -> None:
        entry = {
            "command_ts": command_ts,
            "endpoint": endpoint,
            "tenant_id": tenant_id,
            "actor": actor,
            "payload": None if payload is None else dumps(payload),
            "response_status": response_status,
        }
        with self._db.atomic():
            _INSERT.execute(self._db, entry)

    def page(
        self, where: CommandFilter, *, limit: int, offset: int = 0
    ) -> tuple[list[CommandRecord], int]:
        """Newest first (``command_ts``, then ``id``), with the total matching count."""
        query = where.select()
        rows = query.order_by(C.command_ts.desc(), C.id.desc()).limit(limit).offset(offset)
        return [_record(row) for row in rows], query.count()

    def export(self, where: CommandFilter, *, limit: int) -> list[CommandRecord]:
        """Oldest first, at most ``limit`` entries."""
        rows = where.select().order_by(C.command_ts, C.id).limit(limit)
        return [_record(row) for row in rows]

    def purge(self, before_ts: int) -> int:
        """Delete entries older than ``before_ts``; returns how many went."""
        with self._db.atomic():
            return int(C.delete().where(C.command_ts < before_ts).execute())
