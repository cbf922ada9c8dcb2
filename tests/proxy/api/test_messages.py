"""``GET /messages`` (SPEC §3.9) and ``GET /messages/{id}/events`` (§3.10) over the real store."""

from __future__ import annotations

from typing import Any

import pytest
from falcon import testing

from proxy.api import _auth
from proxy.api.messages import EventList, MessageList
from proxy.smtp.errors import PermFailure, Sent, TempFailure
from proxy.store import Database, models
from proxy.store.records import dumps
from tests.fixtures.stores import accepted, add_tenant_and_account
from tests.proxy.api.conftest import ADMIN, NOW, MakeClient, attempt

ACME = {"X-API-Token": "acme-key"}


@pytest.fixture
def client(store: Database, make_client: MakeClient) -> testing.TestClient:
    add_tenant_and_account(store, "acme", name="ACME Corporation")
    add_tenant_and_account(store, "globex")
    store.tenants.set_api_key("acme", _auth.digest("acme-key"), None, NOW)
    return make_client()


def listing(client: testing.TestClient, headers: dict | None = None, **params: Any) -> list[dict]:
    result = client.simulate_get("/messages", params=params, headers=headers or ADMIN)
    assert result.status_code == 200, result.json
    MessageList.model_validate(result.json)
    return result.json["messages"]


def events_of(client: testing.TestClient, message_id: str, headers: dict | None = None, **params):
    return client.simulate_get(
        f"/messages/{message_id}/events", params=params, headers=headers or ADMIN
    )


def add_event(store: Database, pk: str, event_type: str, at: int, **fields: Any) -> None:
    models.MessageEvent.insert(
        message_pk=pk,
        tenant_id="acme",
        event_type=event_type,
        event_ts=at,
        description=fields.pop("description", None),
        metadata=dumps(fields),
        reportable=True,
    ).execute()


# -- GET /messages ----------------------------------------------------------------------


def test_messages_are_ordered_by_priority_then_acceptance_then_id(client, store) -> None:
    store.messages.enqueue([accepted("b", priority=2), accepted("low", priority=3)], NOW - 10)
    store.messages.enqueue([accepted("a", priority=2), accepted("now", priority=0)], NOW - 5)
    store.messages.enqueue([accepted("c", priority=2)], NOW - 10)
    assert [m["id"] for m in listing(client, tenant_id="acme")] == ["now", "b", "c", "a", "low"]


def test_a_record_carries_the_contract_fields(client, store) -> None:
    store.messages.enqueue([accepted("m", batch_code="NL")], NOW - 10)
    (record,) = listing(client, tenant_id="acme")
    row = store.messages.get("acme", "m")
    assert record == {
        "pk": row.pk,
        "id": "m",
        "tenant_id": "acme",
        "tenant_name": "ACME Corporation",
        "account_id": "main",
        "priority": 2,
        "batch_code": "NL",
        "status": "pending",
        "retry_count": 0,
        "created_ts": NOW - 10,
        "created_at": "2025-12-31T23:59:50Z",
        "updated_at": "2025-12-31T23:59:50Z",
        "is_pec": False,
        "payload": row.payload,
        "message": row.payload,
    }


def test_terminal_fields_appear_only_for_their_status(client, store) -> None:
    store.messages.enqueue([accepted("ok"), accepted("bad"), accepted("later")], NOW - 100)
    attempt(store, "ok", Sent(250, "OK"), NOW - 50)
    attempt(store, "bad", PermFailure("SMTP 550: no such user", 550), NOW - 40)
    attempt(store, "later", TempFailure("SMTP 451: later", "smtp", 451), NOW - 30)
    by_id = {m["id"]: m for m in listing(client, tenant_id="acme")}
    assert (by_id["ok"]["status"], by_id["ok"]["sent_ts"], by_id["ok"]["smtp_ts"]) == (
        "sent",
        NOW - 50,
        NOW - 50,
    )
    assert "error" not in by_id["ok"]
    assert "error_ts" not in by_id["ok"]
    bad = by_id["bad"]
    assert (bad["status"], bad["error"], bad["error_ts"]) == (
        "error",
        "SMTP 550: no such user",
        NOW - 40,
    )
    assert "sent_ts" not in bad
    later = by_id["later"]
    assert later["status"] == "deferred"
    assert later["retry_count"] == 1
    assert later["deferred_ts"] > NOW
    assert "smtp_ts" not in later


def test_suspended_batch_shows_suspended_and_wins_over_deferred(client, store) -> None:
    store.messages.enqueue(
        [
            accepted("nl-due", batch_code="NL"),
            accepted("nl-later", batch_code="NL", deferred_ts=NOW + 60),
            accepted("other-later", deferred_ts=NOW + 60),
            accepted("other"),
        ],
        NOW,
    )
    store.tenants.set_suspended_batches("acme", ["NL"], NOW)
    shown = {m["id"]: m["status"] for m in listing(client, tenant_id="acme")}
    assert shown == {
        "nl-due": "suspended",
        "nl-later": "suspended",
        "other-later": "deferred",
        "other": "pending",
    }


