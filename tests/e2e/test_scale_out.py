"""Several instances on one PostgreSQL database (SPEC §18.2–§18.5), as real subprocesses.

Three ``mail-proxy serve`` processes share one database, one SMTP sink and one
tenant application. They start together from the same config file (start-up
work takes turns under an advisory lock), any of them accepts messages, and
the sink counts deliveries by X-Genro-Mail-ID.
"""

from __future__ import annotations

import email
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.fixtures.proxy import (
    ADMIN_TOKEN,
    ROOT,
    Api,
    ProxyProcess,
    free_port,
    message,
)
from tests.fixtures.smtp import SmtpSink
from tests.fixtures.tenant_http import TenantApp
from tests.fixtures.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgresql_only]

TENANTS = [f"t{i:02d}" for i in range(10)]
TENANT_KEY = "tenant-proxy-key-0123456789abcdefghijklmnop"


def _config(
    path: Path,
    *,
    db_url: str,
    smtp_port: int,
    tenant_url: str,
    lease_s: int = 30,
    account_extra: str = "",
    tenants: list[str] = TENANTS,
) -> Path:
    blocks = [
        f"""
[[tenants]]
id = "{tenant}"
name = "Tenant {tenant}"
client_base_url = "{tenant_url}/{tenant}"
api_key = "{TENANT_KEY}-{tenant}"

[[accounts]]
tenant_id = "{tenant}"
id = "main"
host = "127.0.0.1"
port = {smtp_port}
use_tls = false
{account_extra}
"""
        for tenant in tenants
    ]
    path.write_text(
        f"""
[server]
host = "127.0.0.1"
db_path = "{db_url}"
db_pool_size = 6
shutdown_timeout = 5

[delivery]
send_loop_interval = 0.05
claim_lease_seconds = {lease_s}
batch_size_per_account = 20

[client_sync]
report_batch_size = 200

[security]
api_token = "{ADMIN_TOKEN}"
"""
        + "".join(blocks)
    )
    return path


def _start_instances(tmp_path: Path, config: Path, count: int) -> list[ProxyProcess]:
    """Start ``count`` instances at once (they race through start-up), each with its own id."""
    instances = []
    for n in range(1, count + 1):
        port = free_port()
        env = {"GMP_PORT": str(port), "GMP_INSTANCE_ID": f"mx-{n}", "TENANT_KEY": TENANT_KEY}
        instances.append(ProxyProcess(config, port, env, tmp_path / f"mx-{n}.log"))
    for instance in instances:
        instance.start_detached()
    for instance in instances:
        instance.wait_healthy()
    return instances


def _delivered(sink: SmtpSink) -> Counter[str]:
    return Counter(email.message_from_bytes(m.data)["X-Genro-Mail-ID"] for m in sink.messages)


def _queue(instances: list[ProxyProcess], ids_by_tenant: dict[str, list[str]]) -> None:
    """Batches of 100, spread over the instances: any instance serves the API."""
    batches = [
        [message(i, tenant_id=tenant) for i in ids[start : start + 100]]
        for tenant, ids in ids_by_tenant.items()
        for start in range(0, len(ids), 100)
    ]
    for n, batch in enumerate(batches):
        response = instances[n % len(instances)].api.add_messages(*batch)
        assert response.status_code == 200, response.text
        assert response.json()["queued"] == len(batch)


def _sent_by_instance(api: Api) -> float:
    text = api.get("/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gmp_sent_total{")
    )


