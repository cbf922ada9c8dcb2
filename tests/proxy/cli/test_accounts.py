"""``accounts`` against a running proxy, with admin and tenant tokens."""

from __future__ import annotations

from tests.proxy.cli.conftest import one_error_line


def accounts(proxy, tenant_id: str = "acme") -> dict[str, dict]:
    listed = proxy.api.get("/accounts", params={"tenant_id": tenant_id}).json()["accounts"]
    return {a["id"]: a for a in listed}


def test_add_list_replace_delete_with_a_tenant_token(proxy):
    key = proxy.api.add_tenant("acme")
    cli = proxy.cli.as_tenant("acme", key)
    created = cli.ok(
        "accounts", "add", "main", "--host", "smtp.acme.example", "--port", "587",
        "--user", "mailer", "--password", "smtp-secret", "--tls", "--limit-minute", "60",
        "--limit-hour", "1000", "--limit-day", "5000", "--limit-behavior", "reject",
        "--batch-size", "20", "--ttl", "120",
    )  # fmt: skip
    assert created.stdout == "ok: account 'main' created\n"
    main = accounts(proxy)["main"]
    assert (main["host"], main["port"], main["user"], main["use_tls"]) == (
        "smtp.acme.example",
        587,
        "mailer",
        True,
    )
    assert (main["limit_per_minute"], main["limit_per_hour"], main["limit_per_day"]) == (
        60,
        1000,
        5000,
    )
    assert (main["limit_behavior"], main["batch_size"], main["ttl"]) == ("reject", 20, 120)
    assert main["password_set"] is True

    listed = cli.ok("accounts", "list").stdout
    assert "smtp-secret" not in listed
    header, _rule, row = listed.splitlines()
    assert header.split() == [
        "TENANT", "ID", "HOST", "PORT", "USER", "TLS", "SSL", "LIMITS", "BEHAVIOR",
        "PASSWORD",
    ]  # fmt: skip
    assert row.split() == [
        "acme", "main", "smtp.acme.example", "587", "mailer", "yes", "60/m", "1000/h", "5000/d",
        "reject", "yes",
    ]  # fmt: skip

    replaced = cli.ok("accounts", "add", "main", "--host", "smtp2.acme.example", "--port", "465")
    assert replaced.stdout == "ok: account 'main' replaced\n"
    assert accounts(proxy)["main"].get("limit_per_minute") is None  # a replacement is total

    assert cli.ok("accounts", "delete", "main").stdout == "ok: account 'main' deleted\n"
    assert accounts(proxy) == {}


def test_ssl_and_no_tls_verify_flags(proxy):
    proxy.api.add_tenant("acme")
    proxy.cli.ok(
        "--tenant", "acme", "accounts", "add", "tls", "--host", "h", "--port", "465",
        "--ssl", "--no-tls", "--no-tls-verify",
    )  # fmt: skip
    account = accounts(proxy)["tls"]
    assert (account["use_ssl"], account["use_tls"], account["tls_verify"]) == (True, False, False)


def test_admin_listing_without_tenant_shows_every_tenant(proxy):
    for tenant in ("acme", "beta"):
        proxy.api.add_tenant(tenant)
        proxy.api.add_account(tenant, "main", host="127.0.0.1", port=25)
    rows = proxy.cli.ok("accounts", "list").stdout.splitlines()[2:]
    assert [row.split()[:2] for row in rows] == [["acme", "main"], ["beta", "main"]]


def test_admin_add_without_tenant_is_exit_1_with_a_hint(proxy):
    result = proxy.cli("accounts", "add", "main", "--host", "h", "--port", "25")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "HTTP 422" in line
    assert line.endswith("(give --tenant or GMP_TENANT)")


def test_delete_unknown_account_is_exit_1(proxy):
    proxy.api.add_tenant("acme")
    result = proxy.cli("--tenant", "acme", "accounts", "delete", "ghost")
    assert result.exit_code == 1
    assert one_error_line(result) == (
        "mail-proxy: HTTP 404: Account 'ghost' not found for tenant 'acme'"
    )
