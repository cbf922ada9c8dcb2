"""Sync coordination (proxy/store/sync_state.py): the call lease and the Supervisor's scan.

``tenants_needing_sync`` is the wake-up scan for reaped TenantActors: a tenant is
listed when it has a sync target and either its heartbeat is due (active, not
waiting for ``next_sync_ts``, not in DND) or it has unreported events and is not
in failure backoff.
"""

from __future__ import annotations

import pytest

from proxy.store import Database, models
from tests.fixtures.stores import accepted, add_tenant_and_account

T = models.Tenant
NOW = 1_767_225_600
URL = "http://127.0.0.1:9/"


def set_tenant(tenant_id: str, **fields) -> None:
    T.update(**fields).where(T.id == tenant_id).execute()


def with_unreported_event(store: Database, tenant_id: str) -> None:
    """A reportable event nobody acknowledged: a permanent error, written as the send path does."""
    store.messages.enqueue([accepted(f"{tenant_id}-m", tenant_id=tenant_id)], NOW - 100)
    models.MessageEvent.insert(
        message_pk=store.messages.get(tenant_id, f"{tenant_id}-m").pk,
        tenant_id=tenant_id,
        event_type="error",
        event_ts=NOW - 50,
        reportable=True,
    ).execute()


def needing(store: Database, *, has_global_target: bool = False, now: int = NOW) -> list[str]:
    return sorted(store.sync_state.tenants_needing_sync(now, has_global_target=has_global_target))


@pytest.fixture
def tenants(store: Database) -> Database:
    for tenant_id in ("due", "waiting", "dnd", "quiet", "failing", "nourl", "inactive"):
        add_tenant_and_account(store, tenant_id, now=NOW - 1000)
    for tenant_id in ("due", "waiting", "dnd", "quiet", "failing", "inactive"):
        set_tenant(tenant_id, client_base_url=URL)
    set_tenant("waiting", next_sync_ts=NOW + 60)  # heartbeat not due yet
    set_tenant("dnd", dnd_until=NOW + 60)
    set_tenant("quiet", next_sync_ts=NOW + 60)
    set_tenant("failing", consecutive_failures=2, next_sync_ts=NOW + 30)
    set_tenant("inactive", active=False)
    return store


def test_due_heartbeats_are_listed_and_waiting_or_dnd_ones_are_not(tenants: Database) -> None:
    assert needing(tenants) == ["due"]
    assert needing(tenants, now=NOW + 60) == ["dnd", "due", "failing", "quiet", "waiting"]
    assert needing(tenants, now=NOW + 30) == ["due", "failing"]  # its retry time came


def test_unreported_events_list_a_tenant_unless_it_is_backing_off(tenants: Database) -> None:
    for tenant_id in ("waiting", "dnd", "failing", "inactive", "nourl"):
        with_unreported_event(tenants, tenant_id)
    # Reports go out in DND and for an inactive tenant; not during a failure backoff,
    # and never without a target.
    assert needing(tenants) == ["dnd", "due", "inactive", "waiting"]


def test_failures_without_a_retry_time_do_not_hold_reports(tenants: Database) -> None:
    set_tenant("failing", next_sync_ts=None)
    with_unreported_event(tenants, "failing")
    set_tenant("failing", active=False)  # so only its events can list it
    assert "failing" in needing(tenants)


def test_a_global_target_covers_tenants_without_a_url(tenants: Database) -> None:
    assert needing(tenants, has_global_target=True) == ["due", "nourl"]


def test_acknowledged_events_no_longer_list_a_tenant(tenants: Database) -> None:
    assert not tenants.events.has_unreported("quiet")
    with_unreported_event(tenants, "quiet")
    assert "quiet" in needing(tenants)
    assert tenants.events.has_unreported("quiet")
    assert not tenants.events.has_unreported("due")
    ids = [
        e.event_id
        for e in models.MessageEvent.select().where(models.MessageEvent.tenant_id == "quiet")
    ]
    tenants.events.mark_reported(ids, NOW)
    assert "quiet" not in needing(tenants)
    assert not tenants.events.has_unreported("quiet")


def test_the_call_lease_is_held_by_one_holder_until_released_or_expired(store: Database) -> None:
    add_tenant_and_account(store, "acme")
    sync = store.sync_state
    assert sync.acquire("acme", "i1/a", now=NOW, lease_s=30)
    assert not sync.acquire("acme", "i2/a", now=NOW + 10, lease_s=30)
    assert sync.acquire("acme", "i1/a", now=NOW + 10, lease_s=30)  # renewed by its holder
    assert sync.acquire("acme", "i2/a", now=NOW + 40, lease_s=30)  # expired: taken over
    sync.release("acme", "i2/a")
    assert sync.acquire("acme", "i3/a", now=NOW + 41, lease_s=30)


def test_last_event_id_is_the_newest_of_the_tenant_or_zero(store: Database) -> None:
    add_tenant_and_account(store, "acme")
    add_tenant_and_account(store, "globex")
    assert store.sync_state.last_event_id("acme") == 0
    store.messages.enqueue([accepted("m1"), accepted("m2")], NOW)
    newest = max(e.event_id for e in models.MessageEvent.select())
    assert store.sync_state.last_event_id("acme") == newest
    assert store.sync_state.last_event_id("globex") == 0
    assert store.sync_state.accepted_since("acme", newest - 1)
    assert not store.sync_state.accepted_since("acme", newest)
