"""``instance`` and ``command-log`` against a running proxy."""

from __future__ import annotations

import json

import pytest

from tests.proxy.cli.conftest import one_error_line


def test_instance_show_and_set_typed_values(proxy):
    result = proxy.cli.ok(
        "instance", "set", "name=mx-test", "bounce_imap_port=1993", "bounce_imap_ssl=no",
        "bounce_imap_host=imap.example.net", "bounce_imap_password=imap-secret",
    )  # fmt: skip
    assert result.stdout == (
        "ok: name, bounce_imap_port, bounce_imap_ssl, bounce_imap_host, bounce_imap_password "
        "updated\n"
    )
    stored = proxy.api.get("/instance").json()
    assert (stored["name"], stored["bounce_imap_port"], stored["bounce_imap_ssl"]) == (
        "mx-test",
        1993,
        False,
    )
    assert stored["bounce_imap_password_set"] is True
    shown = proxy.cli.ok("instance", "show").stdout
    assert "imap-secret" not in shown
    assert "bounce_imap_host          imap.example.net" in shown


@pytest.mark.parametrize(
    ("pair", "needle"),
    [
        ("colour=blue", "unknown key 'colour'"),
        ("bounce_imap_port=many", "bounce_imap_port must be an integer"),
        ("bounce_enabled=maybe", "bounce_enabled must be true or false"),
        ("name", "'name' is not KEY=VALUE"),
    ],
)
def test_instance_set_refuses_bad_pairs_with_exit_2(proxy, pair, needle):
    result = proxy.cli("instance", "set", pair)
    assert result.exit_code == 2
    assert needle in one_error_line(result)
    assert "name" not in proxy.api.get("/instance").json()


def test_reload_bounce(proxy):
    assert proxy.cli.ok("instance", "reload-bounce").stdout == "ok: bounce poller reloaded\n"
    proxy.cli.ok("instance", "set", "bounce_enabled=true")
    result = proxy.cli("instance", "reload-bounce")
    assert result.exit_code == 1
    assert one_error_line(result) == (
        "mail-proxy: HTTP 400: Bounce enabled but imap_host not configured"
    )


def test_command_log_list_export_and_purge(proxy):
    proxy.cli.ok("tenants", "add", "acme")
    proxy.cli.ok("tenants", "add", "beta")
    proxy.cli.ok("tenants", "update", "acme", "--name", "ACME")
    listed = proxy.cli.ok("command-log", "list").stdout.splitlines()
    assert listed[0].split() == ["ID", "TIME", "ENDPOINT", "TENANT", "ACTOR", "STATUS"]
    assert [row.split()[2:6] for row in listed[2:-1]] == [
        ["updateTenant", "acme", "admin", "200"],
        ["addTenant", "beta", "admin", "200"],
        ["addTenant", "acme", "admin", "200"],
    ]
    assert listed[-1] == "3 of 3 shown"
    filtered = proxy.cli.ok("--tenant", "acme", "command-log", "list", "--endpoint", "update")
    assert len(filtered.stdout.splitlines()) == 4

    exported = json.loads(proxy.cli.ok("command-log", "export", "--json").stdout)
    assert [c["endpoint"] for c in exported["commands"]] == [
        "addTenant",
        "addTenant",
        "updateTenant",
    ]
    table = proxy.cli.ok("command-log", "export").stdout
    assert '{"id":"acme"}' in table

    purged = proxy.cli.ok("command-log", "purge", "--before-ts", "4102444800")
    assert purged.stdout == "ok: 3 removed\n"


def test_command_log_purge_needs_before_ts(proxy):
    result = proxy.cli("command-log", "purge")
    assert result.exit_code == 2
    assert "Missing option '--before-ts'" in one_error_line(result)
