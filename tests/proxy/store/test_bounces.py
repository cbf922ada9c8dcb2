"""Bounce and PEC store: correlation (SPEC §11.4, §12.4), recording once, timeouts, cursors."""

from __future__ import annotations

import random

import peewee

from proxy.bounce.parse import Bounce, BouncedRecipient, Original
from proxy.bounce.pec import Receipt
from proxy.smtp.errors import Sent
from proxy.store import Database, open_store
from proxy.store.bounces import BOUNCE_MAILBOX, Cursor
from tests.fixtures.stores import accepted

NOW = 1_767_225_600
ME = "node-a"
RETRY = {"max_retries": 2, "retry_delays": (60,), "rng": random.Random(1)}
KEY = "a" * 64


def _sent(
    store: Database,
    message_id: str,
    *,
    tenant_id: str = "acme",
    account_id: str = "main",
    to: tuple[str, ...] = ("ann@example.org",),
    smtp_message_id: str | None = None,
    now: int = NOW,
    pec: bool = False,
) -> str:
    """Enqueue, claim, attempt and record a sent message; its pk."""
    if store.tenants.get(tenant_id) is None:
        store.tenants.upsert(tenant_id, {}, now)
    if not store.accounts.exists(tenant_id, account_id):
        fields = {"host": "127.0.0.1", "port": 25, "is_pec_account": pec}
        if pec:
            fields |= {"imap_host": "127.0.0.1"}
        store.accounts.upsert(tenant_id, account_id, fields, now)
    item = accepted(message_id, tenant_id=tenant_id, account_id=account_id, to=list(to))
    store.messages.enqueue([item], now)
    tenant = store.tenants.get(tenant_id)
    (claimed,) = store.messages.claim_due(tenant, account_id, me=ME, now=now, lease_s=30, limit=1)
    sending = store.messages.begin_attempt(claimed.pk, tenant, me=ME, now=now, lease_s=30)
    assert sending is not None
    mid = smtp_message_id or f"<{claimed.pk}@acme.example>"
    store.messages.record_outcome(sending, Sent(250, "OK"), me=ME, now=now, message_id=mid, **RETRY)
    return claimed.pk


def _bounce(original: Original, *recipients: str, code: str = "5.1.1") -> Bounce:
    blocks = tuple(
        BouncedRecipient(r, "hard", code, "550", f"550 {code} unknown {r}") for r in recipients
    )
    return Bounce("dsn", blocks, original)


def _receipt(reference: str | None, event: str = "pec_acceptance", **fields) -> Receipt:
    values = {
        "receipt": "accettazione",
        "event_type": event,
        "is_final": False,
        "reference_ids": (reference,) if reference else (),
        "genro_id": None,
        "receipt_message_id": "<r1@pec.example>",
        "pec_ts": NOW + 5,
        "recipient": None,
        "details": None,
    }
    return Receipt(**(values | fields))


def _events(store: Database, pk: str, event_type: str) -> list:
    return [e for e in store.events.history(pk) if e.event_type == event_type]


def test_bounce_matches_the_stored_message_id_and_records_one_event(store: Database) -> None:
    pk = _sent(store, "INV-42", smtp_message_id="<orig-1@acme.example>")
    recorded = store.bounces.record_bounce(
        KEY, _bounce(Original(message_id="<orig-1@acme.example>"), "ann@example.org"), NOW + 60
    )
    assert recorded.matched
    assert recorded.unmatched == 0
    assert [(e.message_pk, e.tenant_id, e.label) for e in recorded.events] == [(pk, "acme", "hard")]
    (event,) = _events(store, pk, "bounce")
    assert event.event_ts == NOW + 60
    assert event.description == "550 5.1.1 unknown ann@example.org"
    assert event.metadata == {
        "bounce_type": "hard",
        "bounce_code": "5.1.1",
        "bounce_smtp_code": "550",
        "recipient": "ann@example.org",
    }
    assert store.messages.get("acme", "INV-42").status == "sent"  # status unchanged (§5.1)
    assert store.events.unreported("acme", 10)[-1].event_type == "bounce"  # reportable


def test_a_bounce_after_the_report_makes_the_message_not_fully_reported(store: Database) -> None:
    _sent(store, "INV-42", smtp_message_id="<orig-1@acme.example>")
    store.events.mark_reported([e.event_id for e in store.events.unreported("acme", 10)], NOW + 1)
    assert store.messages.get("acme", "INV-42").reported_ts == NOW + 1

    store.bounces.record_bounce(
        KEY, _bounce(Original(message_id="<orig-1@acme.example>"), "ann@example.org"), NOW + 60
    )
    assert store.messages.get("acme", "INV-42").reported_ts is None  # the bounce is not acked
    store.events.mark_reported([e.event_id for e in store.events.unreported("acme", 10)], NOW + 61)
    assert store.messages.get("acme", "INV-42").reported_ts == NOW + 61


