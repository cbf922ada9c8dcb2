"""Opening the database: connection settings, the single-instance lock, migrations.

SQLite is the embedded default (WAL, ``synchronous=NORMAL``, 5 s busy timeout,
WAL checkpoints in a thread of their own (``sqlite.py``), every write
transaction ``BEGIN IMMEDIATE`` so a read-then-write never fails with
``SQLITE_BUSY_SNAPSHOT``). PostgreSQL URLs are accepted too; the queries
are written for both. Nothing here knows about messages or tenants.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import unquote, urlparse

import peewee
from peewee import PostgresqlDatabase

from proxy.store import models
from proxy.store.instances import InstanceIdInUse
from proxy.store.postgres import POOL_WAIT_S, SharedPostgresDatabase
from proxy.store.sqlite import Checkpointer, RequestFirstSqliteDatabase

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000


class StoreError(Exception):
    """The store cannot be opened (bad URL, lock held, unreadable file)."""


class StoreLocked(StoreError):
    """Another live instance holds this SQLite file (SPEC §18.1)."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    apply: Callable[[peewee.Database], None]


# Fresh databases get the current schema and are stamped with the latest
# version; existing ones run every migration above their stamp, in order.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "initial schema",
        lambda db: db.create_tables(
            [
                models.SchemaMigration,
                models.InstanceSetting,
                models.Tenant,
                models.TenantApiKey,
                models.Account,
                models.Message,
                models.MessageEvent,
            ],
            safe=True,
        ),
    ),
    Migration(
        2,
        "command log, rate counters, instance heartbeats",
        lambda db: db.create_tables(
            [models.CommandLogEntry, models.RateCounter, models.InstanceHeartbeat], safe=True
        ),
    ),
    Migration(3, "sync leases", lambda db: db.create_tables([models.SyncLease], safe=True)),
    Migration(4, "large files", lambda db: db.create_tables([models.LargeFile], safe=True)),
    Migration(
        5,
        "bounce and PEC: processed mails, mailbox cursors, Message-ID index",
        lambda db: (
            db.create_tables([models.ProcessedMail, models.MailboxState], safe=True),
            models.Message._schema.create_indexes(safe=True),
        ),
    ),
    Migration(
        6,
        "run-now forwarded between instances",
        lambda db: db.create_tables([models.WakeRequest], safe=True),
    ),
)
LATEST_VERSION = MIGRATIONS[-1].version


def _sqlite_target(url: str) -> tuple[str, bool]:
    """Return (database argument, is_memory) for a SQLite URL or path."""
    path = url.removeprefix("sqlite:").removeprefix("//") if url.startswith("sqlite:") else url
    if path in (":memory:", ""):
        return f"file:mailproxy-{uuid.uuid4().hex}?mode=memory&cache=shared", True
    return path, False


