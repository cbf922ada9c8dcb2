"""Process lifecycle: config bootstrapping, SIGTERM during a send, kill -9 and restart, the lock."""

from __future__ import annotations

import dataclasses
import email
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from proxy.config import load_settings
from tests.fixtures.proxy import (
    ADMIN_TOKEN,
    ROOT,
    Api,
    ProxyProcess,
    fast_settings,
    free_port,
    message,
    running_proxy,
)
from tests.fixtures.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.sqlite_only]

TENANT_KEY = "acme-proxy-key-0123456789abcdefghijklmnop"


def _config(
    tmp_path: Path,
    *,
    port: int,
    smtp_port: int,
    tenant_url: str | None = None,
    shutdown_timeout: float = 10,
    extra: str = "",
) -> Path:
    base_url = f'client_base_url = "{tenant_url}"' if tenant_url else ""
    text = f"""
[server]
host = "127.0.0.1"
port = {port}
db_path = "{tmp_path / "proxy.db"}"
shutdown_timeout = {shutdown_timeout}

[delivery]
send_loop_interval = 0.05
# Long on purpose: a restart must resume at once, not when the lease runs out.
claim_lease_seconds = 300

[security]
api_token = "{ADMIN_TOKEN}"

[[tenants]]
id = "acme"
name = "ACME"
{base_url}
api_key = "${{ACME_KEY}}"

[[accounts]]
tenant_id = "acme"
id = "main"
host = "127.0.0.1"
port = {smtp_port}
use_tls = false
{extra}
"""
    path = tmp_path / "mail-proxy.toml"
    path.write_text(text)
    return path


def _process(tmp_path: Path, config: Path, port: int) -> ProxyProcess:
    return ProxyProcess(config, port, {"ACME_KEY": TENANT_KEY}, tmp_path / "proxy.log")


def _delivered_ids(sink) -> list[str]:
    return [email.message_from_bytes(m.data)["X-Genro-Mail-ID"] for m in sink.messages]


def test_bootstrap_is_idempotent_and_never_deletes(tmp_path, smtp_sink) -> None:
    config = _config(tmp_path, port=0, smtp_port=smtp_sink.port)
    from_file = load_settings(str(config), env={"ACME_KEY": TENANT_KEY})
    settings = dataclasses.replace(
        fast_settings(tmp_path),
        tenants=from_file.tenants,
        accounts=from_file.accounts,
        config_path=str(config),
    )
    with running_proxy(settings) as (_server, api):
        first_tenants = api.get("/tenants").json()["tenants"]
        first_accounts = api.get("/accounts").json()["accounts"]
        api.add_tenant("other", name="Created over the API")
        # The provisioned key works as a tenant token.
        assert api.as_token(TENANT_KEY).get("/tenant/acme").json()["id"] == "acme"
    with running_proxy(settings) as (_server, api):
        tenants = api.get("/tenants").json()["tenants"]
        assert [t for t in tenants if t["id"] == "acme"] == [
            t for t in first_tenants if t["id"] == "acme"
        ]
        assert "other" in [t["id"] for t in tenants]
        assert api.get("/accounts").json()["accounts"] == first_accounts
        assert api.as_token(TENANT_KEY).get("/tenant/acme").status_code == 200


def test_sigterm_during_a_send_finishes_it_and_loses_nothing(
    tmp_path, smtp_sink, tenant_app
) -> None:
    port = free_port()
    config = _config(tmp_path, port=port, smtp_port=smtp_sink.port, tenant_url=tenant_app.url)
    smtp_sink.hold_data(lambda r: b"X-Genro-Mail-ID: m-03" in r.data)
    proxy = _process(tmp_path, config, port).start()
    try:
        response = proxy.api.add_messages(*[message(f"m-{i:02d}") for i in range(10)])
        assert response.json()["queued"] == 10
        assert smtp_sink.held.wait(15), "the chosen message never reached DATA"
        proxy.process.send_signal(15)
        wait_until(lambda: "received SIGTERM" in proxy.log(), what="SIGTERM handled")
        smtp_sink.release()  # the send in flight completes during shutdown
        assert proxy.process.wait(20) == 0, proxy.log()
        assert _delivered_ids(smtp_sink) == [f"m-{i:02d}" for i in range(4)]
    finally:
        proxy.stop()

    restarted = _process(tmp_path, config, port).start()
    try:
        smtp_sink.wait_for(10, timeout_s=20)
        ids = _delivered_ids(smtp_sink)
        assert sorted(ids) == [f"m-{i:02d}" for i in range(10)]  # each exactly once
        sent = tenant_app.wait_for_items(lambda i: i["event"] == "sent", min_count=10)
        assert {i["id"] for i in sent} == set(ids)
        wait_until(lambda: {m["status"] for m in restarted.api.messages()} == {"sent"})
        assert restarted.terminate() == 0
    finally:
        restarted.stop()


