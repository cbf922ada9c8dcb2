"""CLI fixtures: a running proxy (real waitress on a free port) and a runner bound to it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from proxy.cli import main
from proxy.server import ProxyServer
from tests.fixtures.proxy import ADMIN_TOKEN, Api, fast_settings, running_proxy


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No GMP_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith(("GMP_", "_MAIL_PROXY")):
            monkeypatch.delenv(name)
    return monkeypatch


@dataclass
class Cli:
    """Runs ``mail-proxy`` in process against one proxy, configured through GMP_* env."""

    url: str
    token: str | None = ADMIN_TOKEN
    tenant: str | None = None

    def __call__(self, *args: str, input: str | None = None, **env: str | None) -> Result:
        base = {"GMP_URL": self.url, "GMP_API_TOKEN": self.token, "GMP_TENANT": self.tenant}
        return CliRunner().invoke(main, list(args), env=base | env, input=input)

    def ok(self, *args: str, **env: str | None) -> Result:
        result = self(*args, **env)
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        assert result.stderr == ""
        return result

    def as_tenant(self, tenant: str, token: str | None) -> Cli:
        return Cli(self.url, token, tenant)


@dataclass
class Proxy:
    server: ProxyServer
    api: Api
    cli: Cli


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    with running_proxy(fast_settings(tmp_path)) as (server, api):
        yield Proxy(server, api, Cli(server.url))


def one_error_line(result: Result) -> str:
    """The single stderr line of a failed command (never a traceback)."""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mail-proxy: ")
    return lines[0]
