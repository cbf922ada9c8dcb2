"""Commands over the real store: suspend/activate (SPEC §3.6, §8), delete and cleanup (§14)."""

from __future__ import annotations

from typing import Any

import pytest
from falcon import testing

from proxy.api import _auth
from proxy.api.cleanup import CleanupResult, DeleteResult
from proxy.api.commands import AddMessagesResult, RunNowResult
from proxy.api.suspension import SuspendResponse, suspended_after
from proxy.smtp.errors import Sent
from proxy.store import Database, models
from tests.fixtures.stores import accepted, add_tenant_and_account
from tests.proxy.api.conftest import ADMIN, NOW, MakeClient, attempt

ACME_KEY, GLOBEX_KEY = "acme-key", "globex-key"
ACME = {"X-API-Token": ACME_KEY}


@pytest.fixture
def client(store: Database, make_client: MakeClient) -> testing.TestClient:
    add_tenant_and_account(store, "acme", client_base_url="https://acme.example")
    add_tenant_and_account(store, "globex")
    store.tenants.set_api_key("acme", _auth.digest(ACME_KEY), None, NOW)
    store.tenants.set_api_key("globex", _auth.digest(GLOBEX_KEY), None, NOW)
    return make_client(delivery_report_retention_seconds=3600)


def post(client: testing.TestClient, path: str, headers: dict | None = None, **kw: Any):
    return client.simulate_post(path, headers=headers or ADMIN, **kw)


def batches(store: Database, tenant: str = "acme") -> tuple[str, ...]:
    return store.tenants.get(tenant).suspended_batches


def enqueue(store: Database, *items: Any) -> None:
    store.messages.enqueue(list(items), NOW)


def statuses(client: testing.TestClient, tenant: str = "acme") -> dict[str, str]:
    result = client.simulate_get("/messages", params={"tenant_id": tenant}, headers=ADMIN)
    return {m["id"]: m["status"] for m in result.json["messages"]}


def assert_error(result: Any, status: int, text: str) -> None:
    assert result.status_code == status, result.json
    assert result.json == {"ok": False, "error": text, "detail": text}


def assert_problem(result: Any, loc: list[str]) -> None:
    assert result.status_code == 422, result.json
    assert result.json["ok"] is False
    assert [p["loc"] for p in result.json["detail"]] == [loc]


# -- the pure rule (§8 rules 1, 4, 5) ----------------------------------------------


@pytest.mark.parametrize(
    ("current", "suspend", "code", "after"),
    [
        ((), True, None, ("*",)),
        (("A",), True, None, ("*",)),
        ((), True, "B", ("B",)),
        (("C",), True, "A", ("A", "C")),
        (("A",), True, "A", ("A",)),
        (("*",), True, "A", ("*",)),
        (("*",), False, None, ()),
        (("A", "B"), False, None, ()),
        (("A", "B"), False, "A", ("B",)),
        (("B",), False, "A", ("B",)),
    ],
)
def test_suspended_after(current, suspend, code, after) -> None:
    assert suspended_after(current, suspend=suspend, batch_code=code) == after


# -- suspend and activate a tenant ------------------------------------------------


def test_suspending_a_batch_shows_only_its_messages_as_suspended(client, store, engine) -> None:
    enqueue(store, accepted("n1", batch_code="NL"), accepted("n2", batch_code="NL"))
    enqueue(store, accepted("inv", batch_code="INV"), accepted("plain"))
    result = post(client, "/commands/suspend", params={"tenant_id": "acme", "batch_code": "NL"})
    assert result.status_code == 200
    assert result.json == {
        "ok": True,
        "tenant_id": "acme",
        "batch_code": "NL",
        "suspended_batches": ["NL"],
        "pending_messages": 2,
    }
    SuspendResponse.model_validate(result.json)
    assert statuses(client) == {
        "n1": "suspended",
        "n2": "suspended",
        "inv": "pending",
        "plain": "pending",
    }
    assert engine.calls == []  # suspension needs no tell: attempts re-read the tenant


