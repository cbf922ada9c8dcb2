"""The client side of every remote command: options, environment, output and error paths."""

from __future__ import annotations

import base64
import json

import click
import pytest
from click.testing import CliRunner

from proxy.cli import main
from proxy.cli.client import error_line
from tests.fixtures.proxy import ADMIN_TOKEN, free_port
from tests.proxy.cli.conftest import one_error_line


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


# -- error paths against a running proxy ---------------------------------------------------


def test_wrong_token_is_exit_1_with_one_line(proxy):
    result = proxy.cli("tenants", "list", GMP_API_TOKEN="not-the-token")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert one_error_line(result) == (
        "mail-proxy: HTTP 401: Invalid or missing API token (check --token or GMP_API_TOKEN)"
    )


def test_tenant_token_on_an_admin_command_is_exit_1(proxy):
    key = proxy.api.add_tenant("acme")
    result = proxy.cli("tenants", "list", GMP_API_TOKEN=key)
    assert result.exit_code == 1
    assert "HTTP 403: Admin token required" in one_error_line(result)


def test_unreachable_proxy_is_one_line_without_traceback():
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["--url", url, "status"])
    assert result.exit_code == 1
    assert one_error_line(result) == (
        f"mail-proxy: cannot reach the proxy at {url} (connection refused); "
        "is it running? (set --url or GMP_URL)"
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["tenants", "list", "--bogus"], "No such option '--bogus'"),
        (["accounts", "add", "main", "--port", "25"], "Missing option '--host'"),
        (["accounts", "add", "main", "--host", "h", "--port", "x"], "'x' is not a valid integer"),
        (["messages", "list", "--status", "lost"], "'lost' is not one of"),
        (["tenants", "frobnicate"], "No such command 'frobnicate'"),
        (["--url", "localhost:8000", "status"], "invalid --url 'localhost:8000'"),
    ],
)
def test_usage_errors_are_exit_2_with_one_line(args, needle):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert needle in line
    assert line.endswith("--help')")


def test_json_error_prints_the_error_body_and_one_line(proxy):
    result = proxy.cli("--json", "tenants", "show", "nope")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "ok": False,
        "error": "Tenant 'nope' not found",
        "detail": "Tenant 'nope' not found",
    }
    assert one_error_line(result) == "mail-proxy: HTTP 404: Tenant 'nope' not found"


# -- options and environment ----------------------------------------------------------------


def test_json_prints_the_raw_response(proxy):
    proxy.api.add_tenant("acme", name="ACME")
    result = proxy.cli.ok("--json", "tenants", "list")
    assert json.loads(result.stdout) == proxy.api.get("/tenants").json()


def test_global_options_may_follow_the_command(proxy):
    proxy.api.add_tenant("acme")
    result = CliRunner().invoke(
        main, ["tenants", "list", "--url", proxy.server.url, "--token", ADMIN_TOKEN, "--json"]
    )
    assert result.exit_code == 0, result.output
    assert [t["id"] for t in json.loads(result.stdout)["tenants"]] == ["acme"]


def test_flags_beat_the_environment(proxy):
    unreachable = f"http://127.0.0.1:{free_port()}"
    result = proxy.cli.ok("--url", proxy.server.url, "status", GMP_URL=unreachable)
    assert "instance_id" in result.stdout


def test_tenant_comes_from_gmp_tenant(proxy):
    proxy.api.add_tenant("acme")
    proxy.api.add_tenant("other")
    proxy.api.add_account("acme", "main", host="127.0.0.1", port=25)
    proxy.api.add_account("other", "backup", host="127.0.0.1", port=25)
    result = proxy.cli.ok("--json", "accounts", "list", GMP_TENANT="other")
    assert [a["id"] for a in json.loads(result.stdout)["accounts"]] == ["backup"]


# -- help and local commands ----------------------------------------------------------------


def test_every_command_has_readable_help():
    for path in all_commands(main):
        result = CliRunner().invoke(main, [*path, "--help"])
        assert result.exit_code == 0, path
        assert result.stdout.startswith(f"Usage: mail-proxy {' '.join(path)} "), path
        summary = result.stdout.split("\n\n")[1].strip()
        assert summary[:1].isupper(), (path, summary)
        assert summary.endswith("."), (path, summary)


def test_keygen_prints_a_fresh_32_byte_key():
    first = CliRunner().invoke(main, ["keygen"])
    second = CliRunner().invoke(main, ["keygen"])
    assert first.exit_code == 0
    key = first.stdout.strip()
    assert len(base64.b64decode(key, validate=True)) == 32
    assert key != second.stdout.strip()


# -- error_line (pure) --------------------------------------------------------------------------


def test_error_line_lists_every_validation_problem():
    body = {
        "ok": False,
        "error": "body.host: field required",
        "detail": [
            {"loc": ["body", "host"], "msg": "field required", "type": "missing"},
            {"loc": ["body", "port"], "msg": "field required", "type": "missing"},
        ],
    }
    assert error_line(422, "Unprocessable", body) == (
        "HTTP 422: body.host: field required; body.port: field required"
    )


def test_error_line_hints_at_the_tenant_option():
    body = {"ok": False, "error": "query.tenant_id: field required", "detail": []}
    assert error_line(422, None, body).endswith("(give --tenant or GMP_TENANT)")


def test_error_line_names_rejected_messages_on_one_line():
    rejected = [{"id": "M1", "field": "to", "reason": "invalid address in to: 'x@'\nsecond"}]
    body = {"ok": False, "error": "all messages rejected", "rejected": rejected}
    assert error_line(400, "Bad Request", body) == (
        "HTTP 400: all messages rejected: M1 (to): invalid address in to: 'x@' second"
    )


def test_error_line_without_a_json_body_uses_the_reason():
    assert error_line(502, "Bad Gateway", None) == "HTTP 502: Bad Gateway"


def test_shell_completion_completes_commands_and_choices():
    def complete(words: str, cword: int) -> list[str]:
        env = {"_MAIL_PROXY_COMPLETE": "bash_complete", "COMP_WORDS": words}
        result = CliRunner().invoke(main, [], env=env | {"COMP_CWORD": str(cword)})
        assert result.exit_code == 0
        return result.stdout.splitlines()

    assert complete("mail-proxy ten", 1) == ["plain,tenants"]
    assert "plain,sent" in complete("mail-proxy messages list --status ", 4)
    source = CliRunner().invoke(main, [], env={"_MAIL_PROXY_COMPLETE": "bash_source"})
    assert "_mail_proxy_completion()" in source.stdout
