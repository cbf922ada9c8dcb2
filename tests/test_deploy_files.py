"""Deployment files: the Dockerfile, config/docker-compose.yml and the systemd unit.

Images are not built here (no registry access in CI); the files are parsed and held to
what the README promises: a non-root user, a health check that works without curl, a
data volume, a graceful stop longer than GMP_SHUTDOWN_TIMEOUT, and only GMP_* variables
the option table knows, with values it accepts.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from proxy.config import load_settings, options
from proxy.crypto import generate_key
from tests.fixtures.proxy import fast_settings, free_port, running_proxy

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "config" / "docker-compose.yml"
UNIT = ROOT / "config" / "systemd" / "mail-proxy.service"
CLIENT_VARIABLES = {"GMP_CONFIG", "GMP_DEBUG", "GMP_URL", "GMP_TENANT"}
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictSUIDSGID": "yes",
    "CapabilityBoundingSet": "",
}


def known_variables() -> set[str]:
    return {name for option in options() for name in option.env} | CLIENT_VARIABLES


def assert_valid_settings(env: dict[str, str]) -> None:
    """Every GMP_* name is in the option table and the values load (GMP_CONFIG aside)."""
    unknown = {name for name in env if name.startswith("GMP_")} - known_variables()
    assert not unknown, unknown
    load_settings(None, {k: v for k, v in env.items() if k != "GMP_CONFIG"})


def seconds(text: str) -> float:
    found = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m)?", text.strip())
    assert found, text
    return float(found.group(1)) * (60 if found.group(2) in ("min", "m") else 1)


def shutdown_timeout(env: dict[str, str]) -> float:
    default = next(o.default for o in options() if "GMP_SHUTDOWN_TIMEOUT" in o.env)
    return float(env.get("GMP_SHUTDOWN_TIMEOUT", default))


# -- Dockerfile ---------------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def docker_env() -> dict[str, str]:
    env = {}
    for keyword, rest in instructions():
        if keyword == "ENV":
            env |= dict(pair.split("=", 1) for pair in shlex.split(rest))
    return env


def last(keyword: str) -> str:
    values = [rest for k, rest in instructions() if k == keyword]
    assert values, f"no {keyword} in the Dockerfile"
    return values[-1]


def healthcheck_command() -> list[str]:
    return json.loads(last("HEALTHCHECK").split(" CMD ", 1)[1])


def test_dockerfile_runs_mail_proxy_serve_as_a_non_root_user():
    assert instructions()[0] == ("FROM", "python:3.11-slim")
    user = last("USER").split(":")[0]
    assert user not in ("root", "0")
    keywords = [k for k, _ in instructions()]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")
    assert json.loads(last("ENTRYPOINT")) + json.loads(last("CMD")) == ["mail-proxy", "serve"]
    assert last("STOPSIGNAL") == "SIGTERM"


def test_dockerfile_keeps_sqlite_in_the_data_volume():
    assert "/data" in json.loads(last("VOLUME"))
    env = docker_env()
    assert env["GMP_DB_PATH"] == "/data/mail_service.db"
    assert any(k == "RUN" and "chown mailproxy:mailproxy /data" in r for k, r in instructions())
    assert_valid_settings(env)


def test_dockerfile_health_check_uses_python_not_curl():
    run_lines = " ".join(
        rest for keyword, rest in instructions() if keyword in ("RUN", "HEALTHCHECK")
    )
    assert "curl" not in run_lines
    assert "wget" not in run_lines
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in command[2]
    assert "/health" in command[2]


def test_dockerfile_health_check_probes_a_real_proxy(tmp_path):
    script = healthcheck_command()[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GMP_")}

    def probe(port: int) -> int:
        run = [sys.executable, "-c", script]
        env_port = env | {"GMP_PORT": str(port)}
        done = subprocess.run(run, env=env_port, capture_output=True, timeout=30, check=False)
        return done.returncode

    with running_proxy(fast_settings(tmp_path)) as (server, _):
        assert probe(int(server.url.rsplit(":", 1)[1])) == 0
    assert probe(free_port()) != 0


# -- docker-compose ----------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def substituted(value: str) -> str:
    """Compose's ${VAR}, ${VAR:?message} and ${VAR:-default}, with sample values."""
    samples = {
        "PG_PASSWORD": "pg-secret",
        "GMP_API_TOKEN": "t" * 32,
        "GMP_ENCRYPTION_KEY": generate_key(),
    }

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        return samples.get(name, arg if op == ":-" else "")

    return re.sub(r"\$\{(\w+)(?:(:[?-])([^}]*))?\}", one, value)


