"""Hot-path statements compiled by peewee once, then run with new values.

peewee turns every query object into SQL text in Python on every call; on the
send path that was about 40 % of the CPU per message (bench/RESULTS.md). A
``Prepared`` statement is still written as a peewee query, on both backends,
but compiled once: the first run builds it with marker values, remembers where
each marker landed among the parameters, and later runs only substitute values.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import peewee

_markers = itertools.count(1)


class Slot:
    """A parameter of a prepared statement: ``Slot.text()`` or ``Slot.number()``."""

    def __init__(self, marker: str | int) -> None:
        self.marker = marker

    @classmethod
    def text(cls) -> Slot:
        return cls(f"\x00slot-{next(_markers)}")

    @classmethod
    def number(cls) -> Slot:
        return cls(-(2**62) + next(_markers))


class Prepared:
    """``build(*markers)`` returns the peewee query; ``sql_and_params(*values)`` fills it in.

    Every slot's marker must appear among the compiled parameters exactly once;
    other parameters (constants in the query) are kept as compiled.
    """

    def __init__(self, build: Callable[..., peewee.Query], *slots: Slot) -> None:
        self._build = build
        self._slots = slots
        # One compilation per database class: SQLite and PostgreSQL differ in
        # placeholders and RETURNING (one process may open both, as the tests do).
        self._compiled: dict[type, tuple[str, list[int | None], list[Any]]] = {}
        self._lock = threading.Lock()

    def _compile(self, db: peewee.Database) -> tuple[str, list[int | None], list[Any]]:
        kind = type(db)
        found = self._compiled.get(kind)
        if found is not None:
            return found
        with self._lock:
            query = self._build(*(s.marker for s in self._slots))
            sql, params = query.sql()
            where: dict[Any, int] = {s.marker: n for n, s in enumerate(self._slots)}
            positions = [where.get(p) if isinstance(p, str | int) else None for p in params]
            if sorted(n for n in positions if n is not None) != list(range(len(self._slots))):
                raise ValueError(f"prepared statement lost or repeated a slot: {sql}")
            found = self._compiled[kind] = (sql, positions, list(params))
        return found

    def sql_and_params(self, db: peewee.Database, *values: Any) -> tuple[str, list[Any]]:
        sql, positions, constants = self._compile(db)
        return sql, [
            c if n is None else values[n] for n, c in zip(positions, constants, strict=True)
        ]

    def execute(self, db: peewee.Database, *values: Any) -> int:
        """Run a write; returns the row count."""
        sql, params = self.sql_and_params(db, *values)
        return db.execute_sql(sql, params).rowcount

    def values(self, db: peewee.Database, *values: Any) -> list[tuple[Any, ...]]:
        """Run a SELECT; its rows as the driver returns them, with no model or conversion.

        For ids, counts and flags on hot paths: building model instances cost more
        than the query itself.
        """
        sql, params = self.sql_and_params(db, *values)
        return db.execute_sql(sql, params).fetchall()

    def rows(self, model: type[peewee.Model], *values: Any) -> Sequence[peewee.Model]:
        """Run a SELECT of ``model``'s columns; model instances, values converted as usual."""
        db = model._meta.database
        sql, params = self.sql_and_params(getattr(db, "obj", db), *values)
        return list(model.raw(sql, *params))


def _slot_for(value: Any) -> Slot | None:
    """A slot for a value that varies between runs; None and booleans stay constants."""
    if value is None or isinstance(value, bool):
        return None
    return Slot.number() if isinstance(value, int) else Slot.text()


def _shape(values: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(
        (key, value if value is None or isinstance(value, bool) else type(value).__name__)
        for key, value in values.items()
    )


class ByShape:
    """Prepared statements whose column set varies: one compiled per shape of ``values``.

    ``build(columns, *extra)`` gets ``columns`` with markers (or the constant None
    and booleans) in place of the values, plus markers for the ``extra`` slots.
    """

    def __init__(self, build: Callable[..., peewee.Query], *extra: Callable[[], Slot]) -> None:
        self._build = build
        self._extra = extra
        self._cache: dict[tuple[tuple[str, Any], ...], tuple[Prepared, list[str]]] = {}

    def _prepared(self, values: dict[str, Any]) -> tuple[Prepared, list[str]]:
        key = _shape(values)
        found = self._cache.get(key)
        if found is None:
            slots = {k: _slot_for(v) for k, v in values.items()}
            varying = [k for k, s in slots.items() if s is not None]
            constants = {k: v for k, v in values.items() if slots[k] is None}
            extra = [make() for make in self._extra]

            def build(*markers: Any) -> peewee.Query:
                columns = constants | dict(zip(varying, markers[: len(varying)], strict=True))
                return self._build(columns, *markers[len(varying) :])

            slotted = [s for s in slots.values() if s is not None]
            found = self._cache[key] = (Prepared(build, *slotted, *extra), varying)
        return found

    def execute(self, db: peewee.Database, values: dict[str, Any], *extra_values: Any) -> int:
        prepared, varying = self._prepared(values)
        return prepared.execute(db, *(values[k] for k in varying), *extra_values)

    def execute_many(self, db: peewee.Database, rows: Sequence[dict[str, Any]]) -> None:
        """One ``executemany`` per shape (call inside a transaction: it holds the connection)."""
        groups: dict[tuple[tuple[str, Any], ...], list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(_shape(row), []).append(row)
        for group in groups.values():
            prepared, varying = self._prepared(group[0])
            batch = [prepared.sql_and_params(db, *(r[k] for k in varying)) for r in group]
            db.cursor().executemany(batch[0][0], [params for _sql, params in batch])


class InList:
    """Prepared statements with one ``IN (...)`` list: one compiled per list length.

    ``build(markers, *extra)`` gets the list's markers and the ``extra`` slots'
    markers. Lengths are bounded by the callers' chunk size, so the cache is too.
    """

    def __init__(
        self,
        build: Callable[..., peewee.Query],
        item: Callable[[], Slot],
        *extra: Callable[[], Slot],
    ) -> None:
        self._build = build
        self._item = item
        self._extra = extra
        self._cache: dict[int, Prepared] = {}

    def _prepared(self, length: int) -> Prepared:
        found = self._cache.get(length)
        if found is None:
            items = [self._item() for _ in range(length)]
            extra = [make() for make in self._extra]

            def build(*markers: Any) -> peewee.Query:
                return self._build(list(markers[:length]), *markers[length:])

            found = self._cache[length] = Prepared(build, *items, *extra)
        return found

    def execute(self, db: peewee.Database, items: Sequence[Any], *extra_values: Any) -> int:
        return self._prepared(len(items)).execute(db, *items, *extra_values)

    def values(
        self, db: peewee.Database, items: Sequence[Any], *extra_values: Any
    ) -> list[tuple[Any, ...]]:
        return self._prepared(len(items)).values(db, *items, *extra_values)
