"""Removing messages (SPEC §14), the deployment-wide scheduler switch (§3.6) and status counts.

Every test fixes its timestamps explicitly: a message's fate depends only on
its status, its events' acknowledgement and the cutoff it is given.
"""

from __future__ import annotations

import random

from proxy.smtp.errors import Outcome, PermFailure, Sent, TempFailure
from proxy.store import Database, models
from proxy.store.messages import SCHEDULER_ACTIVE_KEY
from tests.fixtures.stores import accepted, add_tenant_and_account

NOW = 1_767_225_600
ME = "node-a"
RETRY = {"max_retries": 2, "retry_delays": (60, 300), "rng": random.Random(7)}


def _finish(store: Database, message_id: str, outcome: Outcome, at: int, tenant: str = "acme"):
    """Claim, attempt and record one message's outcome at time ``at``."""
    row = store.messages.get(tenant, message_id)
    claimed = store.messages.claim_due(
        store.tenants.get(tenant), row.account_id, me=ME, now=at, lease_s=30, limit=500
    )
    assert row.pk in [c.pk for c in claimed]
    for other in claimed:
        if other.pk != row.pk:
            store.messages.release_claims_of([other.pk], me=ME)
    sending = store.messages.begin_attempt(
        row.pk, store.tenants.get(tenant), me=ME, now=at, lease_s=30
    )
    return store.messages.record_outcome(sending, outcome, me=ME, now=at, message_id=None, **RETRY)


def _ack_all(store: Database, tenant: str, at: int) -> None:
    events = store.events.unreported(tenant, 1000)
    store.events.mark_reported([e.event_id for e in events], at)


def _ids(store: Database, tenant: str = "acme") -> list[str]:
    return sorted(row.id for row in store.messages.list(tenant))


# -- cleanup (§14.1, §14.2) ---------------------------------------------------------


def test_cleanup_removes_only_terminal_fully_reported_messages_older_than_the_cutoff(
    store: Database,
) -> None:
    add_tenant_and_account(store, client_base_url="https://acme.example")
    store.messages.enqueue(
        [accepted(i) for i in ("old-sent", "old-error", "new-sent", "queued", "deferred")], NOW
    )
    _finish(store, "old-sent", Sent(250, "OK"), NOW + 1)
    _finish(store, "old-error", PermFailure("SMTP 550: no", 550), NOW + 2)
    _finish(store, "deferred", TempFailure("SMTP 451: later", "smtp", 451), NOW + 3)
    _ack_all(store, "acme", NOW + 10)  # old-sent, old-error and the deferral acknowledged
    _finish(store, "new-sent", Sent(250, "OK"), NOW + 100)
    _ack_all(store, "acme", NOW + 110)

    removed = store.messages.cleanup("acme", cutoff_ts=NOW + 11, has_sync_target=True)

    assert removed == 2
    assert _ids(store) == ["deferred", "new-sent", "queued"]
    # Their events went with them; the others' stayed.
    pks = {e.message_pk for e in models.MessageEvent.select()}
    assert pks == {row.pk for row in store.messages.list("acme")}


def test_cleanup_cutoff_is_strict(store: Database) -> None:
    add_tenant_and_account(store, client_base_url="https://acme.example")
    store.messages.enqueue([accepted("m")], NOW)
    _finish(store, "m", Sent(250, "OK"), NOW)
    _ack_all(store, "acme", NOW + 5)
    assert store.messages.cleanup("acme", cutoff_ts=NOW + 5, has_sync_target=True) == 0
    assert store.messages.cleanup("acme", cutoff_ts=NOW + 6, has_sync_target=True) == 1


def test_cleanup_keeps_a_terminal_message_with_an_unreported_event(store: Database) -> None:
    add_tenant_and_account(store, client_base_url="https://acme.example")
    store.messages.enqueue([accepted("unreported"), accepted("late-bounce")], NOW)
    _finish(store, "unreported", Sent(250, "OK"), NOW)
    _finish(store, "late-bounce", Sent(250, "OK"), NOW)
    late = store.messages.get("acme", "late-bounce")
    store.events.mark_reported(
        [e.event_id for e in store.events.history(late.pk) if e.event_type == "sent"], NOW + 1
    )
    # A bounce arrives after the message was fully reported: it waits for its own ack.
    models.MessageEvent.insert(
        message_pk=late.pk,
        tenant_id="acme",
        event_type="bounce",
        event_ts=NOW + 2,
        metadata="{}",
        reportable=True,
    ).execute()
    assert store.messages.get("acme", "late-bounce").reported_ts == NOW + 1

    assert store.messages.cleanup("acme", cutoff_ts=NOW + 1000, has_sync_target=True) == 0
    assert _ids(store) == ["late-bounce", "unreported"]


def test_cleanup_never_removes_non_terminal_messages_whatever_the_cutoff(
    store: Database,
) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("pending"), accepted("later", deferred_ts=NOW + 50)], NOW)
    _finish(store, "pending", TempFailure("SMTP 451: later", "smtp", 451), NOW)
    _ack_all(store, "acme", NOW + 1)
    for has_target in (True, False):
        assert (
            store.messages.cleanup("acme", cutoff_ts=NOW + 10**6, has_sync_target=has_target) == 0
        )
    assert _ids(store) == ["later", "pending"]


def test_cleanup_without_sync_target_goes_by_smtp_ts(store: Database) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("early"), accepted("late")], NOW)
    _finish(store, "early", Sent(250, "OK"), NOW + 1)
    _finish(store, "late", PermFailure("SMTP 550: no", 550), NOW + 20)
    # Nothing is ever acknowledged for such a tenant; smtp_ts decides.
    assert store.messages.cleanup("acme", cutoff_ts=NOW + 10, has_sync_target=False) == 1
    assert _ids(store) == ["late"]