def test_a_message_being_sent_stays_sending_when_its_tenant_is_suspended(client, store) -> None:
    store.messages.enqueue([accepted("busy"), accepted("waiting")], NOW)
    busy = store.messages.get("acme", "busy")
    acme = store.tenants.get("acme")
    store.messages.claim_due(acme, "main", me="y", now=NOW, lease_s=30, limit=9)
    store.messages.begin_attempt(busy.pk, acme, me="y", now=NOW, lease_s=30)
    store.tenants.set_suspended_batches("acme", ["*"], NOW)
    shown = {m["id"]: m["status"] for m in listing(client, tenant_id="acme")}
    assert shown == {"busy": "sending", "waiting": "suspended"}  # §5.1: not over sending
    assert [m["id"] for m in listing(client, tenant_id="acme", status="sending")] == ["busy"]
    assert [m["id"] for m in listing(client, tenant_id="acme", status="suspended")] == ["waiting"]


def test_status_filter_limit_and_offset(client, store) -> None:
    store.messages.enqueue([accepted(f"p{i}") for i in range(4)], NOW - 10)
    store.messages.enqueue([accepted("d", deferred_ts=NOW + 60)], NOW - 10)
    store.messages.enqueue([accepted("s1"), accepted("s2")], NOW - 10)
    attempt(store, "s1", Sent(250, "OK"), NOW - 5)
    attempt(store, "s2", Sent(250, "OK"), NOW - 5)

    def ids(**params: Any) -> list[str]:
        return [m["id"] for m in listing(client, tenant_id="acme", **params)]

    assert ids(status="pending") == ["p0", "p1", "p2", "p3"]
    assert ids(status="pending", limit=2, offset=1) == ["p1", "p2"]
    assert ids(status="deferred") == ["d"]
    assert ids(status="sent", limit=1, offset=1) == ["s2"]
    assert ids(status="error") == []
    assert ids(limit=2, offset=5) == ["s1", "s2"]
    assert ids(offset=6) == ["s2"]
    assert ids(active_only="yes") == ["d", "p0", "p1", "p2", "p3"]
    assert ids(id="p2") == ["p2"]
    huge = str(2**64)  # beyond SQL integers: a limit that means all, an offset past the end
    assert ids(limit=huge) == ids()
    assert ids(offset=huge) == []
    assert ids(status="pending", offset=huge) == []


def test_admin_without_tenant_lists_every_tenant_and_a_tenant_token_its_own(client, store):
    store.messages.enqueue([accepted("m", tenant_id="acme")], NOW)
    store.messages.enqueue([accepted("m", tenant_id="globex")], NOW)
    assert sorted(m["tenant_id"] for m in listing(client)) == ["acme", "globex"]
    assert [m["tenant_id"] for m in listing(client, headers=ACME)] == ["acme"]
    result = client.simulate_get("/messages", params={"tenant_id": "globex"}, headers=ACME)
    assert result.status_code == 403


def test_an_id_shows_at_most_one_record_even_across_tenants(client, store) -> None:
    """SPEC §3.9: ``id`` gives at most one record; with the admin token and no tenant,
    the first of the list order (priority, acceptance, id) when several tenants use it."""
    store.messages.enqueue([accepted("m", tenant_id="globex", priority=1)], NOW - 5)
    store.messages.enqueue([accepted("m", tenant_id="acme", priority=1)], NOW - 10)
    store.messages.enqueue([accepted("other", tenant_id="acme")], NOW - 10)
    attempt(store, "m", Sent(250, "OK"), NOW - 1)  # acme's: shown as sent
    assert [(m["tenant_id"], m["status"]) for m in listing(client, id="m")] == [("acme", "sent")]
    assert [m["tenant_id"] for m in listing(client, id="m", tenant_id="globex")] == ["globex"]
    assert [m["tenant_id"] for m in listing(client, id="m", status="pending")] == ["globex"]
    assert listing(client, id="m", offset=1) == []
    assert listing(client, id="nobody") == []


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"status": "reported"}, ["query", "status"]),
        ({"limit": "0"}, ["query", "limit"]),
        ({"offset": "-1"}, ["query", "offset"]),
        ({"limit": "ten"}, ["query", "limit"]),
        ({"include_history": "maybe"}, ["query", "include_history"]),
    ],
)
def test_bad_query_values_are_422_naming_them(client, params, loc) -> None:
    result = client.simulate_get("/messages", params=params, headers=ADMIN)
    assert result.status_code == 422
    assert [p["loc"] for p in result.json["detail"]] == [loc]


