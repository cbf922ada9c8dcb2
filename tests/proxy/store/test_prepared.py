"""Prepared statements: compiled once per backend, run with new values (proxy/store/prepared.py)."""

from __future__ import annotations

import peewee
import pytest

from proxy.store import Database, models
from proxy.store.prepared import ByShape, InList, Prepared, Slot
from tests.fixtures.stores import accepted, add_tenant_and_account

M = models.Message
NOW = 1_767_225_600


def test_a_prepared_select_returns_converted_model_rows(store: Database) -> None:
    add_tenant_and_account(store)
    store.tenants.upsert("globex", {"name": "Globex", "active": False}, NOW)
    by_id = Prepared(lambda tid: models.Tenant.select().where(models.Tenant.id == tid), Slot.text())
    [acme] = by_id.rows(models.Tenant, "acme")
    [globex] = by_id.rows(models.Tenant, "globex")
    assert (acme.id, acme.active, globex.name, globex.active) == ("acme", True, "Globex", False)
    assert by_id.rows(models.Tenant, "nobody") == []


def test_a_prepared_update_substitutes_each_slot_and_keeps_constants(store: Database) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("m1"), accepted("m2")], NOW)
    bump = Prepared(
        lambda n, mid: M.update(retry_count=n).where((M.id == mid) & (M.status == "pending")),
        Slot.number(),
        Slot.text(),
    )
    assert bump.execute(store.db, 7, "m2") == 1
    assert bump.execute(store.db, 9, "nope") == 0
    assert {m.id: m.retry_count for m in M.select()} == {"m1": 0, "m2": 7}


def test_by_shape_compiles_one_statement_per_column_set(store: Database) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("m1")], NOW)
    update = ByShape(lambda columns, mid: M.update(**columns).where(M.id == mid), Slot.text)
    assert update.execute(store.db, {"error": "boom", "deferred_ts": None}, "m1") == 1
    assert update.execute(store.db, {"error": "again", "deferred_ts": None}, "m1") == 1
    assert update.execute(store.db, {"retry_count": 3, "is_pec": True}, "m1") == 1
    row = M.get(M.id == "m1")
    assert (row.error, row.deferred_ts, row.retry_count, row.is_pec) == ("again", None, 3, True)


def test_a_slot_the_query_does_not_use_is_refused(store: Database) -> None:
    unused = Prepared(lambda mid: M.select().where(M.id == "fixed"), Slot.text())
    with pytest.raises(ValueError, match="lost or repeated a slot"):
        unused.rows(M, "m1")


def test_values_are_the_raw_rows_and_an_in_list_compiles_per_length(store: Database) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("m1"), accepted("m2"), accepted("m3")], NOW)
    count = Prepared(
        lambda tid: M.select(peewee.fn.COUNT(M.pk)).where(M.tenant_id == tid), Slot.text()
    )
    assert count.values(store.db, "acme") == [(3,)]
    assert count.values(store.db, "nobody") == [(0,)]
    ids_of = InList(lambda ids: M.select(M.id).where(M.id.in_(ids)).order_by(M.id), Slot.text)
    assert ids_of.values(store.db, ["m3", "m1"]) == [("m1",), ("m3",)]
    assert ids_of.values(store.db, ["m2"]) == [("m2",)]
    assert ids_of.values(store.db, ["m2", "nope", "m1"]) == [("m1",), ("m2",)]
