"""Instance-wide commands: ``status``, ``stats``, ``run-now``, ``suspend``, ``activate``.

``suspend``/``activate`` act on ``--tenant`` (a tenant token's own tenant by
default); with the admin token and no tenant they switch the scheduler of the
whole deployment (SPEC §3.6).
"""

from __future__ import annotations

from typing import Any

import click

from proxy.cli import output
from proxy.cli.client import Client, remote

STATUS_FIELDS = (
    "instance_id",
    "version",
    "active",
    "scheduler_active",
    "test_mode",
    "auth",
    "uptime_seconds",
    "pending_messages",
)
STATUSES = ("pending", "deferred", "suspended", "sending", "sent", "error")


def _render_status(data: dict[str, Any]) -> None:
    output.fields({name: data.get(name) for name in STATUS_FIELDS})
    if data.get("instances"):
        output.table(
            data["instances"],
            [
                "instance_id",
                "active",
                ("started", "started_ts"),
                ("heartbeat", "last_heartbeat_ts"),
            ],
            title="Live instances",
        )


def _render_stats(data: dict[str, Any]) -> None:
    counts = data.get("messages_by_status") or {}
    rows = [{"status": name, "messages": counts.get(name, 0)} for name in STATUSES]
    rows.append({"status": "pending (not terminal)", "messages": data.get("pending_messages")})
    output.table(rows, ["status", "messages"])


@click.command()
@remote
def status(client: Client) -> None:
    """Show the instance status (GET /status)."""
    output.show(client.get("/status"), _render_status)


@click.command()
@remote
def stats(client: Client) -> None:
    """Count messages per status.

    A tenant token counts its own tenant's messages only (GET /status).
    """
    output.show(client.get("/status"), _render_stats)


@click.command("run-now")
@remote
def run_now(client: Client) -> None:
    """Wake sending and syncing now.

    A tenant token wakes its own tenant only (POST /commands/run-now).
    """
    output.show(client.post("/commands/run-now"), lambda _: output.done("ok: woken"))


def _render_switch(data: dict[str, Any]) -> None:
    if "scheduler_active" in data:
        state = "active" if data["scheduler_active"] else "suspended"
        output.done(f"ok: scheduler {state} for every tenant")
        return
    output.fields(data)


def _switch(client: Client, command: str, batch: str | None) -> None:
    data = client.post(f"/commands/{command}", tenant_id=client.tenant, batch_code=batch)
    output.show(data, _render_switch)


_BATCH = click.option("--batch", metavar="CODE", help="Only this batch_code of the tenant.")


@click.command()
@_BATCH
@remote
def suspend(client: Client, batch: str | None) -> None:
    """Suspend sending (a tenant, one batch, or all).

    Acts on --tenant, or one of its batches with --batch. With the admin token and
    no tenant, suspends the scheduler of the whole deployment.
    """
    _switch(client, "suspend", batch)


@click.command()
@_BATCH
@remote
def activate(client: Client, batch: str | None) -> None:
    """Resume sending (a tenant, one batch, or all).

    Acts on --tenant, or one of its batches with --batch. With the admin token and
    no tenant, resumes the scheduler of the whole deployment.
    """
    _switch(client, "activate", batch)
