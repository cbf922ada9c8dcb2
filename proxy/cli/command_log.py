"""``mail-proxy command-log``: list, export and purge the audit log (SPEC §3.13, admin token).

``--tenant`` filters by tenant; times are Unix seconds (UTC).
"""

from __future__ import annotations

from typing import Any

import click

from proxy.cli import output
from proxy.cli.client import Client, remote

_TS = click.IntRange(min=0)
_SINCE = click.option("--since-ts", type=_TS, metavar="TS", help="At or after this time.")
_UNTIL = click.option("--until-ts", type=_TS, metavar="TS", help="At or before this time.")
COLUMNS: list[Any] = ["id", ("time", "command_ts"), "endpoint", ("tenant", "tenant_id"), "actor"]
COLUMNS += [("status", "response_status")]


@click.group("command-log")
def command_log() -> None:
    """Query, export or purge the audit log.

    Every mutating command is logged, secrets masked (admin token).
    """


@command_log.command("list")
@_SINCE
@_UNTIL
@click.option("--endpoint", metavar="TEXT", help="Only commands whose name contains TEXT.")
@click.option("--limit", type=click.IntRange(1, 10_000), metavar="N", help="Default 100.")
@click.option("--offset", type=click.IntRange(min=0), metavar="N", help="Skip the newest N.")
@remote
def list_commands(
    client: Client,
    *,
    since_ts: int | None,
    until_ts: int | None,
    endpoint: str | None,
    limit: int | None,
    offset: int | None,
) -> None:
    """Commands, newest first."""
    data = client.get(
        "/command-log",
        tenant_id=client.tenant,
        since_ts=since_ts,
        until_ts=until_ts,
        endpoint_filter=endpoint,
        limit=limit,
        offset=offset,
    )

    def render(answer: dict[str, Any]) -> None:
        output.table(answer["commands"], COLUMNS)
        output.done(f"{len(answer['commands'])} of {answer.get('total', 0)} shown")

    output.show(data, render)


@command_log.command("export")
@_SINCE
@_UNTIL
@remote
def export_commands(client: Client, since_ts: int | None, until_ts: int | None) -> None:
    """Commands with their (masked) payloads, oldest first; use --json to keep them."""
    data = client.get(
        "/command-log/export", tenant_id=client.tenant, since_ts=since_ts, until_ts=until_ts
    )
    columns: list[Any] = [("time", "command_ts"), "endpoint", ("tenant", "tenant_id"), "payload"]
    output.show(data, lambda d: output.table(d["commands"], columns))


@command_log.command("purge")
@click.option("--before-ts", type=_TS, required=True, metavar="TS", help="Delete older entries.")
@remote
def purge_commands(client: Client, before_ts: int) -> None:
    """Delete entries older than --before-ts."""
    data = client.post("/command-log/purge", {"before_ts": before_ts})
    output.show(data, lambda d: output.done(f"ok: {d.get('removed', 0)} removed"))
