"""``serve`` and ``config check``: config errors end with exit 2 and one line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from proxy.cli import main
from proxy.config import ConfigError

ROOT = Path(__file__).resolve().parents[3]
GOOD = "[server]\nport = 8001\n"


def write(tmp_path: Path, text: str, name: str = "mp.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def fake_server(monkeypatch):
    """Stand in for ``proxy.server`` (written elsewhere); records what ``serve`` received."""
    module = types.ModuleType("proxy.server")
    module.calls = []
    module.result = 0

    def serve(settings):
        module.calls.append(settings)
        if isinstance(module.result, Exception):
            raise module.result
        return module.result

    module.serve = serve
    monkeypatch.setitem(sys.modules, "proxy.server", module)
    monkeypatch.setattr("proxy.cli.serve.setup_logging", lambda level, fmt: None)
    return module


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args))


# -- config check (in process) ---------------------------------------------------------


def test_config_check_accepts_a_good_file(tmp_path, clean_env):
    path = write(tmp_path, GOOD)
    result = run_cli("config", "check", path)
    assert result.exit_code == 0
    assert result.output == f"ok: {path}\n"


def test_config_check_lists_every_problem_one_per_line(tmp_path, clean_env):
    path = write(tmp_path, "[server]\nport = 'abc'\nprot = 1\n")
    result = run_cli("config", "check", path)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"mail-proxy: invalid value for [server] port in {path}: expected an integer, got 'abc'",
        f"mail-proxy: unknown key 'prot' in [server] of {path} (did you mean 'port'?)",
    ]


def test_config_check_lists_entry_problems_after_setting_problems(tmp_path, clean_env):
    path = write(tmp_path, "[server]\nport = 'x'\n[[tenants]]\nid = 'acme'\napi_key = 'short'\n")
    result = run_cli("config", "check", path)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"mail-proxy: invalid value for [server] port in {path}: expected an integer, got 'x'",
        f"mail-proxy: [[tenants]] #1 (id='acme') in {path}: api_key: must be a string of at "
        "least 32 characters",
    ]


def test_config_check_sees_the_environment(tmp_path, clean_env):
    path = write(tmp_path, '[security]\napi_token = "${ADMIN_TOKEN}"\n')
    assert run_cli("config", "check", path).exit_code == 2
    clean_env.setenv("ADMIN_TOKEN", "t" * 32)
    assert run_cli("config", "check", path).exit_code == 0


def test_config_check_missing_file(tmp_path, clean_env):
    path = str(tmp_path / "missing.toml")
    result = run_cli("config", "check", path)
    assert result.exit_code == 2
    assert (
        result.stderr == f"mail-proxy: cannot read config file {path}: No such file or directory\n"
    )


BAD_ENTRIES = """
[security]
encryption_key = "abc"

[[tenants]]
id = "t1"
api_key = "short"

[[tenants]]
id = "bad id!"
client_base_url = "not a url"
rate_limits = {hourly = -5, foo = 1}

[[tenants]]
id = "files"
large_file_config = {enabled = true, action = "rewrite"}

[[accounts]]
tenant_id = "ghost"
id = "main"
host = "127.0.0.1"
port = 25