def proxies() -> dict[str, dict]:
    return {name: s for name, s in compose()["services"].items() if name.startswith("proxy")}


def test_compose_runs_two_proxies_on_one_postgresql():
    services = compose()["services"]
    assert services["db"]["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    assert len(proxies()) >= 2
    ids, ports = set(), set()
    for name, service in proxies().items():
        build = ROOT / "config" / service["build"]["context"] / service["build"]["dockerfile"]
        assert build.resolve() == DOCKERFILE, name
        assert service["depends_on"]["db"]["condition"] == "service_healthy"
        env = {k: substituted(str(v)) for k, v in service["environment"].items()}
        assert env["GMP_DB_PATH"].startswith("postgresql://mailproxy:pg-secret@db:5432/")
        assert env["GMP_API_TOKEN"]
        assert env["GMP_ENCRYPTION_KEY"]
        ids.add(env["GMP_INSTANCE_ID"])
        ports.update(service["ports"])
        assert seconds(service["stop_grace_period"]) > shutdown_timeout(env), name
        assert_valid_settings(env)
    assert len(ids) == len(ports) == len(proxies())


def test_compose_declares_every_named_volume():
    data = compose()
    declared = set(data["volumes"])
    for name, service in data["services"].items():
        for volume in service.get("volumes", ()):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, (name, source)
    assert any(v.endswith(":/var/lib/postgresql/data") for v in data["services"]["db"]["volumes"])


def test_compose_secrets_come_from_the_environment():
    text = COMPOSE.read_text(encoding="utf-8")
    for name in ("PG_PASSWORD", "GMP_API_TOKEN", "GMP_ENCRYPTION_KEY"):
        assert f"${{{name}:?" in text, name


# -- systemd unit ------------------------------------------------------------------------------


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT, encoding="utf-8")
    return parser


def unit_environment() -> dict[str, str]:
    """Every ``Environment=`` line (configparser keeps only the last of repeated keys)."""
    env = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if line.startswith("Environment="):
            for pair in shlex.split(line.removeprefix("Environment=")):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_unit_starts_mail_proxy_serve_unprivileged():
    service = unit()["Service"]
    program, *args = service["ExecStart"].split()
    assert (Path(program).name, args) == ("mail-proxy", ["serve"])
    assert service["User"] not in ("root", "0")
    assert unit()["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in unit()["Unit"]["After"]


def test_unit_stops_gracefully_within_its_timeout():
    service = unit()["Service"]
    assert service["KillSignal"] == "SIGTERM"
    assert seconds(service["TimeoutStopSec"]) > shutdown_timeout(unit_environment())
    assert service["RestartPreventExitStatus"] == "2"  # a configuration error stays down


def test_unit_is_hardened_and_writes_only_its_data_dir():
    service = unit()["Service"]
    for key, value in HARDENING.items():
        assert service.get(key) == value, key
    data_dir = str(Path(unit_environment()["GMP_DB_PATH"]).parent)
    assert data_dir in service["ReadWritePaths"].split()
    assert service["StateDirectory"] == Path(data_dir).name


@pytest.mark.parametrize("name", ["GMP_CONFIG", "GMP_DB_PATH", "GMP_SHUTDOWN_TIMEOUT"])
def test_unit_environment_is_known(name):
    env = unit_environment()
    assert name in env
    assert_valid_settings(env)
