"""The SQLite database class: request threads write first, WAL checkpoints in their own thread."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import peewee
import pytest

from proxy.store import sqlite as store_sqlite
from proxy.store.sqlite import Checkpointer, RequestFirstSqliteDatabase
from tests.fixtures.waiting import wait_until

pytestmark = pytest.mark.sqlite_only


@pytest.fixture
def db(tmp_path: Path) -> Iterator[RequestFirstSqliteDatabase]:
    database = RequestFirstSqliteDatabase(
        str(tmp_path / "t.db"),
        pragmas={"journal_mode": "wal", "busy_timeout": 5000, "wal_autocheckpoint": 0},
        lock_type="IMMEDIATE",
        check_same_thread=False,
    )
    database.execute_sql("CREATE TABLE log (who TEXT)")
    yield database
    database.close()


def _other_writer(path: str) -> sqlite3.Connection:
    """A connection of another process' kind: holds the write lock until it commits."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def _in_thread(target, *, requests: bool, db: RequestFirstSqliteDatabase) -> threading.Thread:
    def run() -> None:
        if requests:
            db.serve_requests_here()
        try:
            target()
        finally:
            db.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_request_thread_waits_for_a_held_lock_by_polling(db) -> None:
    holder = _other_writer(db.database)
    done = threading.Event()

    def write() -> None:
        with db.atomic():
            db.execute_sql("INSERT INTO log VALUES ('request')")
        done.set()

    thread = _in_thread(write, requests=True, db=db)
    assert not done.wait(0.05)  # the lock is held: it keeps trying, it does not fail
    holder.execute("COMMIT")
    holder.close()
    thread.join(5)
    assert done.is_set()
    assert db.execute_sql("SELECT who FROM log").fetchall() == [("request",)]


def test_a_request_threads_statement_outside_a_transaction_waits_too(db) -> None:
    holder = _other_writer(db.database)
    done = threading.Event()

    def write() -> None:
        db.execute_sql("INSERT INTO log VALUES ('autocommit')")
        done.set()

    thread = _in_thread(write, requests=True, db=db)
    assert not done.wait(0.05)
    holder.execute("COMMIT")
    holder.close()
    thread.join(5)
    assert done.is_set()


def test_actors_hold_back_while_a_request_write_is_announced(db) -> None:
    order: list[str] = []
    with db._turns:
        db._requests_writing = 1  # a request thread announced its write and is polling

    def actor() -> None:
        with db.atomic():
            order.append("actor")

    actor_thread = _in_thread(actor, requests=False, db=db)
    wait_until(lambda: len(db._turns._waiters) == 1, what="the actor waits its turn")
    order.append("request")
    db._local.announced = True  # this thread is the request finishing its transaction
    db._done_writing()
    actor_thread.join(5)
    assert order == ["request", "actor"]
    assert db._requests_writing == 0


def test_an_actor_waits_for_requests_no_longer_than_its_limit(db, monkeypatch) -> None:
    monkeypatch.setattr(store_sqlite, "ACTOR_YIELD_S", 0.05)
    db._requests_writing = 1  # a request that never finishes announcing (a stuck thread)
    finished = threading.Event()

    def actor() -> None:
        with db.atomic():
            db.execute_sql("INSERT INTO log VALUES ('actor')")
        finished.set()

    started = time.monotonic()
    _in_thread(actor, requests=False, db=db).join(5)
    assert finished.is_set()
    assert time.monotonic() - started < 2  # not starved


def test_a_failed_request_transaction_withdraws_its_announcement(db) -> None:
    def failing() -> None:
        with pytest.raises(peewee.OperationalError), db.atomic():
            db.execute_sql("INSERT INTO nowhere VALUES (1)")

    _in_thread(failing, requests=True, db=db).join(5)
    assert db._requests_writing == 0


def test_checkpointer_keeps_the_wal_from_growing(tmp_path: Path) -> None:
    path = str(tmp_path / "c.db")
    db = RequestFirstSqliteDatabase(
        path, pragmas={"journal_mode": "wal", "wal_autocheckpoint": 0}, check_same_thread=False
    )
    db.execute_sql("CREATE TABLE blob (data BLOB)")
    wal = Path(path + "-wal")

    def write_5_mb() -> None:
        for _ in range(50):
            db.execute_sql("INSERT INTO blob VALUES (randomblob(100000))")

    def checkpoint_after_now() -> None:
        runs = checkpointer.runs
        wait_until(lambda: checkpointer.runs >= runs + 2, what="a checkpoint after the writes")

    checkpointer = Checkpointer(db, interval_s=0.01)
    write_5_mb()
    checkpointer.start()
    try:
        checkpoint_after_now()
        size = wal.stat().st_size
        for _ in range(6):  # without checkpoints the WAL would grow by 5 MB each time
            write_5_mb()
            checkpoint_after_now()
        assert wal.stat().st_size <= 3 * size  # reused from its start, not 7 times the size
        assert db.execute_sql("SELECT count(*) FROM blob").fetchone() == (350,)
    finally:
        checkpointer.stop()
        db.close()