[[accounts]]
tenant_id = "t1"
id = "main"
host = "127.0.0.1"
port = 25
limit_behavior = "explode"
"""


def test_config_check_lists_every_bad_key_serve_would_refuse(tmp_path, clean_env):
    path = write(tmp_path, BAD_ENTRIES)
    result = run_cli("config", "check", path)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = [line.removeprefix("mail-proxy: ") for line in result.stderr.splitlines()]
    assert lines == [
        f"[security] encryption_key in {path}: the key must be base64 of exactly 32 bytes (got 2)",
        f"[[tenants]] #1 (id='t1') in {path}: api_key: must be a string of at least 32 characters",
        f"[[tenants]] #2 (id='bad id!') in {path}: client_base_url: "
        "must be an http:// or https:// URL",
        f"[[tenants]] #2 (id='bad id!') in {path}: rate_limits.hourly: "
        "Input should be greater than or equal to 0",
        f"[[tenants]] #2 (id='bad id!') in {path}: rate_limits.foo: Extra inputs are not permitted",
        f"[[tenants]] #2 (id='bad id!') in {path}: id: "
        "String should match pattern '^[A-Za-z0-9_-]{1,64}$'",
        f"[[tenants]] #3 (id='files') in {path}: large_file_config.storage_url: "
        "required for 'rewrite'",
        f"[[accounts]] #1 (id='main') in {path}: tenant_id: tenant 'ghost' is not one of the "
        "file's [[tenants]] (config check does not read the database)",
        f"[[accounts]] #2 (id='main') in {path}: limit_behavior: "
        "Input should be 'defer', 'reject' or 'error'",
    ]


def test_config_check_accepts_good_entries(tmp_path, clean_env):
    text = (
        GOOD
        + '[[tenants]]\nid = "acme"\napi_key = "${ACME_KEY}"\n'
        + '[[accounts]]\ntenant_id = "acme"\nid = "main"\nhost = "127.0.0.1"\nport = 25\n'
    )
    path = write(tmp_path, text)
    clean_env.setenv("ACME_KEY", "k" * 32)
    result = run_cli("config", "check", path)
    assert (result.exit_code, result.output) == (0, f"ok: {path}\n")


def test_config_check_resolves_the_keys_as_serve_does(tmp_path, clean_env):
    key_file = tmp_path / "absent.key"
    path = write(tmp_path, f"[security]\nencryption_key_file = '{key_file}'\n")
    result = run_cli("config", "check", path)
    assert result.exit_code == 2
    assert result.stderr == (
        f"mail-proxy: [security] encryption_key_file in {path}: "
        f"cannot read {key_file}: No such file or directory\n"
    )
    clean_env.setenv("GMP_ENCRYPTION_KEY", "abc")
    result = run_cli("config", "check", write(tmp_path, GOOD, "good.toml"))
    assert result.exit_code == 2
    assert result.stderr.startswith("mail-proxy: GMP_ENCRYPTION_KEY (environment): the key")


def test_config_check_help_says_the_database_is_not_read(clean_env):
    result = run_cli("config", "check", "--help")
    assert result.exit_code == 0
    assert "the database is not read" in " ".join(result.output.split())


# -- serve (in process, fake server) -------------------------------------------------------


def test_serve_passes_file_env_and_flags_to_the_server(tmp_path, clean_env, fake_server):
    clean_env.setenv("GMP_HOST", "127.0.0.2")
    fake_server.result = 3
    path = write(tmp_path, GOOD)
    result = run_cli("serve", "--config", path, "--db", ":memory:", "--test-mode")
    assert result.exit_code == 3
    (settings,) = fake_server.calls
    assert (settings.port, settings.host, settings.db_path) == (8001, "127.0.0.2", ":memory:")
    assert settings.test_mode is True
    assert settings.config_path == path


def test_serve_flags_beat_the_environment(clean_env, fake_server):
    clean_env.setenv("GMP_PORT", "8100")
    result = run_cli("serve", "--port", "8200", "--api-token", "x" * 32, "--log-level", "debug")
    assert result.exit_code == 0
    (settings,) = fake_server.calls
    assert (settings.port, settings.api_token, settings.log_level) == (8200, "x" * 32, "DEBUG")
    assert settings.test_mode is False


def test_config_error_from_the_server_is_one_line(clean_env, fake_server):
    fake_server.result = ConfigError("another instance holds /x.db.lock")
    result = run_cli("serve")
    assert result.exit_code == 2
    assert result.stderr == "mail-proxy: another instance holds /x.db.lock\n"


def test_bad_flag_value_is_a_config_error(clean_env, fake_server):
    result = run_cli("serve", "--port", "abc")
    assert result.exit_code == 2
    assert result.stderr == (
        "mail-proxy: invalid value for --port (command line): expected an integer, got 'abc'\n"
    )
    assert fake_server.calls == []


def test_serve_refuses_bad_entries_before_starting_the_server(tmp_path, clean_env, fake_server):
    path = write(tmp_path, BAD_ENTRIES)
    result = run_cli("serve", "--config", path)
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1
    assert f"[[tenants]] #1 (id='t1') in {path}: api_key: must be a string" in result.stderr
    assert "[[accounts]] #2 (id='main')" in result.stderr
    assert "ghost" not in result.stderr  # the database may hold it: checked at start
    assert fake_server.calls == []


def test_serve_help_lists_the_table_flags(clean_env):
    result = run_cli("serve", "--help")
    assert result.exit_code == 0
    for flag in ("--config", "--host", "--port", "--db", "--api-token", "--test-mode"):
        assert flag in result.output


# -- serve (real subprocess) ---------------------------------------------------------------


def serve_process(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GMP_")}
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), clean.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "proxy", "serve", *args],
        env=clean | env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_exit_2(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mail-proxy: ")
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize(
    ("text", "env", "needles"),
    [
        ("[server]\nport = 'abc'\n", {}, ["[server] port", "{path}", "expected an integer"]),
        (GOOD, {"GMP_PORT": "abc"}, ["GMP_PORT (environment)", "got 'abc'"]),
        ("[server]\nprot = 1\n", {}, ["unknown key 'prot'", "[server]", "{path}"]),
        (
            "[security]\napi_token = '${UNSET_ADMIN_TOKEN}'\n",
            {},
            ["'UNSET_ADMIN_TOKEN'", "[security] api_token", "{path}"],
        ),
        ("[server\n", {}, ["invalid TOML", "{path}", "line 1"]),
    ],
)
def test_serve_subprocess_bad_config(tmp_path, text, env, needles):
    path = write(tmp_path, text, "bad.toml")
    result = serve_process(["--config", path], env, tmp_path)
    assert_one_line_exit_2(result, *(n.format(path=path) for n in needles))


def test_serve_subprocess_missing_file_via_gmp_config(tmp_path):
    path = str(tmp_path / "absent.toml")
    result = serve_process([], {"GMP_CONFIG": path}, tmp_path)
    assert_one_line_exit_2(result, "cannot read config file", path)


def test_serve_subprocess_unreadable_file(tmp_path):
    result = serve_process(["--config", str(tmp_path)], {}, tmp_path)
    assert_one_line_exit_2(result, "cannot read config file", str(tmp_path))


def test_python_dash_m_proxy_help_lists_every_command(tmp_path):
    """The module entry point is the same command as the console script."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GMP_")}
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), clean.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "--help"],
        env=clean,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: mail-proxy [OPTIONS] COMMAND [ARGS]...")
    commands = result.stdout.split("Commands:")[1].split()
    for name in (
        "status", "stats", "run-now", "suspend", "activate", "tenants", "tokens", "accounts",
        "messages", "send", "instance", "command-log", "serve", "config", "keygen",
    ):  # fmt: skip
        assert name in commands


def test_serve_subprocess_rewrite_without_link_base(tmp_path):
    """SPEC §9.8 rule 2 at start-up, as POST /tenant: exit 2, one line, no database made."""
    text = (
        f"[server]\ndb_path = '{tmp_path / 'proxy.db'}'\n[[tenants]]\nid = 'files'\n"
        "large_file_config = {enabled = true, action = 'rewrite', storage_url = 'file:///srv'}\n"
    )
    path = write(tmp_path, text, "bad.toml")
    result = serve_process(["--config", path], {}, tmp_path)
    assert_one_line_exit_2(
        result, "[[tenants]] #1 (id='files')", path, "large_file_config.public_base_url"
    )
    assert not (tmp_path / "proxy.db").exists()
