"""Account routes over the real store (SPEC §3.8): list, create, and tenant-scoped deletion."""

from __future__ import annotations

from typing import Any

import pytest
from falcon import testing

from proxy.api import _auth
from proxy.api.accounts import AccountDeleted, AccountList, AccountWritten
from proxy.metrics import Metrics
from proxy.store import Database, models
from tests.fixtures.stores import accepted, add_tenant_and_account
from tests.proxy.api.conftest import ADMIN, NOW, MakeClient

ACME = {"X-API-Token": "acme-key"}


@pytest.fixture
def client(store: Database, make_client: MakeClient) -> testing.TestClient:
    add_tenant_and_account(store, "acme", "main", now=NOW - 100, name="ACME")
    add_tenant_and_account(store, "globex", "main", now=NOW - 100)
    store.tenants.set_api_key("acme", _auth.digest("acme-key"), None, NOW)
    return make_client()


def delete(client: testing.TestClient, account: str, headers: dict | None = None, **params: Any):
    return client.simulate_delete(f"/account/{account}", params=params, headers=headers or ADMIN)


def accounts(client: testing.TestClient, headers: dict | None = None, **params: Any) -> list:
    result = client.simulate_get("/accounts", params=params, headers=headers or ADMIN)
    assert result.status_code == 200, result.json
    AccountList.model_validate(result.json)
    return result.json["accounts"]


def metric_labels(metrics: Metrics) -> set[tuple[str, str]]:
    return {
        (sample.labels["tenant_id"], sample.labels["account_id"])
        for family in metrics.registry.collect()
        if family.name == "gmp_sent"
        for sample in family.samples
    }


# -- GET /accounts ------------------------------------------------------------------


def test_accounts_are_listed_by_id_with_every_field_but_secrets(client, store) -> None:
    store.accounts.upsert(
        "acme",
        "bulk",
        {
            "host": "smtp.acme.example",
            "port": 587,
            "user": "bulk",
            "password": "s3cret",
            "use_tls": True,
            "limit_per_hour": 100,
            "is_pec_account": True,
            "imap_host": "imap.acme.example",
            "imap_port": 993,
            "imap_password": "imap-s3cret",
            "imap_ssl": True,
            "imap_folder": "INBOX",
        },
        NOW - 50,
    )
    listed = accounts(client, tenant_id="acme")
    assert [a["id"] for a in listed] == ["bulk", "main"]
    assert listed[0] == {
        "id": "bulk",
        "tenant_id": "acme",
        "host": "smtp.acme.example",
        "port": 587,
        "user": "bulk",
        "use_tls": True,
        "tls_verify": True,
        "ttl": 300,
        "limit_per_hour": 100,
        "limit_behavior": "defer",
        "is_pec_account": True,
        "imap_host": "imap.acme.example",
        "imap_port": 993,
        "imap_ssl": True,
        "imap_folder": "INBOX",
        "password_set": True,
        "imap_password_set": True,
        "created_at": "2025-12-31T23:59:10Z",
        "updated_at": "2025-12-31T23:59:10Z",
    }
    assert (listed[1]["password_set"], listed[1]["imap_password_set"]) == (False, False)


def test_admin_without_tenant_lists_every_tenant_ordered_by_id(client, store) -> None:
    store.accounts.upsert("globex", "alpha", {"host": "h", "port": 25}, NOW)
    listed = [(a["id"], a["tenant_id"]) for a in accounts(client)]
    assert listed == [("alpha", "globex"), ("main", "acme"), ("main", "globex")]
    assert [(a["id"], a["tenant_id"]) for a in accounts(client, headers=ACME)] == [("main", "acme")]


def test_post_account_answers_in_its_model(client) -> None:
    body = {"id": "new", "tenant_id": "acme", "host": "smtp.example", "port": 25}
    first = client.simulate_post("/account", json=body, headers=ADMIN)
    assert first.json == {"ok": True, "created": True}
    AccountWritten.model_validate(first.json)
    assert client.simulate_post("/account", json=body, headers=ADMIN).json == {"ok": True}


# -- DELETE /account/{id} -----------------------------------------------------------