def test_cleanup_touches_only_the_named_tenant(store: Database) -> None:
    add_tenant_and_account(store, "acme")
    add_tenant_and_account(store, "globex")
    store.messages.enqueue(
        [accepted("m", tenant_id="acme"), accepted("m", tenant_id="globex")], NOW
    )
    _finish(store, "m", Sent(250, "OK"), NOW, tenant="acme")
    _finish(store, "m", Sent(250, "OK"), NOW, tenant="globex")
    assert store.messages.cleanup("acme", cutoff_ts=NOW + 1, has_sync_target=False) == 1
    assert _ids(store, "acme") == []
    assert _ids(store, "globex") == ["m"]


# -- delete by client id (§14.3) ------------------------------------------------------


def test_delete_sorts_ids_into_removed_not_found_and_unauthorized(store: Database) -> None:
    add_tenant_and_account(store, "acme")
    add_tenant_and_account(store, "globex")
    store.messages.enqueue(
        [
            accepted("a1", tenant_id="acme"),
            accepted("a2", tenant_id="acme"),
            accepted("g1", tenant_id="globex"),
            accepted("a1", tenant_id="globex"),
        ],
        NOW,
    )
    _finish(store, "a2", Sent(250, "OK"), NOW)  # terminal ones go too
    done = store.messages.delete_many("acme", ["zz", "g1", "a2", "a1", "a1", "nope"])
    assert done.removed == 2
    assert done.not_found == ("nope", "zz")
    assert done.unauthorized == ("g1",)
    assert _ids(store, "acme") == []
    assert _ids(store, "globex") == ["a1", "g1"]
    owners = {e.tenant_id for e in models.MessageEvent.select()}
    assert owners == {"globex"}


def test_outcome_of_a_message_deleted_while_sending_is_discarded(store: Database) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("m")], NOW)
    (claimed,) = store.messages.claim_due(
        store.tenants.get("acme"), "main", me=ME, now=NOW, lease_s=30, limit=5
    )
    sending = store.messages.begin_attempt(
        claimed.pk, store.tenants.get("acme"), me=ME, now=NOW, lease_s=30
    )
    assert store.messages.delete_many("acme", ["m"]).removed == 1
    recorded = store.messages.record_outcome(
        sending, Sent(250, "OK"), me=ME, now=NOW, message_id=None, **RETRY
    )
    assert recorded is None
    assert models.MessageEvent.select().count() == 0


def test_delete_many_handles_more_ids_than_one_chunk(store: Database) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted(f"m{i:04}") for i in range(1200)], NOW)
    done = store.messages.delete_many("acme", [f"m{i:04}" for i in range(0, 1300)])
    assert done.removed == 1200
    assert len(done.not_found) == 100
    assert _ids(store) == []


# -- the deployment-wide scheduler (§3.6) -------------------------------------------


def test_stopped_scheduler_claims_nothing_for_any_tenant(store: Database) -> None:
    add_tenant_and_account(store, "acme")
    add_tenant_and_account(store, "globex")
    store.messages.enqueue(
        [accepted("a", tenant_id="acme"), accepted("g", tenant_id="globex")], NOW
    )
    store.settings.set(SCHEDULER_ACTIVE_KEY, "false")
    assert not store.messages.scheduler_active()
    for tenant in ("acme", "globex"):
        claimed = store.messages.claim_due(
            store.tenants.get(tenant), "main", me=ME, now=NOW, lease_s=30, limit=5
        )
        assert claimed == []
    assert store.messages.due_accounts(NOW) == []

    store.settings.set(SCHEDULER_ACTIVE_KEY, "true")
    assert store.messages.scheduler_active()
    assert sorted(store.messages.due_accounts(NOW)) == [("acme", "main"), ("globex", "main")]
    claimed = store.messages.claim_due(
        store.tenants.get("acme"), "main", me=ME, now=NOW, lease_s=30, limit=5
    )
    assert len(claimed) == 1


def test_rows_claimed_before_the_scheduler_stopped_are_not_attempted(store: Database) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("m")], NOW)
    (claimed,) = store.messages.claim_due(
        store.tenants.get("acme"), "main", me=ME, now=NOW, lease_s=30, limit=5
    )
    store.settings.set(SCHEDULER_ACTIVE_KEY, "false")
    assert (
        store.messages.begin_attempt(
            claimed.pk, store.tenants.get("acme"), me=ME, now=NOW, lease_s=30
        )
        is None
    )
    row = store.messages.get("acme", "m")
    assert (row.status, row.claimed_by) == ("pending", None)  # claim given back


def test_scheduler_is_active_when_never_set(store: Database) -> None:
    assert store.messages.scheduler_active()


# -- status counts and live instances ------------------------------------------------


def test_status_groups_separate_what_decides_the_displayed_status(store: Database) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue(
        [
            accepted("due"),
            accepted("later", deferred_ts=NOW + 60),
            accepted("nl", batch_code="NL"),
            accepted("done"),
        ],
        NOW,
    )
    _finish(store, "done", Sent(250, "OK"), NOW)
    groups = {
        (g.tenant_id, g.batch_code, g.stored_status, g.is_future, g.is_live_sending): g.count
        for g in store.messages.status_groups("acme", NOW)
    }
    assert groups == {
        ("acme", None, "pending", False, False): 1,
        ("acme", None, "pending", True, False): 1,
        ("acme", "NL", "pending", False, False): 1,
        (None, None, "sent", False, False): 1,
    }
    assert store.messages.status_groups("globex", NOW) == []
