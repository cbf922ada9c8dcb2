"""Tenant queries over a real SQLite file: merge, partial update, delete, API keys."""

from __future__ import annotations

import pytest

from proxy.store import Database, models
from proxy.store.records import MASK
from proxy.store.tenants import AdminFieldChange, mask_strings, restore_masked
from tests.fixtures.stores import accepted, add_tenant_and_account

NOW = 1_767_225_600
BEARER = {"method": "bearer", "token": "s3cret"}
LARGE = {
    "enabled": True,
    "action": "rewrite",
    "storage_url": "s3://bucket/path",
    "storage_options": {"key": "AKIA", "secret": "shh", "client_kwargs": {"region": "eu"}, "n": 3},
}


def test_upsert_creates_then_merges_and_null_resets_a_field(store: Database) -> None:
    assert store.tenants.upsert("acme", {"name": "ACME", "rate_limits": {"hourly": 5}}, NOW)
    assert not store.tenants.upsert("acme", {"active": False}, NOW + 1)
    tenant = store.tenants.get("acme")
    assert (tenant.name, tenant.rate_limits, tenant.active) == ("ACME", {"hourly": 5}, False)
    store.tenants.upsert("acme", {"rate_limits": None}, NOW + 2)
    assert store.tenants.get("acme").rate_limits is None


def test_masked_secrets_sent_back_keep_the_stored_ones(store: Database) -> None:
    store.tenants.upsert("acme", {"client_auth": BEARER, "large_file_config": LARGE}, NOW)
    sent_back = LARGE | {"storage_options": mask_strings(LARGE["storage_options"])}
    store.tenants.upsert(
        "acme",
        {"client_auth": {"method": "bearer", "token": MASK}, "large_file_config": sent_back},
        NOW,
    )
    tenant = store.tenants.get("acme")
    assert tenant.client_auth == BEARER
    assert tenant.large_file_config == LARGE
    assert tenant.updated_ts == NOW  # nothing changed


def test_mask_helpers_work_on_nested_values() -> None:
    masked = mask_strings(LARGE["storage_options"])
    assert masked == {"key": MASK, "secret": MASK, "client_kwargs": {"region": MASK}, "n": 3}
    new = masked | {"secret": "rotated"}
    assert restore_masked(new, LARGE["storage_options"]) == LARGE["storage_options"] | {
        "secret": "rotated"
    }
    assert restore_masked({"extra": MASK}, {}) == {"extra": MASK}  # nothing to keep


def test_update_is_partial_and_reports_what_changed(store: Database) -> None:
    store.tenants.upsert("acme", {"name": "ACME", "client_base_url": "https://a.example"}, NOW)
    assert store.tenants.update("acme", {"name": "Acme Corp"}, NOW + 5) == {"name"}
    tenant = store.tenants.get("acme")
    assert (tenant.name, tenant.client_base_url, tenant.updated_ts) == (
        "Acme Corp",
        "https://a.example",
        NOW + 5,
    )
    assert store.tenants.update("acme", {"name": "Acme Corp"}, NOW + 9) == set()
    assert store.tenants.get("acme").updated_ts == NOW + 5
    assert store.tenants.update("ghost", {"name": "x"}, NOW) is None
    assert not store.tenants.exists("ghost")


def test_update_refuses_admin_only_changes_and_writes_nothing(store: Database) -> None:
    store.tenants.upsert("acme", {"rate_limits": {"hourly": 5, "behavior": "defer"}}, NOW)
    before = store.tenants.get("acme")
    with pytest.raises(AdminFieldChange) as refused:
        store.tenants.update(
            "acme",
            {"name": "new", "rate_limits": {"hourly": 6}},
            NOW + 1,
            admin_only=("rate_limits",),
        )
    assert refused.value.field == "rate_limits"
    assert store.tenants.get("acme") == before
    # Sending back the stored value is not a change.
    changed = store.tenants.update(
        "acme",
        {"name": "new", "rate_limits": {"behavior": "defer", "hourly": 5}},
        NOW + 2,
        admin_only=("rate_limits",),
    )
    assert changed == {"name"}


def test_delete_removes_everything_the_tenant_owns_and_nothing_else(store: Database) -> None:
    add_tenant_and_account(store, "acme", "main")
    store.accounts.upsert("acme", "backup", {"host": "127.0.0.1", "port": 2526}, NOW)
    add_tenant_and_account(store, "acme2", "main")
    add_tenant_and_account(store, "acm_", "main")  # '_' would be a LIKE wildcard
    store.tenants.set_api_key("acme", "a" * 64, None, NOW)
    store.messages.enqueue([accepted("m1"), accepted("m2", tenant_id="acme2")], NOW)
    for scope in ("tenant:acme", "account:acme:main", "account:acme2:main", "account:acm_:main"):
        models.RateCounter.insert(scope=scope, window="hour", window_start=0, count=1).execute()
    models.SyncLease.insert(tenant_id="acme", holder="x", expires_ts=NOW).execute()

    assert store.tenants.delete("acme") == ["backup", "main"]

    assert not store.tenants.exists("acme")
    assert store.tenants.tenant_for_key_hash("a" * 64, NOW) is None
    assert not store.accounts.exists("acme", "main")
    assert not models.Message.select().where(models.Message.tenant_id == "acme").exists()
    assert not models.MessageEvent.select().where(models.MessageEvent.tenant_id == "acme").exists()
    assert not models.SyncLease.select().exists()
    scopes = sorted(row.scope for row in models.RateCounter.select())
    assert scopes == ["account:acm_:main", "account:acme2:main"]
    assert store.accounts.exists("acme2", "main")
    assert models.Message.select().where(models.Message.tenant_id == "acme2").count() == 1
    assert store.tenants.delete("acme") is None


def test_a_new_key_replaces_the_old_one_at_once(store: Database) -> None:
    store.tenants.upsert("acme", {}, NOW)
    assert store.tenants.set_api_key("acme", "a" * 64, None, NOW)
    assert store.tenants.set_api_key("acme", "b" * 64, NOW + 60, NOW)
    assert store.tenants.tenant_for_key_hash("a" * 64, NOW) is None
    assert store.tenants.tenant_for_key_hash("b" * 64, NOW) == ("acme", "b" * 64)
    tenant = store.tenants.get("acme")
    assert (tenant.api_key_set, tenant.api_key_expires_at) == (True, NOW + 60)


def test_an_expired_key_is_unknown(store: Database) -> None:
    store.tenants.upsert("acme", {}, NOW)
    store.tenants.set_api_key("acme", "a" * 64, NOW + 60, NOW)
    assert store.tenants.tenant_for_key_hash("a" * 64, NOW + 59) is not None
    assert store.tenants.tenant_for_key_hash("a" * 64, NOW + 60) is None


def test_keys_of_unknown_tenants_are_refused_and_revocation_removes_the_key(
    store: Database,
) -> None:
    assert not store.tenants.set_api_key("ghost", "a" * 64, None, NOW)
    assert store.tenants.tenant_for_key_hash("a" * 64, NOW) is None
    assert not store.tenants.revoke_api_key("ghost")
    store.tenants.upsert("acme", {}, NOW)
    store.tenants.set_api_key("acme", "a" * 64, None, NOW)
    assert store.tenants.revoke_api_key("acme")
    assert store.tenants.tenant_for_key_hash("a" * 64, NOW) is None
    assert not store.tenants.get("acme").api_key_set
    assert store.tenants.revoke_api_key("acme")  # revoking twice is fine
