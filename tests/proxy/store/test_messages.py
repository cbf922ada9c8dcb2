"""Message store: upsert, claims with leases, attempts and outcomes, crash recovery."""

from __future__ import annotations

import random
import threading

from proxy.smtp.errors import PermFailure, Refusal, Sent, TempFailure
from proxy.store import Database, open_store
from tests.fixtures.stores import accepted, add_tenant_and_account

NOW = 1_767_225_600
ME = "node-a"
RETRY = {"max_retries": 2, "retry_delays": (60, 300), "rng": random.Random(7)}


def _claim(
    store: Database,
    *,
    me: str = ME,
    now: int = NOW,
    limit: int = 50,
    account: str = "main",
    **kw: object,
) -> list[str]:
    tenant = store.tenants.get("acme")
    assert tenant is not None
    claimed = store.messages.claim_due(
        tenant, account, me=me, now=now, lease_s=30, limit=limit, **kw
    )
    return [c.pk for c in claimed]


def _ids(store: Database, pks: list[str]) -> list[str]:
    return [store.messages.get_by_pk(pk).id for pk in pks]


def _attempt(store: Database, pk: str, *, me: str = ME, now: int = NOW):
    return store.messages.begin_attempt(pk, store.tenants.get("acme"), me=me, now=now, lease_s=30)


def test_enqueue_then_claim_in_priority_then_fifo_order(store: Database) -> None:
    add_tenant_and_account(store)
    result = store.messages.enqueue(
        [
            accepted("low", priority=3),
            accepted("a", priority=2),
            accepted("now", priority=0),
            accepted("b", priority=2),
        ],
        NOW,
    )
    assert result.queued == 4
    assert result.touched == {("acme", "main")}
    assert result.immediate == {("acme", "main")}
    assert _ids(store, _claim(store)) == ["now", "a", "b", "low"]


def test_claimed_rows_are_not_claimed_twice_until_the_lease_expires(store: Database) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("m1"), accepted("m2")], NOW)
    assert len(_claim(store, me="a")) == 2
    assert _claim(store, me="b") == []
    assert len(_claim(store, me="b", now=NOW + 31)) == 2  # lease of 30 s ran out


def test_concurrent_claimers_never_share_a_row(db_url: str) -> None:
    store = open_store(db_url)
    try:
        add_tenant_and_account(store)
        store.messages.enqueue([accepted(f"m{i}") for i in range(300)], NOW)
        got: dict[str, list[str]] = {}

        def worker(name: str) -> None:
            mine: list[str] = []
            while batch := _claim(store, me=name, limit=7):
                mine.extend(batch)
            got[name] = mine
            store.release_thread_connection()

        threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        everything = [pk for pks in got.values() for pk in pks]
        assert len(everything) == 300
        assert len(set(everything)) == 300
    finally:
        store.close()


def test_future_deferred_ts_is_not_claimed_before_its_second(store: Database) -> None:
    add_tenant_and_account(store)
    result = store.messages.enqueue([accepted("later", deferred_ts=NOW + 10)], NOW)
    assert result.touched == set()
    assert _claim(store, now=NOW + 9) == []
    assert _ids(store, _claim(store, now=NOW + 10)) == ["later"]


def test_suspended_and_inactive_tenants_are_not_claimed(store: Database) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("plain"), accepted("news", batch_code="NL")], NOW)
    store.tenants.upsert("acme", {"active": False}, NOW)
    assert _claim(store) == []
    store.tenants.upsert("acme", {"active": True}, NOW)
    # Suspension of one batch holds only that batch.
    from proxy.store import models

    models.Tenant.update(suspended_batches='["NL"]').execute()
    assert _ids(store, _claim(store)) == ["plain"]


def test_replacing_an_unsent_message_keeps_pk_and_order(store: Database) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("first"), accepted("second")], NOW)
    before = store.messages.get("acme", "first")
    result = store.messages.enqueue([accepted("first", subject="New subject")], NOW + 5)
    after = store.messages.get("acme", "first")
    assert result.queued == 1
    assert after.pk == before.pk
    assert after.created_ts == before.created_ts
    assert after.payload["subject"] == "New subject"
    assert _ids(store, _claim(store, now=NOW + 5)) == ["first", "second"]
    history = store.events.history(after.pk)
    assert [(e.event_type, e.metadata) for e in history] == [
        ("queued", {"replaced": False}),
        ("queued", {"replaced": True}),
    ]


