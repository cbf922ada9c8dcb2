"""``tenants`` and ``tokens`` against a running proxy."""

from __future__ import annotations

import json

from tests.proxy.cli.conftest import one_error_line


def stored(proxy, tenant_id: str) -> dict:
    return proxy.api.get(f"/tenant/{tenant_id}").json()


def test_add_creates_a_tenant_and_shows_its_key_once(proxy):
    result = proxy.cli.ok("tenants", "add", "acme", "--name", "ACME Corporation")
    lines = result.stdout.splitlines()
    assert lines[0] == "ok: tenant 'acme' created"
    key = lines[1].split()[1]
    assert proxy.api.as_token(key).get("/tenant/acme").status_code == 200
    again = proxy.cli.ok("tenants", "add", "acme", "--inactive")
    assert again.stdout == "ok: tenant 'acme' updated\n"
    assert (stored(proxy, "acme")["name"], stored(proxy, "acme")["active"]) == (
        "ACME Corporation",
        False,
    )


def test_add_with_every_option_stores_them_and_never_prints_secrets(proxy):
    proxy.cli.ok(
        "tenants", "add", "acme", "--base-url", "https://api.acme.example",
        "--sync-path", "/hooks/mail", "--attachment-path", "/files",
        "--auth-token", "sync-secret-123", "--rate-limit-hourly", "100",
        "--rate-limit-daily", "1000", "--rate-limit-behavior", "reject",
    )  # fmt: skip
    tenant = stored(proxy, "acme")
    assert tenant["client_base_url"] == "https://api.acme.example"
    assert tenant["client_sync_path"] == "/hooks/mail"
    assert tenant["client_attachment_path"] == "/files"
    assert tenant["client_auth"] == {"method": "bearer", "token": "********"}
    assert tenant["rate_limits"] == {"hourly": 100, "daily": 1000, "behavior": "reject"}
    shown = proxy.cli.ok("tenants", "show", "acme")
    assert "sync-secret-123" not in shown.stdout
    assert "********" in shown.stdout


def test_add_with_basic_auth_infers_the_method(proxy):
    proxy.cli.ok("tenants", "add", "acme", "--auth-user", "u", "--auth-password", "pw-secret")
    assert stored(proxy, "acme")["client_auth"] == {
        "method": "basic",
        "user": "u",
        "password": "********",
    }


def test_add_with_an_invalid_field_names_it(proxy):
    result = proxy.cli("tenants", "add", "acme", "--base-url", "ftp://x")
    assert result.exit_code == 1
    assert "HTTP 422: body.client_base_url" in one_error_line(result)
    assert proxy.api.get("/tenant/acme").status_code == 404


def test_list_is_an_aligned_table(proxy):
    proxy.api.add_tenant("acme", name="ACME Corporation", rate_limits={"hourly": 10})
    proxy.api.add_tenant("beta-long-id", active=False)
    lines = proxy.cli.ok("tenants", "list").stdout.splitlines()
    header, rule, acme, beta = lines
    assert header.split()[:4] == ["ID", "NAME", "ACTIVE", "KEY"]
    assert set(rule) == {"─"}
    assert acme.split()[:6] == ["acme", "ACME", "Corporation", "yes", "yes", "10/h"]
    # Columns line up: every row's second column starts where the header's does.
    assert acme.index("ACME") == beta.index("no") - (header.index("ACTIVE") - header.index("NAME"))
    assert header.index("NAME") == acme.index("ACME")
    only_active = proxy.cli.ok("tenants", "list", "--active-only").stdout
    assert "acme" in only_active
    assert "beta-long-id" not in only_active


def test_empty_list_says_none(proxy):
    assert proxy.cli.ok("tenants", "list").stdout == "(none)\n"


def test_update_changes_only_what_is_given_and_merges_rate_limits(proxy):
    proxy.api.add_tenant("acme", name="ACME", rate_limits={"hourly": 100})
    result = proxy.cli.ok("tenants", "update", "acme", "--rate-limit-daily", "500")
    assert result.stdout == "ok: tenant 'acme' updated\n"
    tenant = stored(proxy, "acme")
    assert tenant["name"] == "ACME"
    assert tenant["rate_limits"] == {"hourly": 100, "daily": 500, "behavior": "defer"}