def test_the_same_mail_seen_again_records_nothing(store: Database) -> None:
    pk = _sent(store, "INV-42", smtp_message_id="<orig-1@acme.example>")
    bounce = _bounce(Original(message_id="<orig-1@acme.example>"), "ann@example.org")
    store.bounces.record_bounce(KEY, bounce, NOW)
    again = store.bounces.record_bounce(KEY, bounce, NOW + 600)
    assert again.matched
    assert again.events == ()
    assert again.unmatched == 0
    assert len(_events(store, pk, "bounce")) == 1


def test_each_recipient_block_is_one_event(store: Database) -> None:
    pk = _sent(store, "NEWS", to=("carl@example.com", "dora@example.com"))
    mid = store.messages.get("acme", "NEWS").message_id
    bounce = _bounce(Original(message_id=mid), "carl@example.com", "dora@example.com")
    recorded = store.bounces.record_bounce(KEY, bounce, NOW)
    assert len(recorded.events) == 2
    recipients = sorted(e.metadata["recipient"] for e in _events(store, pk, "bounce"))
    assert recipients == ["carl@example.com", "dora@example.com"]


def test_message_id_is_matched_with_or_without_brackets(store: Database) -> None:
    pk = _sent(store, "M1", smtp_message_id="<bare-1@acme.example>")
    bounce = _bounce(Original(message_id="bare-1@acme.example"), "ann@example.org")
    assert store.bounces.record_bounce(KEY, bounce, NOW).events[0].message_pk == pk


def test_client_id_matches_when_the_message_id_is_unknown(store: Database) -> None:
    pk = _sent(store, "INV-7")
    bounce = _bounce(Original(message_id="<other@x>", genro_id="INV-7"), "ann@example.org")
    assert store.bounces.record_bounce(KEY, bounce, NOW).events[0].message_pk == pk


def test_client_id_in_several_tenants_prefers_the_bounced_recipient(store: Database) -> None:
    mine = _sent(store, "SAME", tenant_id="acme", to=("ann@example.org",), now=NOW)
    _sent(store, "SAME", tenant_id="globex", to=("bob@example.org",), now=NOW + 10)
    bounce = _bounce(Original(genro_id="SAME"), "Ann@Example.org")
    assert store.bounces.record_bounce(KEY, bounce, NOW).events[0].message_pk == mine


def test_client_id_in_several_tenants_else_takes_the_most_recently_sent(store: Database) -> None:
    _sent(store, "SAME", tenant_id="acme", now=NOW)
    latest = _sent(store, "SAME", tenant_id="globex", now=NOW + 10)
    bounce = _bounce(Original(genro_id="SAME"), "stranger@example.org")
    assert store.bounces.record_bounce(KEY, bounce, NOW + 20).events[0].message_pk == latest


def test_unmatched_bounce_is_remembered_and_counted_once(store: Database) -> None:
    bounce = _bounce(Original(message_id="<nobody@x>", genro_id="NOPE"), "a@x.org", "b@x.org")
    first = store.bounces.record_bounce(KEY, bounce, NOW)
    assert (first.matched, first.unmatched, first.events) == (False, 2, ())
    second = store.bounces.record_bounce(KEY, bounce, NOW)
    assert (second.matched, second.unmatched) == (False, 0)


def test_messages_not_sent_are_never_matched(store: Database) -> None:
    store.tenants.upsert("acme", {}, NOW)
    store.accounts.upsert("acme", "main", {"host": "h", "port": 25}, NOW)
    store.messages.enqueue([accepted("QUEUED")], NOW)
    bounce = _bounce(Original(genro_id="QUEUED"), "ann@example.org")
    assert store.bounces.record_bounce(KEY, bounce, NOW).unmatched == 1


def test_unparseable_mail_is_counted_once(store: Database) -> None:
    assert store.bounces.remember_unparseable(KEY, NOW)
    assert not store.bounces.remember_unparseable(KEY, NOW + 1)


def test_pec_messages_are_flagged_at_send_time(store: Database) -> None:
    pec = _sent(store, "P1", account_id="pec", pec=True)
    plain = _sent(store, "S1", account_id="main")
    assert store.messages.get_by_pk(pec).is_pec
    assert not store.messages.get_by_pk(plain).is_pec


def test_receipt_matches_within_its_account_and_records_its_event(store: Database) -> None:
    pk = _sent(store, "P1", account_id="pec", pec=True, smtp_message_id="<p1@acme.example>")
    _sent(store, "P2", account_id="other", smtp_message_id="<p2@acme.example>")
    receipt = _receipt("<p1@acme.example>", recipient="x@pec.example", details=None)
    recorded = store.bounces.record_receipt("acme", "pec", KEY, receipt, NOW + 60)
    assert [(e.message_pk, e.event_type) for e in recorded.events] == [(pk, "pec_acceptance")]
    (event,) = _events(store, pk, "pec_acceptance")
    assert event.event_ts == NOW + 5  # the receipt's own time
    assert event.metadata == {
        "receipt": "accettazione",
        "recipient": "x@pec.example",
        "receipt_message_id": "<r1@pec.example>",
    }
    other_account = _receipt("<p2@acme.example>")
    assert store.bounces.record_receipt("acme", "pec", "b" * 64, other_account, NOW).unmatched


