"""NUL characters are refused wherever text enters (SPEC §3.1): no stored text can hold one."""

from __future__ import annotations

import json
from typing import Any

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


def _message(message_id: str, **fields: Any) -> dict[str, Any]:
    base = {
        "id": message_id,
        "tenant_id": "acme",
        "account_id": "main",
        "from": "a@acme.example",
        "to": ["b@example.org"],
        "subject": "hi",
    }
    return base | fields


def _attachment(**fields: Any) -> dict[str, Any]:
    return {"attachments": [{"filename": "a.pdf", "storage_path": "doc=1"} | fields]}


def _add(client: testing.TestClient, body: dict[str, Any]) -> testing.Result:
    return client.simulate_post("/commands/add-messages", json=body, headers=ADMIN)


# (name, fields of the bad message, field, reason): SPEC §4.3 rule 1, judged per message.
NUL_IN_A_MESSAGE = [
    ("subject", {"subject": "a\x00b"}, "subject", "header injection in subject"),
    ("body", {"body": "one\x00two"}, "body", "NUL character in body"),
    ("html", {"html": "<p>\x00</p>"}, "html", "NUL character in html"),
    ("tenant_id", {"tenant_id": "ac\x00me"}, "tenant_id", "NUL character in tenant_id"),
    ("account_id", {"account_id": "ma\x00in"}, "account_id", "NUL character in account_id"),
    ("to", {"to": ["b@example.org\x00"]}, "to", "header injection in to"),
    (
        "header value",
        {"headers": {"X-A": "\x00"}},
        "headers.X-A",
        "header injection in headers.X-A",
    ),
    ("header name", {"headers": {"X-\x00": "1"}}, "headers", "invalid header name 'X-\x00'"),
    ("batch_code", {"batch_code": "B\x00"}, "batch_code", "header injection in batch_code"),
    (
        "filename",
        _attachment(filename="a\x00.pdf"),
        "attachments[0].filename",
        "header injection in attachments[0].filename",
    ),
    (
        "storage_path",
        _attachment(storage_path="doc=\x00"),
        "attachments[0].storage_path",
        "attachments[0].storage_path: NUL character",
    ),
    (
        "auth password",
        _attachment(auth={"method": "basic", "user": "u", "password": "p\x00"}),
        "attachments[0].auth.password",
        "attachments[0].auth.password: NUL character",
    ),
    (
        "attachment key",
        _attachment(**{"x\x00": 1}),
        "attachments[0].x\x00",
        "attachments[0].x\x00: unknown field",
    ),
]


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [pytest.param(f, field, reason, id=name) for name, f, field, reason in NUL_IN_A_MESSAGE],
)
def test_nul_in_a_message_rejects_that_message_only(
    client: testing.TestClient, store: Database, fields: dict, field: str, reason: str
) -> None:
    result = _add(client, {"messages": [_message("good"), _message("bad", **fields)]})
    assert result.status_code == 200, result.text
    assert result.json == {
        "ok": True,
        "queued": 1,
        "rejected": [{"id": "bad", "field": field, "reason": reason}],
    }
    assert [m.id for m in store.messages.list("acme")] == ["good"]


def test_nul_in_a_message_id_is_header_injection(
    client: testing.TestClient, store: Database
) -> None:
    result = _add(client, {"messages": [_message("good"), _message("b\x00d")]})
    assert result.status_code == 200, result.text
    assert result.json["rejected"] == [
        {"id": "b\x00d", "field": "id", "reason": "header injection in id"}
    ]
    assert [m.id for m in store.messages.list("acme")] == ["good"]


def test_nul_in_an_unknown_message_field_is_ignored_like_the_field(
    client: testing.TestClient, store: Database
) -> None:
    odd = _message("m1", note="a\x00b", **{"x\x00": "y"})
    result = _add(client, {"messages": [odd]})
    assert result.json == {"ok": True, "queued": 1, "rejected": []}
    payload = store.messages.get("acme", "m1").payload
    assert not {"note", "x\x00"} & set(payload)
    (entry,) = client.simulate_get("/command-log", headers=ADMIN).json["commands"]
    assert entry["payload"]["messages"][0]["note"] == "a\x00b"  # the audit keeps the request


def test_a_batch_whose_only_message_has_a_nul_is_a_400(
    client: testing.TestClient, store: Database
) -> None:
    result = _add(client, {"messages": [_message("m1", body="\x00")]})
    assert result.status_code == 400
    assert result.json["rejected"] == [
        {"id": "m1", "field": "body", "reason": "NUL character in body"}
    ]
    assert store.messages.list("acme") == []


@pytest.mark.parametrize(
    ("extra", "loc"),
    [
        ({"default_priority": "hi\x00gh"}, ["body", "default_priority"]),
        ({"comment": "a\x00b"}, ["body", "comment"]),
        ({"messages": "not a list \x00"}, ["body", "messages"]),
    ],
)
def test_nul_outside_the_messages_refuses_the_whole_request(
    client: testing.TestClient, store: Database, extra: dict, loc: list
) -> None:
    result = _add(client, {"messages": [_message("m1")]} | extra)
    assert _problem(result) == [loc]
    assert result.json["detail"][0]["msg"] == "must not contain NUL (U+0000) characters"
    assert store.messages.list("acme") == []
