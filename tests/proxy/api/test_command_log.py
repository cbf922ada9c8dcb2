"""The command log (SPEC §3.13): what the audit middleware records, and the three routes."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from falcon import testing

from proxy.api import _auth
from proxy.api._errors import ADMIN_REQUIRED
from proxy.api.audit import COMMANDS, MAX_TEXT_BYTES, logged_payload
from proxy.api.command_log import CommandExport, CommandPage, PurgeResult
from proxy.store import Database, models
from proxy.store.records import MASK
from tests.fixtures.stores import add_tenant_and_account
from tests.proxy.api.conftest import ADMIN, NOW, FixedClock, MakeClient

ACME_KEY = "acme-key-" + "k" * 34
ACME = {"X-API-Token": ACME_KEY}


@pytest.fixture
def client(store: Database, make_client: MakeClient) -> testing.TestClient:
    add_tenant_and_account(store, "acme", "main")
    store.tenants.set_api_key("acme", _auth.digest(ACME_KEY), None, NOW)
    return make_client(max_request_mb=1)


def entries(client: testing.TestClient, **params: Any) -> list[dict[str, Any]]:
    result = client.simulate_get("/command-log", params=params, headers=ADMIN)
    assert result.status_code == 200, result.json
    return CommandPage.model_validate(result.json).model_dump(exclude_none=True)["commands"]


def last(client: testing.TestClient) -> dict[str, Any]:
    return entries(client, limit=1)[0]


# -- what gets recorded -------------------------------------------------------------------


def test_add_tenant_is_logged_with_secrets_masked(client: testing.TestClient) -> None:
    body = {
        "id": "globex",
        "client_auth": {"method": "basic", "user": "u", "password": "pw-secret"},
        "large_file_config": {"storage_options": {"key": "AKIA", "deep": {"secret": "x"}}},
    }
    result = client.simulate_post("/tenant", json=body, headers=ADMIN)
    assert result.status_code == 200
    entry = last(client)
    assert entry == {
        "id": entry["id"],
        "command_ts": NOW,
        "endpoint": "addTenant",
        "tenant_id": "globex",
        "actor": "admin",
        "payload": {
            "id": "globex",
            "client_auth": {"method": "basic", "user": "u", "password": MASK},
            "large_file_config": {"storage_options": {"key": MASK, "deep": {"secret": MASK}}},
        },
        "response_status": 200,
    }
    assert result.json["api_key"] not in str(entries(client))  # answers are not logged


def test_tenant_commands_record_the_tenant_actor_and_failures(
    client: testing.TestClient,
) -> None:
    client.simulate_put("/tenant/acme", json={"active": False, "name": "x"}, headers=ACME)
    entry = last(client)
    assert (entry["endpoint"], entry["actor"], entry["tenant_id"]) == (
        "updateTenant",
        "tenant",
        "acme",
    )
    assert (entry["response_status"], entry["payload"]) == (
        403,
        {"tenant_id": "acme", "active": False, "name": "x"},
    )


def test_key_and_delete_commands_are_logged(client: testing.TestClient) -> None:
    client.simulate_post("/tenant/acme/api-key", json={"expires_at": NOW + 99}, headers=ADMIN)
    client.simulate_delete("/tenant/acme/api-key", headers=ADMIN)
    client.simulate_delete("/tenant/ghost", headers=ADMIN)
    got = [(e["endpoint"], e["tenant_id"], e["response_status"]) for e in entries(client)]
    assert got == [
        ("deleteTenant", "ghost", 404),
        ("revokeApiKey", "acme", 200),
        ("createApiKey", "acme", 200),
    ]
    assert entries(client, endpoint_filter="createApiKey")[0]["payload"] == {
        "tenant_id": "acme",
        "expires_at": NOW + 99,
    }


def test_update_instance_masks_the_token_and_the_password(client: testing.TestClient) -> None:
    body = {"api_token": "x" * 20, "bounce_imap_password": "imap-pw", "name": "mx"}
    assert client.simulate_put("/instance", json=body, headers=ADMIN).status_code == 200
    entry = last(client)
    assert entry["endpoint"] == "updateInstance"
    assert "tenant_id" not in entry
    assert entry["payload"] == {"api_token": MASK, "bounce_imap_password": MASK, "name": "mx"}


def test_account_commands_mask_passwords_and_keep_path_and_query(
    client: testing.TestClient,
) -> None:
    body = {
        "id": "second",
        "host": "127.0.0.1",
        "port": 2525,
        "password": "smtp-pw",
        "imap_password": "imap-pw",
    }
    assert client.simulate_post("/account", json=body, headers=ACME).status_code == 200
    assert last(client)["payload"] == body | {"password": MASK, "imap_password": MASK}
    client.simulate_delete("/account/second", params={"tenant_id": "acme"}, headers=ADMIN)
    entry = last(client)
    assert (entry["endpoint"], entry["tenant_id"], entry["payload"]) == (
        "deleteAccount",
        "acme",
        {"tenant_id": "acme", "account_id": "second"},
    )


def test_add_messages_truncates_bodies_and_contents(client: testing.TestClient) -> None:
    content = "base64:" + base64.b64encode(b"z" * 3000).decode()
    message = {
        "id": "m1",
        "tenant_id": "acme",
        "account_id": "main",
        "from": "a@acme.example",
        "to": ["b@example.org"],
        "subject": "Hi",
        "body": "é" * 2000,
        "html": "<p>" + "h" * 2000 + "</p>",
        "attachments": [{"filename": "z.txt", "storage_path": content, "fetch_mode": "base64"}],
    }
    result = client.simulate_post(
        "/commands/add-messages", json={"messages": [message]}, headers=ADMIN
    )
    assert result.status_code == 200, result.json
    entry = last(client)
    assert (entry["endpoint"], entry["tenant_id"]) == ("addMessages", "acme")
    logged = entry["payload"]["messages"][0]
    assert len(logged["body"].encode()) <= MAX_TEXT_BYTES
    assert logged["body"] == "é" * (MAX_TEXT_BYTES // 2)
    assert logged["html"] == message["html"][:MAX_TEXT_BYTES]
    assert logged["attachments"][0]["storage_path"] == content[:MAX_TEXT_BYTES]
    assert logged["subject"] == "Hi"


def test_scheduler_commands_are_logged(client: testing.TestClient) -> None:
    client.simulate_post("/commands/run-now", headers=ACME)
    client.simulate_post(
        "/commands/suspend", params={"tenant_id": "acme", "batch_code": "NL"}, headers=ADMIN
    )
    client.simulate_post("/commands/activate", params={"tenant_id": "acme"}, headers=ADMIN)
    client.simulate_post("/commands/cleanup-messages", params={"tenant_id": "acme"}, headers=ADMIN)
    client.simulate_post("/commands/delete-messages", json={"ids": ["x"]}, headers=ACME)
    got = [(e["endpoint"], e["tenant_id"], e["payload"]) for e in reversed(entries(client))]
    assert got == [
        ("runNow", "acme", {}),
        ("suspend", "acme", {"tenant_id": "acme", "batch_code": "NL"}),
        ("activate", "acme", {"tenant_id": "acme"}),
        ("cleanupMessages", "acme", {"tenant_id": "acme"}),
        ("deleteMessages", "acme", {"ids": ["x"]}),
    ]


def test_refused_authentication_reads_and_unmapped_routes_are_not_logged(
    client: testing.TestClient, store: Database
) -> None:
    client.simulate_post("/tenant", json={"id": "x"})  # 401
    client.simulate_post("/tenant", json={"id": "x"}, headers=ACME)  # 403 admin only
    client.simulate_get("/tenants", headers=ADMIN)
    client.simulate_post("/instance/reload-bounce", headers=ADMIN)
    client.simulate_post("/command-log/purge", json={"before_ts": 0}, headers=ADMIN)
    assert models.CommandLogEntry.select().count() == 0


def test_invalid_and_oversized_bodies_are_logged_without_content(
    client: testing.TestClient,
) -> None:
    assert (
        client.simulate_post("/tenant", body=b'{"id": "x", "token": "s', headers=ADMIN).status_code
        == 422
    )
    assert last(client)["payload"] == {"invalid_body": True}
    big = b'{"id": "' + b"a" * (1 << 20) + b'"}'
    assert client.simulate_post("/tenant", body=big, headers=ADMIN).status_code == 413
    assert (last(client)["response_status"], last(client)["payload"]) == (413, {})


def test_every_command_of_the_spec_is_mapped() -> None:
    assert sorted(COMMANDS.values()) == sorted(
        [
            "addMessages",
            "deleteMessages",
            "cleanupMessages",
            "addAccount",
            "deleteAccount",
            "addTenant",
            "updateTenant",
            "deleteTenant",
            "createApiKey",
            "revokeApiKey",
            "suspend",
            "activate",
            "runNow",
            "updateInstance",
        ]
    )


def test_logged_payload_is_pure_and_masks_at_any_depth() -> None:
    value = {
        "token": None,
        "messages": [{"attachments": [{"auth": {"method": "bearer", "token": "t"}}]}],
        "api_key": "k",
        "secret": {"nested": 1},
    }
    assert logged_payload(value) == {
        "token": None,
        "messages": [{"attachments": [{"auth": {"method": "bearer", "token": MASK}}]}],
        "api_key": MASK,
        "secret": MASK,
    }
    assert value["api_key"] == "k"  # input untouched


# -- the routes ---------------------------------------------------------------------------


def seed(store: Database, clock: FixedClock, client: testing.TestClient) -> None:
    for offset, path in ((0, "/tenant/acme"), (10, "/tenant/acme"), (20, "/tenant/globex")):
        clock.now = NOW + offset
        client.simulate_put(path, json={"name": str(offset)}, headers=ADMIN)
    clock.now = NOW + 30
    client.simulate_put("/instance", json={"name": "mx"}, headers=ADMIN)


def test_query_filters_pages_and_counts(
    client: testing.TestClient, store: Database, clock: FixedClock
) -> None:
    seed(store, clock, client)
    assert [e["command_ts"] for e in entries(client)] == [NOW + 30, NOW + 20, NOW + 10, NOW]
    result = client.simulate_get("/command-log", params={"limit": 1, "offset": 1}, headers=ADMIN)
    assert (result.json["total"], result.json["commands"][0]["command_ts"]) == (4, NOW + 20)
    found = entries(client, tenant_id="acme", since_ts=NOW + 5, until_ts=NOW + 10)
    assert [(e["tenant_id"], e["command_ts"]) for e in found] == [("acme", NOW + 10)]
    assert [e["endpoint"] for e in entries(client, endpoint_filter="instance")] == [
        "updateInstance"
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 10_001}, "query.limit"),
        ({"limit": 0}, "query.limit"),
        ({"offset": -1}, "query.offset"),
        ({"since_ts": "yesterday"}, "query.since_ts"),
        ({"tenant_id": " "}, "query.tenant_id"),
        ({"since_ts": 2**63}, "query.since_ts"),  # beyond the database's integers
        ({"offset": 2**64}, "query.offset"),
    ],
)
def test_query_refuses_bad_parameters(client: testing.TestClient, params: dict, field: str) -> None:
    result = client.simulate_get("/command-log", params=params, headers=ADMIN)
    assert result.status_code == 422
    assert [".".join(p["loc"]) for p in result.json["detail"]] == [field]


def test_export_is_oldest_first_with_the_short_form(
    client: testing.TestClient, store: Database, clock: FixedClock
) -> None:
    seed(store, clock, client)
    result = client.simulate_get(
        "/command-log/export", params={"since_ts": NOW + 10}, headers=ADMIN
    )
    exported = CommandExport.model_validate(result.json).model_dump(exclude_none=True)
    assert exported["commands"] == [
        {
            "endpoint": "updateTenant",
            "tenant_id": "acme",
            "payload": {"tenant_id": "acme", "name": "10"},
            "command_ts": NOW + 10,
        },
        {
            "endpoint": "updateTenant",
            "tenant_id": "globex",
            "payload": {"tenant_id": "globex", "name": "20"},
            "command_ts": NOW + 20,
        },
        {"endpoint": "updateInstance", "payload": {"name": "mx"}, "command_ts": NOW + 30},
    ]


def test_purge_removes_older_entries(
    client: testing.TestClient, store: Database, clock: FixedClock
) -> None:
    seed(store, clock, client)
    result = client.simulate_post("/command-log/purge", json={"before_ts": NOW + 20}, headers=ADMIN)
    assert PurgeResult.model_validate(result.json) == PurgeResult(ok=True, removed=2)
    assert len(entries(client)) == 2


def test_command_log_routes_are_admin_only_and_purge_validates(
    client: testing.TestClient, store: Database, clock: FixedClock
) -> None:
    seed(store, clock, client)
    for method, path in [
        ("GET", "/command-log"),
        ("GET", "/command-log/export"),
        ("POST", "/command-log/purge"),
    ]:
        result = client.simulate_request(method, path, json={"before_ts": NOW + 99}, headers=ACME)
        assert (result.status_code, result.json["error"]) == (403, ADMIN_REQUIRED)
    missing = client.simulate_post("/command-log/purge", json={}, headers=ADMIN)
    assert [".".join(p["loc"]) for p in missing.json["detail"]] == ["body.before_ts"]
    text = client.simulate_post("/command-log/purge", json={"before_ts": "now"}, headers=ADMIN)
    assert text.status_code == 422
    huge = client.simulate_post("/command-log/purge", json={"before_ts": 2**63}, headers=ADMIN)
    assert [".".join(p["loc"]) for p in huge.json["detail"]] == ["body.before_ts"]
    export = client.simulate_get("/command-log/export", params={"until_ts": 2**70}, headers=ADMIN)
    assert export.status_code == 422
    assert models.CommandLogEntry.select().count() == 4


def test_a_refused_tenant_name_is_kept_in_the_payload_not_as_the_tenant(
    client: testing.TestClient,
) -> None:
    too_long = "t" * 65
    result = client.simulate_post(
        "/commands/cleanup-messages", params={"tenant_id": too_long}, json={}, headers=ADMIN
    )
    assert result.status_code == 404
    entry = last(client)
    assert entry["endpoint"] == "cleanupMessages"
    assert "tenant_id" not in entry
    assert too_long in str(entry["payload"])
