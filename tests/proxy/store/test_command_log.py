"""Command log queries: paging newest first, export oldest first, filters, purge."""

from __future__ import annotations

from proxy.store import Database
from proxy.store.command_log import CommandFilter, CommandLogStore

NOW = 1_767_225_600


def fill(store: Database) -> CommandLogStore:
    log = CommandLogStore(store.db)
    rows = [
        (NOW, "addTenant", "acme", "admin"),
        (NOW + 10, "addMessages", "acme", "tenant"),
        (NOW + 10, "deleteMessages", "acme", "tenant"),
        (NOW + 20, "addMessages", "globex", "admin"),
        (NOW + 30, "updateInstance", None, "admin"),
    ]
    for ts, endpoint, tenant, actor in rows:
        log.append(
            command_ts=ts,
            endpoint=endpoint,
            tenant_id=tenant,
            actor=actor,
            payload={"n": ts},
            response_status=200,
        )
    return log


def test_page_is_newest_first_with_the_total(store: Database) -> None:
    log = fill(store)
    records, total = log.page(CommandFilter(), limit=2)
    assert total == 5
    assert [r.endpoint for r in records] == ["updateInstance", "addMessages"]
    records, _ = log.page(CommandFilter(), limit=2, offset=2)
    assert [(r.command_ts, r.endpoint) for r in records] == [
        (NOW + 10, "deleteMessages"),  # same second: the later entry first
        (NOW + 10, "addMessages"),
    ]


def test_filters_combine(store: Database) -> None:
    log = fill(store)
    found, total = log.page(
        CommandFilter(tenant_id="acme", since_ts=NOW + 5, endpoint_filter="MESSAGES"), limit=10
    )
    assert total == 2
    assert {r.endpoint for r in found} == {"addMessages", "deleteMessages"}
    found, _ = log.page(CommandFilter(until_ts=NOW + 10, endpoint_filter="add"), limit=10)
    assert [r.endpoint for r in found] == ["addMessages", "addTenant"]
    assert log.page(CommandFilter(endpoint_filter="%"), limit=10) == ([], 0)  # no wildcard


def test_export_is_oldest_first_and_bounded(store: Database) -> None:
    log = fill(store)
    assert [r.command_ts for r in log.export(CommandFilter(), limit=3)] == [NOW, NOW + 10, NOW + 10]
    assert log.export(CommandFilter(tenant_id="globex"), limit=10)[0].payload == {"n": NOW + 20}


def test_purge_removes_entries_older_than_the_time(store: Database) -> None:
    log = fill(store)
    assert log.purge(NOW + 10) == 1
    assert log.purge(NOW + 10) == 0
    assert log.page(CommandFilter(), limit=10)[1] == 4
