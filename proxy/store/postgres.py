"""The PostgreSQL database class: a bounded pool shared by many threads (SPEC §18.2).

peewee keeps one connection per thread until it is closed; with an actor thread
per account that would need as many connections as accounts. Here a thread gives
its connection back to the pool after each statement run outside a transaction
and after its outermost transaction ends, so ``GMP_DB_POOL_SIZE`` bounds the
connections however many actors run; a thread finding the pool empty waits for
one (``POOL_WAIT_S``). Results are read client-side by psycopg2, so a cursor stays
readable after its connection went back.

The price: every checkout and check-in passes peewee's database-wide lock, which
the benchmark shows as lock waits with ~30 threads (bench/RESULTS.md, "Several
instances"). Keeping a connection for a burst of statements was tried and did
not measurably help; see the notes of issue 9.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from peewee import PostgresqlDatabase
from playhouse.pool import PooledPostgresqlDatabase

POOL_WAIT_S = 30  # how long a thread waits for a free connection


class SharedPostgresDatabase(PooledPostgresqlDatabase):
    def _release_if_idle(self) -> None:
        if self.transaction_depth() == 0 and not self.is_closed():
            self.close()

    def _connect_raw(self) -> Any:
        """A connection outside the pool, for a lock held as long as the process."""
        return PostgresqlDatabase._connect(self)

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        cursor = super().execute_sql(sql, params)
        self._release_if_idle()
        return cursor

    @contextlib.contextmanager
    def atomic(self, *args: Any, **kwargs: Any) -> Iterator[Any]:  # type: ignore[override]
        try:
            with super().atomic(*args, **kwargs) as transaction:
                yield transaction
        finally:
            self._release_if_idle()