def test_suspending_the_whole_tenant_holds_every_message(client, store) -> None:
    enqueue(store, accepted("nl", batch_code="NL"), accepted("plain"))
    enqueue(store, accepted("g", tenant_id="globex"))
    result = post(client, "/commands/suspend", params={"tenant_id": "acme"})
    assert result.json == {
        "ok": True,
        "tenant_id": "acme",
        "suspended_batches": ["*"],
        "pending_messages": 2,
    }
    assert set(statuses(client).values()) == {"suspended"}
    assert statuses(client, "globex") == {"g": "pending"}
    # A batch suspended on top of "*" changes nothing.
    again = post(client, "/commands/suspend", params={"tenant_id": "acme", "batch_code": "X"})
    assert again.json["suspended_batches"] == ["*"]


def test_activating_one_batch_of_a_fully_suspended_tenant_is_refused(client, store, engine):
    store.tenants.set_suspended_batches("acme", ["*"], NOW)
    before = store.tenants.get("acme")
    result = post(client, "/commands/activate", params={"tenant_id": "acme", "batch_code": "NL"})
    assert_error(result, 400, "cannot activate a single batch while the whole tenant is suspended")
    assert store.tenants.get("acme") == before
    assert engine.calls == []


def test_activation_clears_and_wakes_the_tenant_accounts(client, store, engine) -> None:
    enqueue(store, accepted("nl", batch_code="NL"), accepted("inv", batch_code="INV"))
    store.tenants.set_suspended_batches("acme", ["INV", "NL"], NOW)
    one = post(client, "/commands/activate", params={"tenant_id": "acme", "batch_code": "NL"})
    assert one.json == {
        "ok": True,
        "tenant_id": "acme",
        "batch_code": "NL",
        "suspended_batches": ["INV"],
        "pending_messages": 1,
    }
    # A code that is not listed is no error (§8 rule 4).
    none = post(client, "/commands/activate", params={"tenant_id": "acme", "batch_code": "ZZ"})
    assert none.json["suspended_batches"] == ["INV"]
    assert none.json["pending_messages"] == 0
    everything = post(client, "/commands/activate", params={"tenant_id": "acme"})
    assert everything.json["suspended_batches"] == []
    assert everything.json["pending_messages"] == 2
    assert engine.calls == [("wake_accounts", "acme")] * 3
    assert statuses(client) == {"nl": "pending", "inv": "pending"}


def test_unknown_tenant_is_404_and_changes_nothing(client, store, engine) -> None:
    for command in ("suspend", "activate"):
        result = post(client, f"/commands/{command}", params={"tenant_id": "ghost"})
        assert_error(result, 404, "Tenant 'ghost' not found")
    assert store.tenants.get("ghost") is None
    assert engine.calls == []


def test_tenant_token_acts_on_its_own_tenant_only(client, store) -> None:
    mine = post(client, "/commands/suspend", headers=ACME, params={"batch_code": "NL"})
    assert mine.json["tenant_id"] == "acme"
    assert batches(store) == ("NL",)
    other = post(client, "/commands/suspend", headers=ACME, params={"tenant_id": "globex"})
    assert_error(other, 403, "Token not authorized for this tenant")
    assert batches(store, "globex") == ()
    assert client.simulate_post("/commands/suspend").status_code == 401


def test_bad_batch_code_or_blank_query_is_422_and_changes_nothing(client, store) -> None:
    cases = [
        ({"tenant_id": "acme", "batch_code": "*"}, ["query", "batch_code"]),
        ({"tenant_id": "acme", "batch_code": "x" * 65}, ["query", "batch_code"]),
        ({"tenant_id": "acme", "batch_code": "a\tb"}, ["query", "batch_code"]),
        ({"tenant_id": "acme", "batch_code": ""}, ["query", "batch_code"]),
        ({"tenant_id": ""}, ["query", "tenant_id"]),
        ({"batch_code": "NL"}, ["query", "tenant_id"]),  # a batch needs a tenant
    ]
    for params, loc in cases:
        result = client.simulate_post(
            "/commands/suspend", params=params, headers=ADMIN, params_csv=False
        )
        assert_problem(result, loc)
    assert batches(store) == ()
    assert store.messages.scheduler_active()


# -- the deployment-wide scheduler ---------------------------------------------------