def test_sent_and_sending_messages_are_not_replaced(store: Database) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("done"), accepted("busy")], NOW)
    pks = _claim(store)
    done = _attempt(store, pks[0])
    store.messages.record_outcome(done, Sent(250, "OK"), me=ME, now=NOW, message_id=None, **RETRY)
    _attempt(store, pks[1])  # now "sending"
    result = store.messages.enqueue(
        [accepted("done", subject="x"), accepted("busy", subject="y")], NOW
    )
    assert result.queued == 0
    assert [(r.id, r.field, r.reason) for r in result.rejected] == [
        ("done", "id", "already sent"),
        ("busy", "id", "message is being sent, retry later"),
    ]
    assert store.messages.get("acme", "busy").payload["subject"] == "Subject busy"


def test_sent_outcome_is_recorded_with_its_event_and_releases_the_claim(store: Database) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("m")], NOW)
    (pk,) = _claim(store)
    sending = _attempt(store, pk)
    assert sending.attempt == 1
    assert store.messages.get("acme", "m").status == "sending"
    refused = (Refusal("bob@example.org", 550, "no such user"),)
    recorded = store.messages.record_outcome(
        sending,
        Sent(250, "2.0.0 OK", refused),
        me=ME,
        now=NOW + 1,
        message_id="<x@acme.example>",
        **RETRY,
    )
    assert recorded.status == "sent"
    row = store.messages.get("acme", "m")
    assert (row.status, row.sent_ts, row.smtp_ts, row.claimed_by) == (
        "sent",
        NOW + 1,
        NOW + 1,
        None,
    )
    assert row.message_id == "<x@acme.example>"
    event = store.events.history(pk)[-1]
    assert event.event_type == "sent"
    assert event.metadata["refused"] == [
        {"address": "bob@example.org", "smtp_code": 550, "message": "no such user"}
    ]


def test_temporary_failures_defer_with_backoff_then_end_in_error(store: Database) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("m")], NOW)
    now = NOW
    for attempt in (1, 2):
        (pk,) = _claim(store, now=now)
        sending = _attempt(store, pk, now=now)
        assert sending.attempt == attempt
        recorded = store.messages.record_outcome(
            sending,
            TempFailure("SMTP 451: try later", "smtp", 451),
            me=ME,
            now=now,
            message_id=None,
            **RETRY,
        )
        assert recorded.event_type == "deferred"
        row = store.messages.get("acme", "m")
        delay = row.deferred_ts - now
        base = (60, 300)[attempt - 1]
        assert base * 0.9 <= delay <= base * 1.1
        assert row.retry_count == attempt
        assert _claim(store, now=row.deferred_ts - 1) == []
        now = row.deferred_ts
    (pk,) = _claim(store, now=now)
    sending = _attempt(store, pk, now=now)
    store.messages.record_outcome(
        sending,
        TempFailure("SMTP 451: try later", "smtp", 451),
        me=ME,
        now=now,
        message_id=None,
        **RETRY,
    )
    row = store.messages.get("acme", "m")
    assert row.status == "error"
    assert row.error == "Max retries (2) exceeded: SMTP 451: try later"
    events = store.events.history(pk)
    assert [e.event_type for e in events] == ["queued", "deferred", "deferred", "error"]
    assert events[1].metadata == {
        "attempt": 1,
        "smtp_code": 451,
        "next_attempt_ts": events[1].metadata["next_attempt_ts"],
        "retry_count": 1,
        "reason": "smtp",
    }


def test_permanent_failure_is_an_error_at_once(store: Database) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("m")], NOW)
    (pk,) = _claim(store)
    sending = _attempt(store, pk)
    store.messages.record_outcome(
        sending,
        PermFailure("SMTP 550: 5.1.1 no such user", 550),
        me=ME,
        now=NOW,
        message_id=None,
        **RETRY,
    )
    row = store.messages.get("acme", "m")
    assert (row.status, row.error, row.error_ts, row.smtp_ts) == (
        "error",
        "SMTP 550: 5.1.1 no such user",
        NOW,
        NOW,
    )


def test_outcome_is_discarded_when_the_claim_was_lost(store: Database) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("m")], NOW)
    (pk,) = _claim(store, me="a")
    sending = _attempt(store, pk, me="a")
    # Lease ran out and another worker took the message over.
    assert _claim(store, me="b", now=NOW + 31) == [pk]
    assert (
        store.messages.record_outcome(
            sending, Sent(250, "OK"), me="a", now=NOW + 32, message_id=None, **RETRY
        )
        is None
    )
    assert store.messages.get("acme", "m").status == "pending"


def test_replacement_after_claim_takes_effect_at_the_attempt(store: Database) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("m")], NOW)
    (pk,) = _claim(store)
    store.messages.enqueue([accepted("m", subject="Replaced")], NOW)
    assert _attempt(store, pk) is None  # the replacement released our claim
    (pk2,) = _claim(store)
    assert _attempt(store, pk2).payload["subject"] == "Replaced"


