"""The embedded SQLite database: request writes first, WAL checkpoints off the request path.

Two defaults of SQLite made API requests wait for work that was not theirs:

* By default the committing thread runs the WAL checkpoint every ~1,000 written
  pages (copy to the database file, fsync): one request in a hundred paid
  several milliseconds (API-only add p99 6.4–7.1 ms, 3.3–4.0 ms without). The
  database is opened with ``wal_autocheckpoint = 0`` and ``Checkpointer`` runs
  a PASSIVE checkpoint every second in its own thread instead; PASSIVE never
  waits for readers or writers, and what it cannot copy now is copied next time.
* A writer that finds the write lock taken sleeps in SQLite's busy handler
  (1, 2, 5, 10 … ms) between tries, while actors keep taking the lock:
  ``RequestFirstSqliteDatabase`` lets request threads announce their writes and
  poll in short steps, and makes actors wait for announced request writes.

Tried and not kept: every writer polling in Python (with ten busy accounts the
polls cost more than the sleeps they saved: 300 → 60–80 msg/s) and one
process-wide writer lock (strict turns cost a third of the throughput).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import peewee

logger = logging.getLogger(__name__)

T = TypeVar("T")
CHECKPOINT_INTERVAL_S = 1.0
STOP_WAIT_S = 10.0
LOCK_WAIT_S = 5.0  # as long as SQLite's busy timeout
FIRST_POLL_S = 0.00005
LONGEST_POLL_S = 0.001
ACTOR_YIELD_S = 0.05  # an actor waits at most this long for announced request writes


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
        self.runs = 0  # checkpoints run so far

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
                    self.runs += 1
                except peewee.PeeweeException:
                    logger.warning("WAL checkpoint failed; trying again", exc_info=True)
        finally:
            if not self._db.is_closed():
                self._db.close()


class RequestFirstSqliteDatabase(peewee.SqliteDatabase):
    """SQLite where a request thread's write goes before the actors' next ones.

    SQLite's busy handler sleeps 1, 2, 5, 10 … ms between tries of a taken
    write lock: a request that arrived just after an actor's 0.3 ms
    transaction began waited milliseconds, often several times in a row while
    actors kept taking the lock. Threads that serve requests call
    ``serve_requests_here()``; then their write transactions are announced
    (actors wait, up to ``ACTOR_YIELD_S``, before beginning one of theirs) and
    they poll the lock in short steps instead of sleeping in SQLite. Only
    request threads poll, so the polls stay few (when every writer polled,
    ten busy accounts spent more on polling than on sending).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._local = threading.local()
        self._turns = threading.Condition()
        self._requests_writing = 0  # announced and not yet committed or rolled back

    def serve_requests_here(self) -> None:
        """Mark the calling thread as a request thread (before its first query)."""
        self._local.requests = True

    def _is_request_thread(self) -> bool:
        return getattr(self._local, "requests", False)

    def _add_conn_hooks(self, conn: Any) -> None:
        super()._add_conn_hooks(conn)
        if self._is_request_thread():
            conn.execute("PRAGMA busy_timeout = 0")  # we poll: see _polled

    def begin(self, lock_type: str | None = None) -> None:
        base = super().begin
        if not self._is_request_thread():
            with self._turns:
                self._turns.wait_for(lambda: self._requests_writing == 0, ACTOR_YIELD_S)
            base(lock_type)
            return
        with self._turns:
            self._requests_writing += 1
        self._local.announced = True
        try:
            self._polled(lambda: base(lock_type))
        except BaseException:
            self._done_writing()
            raise

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._done_writing()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._done_writing()

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        base = super().execute_sql
        if self.in_transaction() or not self._is_request_thread():
            return base(sql, params)
        return self._polled(lambda: base(sql, params))

    def _done_writing(self) -> None:
        if getattr(self._local, "announced", False):
            self._local.announced = False
            with self._turns:
                self._requests_writing -= 1
                if self._requests_writing == 0:
                    self._turns.notify_all()

    def _polled(self, statement: Callable[[], T]) -> T:
        """Run ``statement``, trying again in short steps while the database is locked."""
        deadline = time.monotonic() + LOCK_WAIT_S
        pause = FIRST_POLL_S
        while True:
            try:
                return statement()
            except peewee.OperationalError as exc:
                if "database is locked" not in str(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, LONGEST_POLL_S)
