"""Tenant routes over the real store (SPEC §2, §3.11): read, partial update, delete, keys, sync."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from falcon import testing

from proxy.api import _auth
from proxy.api._errors import ADMIN_REQUIRED, AUTH_FAILED, WRONG_TENANT
from proxy.api.sync_status import SyncStatusList, sync_status
from proxy.api.tenant_keys import ApiKeyCreated
from proxy.api.tenants import Ok, TenantInfo, TenantList
from proxy.store import Database, models
from proxy.store.records import MASK
from tests.fixtures.engine import FakeEngine
from tests.fixtures.stores import accepted
from tests.proxy.api.conftest import ADMIN, NOW, FixedClock, MakeClient

ACME_KEY, GLOBEX_KEY = "acme-key-" + "a" * 34, "globex-key-" + "g" * 32
ACME = {"X-API-Token": ACME_KEY}
GLOBEX = {"X-API-Token": GLOBEX_KEY}
ACME_FIELDS: dict[str, Any] = {
    "name": "ACME",
    "client_base_url": "https://93.184.216.34",
    "client_auth": {"method": "bearer", "token": "sync-secret"},
    "rate_limits": {"hourly": 100, "behavior": "defer"},
    "large_file_config": {
        "enabled": True,
        "action": "rewrite",
        "storage_url": "s3://bucket/files",
        "public_base_url": "https://files.example",
        "storage_options": {"key": "AKIA", "secret": "shh", "nested": {"token": "t"}},
    },
}


@pytest.fixture
def client(store: Database, make_client: MakeClient) -> testing.TestClient:
    store.tenants.upsert("acme", ACME_FIELDS, NOW)
    store.tenants.upsert("globex", {"name": "Globex"}, NOW)
    store.tenants.set_api_key("acme", _auth.digest(ACME_KEY), None, NOW)
    store.tenants.set_api_key("globex", _auth.digest(GLOBEX_KEY), None, NOW)
    return make_client()


def error_of(result: testing.Result, status: int) -> str:
    assert result.status_code == status, result.json
    assert result.json["ok"] is False
    return result.json["error"]


def fields_of(result: testing.Result, status: int = 422) -> list[str]:
    error_of(result, status)
    return [".".join(map(str, p["loc"])) for p in result.json["detail"]]


def snapshot(store: Database) -> tuple[Any, ...]:
    keys = sorted((k.tenant_id, k.key_hash, k.expires_at) for k in models.TenantApiKey.select())
    return (store.tenants.list(), keys)


def assert_key_route_refusals(client: testing.TestClient, method: str) -> None:
    """The key routes refuse a tenant token (403) and an unknown tenant (404)."""
    acme = client.simulate_request(method, "/tenant/acme/api-key", headers=ACME)
    assert error_of(acme, 403) == ADMIN_REQUIRED
    ghost = client.simulate_request(method, "/tenant/ghost/api-key", headers=ADMIN)
    assert error_of(ghost, 404) == "Tenant 'ghost' not found"


# -- GET ----------------------------------------------------------------------------------


def test_get_tenant_masks_every_secret(client: testing.TestClient) -> None:
    result = client.simulate_get("/tenant/acme", headers=ADMIN)
    assert result.status_code == 200
    body = TenantInfo.model_validate(result.json).model_dump(exclude_none=True)
    assert "ok" not in result.json  # a bare TenantInfo, as the original
    assert body["client_auth"] == {"method": "bearer", "token": MASK}
    assert body["large_file_config"]["storage_options"] == {
        "key": MASK,
        "secret": MASK,
        "nested": {"token": MASK},
    }
    assert (body["api_key_set"], body["suspended_batches"], body["active"]) == (True, [], True)
    assert "sync-secret" not in result.text
    assert "shh" not in result.text


def test_get_tenant_scoping_and_errors(client: testing.TestClient) -> None:
    assert client.simulate_get("/tenant/acme", headers=ACME).json["id"] == "acme"
    assert error_of(client.simulate_get("/tenant/acme", headers=GLOBEX), 403) == WRONG_TENANT
    assert error_of(client.simulate_get("/tenant/ghost", headers=ADMIN), 404) == (
        "Tenant 'ghost' not found"
    )
    assert error_of(client.simulate_get("/tenant/acme"), 401) == AUTH_FAILED


def test_list_tenants_is_admin_only_and_masked(client: testing.TestClient) -> None:
    result = client.simulate_get("/tenants", headers=ADMIN)
    listed = TenantList.model_validate(result.json)
    assert [t.id for t in listed.tenants] == ["acme", "globex"]
    assert "sync-secret" not in result.text
    assert error_of(client.simulate_get("/tenants", headers=ACME), 403) == ADMIN_REQUIRED


# -- PUT ----------------------------------------------------------------------------------


def put(client: testing.TestClient, body: Any, headers: dict, tenant: str = "acme"):
    return client.simulate_put(f"/tenant/{tenant}", json=body, headers=headers)


def test_put_changes_only_the_fields_sent(
    client: testing.TestClient, store: Database, engine: FakeEngine
) -> None:
    before = store.tenants.get("acme")
    result = put(client, {"name": "ACME Corp", "rate_limits": None, "client_auth": None}, ADMIN)
    assert Ok.model_validate(result.json) == Ok(ok=True)
    after = store.tenants.get("acme")
    assert after.name == "ACME Corp"
    assert dataclasses.replace(after, name="ACME", updated_ts=before.updated_ts) == before
    assert engine.calls == [("tenant_changed", "acme")]


def test_put_without_a_known_field_is_a_no_op(
    client: testing.TestClient, store: Database, engine: FakeEngine
) -> None:
    before = snapshot(store)
    assert put(client, {"unknown": 1, "id": "other"}, ADMIN).json == {"ok": True}
    assert put(client, {"name": "ACME"}, ACME).json == {"ok": True}  # same value
    assert snapshot(store) == before
    assert engine.calls == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rate_limits", {"hourly": 1_000_000}),
        ("rate_limits", {"hourly": 100, "behavior": "reject"}),
        ("large_file_config", {"enabled": False}),
        ("active", False),
    ],
)
def test_tenant_token_may_not_change_admin_only_fields(
    client: testing.TestClient, store: Database, engine: FakeEngine, field: str, value: Any
) -> None:
    before = snapshot(store)
    result = put(client, {"name": "sneaky", field: value}, ACME)
    assert error_of(result, 403) == f"Field '{field}' requires the admin token"
    assert result.json["detail"] == result.json["error"]
    assert snapshot(store) == before
    assert engine.calls == []


def test_admin_may_change_admin_only_fields(client: testing.TestClient, store: Database) -> None:
    body = {"rate_limits": {"daily": 5}, "active": False, "large_file_config": {"enabled": False}}
    assert put(client, body, ADMIN).status_code == 200
    tenant = store.tenants.get("acme")
    assert tenant.rate_limits == {"daily": 5, "behavior": "defer"}
    assert (tenant.active, tenant.large_file_config["enabled"]) == (False, False)


def test_tenant_token_may_send_back_what_it_read(
    client: testing.TestClient, store: Database
) -> None:
    before = store.tenants.get("acme")
    read = client.simulate_get("/tenant/acme", headers=ACME).json
    result = put(client, read | {"name": "Renamed"}, ACME)
    assert result.status_code == 200, result.json
    after = store.tenants.get("acme")
    assert dataclasses.replace(after, name="ACME", updated_ts=before.updated_ts) == before
    assert after.client_auth["token"] == "sync-secret"  # the mask kept the secret
    assert after.large_file_config["storage_options"]["secret"] == "shh"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://[::1]/",
        "https://localhost/",
        "http://10.0.0.7",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.1.1",
        "http://[::ffff:192.168.1.1]/",
        "http://2130706433/",
    ],
)
def test_tenant_token_may_not_point_sync_at_private_addresses(
    client: testing.TestClient, store: Database, url: str
) -> None:
    before = snapshot(store)
    result = put(client, {"client_base_url": url}, ACME)
    assert fields_of(result) == ["body.client_base_url"]
    assert url not in result.text  # the rejected value is never echoed
    assert snapshot(store) == before


def test_outbound_policy_applies_to_changed_urls_from_tenant_tokens_only(
    client: testing.TestClient, store: Database
) -> None:
    assert put(client, {"client_base_url": "https://8.8.8.8/app"}, ACME).status_code == 200
    assert put(client, {"client_base_url": "http://127.0.0.1:9"}, ADMIN).status_code == 200
    # Sending back the (admin-set) stored value is not a change.
    assert put(client, {"client_base_url": "http://127.0.0.1:9"}, ACME).status_code == 200
    assert store.tenants.get("acme").client_base_url == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    "settings",
    [{"http_allow_private_networks": True}, {"http_allowed_networks": ("10.0.0.0/8",)}],
)
def test_private_networks_can_be_allowed_by_settings(
    client: testing.TestClient,
    store: Database,
    make_client: MakeClient,
    settings: dict,
) -> None:
    lenient = make_client(**settings)
    assert put(lenient, {"client_base_url": "http://10.1.2.3:8000"}, ACME).status_code == 200
    assert store.tenants.get("acme").client_base_url == "http://10.1.2.3:8000"


def test_put_errors_change_nothing(client: testing.TestClient, store: Database) -> None:
    before = snapshot(store)
    assert fields_of(put(client, {"client_auth": {"method": "bearer"}}, ACME)) == [
        "body.client_auth.token"
    ]
    assert fields_of(put(client, {"client_auth": {"method": "basic", "user": "u"}}, ADMIN)) == [
        "body.client_auth.password"
    ]
    missing_user = put(client, {"client_auth": {"method": "basic", "password": "p"}}, ADMIN)
    assert missing_user.status_code == 422
    assert missing_user.json["error"] == (
        "body.client_auth.user: user is required for method 'basic'"
    )
    assert fields_of(put(client, {"client_auth": {"method": "none", "x": 1}}, ADMIN)) == [
        "body.client_auth.x"
    ]
    assert fields_of(put(client, {"client_base_url": "ftp://x", "active": "maybe"}, ADMIN)) == [
        "body.client_base_url",
        "body.active",
    ]
    assert fields_of(put(client, ["name"], ADMIN)) == ["body"]
    bad_json = client.simulate_put("/tenant/acme", body=b"{", headers=ADMIN)
    assert fields_of(bad_json) == ["body"]
    assert error_of(put(client, {"name": "x"}, ACME, tenant="globex"), 403) == WRONG_TENANT
    assert error_of(put(client, {"name": "x"}, ADMIN, tenant="ghost"), 404) == (
        "Tenant 'ghost' not found"
    )
    assert error_of(put(client, {"name": "x"}, {}), 401) == AUTH_FAILED
    assert snapshot(store) == before
    assert not store.tenants.exists("ghost")


# -- DELETE -------------------------------------------------------------------------------


def test_delete_tenant_removes_it_and_its_key(
    client: testing.TestClient, store: Database, engine: FakeEngine
) -> None:
    store.accounts.upsert("acme", "main", {"host": "127.0.0.1", "port": 2525}, NOW)
    store.messages.enqueue([accepted("m1")], NOW)
    assert client.simulate_delete("/tenant/acme", headers=ADMIN).json == {"ok": True}
    assert not store.tenants.exists("acme")
    assert not store.accounts.exists("acme", "main")
    assert not models.Message.select().where(models.Message.tenant_id == "acme").exists()
    assert error_of(client.simulate_get("/tenant/acme", headers=ACME), 401) == AUTH_FAILED
    assert engine.calls == [("tenant_removed", "acme")]
    assert store.tenants.exists("globex")


def test_delete_tenant_errors_change_nothing(
    client: testing.TestClient, store: Database, engine: FakeEngine
) -> None:
    before = snapshot(store)
    assert error_of(client.simulate_delete("/tenant/acme", headers=ACME), 403) == ADMIN_REQUIRED
    assert error_of(client.simulate_delete("/tenant/ghost", headers=ADMIN), 404) == (
        "Tenant 'ghost' not found"
    )
    assert snapshot(store) == before
    assert engine.calls == []


# -- API keys -----------------------------------------------------------------------------


def test_rotating_the_key_invalidates_the_old_one_at_once(
    client: testing.TestClient, store: Database
) -> None:
    result = client.simulate_post("/tenant/acme/api-key", headers=ADMIN)
    created = ApiKeyCreated.model_validate(result.json)
    assert len(created.api_key) == 43
    assert "expires_at" not in result.json
    assert error_of(client.simulate_get("/tenant/acme", headers=ACME), 401) == AUTH_FAILED
    fresh = {"X-API-Token": created.api_key}
    assert client.simulate_get("/tenant/acme", headers=fresh).status_code == 200
    assert store.tenants.get("acme").api_key_set


def test_a_key_with_an_expiry_stops_working_when_it_expires(
    client: testing.TestClient, clock: FixedClock
) -> None:
    result = client.simulate_post(
        "/tenant/acme/api-key", json={"expires_at": NOW + 60}, headers=ADMIN
    )
    assert result.json["expires_at"] == NOW + 60
    fresh = {"X-API-Token": result.json["api_key"]}
    assert client.simulate_get("/tenant/acme", headers=ADMIN).json["api_key_expires_at"] == NOW + 60
    clock.now = NOW + 59
    assert client.simulate_get("/tenant/acme", headers=fresh).status_code == 200
    clock.now = NOW + 60
    assert error_of(client.simulate_get("/tenant/acme", headers=fresh), 401) == AUTH_FAILED


def test_create_key_errors_keep_the_old_key(client: testing.TestClient, store: Database) -> None:
    before = snapshot(store)
    assert_key_route_refusals(client, "POST")
    past = client.simulate_post("/tenant/acme/api-key", json={"expires_at": NOW}, headers=ADMIN)
    assert fields_of(past) == ["body.expires_at"]
    text = client.simulate_post("/tenant/acme/api-key", json={"expires_at": "soon"}, headers=ADMIN)
    assert fields_of(text) == ["body.expires_at"]
    huge = client.simulate_post("/tenant/acme/api-key", json={"expires_at": 2**63}, headers=ADMIN)
    assert fields_of(huge) == ["body.expires_at"]
    assert snapshot(store) == before
    assert not store.tenants.exists("ghost")
    assert client.simulate_get("/tenant/acme", headers=ACME).status_code == 200


def test_revoking_the_key(client: testing.TestClient, store: Database) -> None:
    before = snapshot(store)
    assert_key_route_refusals(client, "DELETE")
    assert snapshot(store) == before
    assert client.simulate_delete("/tenant/acme/api-key", headers=ADMIN).json == {"ok": True}
    assert error_of(client.simulate_get("/tenant/acme", headers=ACME), 401) == AUTH_FAILED
    assert client.simulate_get("/tenant/acme", headers=ADMIN).json["api_key_set"] is False
    assert client.simulate_get("/tenant/globex", headers=GLOBEX).status_code == 200


def test_keys_of_inactive_tenants_still_authenticate(client: testing.TestClient) -> None:
    assert put(client, {"active": False}, ADMIN).status_code == 200
    assert client.simulate_get("/tenant/acme", headers=ACME).json["active"] is False


# -- sync status --------------------------------------------------------------------------


def reportable_event(store: Database, tenant_id: str, pk: str) -> None:
    models.MessageEvent.insert(
        message_pk=pk, tenant_id=tenant_id, event_type="sent", event_ts=NOW, reportable=True
    ).execute()


def test_sync_status_reports_the_stored_state(client: testing.TestClient, store: Database) -> None:
    store.tenants.record_sync_success(
        "acme", NOW - 100, dnd_until=NOW + 500, next_sync_ts=NOW + 500
    )
    store.tenants.record_sync_failure("globex", NOW - 10, error="HTTP 503", next_sync_ts=NOW + 20)
    reportable_event(store, "globex", "p1")
    reportable_event(store, "globex", "p2")
    result = client.simulate_get("/tenants/sync-status", headers=ADMIN)
    SyncStatusList.model_validate(result.json)
    assert result.json["sync_interval_seconds"] == 300
    acme, globex = result.json["tenants"]
    assert acme == {
        "id": "acme",
        "name": "ACME",
        "active": True,
        "client_base_url": "https://93.184.216.34",
        "last_sync_ts": NOW + 500,  # in DND: the DND end (the original's meaning)
        "last_call_ts": NOW - 100,
        "dnd_until": NOW + 500,
        "next_sync_ts": NOW + 500,
        "next_sync_due": False,
        "in_dnd": True,
        "pending_reports": 0,
        "consecutive_failures": 0,
    }
    assert globex == {
        "id": "globex",
        "name": "Globex",
        "active": True,
        "last_call_ts": NOW - 10,
        "next_sync_ts": NOW + 20,
        "next_sync_due": False,  # no target of its own, and backing off
        "in_dnd": False,
        "pending_reports": 2,
        "consecutive_failures": 1,
        "last_error": "HTTP 503",
        "last_error_ts": NOW - 10,
    }
    assert error_of(client.simulate_get("/tenants/sync-status", headers=ACME), 403) == (
        ADMIN_REQUIRED
    )


def tenant_record(store: Database, **fields: Any):
    store.tenants.upsert("t", {"client_base_url": "https://t.example"}, NOW)
    return dataclasses.replace(store.tenants.get("t"), **fields)


@pytest.mark.parametrize(
    ("fields", "has_target", "due"),
    [
        ({}, True, True),  # never called: due at once
        ({}, False, False),  # no sync target: no heartbeat
        ({"active": False}, True, False),  # inactive tenants get no heartbeats
        ({"last_sync_ts": NOW - 300, "next_sync_ts": NOW}, True, True),
        ({"last_sync_ts": NOW - 1, "next_sync_ts": NOW + 299}, True, False),
        ({"last_sync_ts": NOW - 1, "next_sync_ts": NOW - 5, "dnd_until": NOW + 1}, True, False),
        ({"last_sync_ts": NOW - 9, "next_sync_ts": NOW - 5, "dnd_until": NOW}, True, True),
        ({"consecutive_failures": 3, "next_sync_ts": NOW + 40}, True, False),
        ({"consecutive_failures": 3, "next_sync_ts": NOW}, True, True),
    ],
)
def test_next_sync_due(store: Database, fields: dict, has_target: bool, due: bool) -> None:
    row = sync_status(
        tenant_record(store, **fields), pending_reports=0, has_target=has_target, now=NOW
    )
    assert row["next_sync_due"] is due
    assert row["in_dnd"] is (fields.get("dnd_until", 0) > NOW)
    assert ("dnd_until" in row) is row["in_dnd"]


@pytest.mark.parametrize(
    ("config", "public_url", "status"),
    [
        ({"storage_url": "file:///srv/files"}, None, 422),
        ({"storage_url": "file:///srv/files", "public_base_url": "https://mx.example"}, None, 200),
        ({"storage_url": "file:///srv/files"}, "https://mx.example", 200),
        ({"storage_url": "s3://bucket/large"}, None, 200),
    ],
)
def test_rewrite_needs_somewhere_to_serve_download_links(make_client, config, public_url, status):
    client = make_client(public_url=public_url)
    body = {
        "id": "files",
        "large_file_config": {"enabled": True, "action": "rewrite"} | config,
    }
    result = client.simulate_post("/tenant", json=body, headers={"X-API-Token": "admin-token"})
    assert result.status_code == status, result.text
    if status == 422:
        assert result.json["detail"][0]["loc"] == ["body", "large_file_config", "public_base_url"]
        listed = client.simulate_get("/tenants", headers={"X-API-Token": "admin-token"})
        assert [t["id"] for t in listed.json["tenants"] if t["id"] == "files"] == []


# -- large_file_config.storage_url (SPEC §9.7) ------------------------------------------------

REWRITE_WITHOUT_STORAGE: list[dict[str, Any]] = [
    {"enabled": True, "action": "rewrite", "public_base_url": "https://files.example"},
    {"enabled": True, "action": "rewrite", "storage_url": "", "public_base_url": "https://f.x"},
    {"enabled": True, "action": "rewrite", "storage_url": None},
]


@pytest.mark.parametrize("config", REWRITE_WITHOUT_STORAGE)
def test_post_rewrite_without_storage_url_is_refused_and_stores_nothing(
    client: testing.TestClient, store: Database, engine: FakeEngine, config: dict[str, Any]
) -> None:
    before = snapshot(store)
    body = {"id": "files", "large_file_config": config}
    result = client.simulate_post("/tenant", json=body, headers=ADMIN)
    assert fields_of(result) == ["body.large_file_config.storage_url"]
    assert result.json["detail"][0]["msg"] == "required for 'rewrite'"
    assert snapshot(store) == before
    assert engine.calls == []


@pytest.mark.parametrize("config", REWRITE_WITHOUT_STORAGE)
def test_put_rewrite_without_storage_url_is_refused_and_changes_nothing(
    client: testing.TestClient, store: Database, engine: FakeEngine, config: dict[str, Any]
) -> None:
    before = snapshot(store)
    body = {"large_file_config": config}
    result = client.simulate_put("/tenant/acme", json=body, headers=ADMIN)
    assert fields_of(result) == ["body.large_file_config.storage_url"]
    assert snapshot(store) == before
    assert engine.calls == []


def test_storage_url_problem_is_listed_with_the_others(client: testing.TestClient) -> None:
    config = {"enabled": True, "action": "rewrite", "max_size_mb": 0, "bogus": 1}
    result = client.simulate_post(
        "/tenant", json={"id": "files", "large_file_config": config}, headers=ADMIN
    )
    assert sorted(fields_of(result)) == [
        "body.large_file_config.bogus",
        "body.large_file_config.max_size_mb",
        "body.large_file_config.storage_url",
    ]


@pytest.mark.parametrize(
    "config",
    [
        {"enabled": False, "action": "rewrite"},  # off: nothing happens (rule 5)
        {"enabled": True, "action": "warn"},
        {"enabled": True, "action": "reject"},
    ],
)
def test_storage_url_is_needed_only_by_an_enabled_rewrite(
    client: testing.TestClient, store: Database, config: dict[str, Any]
) -> None:
    result = client.simulate_post(
        "/tenant", json={"id": "files", "large_file_config": config}, headers=ADMIN
    )
    assert result.status_code == 200, result.json
    stored = store.tenants.get("files")
    assert stored is not None
    assert stored.large_file_config is not None
    assert stored.large_file_config["action"] == config["action"]