def test_admin_without_tenant_switches_the_scheduler(client, store, engine) -> None:
    enqueue(store, accepted("a"), accepted("g", tenant_id="globex"))
    stopped = post(client, "/commands/suspend")
    assert stopped.json == {"ok": True, "scheduler_active": False}
    SuspendResponse.model_validate(stopped.json)
    assert client.simulate_get("/status", headers=ADMIN).json["scheduler_active"] is False
    assert store.messages.due_accounts(NOW) == []
    for tenant in ("acme", "globex"):
        assert not store.messages.claim_due(
            store.tenants.get(tenant), "main", me="x", now=NOW, lease_s=30, limit=5
        )
    assert batches(store) == ()
    assert batches(store, "globex") == ()
    assert engine.calls == []

    resumed = post(client, "/commands/activate")
    assert resumed.json == {"ok": True, "scheduler_active": True}
    assert engine.calls == [("wake_accounts", None)]
    assert client.simulate_get("/status", headers=ADMIN).json["scheduler_active"] is True
    assert len(store.messages.due_accounts(NOW)) == 2


# -- delete-messages (§14.3) ----------------------------------------------------------


def test_delete_messages_never_touches_another_tenant(client, store, engine) -> None:
    enqueue(store, accepted("a1"), accepted("a2"))
    enqueue(store, accepted("g1", tenant_id="globex"), accepted("a2", tenant_id="globex"))
    result = post(
        client,
        "/commands/delete-messages",
        headers=ACME,
        json={"ids": ["g1", "a2", "zz", "a1", "a1"]},
    )
    assert result.json == {
        "ok": True,
        "removed": 2,
        "not_found": ["zz"],
        "unauthorized": ["g1"],
    }
    DeleteResult.model_validate(result.json)
    assert statuses(client) == {}
    assert statuses(client, "globex") == {"g1": "pending", "a2": "pending"}
    assert engine.calls == []


def test_delete_messages_defaults_to_no_ids(client) -> None:
    for kwargs in ({}, {"json": {}}, {"json": {"ids": None}}):
        result = post(client, "/commands/delete-messages", params={"tenant_id": "acme"}, **kwargs)
        assert result.json == {"ok": True, "removed": 0, "not_found": [], "unauthorized": []}


def test_delete_messages_rejects_bad_input_and_keeps_everything(client, store) -> None:
    enqueue(store, accepted("a1"))
    assert_problem(
        post(client, "/commands/delete-messages", params={"tenant_id": ""}, json={"ids": ["a1"]}),
        ["query", "tenant_id"],
    )
    assert_problem(
        post(client, "/commands/delete-messages", json={"ids": ["a1"]}), ["query", "tenant_id"]
    )
    assert_problem(
        post(client, "/commands/delete-messages", params={"tenant_id": "acme"}, json={"ids": "a1"}),
        ["body", "ids"],
    )
    assert_problem(
        post(client, "/commands/delete-messages", params={"tenant_id": "acme"}, json=["a1"]),
        ["body"],
    )
    foreign = post(
        client,
        "/commands/delete-messages",
        headers=ACME,
        params={"tenant_id": "globex"},
        json={"ids": ["a1"]},
    )
    assert_error(foreign, 403, "Token not authorized for this tenant")
    unknown = post(
        client, "/commands/delete-messages", params={"tenant_id": "ghost"}, json={"ids": ["a1"]}
    )
    assert_error(unknown, 404, "Tenant 'ghost' not found")
    assert statuses(client) == {"a1": "pending"}


# -- cleanup-messages (§14.2) ---------------------------------------------------------


def _sent_and_reported(store: Database, message_id: str, tenant: str, at: int) -> None:
    pk = attempt(store, message_id, Sent(250, "OK"), at, tenant)
    store.events.mark_reported([e.event_id for e in store.events.history(pk)], at)