def test_history_and_bounce_and_pec_fields_come_from_events(client, store) -> None:
    store.messages.enqueue([accepted("m"), accepted("quiet")], NOW - 100)
    pk = attempt(store, "m", Sent(250, "OK"), NOW - 90)
    add_event(
        store,
        pk,
        "bounce",
        NOW - 50,
        description="mailbox full",
        bounce_type="soft",
        bounce_code="4.2.2",
    )
    add_event(
        store,
        pk,
        "bounce",
        NOW - 40,
        description="mailbox unavailable",
        bounce_type="hard",
        bounce_code="5.1.1",
    )
    add_event(store, pk, "pec_acceptance", NOW - 80, receipt="accettazione")
    add_event(store, pk, "pec_delivery", NOW - 70, receipt="avvenuta-consegna")
    records = {m["id"]: m for m in listing(client, tenant_id="acme", include_history="true")}
    m = records["m"]
    assert (m["bounce_type"], m["bounce_code"], m["bounce_reason"], m["bounce_ts"]) == (
        "hard",
        "5.1.1",
        "mailbox unavailable",
        NOW - 40,
    )
    assert m["pec_status"] == "pec_delivery"
    assert [e["event_type"] for e in m["history"]] == [
        "queued",
        "sent",
        "pec_acceptance",
        "pec_delivery",
        "bounce",
        "bounce",
    ]
    assert m["history"][0]["metadata"] == m["history"][0]["event_data"] == {"replaced": False}
    quiet = records["quiet"]
    assert [e["event_type"] for e in quiet["history"]] == ["queued"]
    assert not {"bounce_type", "pec_status"} & set(quiet)
    assert "history" not in listing(client, tenant_id="acme")[0]


# -- GET /messages/{id}/events ----------------------------------------------------------


def test_events_by_client_id_are_chronological(client, store) -> None:
    store.messages.enqueue([accepted("INV-42")], NOW - 100)
    pk = attempt(store, "INV-42", TempFailure("SMTP 451: 4.7.1 later", "smtp", 451), NOW - 90)
    store.events.mark_reported([e.event_id for e in store.events.unreported("acme", 10)], NOW - 89)
    result = events_of(client, "INV-42", tenant_id="acme")
    assert result.status_code == 200
    EventList.model_validate(result.json)
    body = result.json
    assert (body["ok"], body["tenant_id"], body["id"], body["pk"]) == (True, "acme", "INV-42", pk)
    queued, deferred = body["events"]
    assert queued == {
        "event_id": queued["event_id"],
        "event_type": "queued",
        "event_ts": NOW - 100,
        "metadata": {"replaced": False},
        "event_data": {"replaced": False},
    }
    assert deferred["event_type"] == "deferred"
    assert deferred["description"] == "SMTP 451: 4.7.1 later"
    assert deferred["metadata"]["smtp_code"] == 451
    assert deferred["reported_ts"] == NOW - 89
    assert deferred["event_id"] > queued["event_id"]


def test_events_by_pk_within_the_tenant(client, store) -> None:
    store.messages.enqueue([accepted("m")], NOW)
    pk = store.messages.get("acme", "m").pk
    result = events_of(client, pk.upper(), headers=ACME)
    assert result.status_code == 200
    assert (result.json["id"], result.json["pk"]) == ("m", pk)
    # The same pk asked for in another tenant is not found.
    assert events_of(client, pk, tenant_id="globex").status_code == 404


def test_a_client_id_wins_over_a_pk_lookup(client, store) -> None:
    store.messages.enqueue([accepted("target")], NOW)
    pk = store.messages.get("acme", "target").pk
    store.messages.enqueue([accepted(pk)], NOW)  # a message whose client id is that UUID
    assert events_of(client, pk, tenant_id="acme").json["id"] == pk


def test_events_of_unknown_or_foreign_messages_are_404(client, store) -> None:
    store.messages.enqueue([accepted("g", tenant_id="globex")], NOW)
    text = "Message 'g' not found"
    result = events_of(client, "g", headers=ACME)
    assert result.status_code == 404
    assert result.json == {"ok": False, "error": text, "detail": text}
    assert events_of(client, "g", tenant_id="acme").status_code == 404
    assert events_of(client, "nope", tenant_id="globex").status_code == 404


def test_events_need_a_tenant_and_respect_scope(client, store) -> None:
    store.messages.enqueue([accepted("g", tenant_id="globex")], NOW)
    missing = events_of(client, "g")
    assert missing.status_code == 422
    assert missing.json["detail"][0]["loc"] == ["query", "tenant_id"]
    assert events_of(client, "g", headers=ACME, tenant_id="globex").status_code == 403
    assert events_of(client, "g", headers={"X-API-Token": "wrong"}).status_code == 401
