"""``mail-proxy tokens``: create (or rotate) and revoke a tenant's API key (admin token)."""

from __future__ import annotations

from typing import Any

import click

from proxy.cli import output
from proxy.cli.client import Client, remote


@click.group()
def tokens() -> None:
    """Create or revoke tenant API keys (admin token)."""


@tokens.command("create")
@click.argument("tenant_id", metavar="TENANT")
@click.option(
    "--expires-at", type=click.IntRange(min=0), metavar="TS", help="Expiry, Unix seconds (UTC)."
)
@remote
def create_token(client: Client, tenant_id: str, expires_at: int | None) -> None:
    """Create a new key for TENANT; its previous key stops working at once."""
    body = {"expires_at": expires_at} if expires_at is not None else {}
    data = client.post(f"/tenant/{tenant_id}/api-key", body)

    def render(answer: dict[str, Any]) -> None:
        output.done(f"api_key: {answer.get('api_key')}  (shown only now: keep it)")
        if answer.get("expires_at") is not None:
            output.done(f"expires_at: {output.cell('expires_at', answer['expires_at'])}")

    output.show(data, render)


@tokens.command("revoke")
@click.argument("tenant_id", metavar="TENANT")
@remote
def revoke_token(client: Client, tenant_id: str) -> None:
    """Revoke TENANT's key; the tenant has none until a new one is created."""
    data = client.delete(f"/tenant/{tenant_id}/api-key")
    output.show(data, lambda _: output.done(f"ok: key of tenant '{tenant_id}' revoked"))
