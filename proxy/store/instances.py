"""The instances sharing one database: identity, heartbeats, liveness (SPEC §18.2).

Each running instance owns one ``InstanceHeartbeat`` row, keyed by its stable
``instance_id`` and stamped with a random boot nonce. It refreshes the row every
``HEARTBEAT_INTERVAL_S``; rows silent for ``HEARTBEAT_MAX_AGE_S`` are gone
instances. ``GET /status`` lists the live ones.

Two processes must never share an id. On PostgreSQL the proof that an id is in
use is a session advisory lock on it, held by the live instance on a connection
of its own: the server drops it the moment that process dies (even ``kill -9``),
so a crashed instance can be restarted at once, while a second live process with
the same id is refused. Where no lock can tell (the lock is free but a fresh row
carries another nonce), the row is taken over and the takeover logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import peewee

from proxy.store import models

logger = logging.getLogger(__name__)

H = models.InstanceHeartbeat
HEARTBEAT_INTERVAL_S = 10
HEARTBEAT_MAX_AGE_S = 30  # instances silent this long are gone


class InstanceIdInUse(Exception):
    """Another live process runs with this ``instance_id`` (start-up refuses: exit 2)."""


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    instance_id: str
    started_ts: int
    last_heartbeat_ts: int
    active: bool


class InstanceStore:
    def __init__(self, db: peewee.Database) -> None:
        self._db = db

    def register(self, instance_id: str, nonce: str, *, now: int, active: bool) -> bool:
        """Write this boot's row; returns True when it replaced a fresh row of a dead run.

        Callers have already proved no live process holds the id (the advisory
        lock on PostgreSQL, the file lock on SQLite).
        """
        with self._db.atomic():
            previous = H.get_or_none(H.instance_id == instance_id)
            fresh = previous is not None and previous.last_heartbeat_ts > now - HEARTBEAT_MAX_AGE_S
            taken_over = fresh and previous.nonce != nonce
            H.insert(
                instance_id=instance_id,
                nonce=nonce,
                started_ts=now,
                last_heartbeat_ts=now,
                active=active,
            ).on_conflict(
                conflict_target=[H.instance_id],
                update={
                    H.nonce: nonce,
                    H.started_ts: now,
                    H.last_heartbeat_ts: now,
                    H.active: active,
                },
            ).execute()
        if taken_over:
            logger.warning(
                "instance id %s had a fresh heartbeat from a run that is no longer connected "
                "(it stopped without a clean shutdown); taking the id over",
                instance_id,
            )
        return taken_over

    def beat(self, instance_id: str, nonce: str, *, now: int) -> bool:
        """Refresh this boot's row; False when the row is no longer ours (nonce changed)."""
        with self._db.atomic():
            updated = (
                H.update(last_heartbeat_ts=now)
                .where((H.instance_id == instance_id) & (H.nonce == nonce))
                .execute()
            )
        return updated == 1

    def leave(self, instance_id: str, nonce: str) -> None:
        """A clean shutdown removes the row at once (the instance is not 'gone' for 30 s)."""
        with self._db.atomic():
            H.delete().where((H.instance_id == instance_id) & (H.nonce == nonce)).execute()

    def release_thread_connection(self) -> None:
        """Close the calling thread's connection (the heartbeat thread, as it ends)."""
        if not self._db.is_closed():
            self._db.close()

    def live(self, now: int, max_age_s: int = HEARTBEAT_MAX_AGE_S) -> list[InstanceRecord]:
        """Instances whose heartbeat is younger than ``max_age_s``, by id."""
        query = H.select().where(H.last_heartbeat_ts > now - max_age_s).order_by(H.instance_id)
        return [
            InstanceRecord(
                instance_id=row.instance_id,
                started_ts=row.started_ts,
                last_heartbeat_ts=row.last_heartbeat_ts,
                active=bool(row.active),
            )
            for row in query
        ]
