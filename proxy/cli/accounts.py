"""``mail-proxy accounts``: list, add (create or replace) and delete SMTP accounts (SPEC §3.8).

The tenant is ``--tenant``; with a tenant token it defaults to the token's own,
with the admin token ``list`` shows every tenant's accounts.
"""

from __future__ import annotations

from typing import Any

import click

from proxy.cli import output
from proxy.cli.client import Client, remote

_COUNT = click.IntRange(min=0)


def account_body(account_id: str, tenant_id: str | None, values: dict[str, Any]) -> dict[str, Any]:
    """The ``POST /account`` body from the option values (None = not given); pure."""
    names = {
        "host": "host",
        "port": "port",
        "user": "user",
        "password": "password",
        "tls": "use_tls",
        "ssl": "use_ssl",
        "tls_verify": "tls_verify",
        "ttl": "ttl",
        "limit_minute": "limit_per_minute",
        "limit_hour": "limit_per_hour",
        "limit_day": "limit_per_day",
        "limit_behavior": "limit_behavior",
        "batch_size": "batch_size",
    }
    body: dict[str, Any] = {"id": account_id}
    if tenant_id is not None:
        body["tenant_id"] = tenant_id
    for option, field in names.items():
        if values.get(option) is not None:
            body[field] = values[option]
    return body


def _limits(row: dict[str, Any]) -> str:
    parts = [
        f"{row[key]}/{unit}"
        for key, unit in (
            ("limit_per_minute", "m"),
            ("limit_per_hour", "h"),
            ("limit_per_day", "d"),
        )
        if row.get(key)
    ]
    return " ".join(parts)


@click.group()
def accounts() -> None:
    """Manage the SMTP accounts of --tenant."""


@accounts.command("list")
@remote
def list_accounts(client: Client) -> None:
    """List accounts (with the admin token and no --tenant: every tenant's)."""
    data = client.get("/accounts", tenant_id=client.tenant)
    columns: list[Any] = [("tenant", "tenant_id"), "id", "host", "port", "user", ("tls", "use_tls")]
    columns += [("ssl", "use_ssl"), ("limits", _limits), ("behavior", "limit_behavior")]
    columns += [("password", "password_set")]
    output.show(data, lambda d: output.table(d["accounts"], columns))


@accounts.command("add")
@click.argument("account_id", metavar="ID")
@click.option("--host", required=True, help="SMTP server host name or IP.")
@click.option("--port", required=True, type=click.IntRange(1, 65535), help="SMTP server port.")
@click.option("--user", help="SMTP AUTH user.")
@click.option("--password", help="SMTP AUTH password (stored encrypted when a key is set).")
@click.option("--tls/--no-tls", default=None, help="STARTTLS (default: when offered).")
@click.option("--ssl", is_flag=True, default=None, help="Implicit TLS from the first byte.")
@click.option(
    "--tls-verify/--no-tls-verify", default=None, help="Verify the certificate (default: yes)."
)
@click.option("--ttl", type=_COUNT, metavar="S", help="Seconds an idle connection stays open.")
@click.option(
    "--limit-minute", type=_COUNT, metavar="N", help="Messages per minute (0 = no limit)."
)
@click.option("--limit-hour", type=_COUNT, metavar="N", help="Messages per hour.")
@click.option("--limit-day", type=_COUNT, metavar="N", help="Messages per day.")
@click.option("--limit-behavior", type=click.Choice(("defer", "reject")), help="At a limit.")
@click.option("--batch-size", type=click.IntRange(min=1), metavar="N", help="Claimed per round.")
@remote
def add_account(client: Client, account_id: str, **values: Any) -> None:
    """Create or replace account ID (options not given return to their defaults)."""
    data = client.post("/account", account_body(account_id, client.tenant, values))
    verb = "created" if data.get("created") else "replaced"
    output.show(data, lambda _: output.done(f"ok: account '{account_id}' {verb}"))


@accounts.command("delete")
@click.argument("account_id", metavar="ID")
@remote
def delete_account(client: Client, account_id: str) -> None:
    """Delete account ID; its unsent messages become errors ("account deleted")."""
    data = client.delete(f"/account/{account_id}", tenant_id=client.tenant)
    output.show(data, lambda _: output.done(f"ok: account '{account_id}' deleted"))
