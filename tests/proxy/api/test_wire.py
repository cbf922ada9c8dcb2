"""What goes over the wire (SPEC §3.1): JSON media type, and waitress's own 413 as JSON."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import requests
from falcon import testing

from proxy.store import Database
from tests.fixtures.proxy import ADMIN_TOKEN, fast_settings, running_proxy
from tests.fixtures.stores import add_tenant_and_account
from tests.proxy.api.conftest import ADMIN, MakeClient

JSON_UTF8 = "application/json; charset=utf-8"
MB = 1 << 20


@pytest.fixture
def client(store: Database, make_client: MakeClient) -> testing.TestClient:
    add_tenant_and_account(store, "acme", "main")
    return make_client()


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"),
    [
        ("GET", "/health", {}, None, 200),
        ("GET", "/openapi.json", {}, None, 200),
        ("GET", "/status", ADMIN, None, 200),
        ("GET", "/status", {}, None, 401),
        ("GET", "/no/such/route", ADMIN, None, 404),
        ("POST", "/tenant", ADMIN, "{not json", 422),
        ("POST", "/tenant", ADMIN, json.dumps({"name": "no id"}), 422),
    ],
)
def test_every_json_answer_names_its_charset(
    client: testing.TestClient,
    method: str,
    path: str,
    headers: dict,
    body: str | None,
    status: int,
) -> None:
    result = client.simulate_request(method, path, headers=headers, body=body)
    assert result.status_code == status
    assert result.headers["content-type"] == JSON_UTF8
    assert isinstance(result.json, dict)


def test_a_request_naming_its_charset_is_read(client: testing.TestClient, store: Database) -> None:
    body = json.dumps({"id": "globex", "name": "Glöbex"}).encode()
    headers = ADMIN | {"Content-Type": JSON_UTF8}
    result = client.simulate_post("/tenant", body=body, headers=headers)
    assert result.status_code == 200, result.text
    assert store.tenants.get("globex").name == "Glöbex"


def _raw_answer(port: int, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send only ``head`` (request line and headers) and read the answer until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    header_block, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *lines = header_block.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def test_a_body_over_the_servers_hard_cap_gets_the_json_413(tmp_path: Path) -> None:
    with running_proxy(fast_settings(tmp_path, max_request_mb=1)) as (server, api):
        head = (
            "POST /commands/add-messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"X-API-Token: {ADMIN_TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {10**12}\r\n\r\n"
        ).encode()
        status, headers, body = _raw_answer(server.port, head)
        assert (status, headers["content-type"]) == (413, JSON_UTF8)
        expected = {"ok": False, "error": "Request body exceeds 1 MB"}
        assert json.loads(body) == expected | {"detail": expected["error"]}

        # Between the limit and the hard cap the app answers: the same body.
        over = requests.post(
            f"{server.url}/commands/add-messages",
            data=b" " * (MB + 10),
            headers={"X-API-Token": ADMIN_TOKEN, "Content-Type": "application/json"},
            timeout=10,
        )
        assert (over.status_code, over.headers["content-type"]) == (413, JSON_UTF8)
        assert over.json() == json.loads(body)
        assert api.get("/health").status_code == 200  # the server goes on serving


def test_a_request_waitress_cannot_parse_gets_a_json_400_quoting_nothing(tmp_path: Path) -> None:
    with running_proxy(fast_settings(tmp_path)) as (server, api):
        head = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Token secret-token\r\n\r\n"
        status, headers, body = _raw_answer(server.port, head)
        assert (status, headers["content-type"]) == (400, JSON_UTF8)
        assert json.loads(body) == {"ok": False, "error": "Bad Request", "detail": "Bad Request"}
        assert api.get("/health").status_code == 200
