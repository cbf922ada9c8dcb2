"""Instance settings (SPEC §3.12) and the admin token stored through them (§2.1 rule 2)."""

from __future__ import annotations

from typing import Any

import pytest
from falcon import testing

from proxy.api import _auth
from proxy.api._errors import ADMIN_REQUIRED, AUTH_FAILED
from proxy.api.instance import BOUNCE_WITHOUT_HOST, MAX_POLL_INTERVAL_S, InstanceInfo
from proxy.clock import SYSTEM_CLOCK, Clock
from proxy.store import Database, models
from proxy.store.settings import API_TOKEN_SHA256
from tests.fixtures.engine import FakeEngine
from tests.fixtures.stores import make_settings
from tests.proxy.api.conftest import ADMIN, MakeClient

ACME_KEY = "acme-key-" + "k" * 34
ACME = {"X-API-Token": ACME_KEY}
STORED_TOKEN = "stored-admin-token-0123456789"


@pytest.fixture
def clock() -> Clock:
    return SYSTEM_CLOCK  # these tests have always run on the wall clock


@pytest.fixture
def build(store: Database, make_client: MakeClient) -> MakeClient:
    """``make_client`` over a store that holds tenant ``acme`` and its key."""
    store.tenants.upsert("acme", {}, 1_000)
    store.tenants.set_api_key("acme", _auth.digest(ACME_KEY), None, 1_000)
    return make_client


@pytest.fixture
def client(build: MakeClient) -> testing.TestClient:
    return build(
        bounce_imap_host="imap.seed.example",
        bounce_imap_user="bounces",
        bounce_imap_password="seed-password",
        bounce_return_path="bounces@seed.example",
    )


def settings_rows() -> dict[str, str | None]:
    return {row.key: row.value for row in models.InstanceSetting.select()}


def get_instance(client: testing.TestClient) -> dict[str, Any]:
    result = client.simulate_get("/instance", headers=ADMIN)
    assert result.status_code == 200, result.json
    InstanceInfo.model_validate(result.json)
    return result.json


def test_first_read_seeds_the_bounce_settings_from_the_configuration(
    client: testing.TestClient,
) -> None:
    assert get_instance(client) == {
        "ok": True,
        "id": 1,
        "api_token_set": True,
        "bounce_enabled": False,
        "bounce_imap_host": "imap.seed.example",
        "bounce_imap_port": 993,
        "bounce_imap_user": "bounces",
        "bounce_imap_password_set": True,
        "bounce_imap_folder": "INBOX",
        "bounce_imap_ssl": True,
        "bounce_poll_interval": 60,
        "bounce_return_path": "bounces@seed.example",
    }


def test_put_round_trip_keeps_secrets_out_of_every_answer(
    client: testing.TestClient, store: Database
) -> None:
    body = {
        "name": "mx-prod",
        "bounce_enabled": True,
        "bounce_imap_host": "imap.example.net",
        "bounce_imap_port": 1993,
        "bounce_imap_password": "new-password",
        "bounce_imap_ssl": False,
        "bounce_poll_interval": 30,
        "bounce_processed_folder": "Done",
        "api_token": STORED_TOKEN,
    }
    result = client.simulate_put("/instance", json=body, headers=ADMIN)
    assert result.json == {"ok": True}
    read = get_instance(client)
    expected = {k: v for k, v in body.items() if k not in {"bounce_imap_password", "api_token"}}
    assert {k: read[k] for k in expected} == expected
    assert read["bounce_imap_user"] == "bounces"  # unchanged (absent)
    assert read["bounce_imap_password_set"] is True
    assert "new-password" not in str(read)
    assert STORED_TOKEN not in str(read)
    rows = settings_rows()
    assert rows["bounce_imap_password"] == "new-password"
    assert rows[API_TOKEN_SHA256] == _auth.digest(STORED_TOKEN)  # the digest only
    assert STORED_TOKEN not in rows.values()


def test_put_null_keeps_mask_keeps_and_empty_clears(
    client: testing.TestClient, store: Database
) -> None:
    get_instance(client)
    body = {
        "bounce_imap_host": None,
        "bounce_imap_password": "********",
        "bounce_return_path": "",
        "name": None,
    }
    assert client.simulate_put("/instance", json=body, headers=ADMIN).status_code == 200
    read = get_instance(client)
    assert read["bounce_imap_host"] == "imap.seed.example"
    assert settings_rows()["bounce_imap_password"] == "seed-password"
    assert "bounce_return_path" not in read
    assert "name" not in read


def test_put_refuses_bad_values_and_changes_nothing(
    client: testing.TestClient, engine: FakeEngine
) -> None:
    get_instance(client)
    before = settings_rows()
    body = {
        "bounce_imap_port": 70000,
        "bounce_poll_interval": 0,
        "api_token": "",
        "bounce_enabled": "perhaps",
        "bounce_return_path": "not an address",
        "bounce_imap_host": "two words",
    }
    result = client.simulate_put("/instance", json=body, headers=ADMIN)
    assert result.status_code == 422
    fields = {".".join(p["loc"]) for p in result.json["detail"]}
    assert fields == {f"body.{name}" for name in body}
    assert "two words" not in result.text  # rejected values are never echoed
    assert client.simulate_put("/instance", body=b"[1]", headers=ADMIN).status_code == 422
    assert settings_rows() == before
    assert engine.calls == []


