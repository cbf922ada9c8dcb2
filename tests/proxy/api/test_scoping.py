"""The access matrix: every route × {no token, wrong token, tenant A on B, A on admin, admin}.

One row per operation; a route added to ``proxy.app.routes`` without a row here
fails ``test_every_route_is_in_the_matrix``. Each request names tenant ``beta``
wherever the route takes a tenant, so tenant ``alpha``'s token must be refused
(403) and nothing of ``beta`` may change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from falcon import testing

from proxy.api.deps import Deps
from proxy.app import operations, routes
from proxy.clock import SYSTEM_CLOCK, Clock
from proxy.metrics import Metrics
from tests.fixtures.engine import FakeEngine
from tests.fixtures.stores import accepted, make_settings
from tests.proxy.api.conftest import ADMIN_TOKEN, NOW, MakeClient

ALPHA_KEY = "alpha-key-0123456789abcdefghijklmnopqrstu"
BETA_KEY = "beta-key-0123456789abcdefghijklmnopqrstuv"


@dataclass(frozen=True)
class Row:
    method: str
    template: str
    path: str
    access: str  # public | auth | admin
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None
    admin_ok: tuple[int, ...] = (200,)  # what the admin token gets
    # What tenant alpha's token gets: 403 when the row names beta; "own" rows (no tenant
    # named) succeed for alpha on its own data.
    alpha: tuple[int, ...] = (403,)


B = {"tenant_id": "beta"}
ROWS: tuple[Row, ...] = (
    Row("GET", "/health", "/health", "public", alpha=(200,)),
    Row("GET", "/openapi.json", "/openapi.json", "public", alpha=(200,)),
    Row("GET", "/docs", "/docs", "public", alpha=(200,)),
    Row("GET", "/redoc", "/redoc", "public", alpha=(200,)),
    Row("GET", "/docs/assets/{name}", "/docs/assets/swagger-ui.css", "public", alpha=(200,)),
    Row(
        "GET", "/download/{token}", "/download/not-a-link", "public", admin_ok=(404,), alpha=(404,)
    ),
    Row(
        "GET",
        "/download/{token}/{filename}",
        "/download/not-a-link/a.pdf",
        "public",
        admin_ok=(404,),
        alpha=(404,),
    ),
    Row("GET", "/metrics", "/metrics", "admin"),
    Row("POST", "/commands/run-now", "/commands/run-now", "auth", alpha=(200,)),
    Row(
        "POST",
        "/commands/add-messages",
        "/commands/add-messages",
        "auth",
        body={
            "messages": [
                {
                    "id": "x1",
                    "tenant_id": "beta",
                    "account_id": "main",
                    "from": "a@beta.example",
                    "to": "b@example.org",
                    "subject": "s",
                }
            ]
        },
    ),
    Row("GET", "/status", "/status", "auth", alpha=(200,)),
    Row("POST", "/commands/suspend", "/commands/suspend", "auth", query=B),
    Row("POST", "/commands/activate", "/commands/activate", "auth", query=B),
    Row(
        "POST",
        "/commands/delete-messages",
        "/commands/delete-messages",
        "auth",
        query=B,
        body={"ids": ["b1"]},
    ),
    Row(
        "POST", "/commands/cleanup-messages", "/commands/cleanup-messages", "auth", query=B, body={}
    ),
    Row("DELETE", "/account/{account_id}", "/account/main", "auth", query=B),
    Row("GET", "/messages/{message_id}/events", "/messages/b1/events", "auth", query=B),
    Row(
        "POST",
        "/account",
        "/account",
        "auth",
        body={"id": "new", "tenant_id": "beta", "host": "smtp.example", "port": 25},
    ),
    Row("GET", "/accounts", "/accounts", "auth", query=B),
    Row("GET", "/messages", "/messages", "auth", query=B),
    Row("POST", "/tenant", "/tenant", "admin", body={"id": "beta", "name": "Changed"}),
    Row("GET", "/tenants", "/tenants", "admin"),
    Row("GET", "/tenant/{tenant_id}", "/tenant/beta", "auth"),
    Row("PUT", "/tenant/{tenant_id}", "/tenant/beta", "auth", body={"name": "Changed"}),
    Row("DELETE", "/tenant/{tenant_id}", "/tenant/beta", "admin"),
    Row("POST", "/tenant/{tenant_id}/api-key", "/tenant/beta/api-key", "admin", body={}),
    Row("DELETE", "/tenant/{tenant_id}/api-key", "/tenant/beta/api-key", "admin"),
    Row("GET", "/tenants/sync-status", "/tenants/sync-status", "admin"),
    Row("GET", "/instance", "/instance", "admin"),
    Row("PUT", "/instance", "/instance", "admin", body={"name": "mx-test"}),
    Row("POST", "/instance/reload-bounce", "/instance/reload-bounce", "admin"),
    Row("GET", "/command-log", "/command-log", "admin"),
    Row("GET", "/command-log/export", "/command-log/export", "admin"),
    Row("POST", "/command-log/purge", "/command-log/purge", "admin", body={"before_ts": 0}),
)


@pytest.fixture
def clock() -> Clock:
    return SYSTEM_CLOCK  # the matrix has always run on the wall clock


@pytest.fixture
def client(store, make_client: MakeClient):
    from proxy.api._auth import digest

    for tenant in ("alpha", "beta"):
        store.tenants.upsert(tenant, {"name": tenant.title()}, NOW)
        store.accounts.upsert(tenant, "main", {"host": "127.0.0.1", "port": 25}, NOW)
    store.tenants.set_api_key("alpha", digest(ALPHA_KEY), None, NOW)
    store.tenants.set_api_key("beta", digest(BETA_KEY), None, NOW)
    store.messages.enqueue([accepted("b1", tenant_id="beta")], NOW)
    return make_client()


def _call(client: testing.TestClient, row: Row, token: str | None) -> testing.Result:
    headers = {"X-API-Token": token} if token is not None else {}
    return client.simulate_request(
        row.method, row.path, params=row.query, json=row.body, headers=headers
    )


def _beta_snapshot(store) -> tuple:
    tenant = store.tenants.get("beta")
    return (
        tenant,
        store.accounts.list("beta"),
        [(m.id, m.status, m.payload) for m in store.messages.list("beta")],
    )


def test_every_route_is_in_the_matrix(store) -> None:
    deps = Deps(make_settings(), store, FakeEngine(), Metrics())
    served = {(method, template, op.access) for template, method, op in operations(routes(deps))}
    assert served == {(r.method, r.template, r.access) for r in ROWS}


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.method} {r.template}")
def test_access_matrix(client: testing.TestClient, store, row: Row) -> None:
    cells: dict[str, int] = {}
    before = _beta_snapshot(store)
    cells["none"] = _call(client, row, None).status_code
    cells["wrong"] = _call(client, row, "not-a-token").status_code
    cells["alpha"] = _call(client, row, ALPHA_KEY).status_code
    if row.access != "public":
        assert cells["none"] == 401, cells
        assert cells["wrong"] == 401, cells
        if row.access == "admin":
            assert cells["alpha"] == 403, cells  # a tenant token on an admin route
        else:
            assert cells["alpha"] in row.alpha, cells  # tenant A naming tenant B
        if 200 not in row.alpha:
            assert _beta_snapshot(store) == before  # refused requests changed nothing
    else:
        assert all(code in row.alpha for code in cells.values()), cells
    admin = _call(client, row, ADMIN_TOKEN)
    assert admin.status_code in row.admin_ok, (admin.status_code, admin.text)


def test_refusal_bodies_have_the_contract_shape(client: testing.TestClient) -> None:
    missing = client.simulate_get("/tenants")
    assert missing.status_code == 401
    assert missing.json == {
        "ok": False,
        "error": "Invalid or missing API token",
        "detail": "Invalid or missing API token",
    }
    admin_only = client.simulate_get("/tenants", headers={"X-API-Token": ALPHA_KEY})
    assert admin_only.json["error"] == (
        "Admin token required, tenant tokens not allowed for this operation"
    )
    foreign = client.simulate_get("/tenant/beta", headers={"X-API-Token": ALPHA_KEY})
    assert foreign.json["error"] == "Token not authorized for this tenant"


def test_authentication_comes_before_body_validation(client: testing.TestClient) -> None:
    result = client.simulate_post(
        "/commands/add-messages", body="{not json", headers={"Content-Type": "application/json"}
    )
    assert result.status_code == 401


def test_a_tenant_token_acts_on_its_own_tenant_by_default(client: testing.TestClient, store):
    own = client.simulate_get("/messages", headers={"X-API-Token": BETA_KEY})
    assert [m["id"] for m in own.json["messages"]] == ["b1"]
    other = client.simulate_get("/messages", headers={"X-API-Token": ALPHA_KEY})
    assert other.json["messages"] == []


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/health", {}, 200),  # public: uptime checks probe it with HEAD
        ("/openapi.json", {}, 200),
        ("/tenants", {}, 401),  # GET's rules apply
        ("/tenants", {"X-API-Token": ALPHA_KEY}, 403),
        ("/tenants", {"X-API-Token": ADMIN_TOKEN}, 200),
        ("/tenant/alpha", {"X-API-Token": ALPHA_KEY}, 200),
    ],
)
def test_head_is_get_without_a_body(client: testing.TestClient, path, headers, status) -> None:
    got = client.simulate_get(path, headers=headers)
    head = client.simulate_head(path, headers=headers)
    assert (got.status_code, head.status_code) == (status, status)
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