def test_three_instances_send_every_message_exactly_once(
    tmp_path, db_url, smtp_sink, tenant_app: TenantApp
) -> None:
    tenant_app.reply_with(delay_s=0.02)  # a call lasts long enough for an overlap to show
    ids = {t: [f"{t}-{i:04d}" for i in range(500)] for t in TENANTS}
    everything = {i for group in ids.values() for i in group}
    config = _config(
        tmp_path / "mail-proxy.toml", db_url=db_url, smtp_port=smtp_sink.port,
        tenant_url=tenant_app.url,
    )  # fmt: skip
    instances = _start_instances(tmp_path, config, 3)
    try:
        status = instances[0].api.get("/status").json()
        assert sorted(i["instance_id"] for i in status["instances"]) == ["mx-1", "mx-2", "mx-3"]
        _queue(instances, ids)
        wait_until(
            lambda: set(_delivered(smtp_sink)) == everything,
            timeout_s=240,
            interval_s=0.5,
            what="all 5,000 messages at the sink",
        )
        counts = _delivered(smtp_sink)
        assert sum(counts.values()) == 5000, {k: v for k, v in counts.items() if v > 1}
        reported = tenant_app.wait_for_items(
            lambda i: i["event"] == "sent", min_count=5000, timeout_s=120
        )
        assert {i["id"] for i in reported} == everything
        by_event = Counter(i["event_id"] for i in tenant_app.reported_items())
        assert set(by_event.values()) == {1}, "an event was acknowledged twice"
        assert all(n == 1 for n in tenant_app.max_in_flight.values()), tenant_app.max_in_flight
        assert set(tenant_app.max_in_flight) == set(TENANTS)
        sent = [_sent_by_instance(p.api) for p in instances]
        print(f"\nsends per instance: {sent}")  # noqa: T201 (shown with -s)
        assert sum(sent) == 5000
        assert sum(1 for n in sent if n > 0) >= 2, "the work was not shared"
    finally:
        for instance in instances:
            instance.stop()


def test_a_killed_instance_loses_nothing_and_its_claims_are_taken_over(
    tmp_path, db_url, smtp_sink, tenant_app: TenantApp
) -> None:
    ids = {t: [f"{t}-{i:04d}" for i in range(200)] for t in TENANTS}
    everything = {i for group in ids.values() for i in group}
    config = _config(
        tmp_path / "mail-proxy.toml", db_url=db_url, smtp_port=smtp_sink.port,
        tenant_url=tenant_app.url, lease_s=5,  # short: a quick takeover, renewed every ~1.7 s
    )  # fmt: skip
    instances = _start_instances(tmp_path, config, 3)
    try:
        _queue(instances, ids)
        wait_until(lambda: len(_delivered(smtp_sink)) >= 600, timeout_s=120, interval_s=0.05)
        victim = instances[1]
        victim.kill()  # SIGKILL: no shutdown, its claims stay until their lease runs out
        wait_until(
            lambda: set(_delivered(smtp_sink)) == everything,
            timeout_s=180,
            interval_s=0.5,
            what="every message delivered after the kill",
        )
        counts = _delivered(smtp_sink)
        duplicates = {k: v for k, v in counts.items() if v > 1}
        # At most the messages the dead instance was transmitting: one per account.
        assert len(duplicates) <= len(TENANTS), duplicates
        assert all(v == 2 for v in duplicates.values()), duplicates
        reported = tenant_app.wait_for_items(
            lambda i: i["event"] == "sent", min_count=len(everything), timeout_s=120
        )
        assert {i["id"] for i in reported} == everything
        survivor = instances[0].api
        for tenant in TENANTS:
            wait_until(
                lambda tenant=tenant: all(
                    m["status"] == "sent" for m in survivor.messages(tenant, limit=1000)
                ),
                timeout_s=30,
            )
        print(f"\nduplicates after SIGKILL: {len(duplicates)}")  # noqa: T201 (shown with -s)
    finally:
        for instance in instances:
            instance.stop()


