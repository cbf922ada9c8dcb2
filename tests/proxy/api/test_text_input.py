"""NUL characters are refused wherever text enters (SPEC §3.1): no stored text can hold one."""

from __future__ import annotations

import json

import pytest
from falcon import testing

from proxy.store import Database
from tests.fixtures.stores import add_tenant_and_account
from tests.proxy.api.conftest import ADMIN, MakeClient


@pytest.fixture
def client(store: Database, make_client: MakeClient) -> testing.TestClient:
    add_tenant_and_account(store, "acme", "main", name="ACME")
    return make_client()


def _problem(result: testing.Result) -> list:
    assert result.status_code == 422, result.text
    return [p["loc"] for p in result.json["detail"]]


def test_nul_in_a_query_value_is_a_422_naming_it(client: testing.TestClient) -> None:
    result = client.simulate_get("/messages", params={"tenant_id": "ac\x00me"}, headers=ADMIN)
    assert _problem(result) == [["query", "tenant_id"]]


def test_nul_in_a_path_value_is_a_422_naming_it(client: testing.TestClient) -> None:
    result = client.simulate_get("/tenant/ac%00me", headers=ADMIN)
    assert _problem(result) == [["path", "tenant_id"]]


def test_nul_in_a_body_string_is_a_422_naming_it_and_nothing_changes(
    client: testing.TestClient, store: Database
) -> None:
    body = json.dumps({"id": "acme", "name": "AC\x00ME"})
    result = client.simulate_put("/tenant/acme", body=body, headers=ADMIN)
    assert _problem(result) == [["body", "name"]]
    assert store.tenants.get("acme").name == "ACME"


def test_nul_deep_in_a_batch_names_its_message(client: testing.TestClient) -> None:
    body = {
        "messages": [
            {
                "id": "m1",
                "tenant_id": "acme",
                "account_id": "main",
                "from": "a@acme.example",
                "to": ["b@example.org"],
                "subject": "hi",
                "body": "one\x00two",
            }
        ]
    }
    result = client.simulate_post("/commands/add-messages", json=body, headers=ADMIN)
    assert _problem(result) == [["body", "messages", 0, "body"]]