def test_deleting_an_account_fails_its_unsent_messages_in_its_tenant_only(
    client, store, engine, metrics
) -> None:
    store.accounts.upsert("acme", "other", {"host": "h", "port": 25}, NOW)
    store.messages.enqueue(
        [
            accepted("a1"),
            accepted("a2", deferred_ts=NOW + 60),
            accepted("keep", account_id="other"),
        ],
        NOW - 10,
    )
    store.messages.enqueue([accepted("g1", tenant_id="globex")], NOW - 10)
    models.RateCounter.insert_many(
        [
            {"scope": "account:acme:main", "window": "day", "window_start": 0, "count": 3},
            {"scope": "account:globex:main", "window": "day", "window_start": 0, "count": 4},
        ]
    ).execute()
    metrics.init_account("acme", "ACME", "main", "main")  # as POST /account does
    assert ("acme", "main") in metric_labels(metrics)

    result = delete(client, "main", tenant_id="acme")

    assert result.status_code == 200
    assert result.json == {"ok": True}
    AccountDeleted.model_validate(result.json)
    assert store.accounts.get("acme", "main") is None
    assert store.accounts.get("globex", "main") is not None
    for message_id in ("a1", "a2"):
        row = store.messages.get("acme", message_id)
        assert (row.status, row.error, row.error_ts, row.smtp_ts) == (
            "error",
            "account deleted",
            NOW,
            NOW,
        )
        last = store.events.history(row.pk)[-1]
        assert (last.event_type, last.description) == ("error", "account deleted")
    reported = {e.message_id for e in store.events.unreported("acme", 10)}
    assert reported == {"a1", "a2"}  # reported to the tenant like any error
    assert store.messages.get("acme", "keep").status == "pending"
    assert store.messages.get("globex", "g1").status == "pending"
    scopes = [r.scope for r in models.RateCounter.select()]
    assert scopes == ["account:globex:main"]
    assert ("acme", "main") not in metric_labels(metrics)
    assert engine.calls == [("account_removed", ("acme", "main"))]


def test_terminal_messages_stay_as_they_were(client, store) -> None:
    store.messages.enqueue([accepted("done")], NOW - 10)
    models.Message.update(status="sent", sent_ts=NOW - 5, smtp_ts=NOW - 5).execute()
    assert delete(client, "main", tenant_id="acme").status_code == 200
    row = store.messages.get("acme", "done")
    assert (row.status, row.error) == ("sent", None)


def test_admin_without_tenant_deletes_the_only_owner(client, store, engine) -> None:
    store.accounts.upsert("globex", "solo", {"host": "h", "port": 25}, NOW)
    assert delete(client, "solo").json == {"ok": True}
    assert store.accounts.get("globex", "solo") is None
    assert engine.calls == [("account_removed", ("globex", "solo"))]


def test_admin_without_tenant_and_several_owners_is_409(client, store, engine) -> None:
    text = "Account 'main' exists in several tenants; give tenant_id"
    result = delete(client, "main")
    assert result.status_code == 409
    assert result.json == {"ok": False, "error": text, "detail": text}
    assert store.accounts.get("acme", "main") is not None
    assert store.accounts.get("globex", "main") is not None
    assert engine.calls == []


def test_unknown_account_is_404(client, store, engine) -> None:
    text = "Account 'ghost' not found for tenant 'acme'"
    result = delete(client, "ghost", tenant_id="acme")
    assert result.status_code == 404
    assert result.json == {"ok": False, "error": text, "detail": text}
    assert delete(client, "ghost", headers=ACME).json["error"] == text
    assert delete(client, "ghost").json["error"] == "Account 'ghost' not found"
    assert engine.calls == []


def test_tenant_token_deletes_only_in_its_tenant(client, store, engine) -> None:
    assert delete(client, "main", headers=ACME, tenant_id="globex").status_code == 403
    assert store.accounts.get("globex", "main") is not None
    assert delete(client, "main", headers=ACME).json == {"ok": True}
    assert store.accounts.get("acme", "main") is None
    assert store.accounts.get("globex", "main") is not None
    assert engine.calls == [("account_removed", ("acme", "main"))]


def test_blank_tenant_id_is_422_and_deletes_nothing(client, store) -> None:
    result = delete(client, "main", tenant_id="")
    assert result.status_code == 422
    assert result.json["detail"][0]["loc"] == ["query", "tenant_id"]
    assert store.accounts.get("acme", "main") is not None


def test_a_missing_field_is_named_in_the_contracts_words(client, store) -> None:
    before = accounts(client, tenant_id="acme")
    body = {"id": "bulk", "tenant_id": "acme", "host": "smtp.acme.example"}
    result = client.simulate_post("/account", json=body, headers=ADMIN)
    assert result.status_code == 422
    assert result.json["error"] == "body.port: field required"  # SPEC §3.1.3, lower case
    assert result.json["detail"] == [
        {"loc": ["body", "port"], "msg": "field required", "type": "missing"}
    ]
    assert accounts(client, tenant_id="acme") == before


@pytest.mark.parametrize(
    "field", ["ttl", "batch_size", "limit_per_minute", "limit_per_hour", "limit_per_day"]
)
def test_an_integer_beyond_64_bits_is_422_not_500(client, store, field: str) -> None:
    before = accounts(client, tenant_id="acme")
    body = {"id": "main", "tenant_id": "acme", "host": "h.example", "port": 25, field: 2**70}
    result = client.simulate_post("/account", json=body, headers=ADMIN)
    assert result.status_code == 422
    assert result.json["detail"][0]["loc"] == ["body", field]
    assert accounts(client, tenant_id="acme") == before