def test_receipt_in_the_future_is_recorded_at_now(store: Database) -> None:
    pk = _sent(store, "P1", account_id="pec", pec=True, smtp_message_id="<p1@acme.example>")
    receipt = _receipt("<p1@acme.example>", pec_ts=NOW + 9999)
    store.bounces.record_receipt("acme", "pec", KEY, receipt, NOW + 1)
    assert _events(store, pk, "pec_acceptance")[0].event_ts == NOW + 1


def test_receipt_falls_back_to_the_client_id_and_is_recorded_once(store: Database) -> None:
    pk = _sent(store, "PEC-15", account_id="pec", pec=True)
    receipt = _receipt(None, "pec_delivery", genro_id="PEC-15", recipient="c@pec.example")
    assert store.bounces.record_receipt("acme", "pec", KEY, receipt, NOW).events
    assert not store.bounces.record_receipt("acme", "pec", KEY, receipt, NOW).events
    assert len(_events(store, pk, "pec_delivery")) == 1


def test_pec_timeout_needs_a_poll_begun_after_the_deadline(store: Database) -> None:
    waiting = _sent(store, "P1", account_id="pec", pec=True, now=NOW)
    accepted_pk = _sent(store, "P2", account_id="pec", pec=True, now=NOW)
    mid = store.messages.get_by_pk(accepted_pk).message_id
    store.bounces.record_receipt("acme", "pec", KEY, _receipt(mid), NOW + 10)
    _sent(store, "S1", account_id="main", now=NOW)  # not PEC: never times out
    args = {"timeout_s": 1800, "now": NOW + 5000}
    early = store.bounces.record_pec_timeouts("acme", "pec", poll_started_ts=NOW + 1800, **args)
    assert early == []
    due = store.bounces.record_pec_timeouts("acme", "pec", poll_started_ts=NOW + 1801, **args)
    assert [(e.message_pk, e.event_type) for e in due] == [(waiting, "pec_timeout")]
    (event,) = _events(store, waiting, "pec_timeout")
    assert event.description == "no acceptance or error receipt within 1800 s"
    assert (
        store.bounces.record_pec_timeouts("acme", "pec", poll_started_ts=NOW + 9000, **args) == []
    )


def test_poll_lease_is_exclusive_across_instances_until_it_expires(store: Database) -> None:
    bounces = store.bounces
    assert bounces.acquire_poll("bounce", "a/1", instance_id="a", now=NOW, lease_s=600)
    assert not bounces.acquire_poll("bounce", "b/1", instance_id="b", now=NOW + 1, lease_s=600)
    assert bounces.acquire_poll("bounce", "a/2", instance_id="a", now=NOW + 1, lease_s=600)
    assert bounces.acquire_poll("bounce", "b/1", instance_id="b", now=NOW + 602, lease_s=600)
    bounces.release_poll("bounce", "b/1")
    assert bounces.acquire_poll("bounce", "a/3", instance_id="a", now=NOW + 603, lease_s=600)


def test_cursor_belongs_to_one_mailbox_identity_and_shows_in_instance_settings(store) -> None:
    bounces = store.bounces
    assert bounces.cursor(BOUNCE_MAILBOX, "h:993/u/INBOX") == Cursor(None, 0)
    bounces.save_cursor(BOUNCE_MAILBOX, "h:993/u/INBOX", Cursor(77, 12))
    assert bounces.cursor(BOUNCE_MAILBOX, "h:993/u/INBOX") == Cursor(77, 12)
    assert bounces.cursor(BOUNCE_MAILBOX, "other:993/u/INBOX") == Cursor(None, 0)
    typed = store.settings.typed(["bounce_last_uid", "bounce_uidvalidity"])
    assert typed == {"bounce_last_uid": 12, "bounce_uidvalidity": 77}
    bounces.save_cursor("pec:acme:pec", "p:993/u/INBOX", Cursor(5, 3))
    assert store.settings.typed(["bounce_last_uid"]) == {"bounce_last_uid": 12}


def test_a_version_4_database_gets_the_bounce_tables_and_index(tmp_path) -> None:
    from proxy.store import db as store_db
    from proxy.store import models

    path = str(tmp_path / "old.db")
    raw = peewee.SqliteDatabase(path)
    models.database_proxy.initialize(raw)
    for migration in store_db.MIGRATIONS:
        if migration.version <= 4:
            migration.apply(raw)
            models.SchemaMigration.insert(version=migration.version, applied_ts=0).execute()
    assert not raw.table_exists("processed_mail")
    raw.close()
    store = open_store(path)
    try:
        assert store.db.table_exists("processed_mail")
        assert store.db.table_exists("mailbox_state")
        indexes = {index.name for index in store.db.get_indexes("message")}
        assert "message_message_id" in indexes
        assert store_db.migrate(store.db) == store_db.LATEST_VERSION  # idempotent
    finally:
        store.close()