def test_cleanup_uses_the_configured_retention_by_default(client, store, clock) -> None:
    enqueue(store, accepted("old"), accepted("recent"), accepted("open"))
    _sent_and_reported(store, "old", "acme", NOW - 4000)
    _sent_and_reported(store, "recent", "acme", NOW - 100)
    result = post(client, "/commands/cleanup-messages", params={"tenant_id": "acme"})
    assert result.json == {"ok": True, "removed": 1}
    CleanupResult.model_validate(result.json)
    assert sorted(statuses(client)) == ["open", "recent"]
    # An explicit age replaces it; negative means 0 (everything reported before now).
    result = post(
        client,
        "/commands/cleanup-messages",
        headers=ACME,
        json={"older_than_seconds": -5},
    )
    assert result.json == {"ok": True, "removed": 1}
    assert sorted(statuses(client)) == ["open"]


def test_cleanup_with_an_age_beyond_the_epoch_removes_nothing(client, store) -> None:
    enqueue(store, accepted("old"))
    _sent_and_reported(store, "old", "acme", NOW - 4000)
    result = post(
        client,
        "/commands/cleanup-messages",
        params={"tenant_id": "acme"},
        json={"older_than_seconds": 2**70},
    )
    assert result.json == {"ok": True, "removed": 0}
    assert statuses(client) == {"old": "sent"}


def test_cleanup_of_a_tenant_without_sync_target_goes_by_smtp_ts(client, store) -> None:
    enqueue(store, accepted("g", tenant_id="globex"))
    _sent_and_reported(store, "g", "globex", NOW - 50)
    models.MessageEvent.update(reported_ts=None).execute()  # never acknowledged
    result = post(
        client,
        "/commands/cleanup-messages",
        params={"tenant_id": "globex"},
        json={"older_than_seconds": 10},
    )
    assert result.json == {"ok": True, "removed": 1}


def test_cleanup_rejects_bad_input(client, store) -> None:
    enqueue(store, accepted("old"))
    _sent_and_reported(store, "old", "acme", NOW - 4000)
    assert_problem(
        post(
            client,
            "/commands/cleanup-messages",
            params={"tenant_id": "acme"},
            json={"older_than_seconds": "soon"},
        ),
        ["body", "older_than_seconds"],
    )
    assert_problem(post(client, "/commands/cleanup-messages"), ["query", "tenant_id"])
    assert_error(
        post(client, "/commands/cleanup-messages", params={"tenant_id": "ghost"}),
        404,
        "Tenant 'ghost' not found",
    )
    assert_error(
        post(client, "/commands/cleanup-messages", headers=ACME, params={"tenant_id": "globex"}),
        403,
        "Token not authorized for this tenant",
    )
    assert statuses(client) == {"old": "sent"}


# -- add-messages and run-now answer in their documented shapes ---------------------


def test_add_messages_and_run_now_match_their_response_models(client, engine) -> None:
    body = {
        "messages": [
            {
                "id": "m1",
                "tenant_id": "acme",
                "account_id": "main",
                "from": "a@acme.example",
                "to": "b@example.org",
                "subject": "Hi",
            },
            {"id": "m2", "tenant_id": "acme"},
        ]
    }
    added = post(client, "/commands/add-messages", json=body)
    assert added.status_code == 200
    AddMessagesResult.model_validate(added.json)
    assert added.json["queued"] == 1
    ran = post(client, "/commands/run-now")
    RunNowResult.model_validate(ran.json)
    assert engine.names() == ["messages_added", "run_now"]


def test_run_now_with_a_tenant_token_naming_another_tenant_is_403(client, engine) -> None:
    """SPEC §2.3 rule 1: a tenant id the request names must be the owner (the body, though,
    is ignored: §3.5)."""
    key = {"X-API-Token": GLOBEX_KEY}
    foreign = client.simulate_post("/commands/run-now", params={"tenant_id": "acme"}, headers=key)
    assert foreign.status_code == 403
    assert foreign.json["error"] == "Token not authorized for this tenant"
    assert engine.names() == []  # nothing woken
    own = client.simulate_post("/commands/run-now", params={"tenant_id": "globex"}, headers=key)
    assert own.status_code == 200
    ignored = client.simulate_post("/commands/run-now", json={"tenant_id": "acme"}, headers=key)
    assert ignored.status_code == 200
    assert engine.calls == [("run_now", "globex"), ("run_now", "globex")]