def test_kill_9_then_restart_resumes_at_once_and_loses_nothing(
    tmp_path, smtp_sink, tenant_app
) -> None:
    total = 2000
    ids = [f"m-{i:04d}" for i in range(total)]
    port = free_port()
    config = _config(tmp_path, port=port, smtp_port=smtp_sink.port, tenant_url=tenant_app.url)
    # Kill at a known point: hold the DATA reply of the message in the middle.
    smtp_sink.hold_data(lambda r: b"X-Genro-Mail-ID: m-1000" in r.data)
    proxy = _process(tmp_path, config, port).start()
    try:
        for start in range(0, total, 500):
            batch = [message(i) for i in ids[start : start + 500]]
            assert proxy.api.add_messages(*batch).json()["queued"] == 500
        assert smtp_sink.held.wait(60), "the chosen message never reached DATA"
        proxy.kill()
    finally:
        proxy.stop()
    calls_before_restart = len(tenant_app.calls)
    smtp_sink.release()  # the server accepted what the dead process was sending

    restarted = _process(tmp_path, config, port).start()
    try:
        # The lease is 300 s: finishing in time proves claims were released at start.
        wait_until(lambda: set(_delivered_ids(smtp_sink)) == set(ids), timeout_s=60)
        counts = Counter(_delivered_ids(smtp_sink))
        duplicates = {k for k, v in counts.items() if v > 1}
        assert duplicates <= {"m-1000"}  # only the message in flight may be sent twice
        reported = tenant_app.wait_for_items(
            lambda i: i["event"] == "sent", min_count=total, timeout_s=60
        )
        assert {i["id"] for i in reported} == set(ids)  # every event reported at least once
        by_event = Counter(i["event_id"] for i in tenant_app.reported_items())
        repeated = {event_id for event_id, n in by_event.items() if n > 1}
        # Repeats come only from the one report call in flight when the process died.
        in_flight = [
            {i["event_id"] for i in call.body["delivery_report"]}
            for call in tenant_app.calls[:calls_before_restart]
        ]
        assert not repeated or any(repeated <= call for call in in_flight[-1:])
        wait_until(lambda: all(m["status"] == "sent" for m in restarted.api.messages()))
        assert len(restarted.api.messages()) == total
    finally:
        restarted.stop()


def test_second_instance_on_the_same_database_refuses_to_start(tmp_path, smtp_sink) -> None:
    port = free_port()
    config = _config(tmp_path, port=port, smtp_port=smtp_sink.port)
    proxy = _process(tmp_path, config, port).start()
    try:
        second = subprocess.run(
            [sys.executable, "-m", "proxy", "serve", "--config", str(config), "--port", "0"],
            env={"ACME_KEY": TENANT_KEY, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert "in use by another instance" in lines[0]
        assert Api(f"http://127.0.0.1:{port}").get("/health").ok
    finally:
        proxy.stop()


def test_any_free_port_names_the_bound_port_in_the_default_instance_id(tmp_path) -> None:
    """SPEC §15.2: the default instance id is ``<hostname>:<port>``; with port 0 that is
    the port actually bound (not ``:0``), so two such instances on one host never share
    an id."""
    with running_proxy(fast_settings(tmp_path, port=0)) as (server, api):
        assert server.port != 0
        assert server.instance_id == f"{socket.gethostname()}:{server.port}"
        status = api.get("/status").json()
        assert status["instance_id"] == server.instance_id
        assert [i["instance_id"] for i in status["instances"]] == [server.instance_id]