def test_a_short_admin_token_is_accepted_with_a_warning(client: testing.TestClient, caplog):
    """SPEC §3.12 sets no minimum length; a guessable token is worth a log line."""
    result = client.simulate_put("/instance", json={"api_token": "tiny-tok"}, headers=ADMIN)
    assert result.status_code == 200, result.text
    assert "shorter than 16 characters" in caplog.text
    assert "tiny-tok" not in caplog.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bounce_poll_interval", 2**70),
        ("bounce_poll_interval", MAX_POLL_INTERVAL_S + 1),
        ("bounce_imap_port", 2**70),
    ],
)
def test_put_refuses_huge_numbers_and_changes_nothing(
    client: testing.TestClient, engine: FakeEngine, field: str, value: int
) -> None:
    get_instance(client)
    before = settings_rows()
    result = client.simulate_put("/instance", json={field: value}, headers=ADMIN)
    assert result.status_code == 422
    assert [p["loc"] for p in result.json["detail"]] == [["body", field]]
    assert settings_rows() == before
    assert engine.calls == []


def test_put_accepts_the_longest_poll_interval(client: testing.TestClient) -> None:
    body = {"bounce_poll_interval": MAX_POLL_INTERVAL_S}
    assert client.simulate_put("/instance", json=body, headers=ADMIN).status_code == 200
    assert get_instance(client)["bounce_poll_interval"] == MAX_POLL_INTERVAL_S


def test_instance_routes_are_admin_only(client: testing.TestClient, store: Database) -> None:
    before = settings_rows()
    for method, path in [
        ("GET", "/instance"),
        ("PUT", "/instance"),
        ("POST", "/instance/reload-bounce"),
    ]:
        result = client.simulate_request(method, path, json={"name": "x"}, headers=ACME)
        assert (result.status_code, result.json["error"]) == (403, ADMIN_REQUIRED)
        assert client.simulate_request(method, path, json={}).status_code == 401
    assert settings_rows() == before


def test_reload_bounce_tells_the_engine(client: testing.TestClient, engine: FakeEngine) -> None:
    assert client.simulate_post("/instance/reload-bounce", headers=ADMIN).json == {"ok": True}
    client.simulate_put("/instance", json={"bounce_enabled": True}, headers=ADMIN)
    assert client.simulate_post("/instance/reload-bounce", headers=ADMIN).json == {"ok": True}
    assert engine.calls == [("reload_bounce", None), ("reload_bounce", None)]


def test_reload_bounce_refuses_enabled_without_host(build: MakeClient, engine: FakeEngine) -> None:
    client = build(bounce_enabled=True)
    result = client.simulate_post("/instance/reload-bounce", headers=ADMIN)
    assert (result.status_code, result.json["error"]) == (400, BOUNCE_WITHOUT_HOST)
    assert result.json["detail"] == BOUNCE_WITHOUT_HOST
    assert engine.calls == []


def test_token_set_through_put_is_the_admin_token_when_none_is_configured(
    build: MakeClient,
) -> None:
    client = build(api_token=None)
    assert client.simulate_get("/instance").json["api_token_set"] is False  # open
    result = client.simulate_put("/instance", json={"api_token": STORED_TOKEN})
    assert result.status_code == 200
    # Takes effect at once: a request without the token is now refused.
    assert client.simulate_get("/instance").status_code == 401
    stored = {"X-API-Token": STORED_TOKEN}
    assert client.simulate_get("/instance", headers=stored).json["api_token_set"] is True
    wrong = client.simulate_get("/instance", headers={"X-API-Token": "nope"})
    assert (wrong.status_code, wrong.json["error"]) == (401, AUTH_FAILED)
    assert client.simulate_get("/instance", headers=ACME).status_code == 403
    # Rotating it through PUT replaces the old one at once.
    newer = STORED_TOKEN + "-v2"
    client.simulate_put("/instance", json={"api_token": newer}, headers=stored)
    assert client.simulate_get("/instance", headers=stored).status_code == 401
    assert client.simulate_get("/instance", headers={"X-API-Token": newer}).status_code == 200


def test_configured_token_wins_over_the_stored_one(store: Database, build: MakeClient) -> None:
    store.settings.set(API_TOKEN_SHA256, _auth.digest(STORED_TOKEN))
    client = build(api_token="admin-token")
    assert (
        client.simulate_get("/instance", headers={"X-API-Token": STORED_TOKEN}).status_code == 401
    )
    assert client.simulate_get("/instance", headers=ADMIN).status_code == 200
    config = make_settings(api_token="admin-token")
    assert _auth.admin_digest(config, store) == _auth.digest("admin-token")
    assert _auth.admin_digest(make_settings(api_token=None), store) == _auth.digest(STORED_TOKEN)