def test_a_per_minute_account_limit_holds_across_instances(
    tmp_path, db_url, smtp_sink, tenant_app: TenantApp
) -> None:
    config = _config(
        tmp_path / "mail-proxy.toml", db_url=db_url, smtp_port=smtp_sink.port,
        tenant_url=tenant_app.url, tenants=["acme"],
        account_extra="limit_per_minute = 100\nlimit_behavior = \"defer\"",
    )  # fmt: skip
    instances = _start_instances(tmp_path, config, 3)
    try:
        # Start early in a minute so the whole burst falls in one window.
        wait_until(lambda: time.time() % 60 < 50, timeout_s=15, interval_s=0.2)
        window_end = (int(time.time()) // 60 + 1) * 60
        _queue(instances, {"acme": [f"m-{i:03d}" for i in range(300)]})
        api = instances[2].api

        def by_status() -> Counter[str]:
            return Counter(m["status"] for m in api.messages("acme", limit=1000))

        # Each instance that hit the full window defers the message it was about to send
        # to the window's end; the account then claims nothing more until then (SPEC §7.4).
        wait_until(
            lambda: by_status()["sent"] == 100 and by_status()["deferred"] >= 1,
            timeout_s=25,
            interval_s=0.2,
            what="the first window filled",
        )
        deferred = [m for m in api.messages("acme", limit=1000) if m["status"] == "deferred"]
        assert {m["deferred_ts"] for m in deferred} == {window_end}
        # Nothing more goes out in this window, from any instance.
        wait_until(lambda: time.time() >= window_end - 1, timeout_s=60, interval_s=0.2)
        assert sum(_delivered(smtp_sink).values()) == 100
        # The next window takes the next 100, again across all three.
        wait_until(lambda: by_status()["sent"] == 200, timeout_s=30, interval_s=0.2)
        assert sum(_delivered(smtp_sink).values()) == 200
    finally:
        for instance in instances:
            instance.stop()


def test_an_api_only_instance_forwards_run_now_to_the_active_one(
    tmp_path, db_url, smtp_sink, tenant_app: TenantApp
) -> None:
    # After every call the tenant asks for an hour of quiet (DND): no heartbeats.
    tenant_app.reply_with(body={"ok": True, "next_sync_after": int(time.time()) + 3600})
    config = _config(
        tmp_path / "mail-proxy.toml", db_url=db_url, smtp_port=smtp_sink.port,
        tenant_url=tenant_app.url, tenants=["acme"],
    )  # fmt: skip
    active, api_only = (
        ProxyProcess(
            config,
            port := free_port(),
            {"GMP_PORT": str(port), "GMP_INSTANCE_ID": name, "TENANT_KEY": TENANT_KEY} | extra,
            tmp_path / f"{name}.log",
        )
        for name, extra in (("mx-active", {}), ("mx-api", {"GMP_START_ACTIVE": "false"}))
    )
    try:
        active.start()
        api_only.start()
        tenant_app.wait_for_calls(1, timeout_s=10)  # never called before: due at once
        instances = api_only.api.get("/status").json()["instances"]
        assert {i["instance_id"]: i["active"] for i in instances} == {
            "mx-active": True,
            "mx-api": False,
        }
        wait_until(
            lambda: api_only.api.get("/tenants/sync-status").json()["tenants"][0]["dnd_until"],
            what="the tenant's DND recorded",
        )
        calls = len(tenant_app.calls)
        tenant = api_only.api.as_token(f"{TENANT_KEY}-acme")
        assert tenant.post("/commands/run-now").status_code == 200
        # The API-only instance cannot call; the active one does, once, DND lifted.
        tenant_app.wait_for_calls(calls + 1, timeout_s=10)
        assert tenant_app.calls[-1].path.startswith("/acme/")
    finally:
        api_only.stop()
        active.stop()


def test_two_processes_never_share_an_instance_id(tmp_path, db_url, smtp_sink, tenant_app) -> None:
    config = _config(
        tmp_path / "mail-proxy.toml", db_url=db_url, smtp_port=smtp_sink.port,
        tenant_url=tenant_app.url, tenants=["acme"],
    )  # fmt: skip
    first = ProxyProcess(
        config,
        port := free_port(),
        {"GMP_PORT": str(port), "GMP_INSTANCE_ID": "mx-1", "TENANT_KEY": TENANT_KEY},
        tmp_path / "first.log",
    )
    try:
        first.start()
        twin = subprocess.run(
            [sys.executable, "-m", "proxy", "serve", "--config", str(config)],
            env=os.environ
            | {"PYTHONPATH": str(ROOT), "TENANT_KEY": TENANT_KEY}
            | {"GMP_PORT": str(free_port()), "GMP_INSTANCE_ID": "mx-1"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert twin.returncode == 2, twin.stderr
        [line] = twin.stderr.strip().splitlines()
        assert "instance id 'mx-1' is in use" in line
        # A crash frees the id at once: the database drops the dead process's session.
        first.kill()
        first.start()
        [live] = first.api.get("/status").json()["instances"]
        assert live["instance_id"] == "mx-1"
    finally:
        first.stop()