class Store:
    """An open database plus what must live exactly as long as it.

    Use ``Store.open(url)``; ``close()`` releases the connection(s) and the lock.
    Query objects (``store.tenants``, ``store.messages`` …) are attached by
    ``proxy.store.open_store`` so this module stays free of business queries.
    """

    def __init__(self, db: peewee.Database, *, is_sqlite: bool, lock_file: IO[str] | None) -> None:
        self.db = db
        self.is_sqlite = is_sqlite
        self._lock_file = lock_file
        self._keepalive: sqlite3.Connection | None = None
        self._checkpointer: Checkpointer | None = None
        self._identity_conn: Any = None

    @classmethod
    def open(cls, url: str, *, pool_size: int = 10) -> Store:
        if url.startswith(("postgresql://", "postgres://")):
            return cls._open_postgres(url, pool_size)
        return cls._open_sqlite(url)

    @classmethod
    def _open_sqlite(cls, url: str) -> Store:
        target, is_memory = _sqlite_target(url)
        lock_file = None
        if not is_memory:
            directory = os.path.dirname(os.path.abspath(target))
            if not os.path.isdir(directory):
                raise StoreError(f"database directory does not exist: {directory}")
            lock_file = _take_lock(target + ".lock")
        db = RequestFirstSqliteDatabase(
            target,
            pragmas={
                "journal_mode": "memory" if is_memory else "wal",
                "synchronous": "normal",
                "busy_timeout": BUSY_TIMEOUT_MS,
                "wal_autocheckpoint": 0,  # the Checkpointer thread does it
                "foreign_keys": 0,
            },
            lock_type="IMMEDIATE",
            uri=is_memory,
            check_same_thread=False,
        )
        store = cls(db, is_sqlite=True, lock_file=lock_file)
        if is_memory:
            # A shared-cache memory database lives while one connection is open.
            store._keepalive = sqlite3.connect(target, uri=True, check_same_thread=False)
        else:
            store._checkpointer = Checkpointer(db)
            store._checkpointer.start()
        return store

    @classmethod
    def _open_postgres(cls, url: str, pool_size: int) -> Store:
        parsed = urlparse(url)
        db = SharedPostgresDatabase(
            (parsed.path or "/").lstrip("/"),
            user=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            host=parsed.hostname,
            port=parsed.port or 5432,
            max_connections=pool_size,
            stale_timeout=300,
            timeout=POOL_WAIT_S,
        )
        return cls(db, is_sqlite=False, lock_file=None)

    def bind(self) -> None:
        """Point the models at this database and bring the schema up to date."""
        models.database_proxy.initialize(self.db)
        migrate(self.db)

    def hold_instance_id(self, instance_id: str) -> None:
        """Prove no other live process runs as ``instance_id`` (SPEC §18.2), until ``close()``.

        PostgreSQL: a session advisory lock on the id, on a connection of its own
        that lives as long as the process (the server frees it when the process
        dies). SQLite: the file lock already makes this the only instance.
        """
        if self.is_sqlite:
            return
        conn = self.db._connect_raw()  # type: ignore[attr-defined]
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", (advisory_key(f"id:{instance_id}"),))
            (held,) = cursor.fetchone()
        if not held:
            conn.close()
            raise InstanceIdInUse(
                f"instance id {instance_id!r} is in use by another running instance on this "
                "database: give each instance its own GMP_INSTANCE_ID"
            )
        self._identity_conn = conn

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """One transaction that only one instance at a time runs (start-up work, SPEC §18.2).

        PostgreSQL: a transaction advisory lock on ``name``, freed at commit or
        rollback. SQLite: a plain write transaction (one instance per file).
        """
        with self.db.atomic():
            if not self.is_sqlite:
                _advisory_xact_lock(self.db, name)
            yield

    def tx(self) -> peewee._atomic:
        """A write transaction (IMMEDIATE on SQLite)."""
        return self.db.atomic()

    def serve_requests_here(self) -> None:
        """The calling thread serves API requests: its writes go first (SQLite, ``sqlite.py``)."""
        if isinstance(self.db, RequestFirstSqliteDatabase):
            self.db.serve_requests_here()

    def release_thread_connection(self) -> None:
        """Close the calling thread's connection; actors call this in ``on_stop``."""
        if not self.db.is_closed():
            self.db.close()

    def ping(self) -> bool:
        """A trivial query, for /health."""
        try:
            self.db.execute_sql("SELECT 1").fetchone()
        except peewee.PeeweeException:
            logger.exception("database ping failed")
            return False
        return True

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        with contextlib.suppress(peewee.PeeweeException):
            self.db.close()
        if isinstance(self.db, peewee.PostgresqlDatabase) and hasattr(self.db, "close_all"):
            self.db.close_all()
        if self._identity_conn is not None:
            with contextlib.suppress(Exception):
                self._identity_conn.close()
            self._identity_conn = None
        if self._keepalive is not None:
            self._keepalive.close()
            self._keepalive = None
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None


def _take_lock(path: str) -> IO[str]:
    """Hold an exclusive OS lock for the instance's lifetime (released by the kernel on kill -9)."""
    try:
        handle = open(path, "a+")  # noqa: SIM115 (held open for the process lifetime)
    except OSError as exc:
        raise StoreError(f"cannot open lock file {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise StoreLocked(
            f"database {path.removesuffix('.lock')} is in use by another instance "
            f"(lock {path} is held)"
        ) from exc
    return handle


def migrate(db: peewee.Database) -> int:
    """Apply pending migrations; idempotent. Returns the schema version now in force."""
    with db.atomic():
        if isinstance(db, PostgresqlDatabase):  # instances starting together migrate in turn
            _advisory_xact_lock(db, "migrate")
        if not db.table_exists(models.SchemaMigration._meta.table_name):
            db.create_tables(models.ALL_MODELS, safe=True)
            now = _now()
            for migration in MIGRATIONS:
                models.SchemaMigration.insert(version=migration.version, applied_ts=now).execute()
            logger.info("database schema created at version %s", LATEST_VERSION)
            return LATEST_VERSION
        current = (
            models.SchemaMigration.select(peewee.fn.MAX(models.SchemaMigration.version)).scalar()
            or 0
        )
        for migration in MIGRATIONS:
            if migration.version > current:
                logger.info("applying migration %s: %s", migration.version, migration.description)
                migration.apply(db)
                models.SchemaMigration.insert(
                    version=migration.version, applied_ts=_now()
                ).execute()
                current = migration.version
        return current


def locked(query: peewee.Select, db: peewee.Database) -> peewee.Select:
    """``SELECT … FOR UPDATE`` on PostgreSQL, so a read-then-write holds under concurrency.

    SQLite needs nothing: its write transactions (``BEGIN IMMEDIATE``) already
    exclude every other writer.
    """
    return query.for_update() if isinstance(db, PostgresqlDatabase) else query


def advisory_key(text: str) -> int:
    """A stable signed 64-bit key for PostgreSQL advisory locks (names, not numbers, in code)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


def _advisory_xact_lock(db: peewee.Database, name: str) -> None:
    db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (advisory_key(name),))


def _now() -> int:
    from proxy.clock import now_ts  # noqa: PLC0415 (keep this module's imports minimal)

    return now_ts()