def test_recovery_releases_claims_and_resets_interrupted_sends(store: Database) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("m1"), accepted("m2")], NOW)
    pks = _claim(store, me="dead")
    _attempt(store, pks[0], me="dead")
    assert store.messages.recover_after_crash() == 2
    assert _ids(store, _claim(store, me="alive")) == ["m1", "m2"]


def test_an_abandoned_send_is_claimed_again_in_send_order(store: Database) -> None:
    """A row left ``sending`` by a dead worker (lease run out) and pending rows are
    claimed together in priority-then-acceptance order, ``limit`` counting both."""
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("m1"), accepted("m2"), accepted("urgent", priority=1)], NOW)
    first, *_ = _claim(store, me="dead")
    assert _ids(store, [first]) == ["urgent"]
    pks = _claim(store, me="dead2", now=NOW + 31)  # the first claim's lease ran out
    _attempt(store, pks[1], me="dead2", now=NOW + 31)  # m1 left in ``sending``
    later = NOW + 62
    assert _ids(store, _claim(store, me="alive", now=later, limit=2)) == ["urgent", "m1"]
    assert _ids(store, _claim(store, me="alive", now=later, limit=2)) == ["m2"]


def test_shutdown_releases_only_unattempted_claims(store: Database) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("m1"), accepted("m2")], NOW)
    pks = _claim(store)
    _attempt(store, pks[0])
    assert store.messages.release_claims(ME) == 1
    assert store.messages.get("acme", "m1").claimed_by == ME  # in flight: keeps its claim
    assert store.messages.get("acme", "m2").claimed_by is None


def test_due_accounts_lists_accounts_with_unclaimed_due_work(store: Database) -> None:
    add_tenant_and_account(store)
    store.accounts.upsert("acme", "other", {"host": "h", "port": 25}, NOW)
    store.messages.enqueue(
        [accepted("m1"), accepted("m2", account_id="other", deferred_ts=NOW + 60)], NOW
    )
    assert store.messages.due_accounts(NOW) == [("acme", "main")]
    assert sorted(store.messages.due_accounts(NOW + 60)) == [("acme", "main"), ("acme", "other")]


def test_reported_events_mark_the_message_fully_reported(store: Database) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("m")], NOW)
    (pk,) = _claim(store)
    store.messages.record_outcome(
        _attempt(store, pk), Sent(250, "OK"), me=ME, now=NOW, message_id=None, **RETRY
    )
    (event,) = store.events.unreported("acme", 100)
    assert (event.event_type, event.message_id, event.message_pk) == ("sent", "m", pk)
    assert store.events.mark_reported([event.event_id], NOW + 2) == 1
    assert store.events.mark_reported([event.event_id], NOW + 3) == 0  # at most once
    assert store.events.unreported("acme", 100) == []
    assert store.messages.get("acme", "m").reported_ts == NOW + 2


def test_a_new_reportable_event_unsets_reported_ts_until_it_is_acknowledged(
    store: Database,
) -> None:
    add_tenant_and_account(store)
    store.messages.enqueue([accepted("m")], NOW)
    (pk,) = _claim(store)
    store.messages.record_outcome(
        _attempt(store, pk),
        TempFailure("451 later", "smtp", 451),
        me=ME,
        now=NOW,
        message_id=None,
        **RETRY,
    )
    (deferred,) = store.events.unreported("acme", 100)
    store.events.mark_reported([deferred.event_id], NOW + 1)
    assert store.messages.get("acme", "m").reported_ts == NOW + 1

    (pk,) = _claim(store, now=NOW + 3600)
    store.messages.record_outcome(
        _attempt(store, pk, now=NOW + 3600),
        Sent(250, "OK"),
        me=ME,
        now=NOW + 3600,
        message_id=None,
        **RETRY,
    )
    assert store.messages.get("acme", "m").reported_ts is None  # the sent event is not acked
    (sent,) = store.events.unreported("acme", 100)
    store.events.mark_reported([sent.event_id], NOW + 3601)
    assert store.messages.get("acme", "m").reported_ts == NOW + 3601


def test_a_version_1_database_is_migrated_in_place(tmp_path) -> None:
    import peewee

    from proxy.store import db as store_db
    from proxy.store import models

    path = str(tmp_path / "old.db")
    raw = peewee.SqliteDatabase(path)
    models.database_proxy.initialize(raw)
    store_db.MIGRATIONS[0].apply(raw)
    models.SchemaMigration.insert(version=1, applied_ts=0).execute()
    raw.close()
    store = open_store(path)
    try:
        assert models.SchemaMigration.select(
            peewee.fn.MAX(models.SchemaMigration.version)
        ).scalar() == (store_db.LATEST_VERSION)
        assert store.db.table_exists("command_log_entry")
        assert store_db.migrate(store.db) == store_db.LATEST_VERSION  # idempotent
    finally:
        store.close()
