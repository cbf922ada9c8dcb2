"""``GET /status`` (SPEC §3.4) over the real store."""

from __future__ import annotations

import pytest
from falcon import testing

from proxy.api import _auth
from proxy.api.status import StatusResponse
from proxy.smtp.errors import PermFailure, Sent
from proxy.store import Database, models
from proxy.store.messages import SCHEDULER_ACTIVE_KEY
from proxy.store.settings import API_TOKEN_SHA256
from tests.fixtures.stores import accepted, add_tenant_and_account
from tests.proxy.api.conftest import ADMIN, NOW, MakeClient, attempt

ACME = {"X-API-Token": "acme-key"}
INSTANCE_ID = "mx-1:8000"


@pytest.fixture
def client(store: Database, make_client: MakeClient) -> testing.TestClient:
    add_tenant_and_account(store, "acme")
    add_tenant_and_account(store, "globex")
    store.tenants.set_api_key("acme", _auth.digest("acme-key"), None, NOW)
    return make_client(instance_id=INSTANCE_ID)


def status(client: testing.TestClient, headers: dict | None = None) -> dict:
    result = client.simulate_get("/status", headers=headers or ADMIN)
    assert result.status_code == 200, result.json
    StatusResponse.model_validate(result.json)
    return result.json


def test_status_of_an_empty_instance(client) -> None:
    body = status(client)
    uptime = body.pop("uptime_seconds")
    assert isinstance(uptime, int)
    assert uptime >= 0
    assert body == {
        "ok": True,
        "active": True,
        "scheduler_active": True,
        "test_mode": False,
        "auth": "enabled",
        "version": "0.1.0",
        "instance_id": "mx-1:8000",
        "pending_messages": 0,
        "messages_by_status": {
            "pending": 0,
            "deferred": 0,
            "suspended": 0,
            "sending": 0,
            "sent": 0,
            "error": 0,
        },
        "instances": [],
    }


def test_counts_use_the_displayed_statuses(client, store) -> None:
    store.messages.enqueue(
        [
            accepted("due"),
            accepted("later", deferred_ts=NOW + 60),
            accepted("nl", batch_code="NL"),
            accepted("nl-later", batch_code="NL", deferred_ts=NOW + 60),
            accepted("ok"),
            accepted("bad"),
            accepted("busy"),
        ],
        NOW,
    )
    store.messages.enqueue([accepted("g", tenant_id="globex")], NOW)
    attempt(store, "ok", Sent(250, "OK"), NOW)
    attempt(store, "bad", PermFailure("SMTP 550: no", 550), NOW)
    busy = store.messages.get("acme", "busy")
    store.messages.claim_due(
        store.tenants.get("acme"), "main", me="y", now=NOW, lease_s=30, limit=9
    )
    store.messages.begin_attempt(busy.pk, store.tenants.get("acme"), me="y", now=NOW, lease_s=30)
    store.tenants.set_suspended_batches("acme", ["NL"], NOW)

    body = status(client)
    assert body["messages_by_status"] == {
        "pending": 2,  # "due" and globex's "g"
        "deferred": 1,
        "suspended": 2,
        "sending": 1,
        "sent": 1,
        "error": 1,
    }
    assert body["pending_messages"] == 6

    mine = status(client, headers=ACME)
    assert mine["messages_by_status"]["pending"] == 1
    assert mine["pending_messages"] == 5
    assert "instances" not in mine  # admin only


def test_a_message_being_sent_counts_as_sending_under_a_suspension(client, store) -> None:
    store.messages.enqueue([accepted("busy"), accepted("waiting")], NOW)
    busy = store.messages.get("acme", "busy")
    acme = store.tenants.get("acme")
    store.messages.claim_due(acme, "main", me="y", now=NOW, lease_s=30, limit=9)
    store.messages.begin_attempt(busy.pk, acme, me="y", now=NOW, lease_s=30)
    store.tenants.set_suspended_batches("acme", ["*"], NOW)
    counts = status(client)["messages_by_status"]
    assert (counts["sending"], counts["suspended"]) == (1, 1)


def test_inactive_tenant_messages_count_as_suspended(client, store) -> None:
    store.messages.enqueue([accepted("g", tenant_id="globex")], NOW)
    store.tenants.upsert("globex", {"active": False}, NOW)
    assert status(client)["messages_by_status"]["suspended"] == 1


def test_scheduler_flag_is_the_stored_setting(client, store) -> None:
    store.settings.set(SCHEDULER_ACTIVE_KEY, "false")
    assert status(client)["scheduler_active"] is False
    store.settings.set(SCHEDULER_ACTIVE_KEY, "true")
    assert status(client)["scheduler_active"] is True


def test_instances_lists_recent_heartbeats_to_the_admin(client, store) -> None:
    for name, beat in (("mx-1:8000", NOW - 5), ("mx-2:8000", NOW - 31)):
        models.InstanceHeartbeat.insert(
            instance_id=name, nonce="n", started_ts=NOW - 600, last_heartbeat_ts=beat
        ).execute()
    assert status(client)["instances"] == [
        {
            "instance_id": "mx-1:8000",
            "started_ts": NOW - 600,
            "last_heartbeat_ts": NOW - 5,
            "active": True,
        }
    ]


def test_auth_reports_disabled_without_any_admin_token(store, make_client) -> None:
    client = make_client(
        instance_id=INSTANCE_ID, api_token=None, start_active=False, test_mode=True
    )
    body = status(client, headers={})
    assert (body["auth"], body["active"], body["test_mode"]) == ("disabled", False, True)
    store.settings.set(API_TOKEN_SHA256, _auth.digest("stored"))  # as PUT /instance does
    assert status(client, headers={"X-API-Token": "stored"})["auth"] == "enabled"


def test_status_needs_a_token(client) -> None:
    assert client.simulate_get("/status").status_code == 401
