"""WAL checkpoints of the embedded SQLite database, off the request path.

By default the committing thread runs the WAL checkpoint every ~1,000 written
pages (copy to the database file, fsync): one API request in a hundred paid
several milliseconds for it (add p99 6 ms against 3.3 ms without). The
database is opened with ``wal_autocheckpoint = 0`` and ``Checkpointer`` runs
a PASSIVE checkpoint every second in its own thread instead; PASSIVE never
waits for readers or writers, and what it cannot copy now is copied next time.

Tried and not kept: waiting for the write lock by polling in Python instead of
SQLite's busy handler (sleeps of 1, 2, 5, 10 … ms). With ten accounts and
ten tenants writing, the polls cost more than the sleeps they saved
(10 tenants: 300 → 60–80 msg/s).
"""

from __future__ import annotations

import logging
import threading

import peewee

logger = logging.getLogger(__name__)

CHECKPOINT_INTERVAL_S = 1.0
STOP_WAIT_S = 10.0


class Checkpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` every ``interval_s`` until stopped.

    The thread closes its own connection when it stops.
    """

    def __init__(
        self, db: peewee.SqliteDatabase, interval_s: float = CHECKPOINT_INTERVAL_S
    ) -> None:
        self._db = db
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=STOP_WAIT_S)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._interval_s):
                try:
                    self._db.execute_sql("PRAGMA wal_checkpoint(PASSIVE)")
                except peewee.PeeweeException:
                    logger.warning("WAL checkpoint failed; trying again", exc_info=True)
        finally:
            if not self._db.is_closed():
                self._db.close()