def test_update_without_options_is_a_usage_error(proxy):
    proxy.api.add_tenant("acme")
    result = proxy.cli("tenants", "update", "acme")
    assert result.exit_code == 2
    assert "nothing to update" in one_error_line(result)


def test_update_with_a_tenant_token_follows_the_api_scoping(proxy):
    key = proxy.api.add_tenant("acme")
    tenant_cli = proxy.cli.as_tenant("acme", key)
    tenant_cli.ok("tenants", "update", "acme", "--name", "Renamed")
    assert stored(proxy, "acme")["name"] == "Renamed"
    refused = tenant_cli("tenants", "update", "acme", "--inactive")
    assert refused.exit_code == 1
    assert "HTTP 403" in one_error_line(refused)


def test_show_unknown_tenant_is_exit_1(proxy):
    result = proxy.cli("tenants", "show", "nope")
    assert result.exit_code == 1
    assert one_error_line(result) == "mail-proxy: HTTP 404: Tenant 'nope' not found"


def test_delete_without_terminal_or_force_is_refused_with_exit_2(proxy):
    proxy.api.add_tenant("acme")
    result = proxy.cli("tenants", "delete", "acme")
    assert result.exit_code == 2
    assert "add --force" in one_error_line(result)
    assert proxy.api.get("/tenant/acme").status_code == 200


def test_delete_with_force(proxy):
    proxy.api.add_tenant("acme")
    assert proxy.cli.ok("tenants", "delete", "acme", "--force").stdout == (
        "ok: tenant 'acme' deleted\n"
    )
    assert proxy.api.get("/tenant/acme").status_code == 404


def test_delete_asks_on_a_terminal(proxy, monkeypatch):
    monkeypatch.setattr("proxy.cli.tenants.stdin_is_terminal", lambda: True)
    proxy.api.add_tenant("acme")
    declined = proxy.cli("tenants", "delete", "acme", input="n\n")
    assert declined.exit_code == 1
    assert "Delete tenant 'acme'" in declined.stdout
    assert declined.stderr == "mail-proxy: aborted\n"
    assert proxy.api.get("/tenant/acme").status_code == 200
    accepted = proxy.cli("tenants", "delete", "acme", input="y\n")
    assert accepted.exit_code == 0
    assert proxy.api.get("/tenant/acme").status_code == 404


def test_sync_status_lists_each_tenant(proxy):
    proxy.api.add_tenant("acme")
    result = proxy.cli.ok("tenants", "sync-status")
    header, _rule, row = result.stdout.splitlines()
    assert header.split()[:3] == ["ID", "ACTIVE", "LAST"]
    assert row.split()[:2] == ["acme", "yes"]
    raw = json.loads(proxy.cli.ok("--json", "tenants", "sync-status").stdout)
    assert [t["id"] for t in raw["tenants"]] == ["acme"]


def test_tokens_create_rotates_the_key(proxy):
    old = proxy.api.add_tenant("acme")
    result = proxy.cli.ok("tokens", "create", "acme", "--expires-at", "4102444800")
    new = result.stdout.splitlines()[0].split()[1]
    assert result.stdout.splitlines()[1] == "expires_at: 2100-01-01T00:00:00Z"
    assert proxy.api.as_token(new).get("/tenant/acme").status_code == 200
    assert proxy.api.as_token(old).get("/tenant/acme").status_code == 401


def test_tokens_revoke(proxy):
    key = proxy.api.add_tenant("acme")
    assert proxy.cli.ok("tokens", "revoke", "acme").stdout == "ok: key of tenant 'acme' revoked\n"
    assert proxy.api.as_token(key).get("/tenant/acme").status_code == 401
    unknown = proxy.cli("tokens", "revoke", "nope")
    assert unknown.exit_code == 1
    assert "HTTP 404" in one_error_line(unknown)
