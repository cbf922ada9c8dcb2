"""``mail-proxy tenants``: list, show, add, update, delete, sync-status (SPEC §3.11).

``update`` sends only the fields given; its rate-limit options are merged into
the tenant's stored ``rate_limits`` (the API replaces that object as a whole).
``delete`` asks first; without a terminal it refuses unless ``--force`` (exit 2),
so a script never deletes a tenant by accident.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from proxy.cli import output
from proxy.cli.client import Client, remote

AUTH_METHODS = ("none", "bearer", "basic")


def stdin_is_terminal() -> bool:
    """Whether a person can answer a confirmation (tests replace this)."""
    return sys.stdin.isatty()


def _tenant_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The TenantPayload fields as options; every one is optional (None = not given)."""
    for decorate in reversed(
        (
            click.option("--name", help="Display name."),
            click.option("--base-url", metavar="URL", help="Tenant application (client_base_url)."),
            click.option("--sync-path", metavar="PATH", help="Report path (client_sync_path)."),
            click.option(
                "--attachment-path",
                metavar="PATH",
                help="Attachment path (client_attachment_path).",
            ),
            click.option(
                "--auth-method",
                type=click.Choice(AUTH_METHODS),
                help="How the proxy authenticates to the tenant (default: from the options given).",
            ),
            click.option("--auth-token", metavar="TOKEN", help="Bearer token for the tenant."),
            click.option("--auth-user", metavar="USER", help="Basic-auth user."),
            click.option("--auth-password", metavar="PASSWORD", help="Basic-auth password."),
            click.option(
                "--rate-limit-hourly", type=click.IntRange(min=0), metavar="N", help="0 = none."
            ),
            click.option(
                "--rate-limit-daily", type=click.IntRange(min=0), metavar="N", help="0 = none."
            ),
            click.option(
                "--rate-limit-behavior",
                type=click.Choice(("defer", "reject")),
                help="At a limit (default defer).",
            ),
            click.option("--active/--inactive", default=None, help="Send for this tenant or not."),
        )
    ):
        command = decorate(command)
    return command


def client_auth(
    method: str | None, token: str | None, user: str | None, password: str | None
) -> dict[str, Any] | None:
    """The ``client_auth`` object from the options, or None if none was given; pure."""
    if method is None and token is None and user is None and password is None:
        return None
    if method is None:
        method = "bearer" if token is not None else "basic"
    secrets = {"token": token, "user": user, "password": password}
    return {"method": method} | {k: v for k, v in secrets.items() if v is not None}


def tenant_body(values: dict[str, Any], stored_limits: dict[str, Any] | None) -> dict[str, Any]:
    """The request body from the option values; rate limits merged over the stored ones."""
    body: dict[str, Any] = {}
    for option, field in (
        ("name", "name"),
        ("base_url", "client_base_url"),
        ("sync_path", "client_sync_path"),
        ("attachment_path", "client_attachment_path"),
        ("active", "active"),
    ):
        if values.get(option) is not None:
            body[field] = values[option]
    auth = client_auth(
        values.get("auth_method"),
        values.get("auth_token"),
        values.get("auth_user"),
        values.get("auth_password"),
    )
    if auth is not None:
        body["client_auth"] = auth
    limits = {
        key: values.get(f"rate_limit_{key}")
        for key in ("hourly", "daily", "behavior")
        if values.get(f"rate_limit_{key}") is not None
    }
    if limits:
        body["rate_limits"] = (stored_limits or {}) | limits
    return body


def _limits(row: dict[str, Any]) -> str:
    limits = row.get("rate_limits") or {}
    parts = [f"{limits[k]}/{u}" for k, u in (("hourly", "h"), ("daily", "d")) if limits.get(k)]
    return " ".join(parts)


@click.group()
def tenants() -> None:
    """Manage tenants.

    Admin token; a tenant token may show and update its own tenant.
    """


@tenants.command("list")
@click.option("--active-only", is_flag=True, help="Only active tenants.")
@remote
def list_tenants(client: Client, active_only: bool) -> None:
    """List tenants."""
    data = client.get("/tenants", active_only=active_only or None)
    columns = ["id", "name", "active", ("key", "api_key_set"), ("base url", "client_base_url")]
    columns += [("limits", _limits), ("suspended", "suspended_batches"), "created_at"]
    output.show(data, lambda d: output.table(d["tenants"], columns))


@tenants.command("show")
@click.argument("tenant_id", metavar="ID")
@remote
def show_tenant(client: Client, tenant_id: str) -> None:
    """Show one tenant (secrets masked)."""
    output.show(client.get(f"/tenant/{tenant_id}"), output.fields)


@tenants.command("add")
@click.argument("tenant_id", metavar="ID")
@_tenant_options
@remote
def add_tenant(client: Client, tenant_id: str, **values: Any) -> None:
    """Create a tenant (or update the fields given); a new tenant's API key is shown once."""
    data = client.post("/tenant", {"id": tenant_id, **tenant_body(values, None)})

    def render(answer: dict[str, Any]) -> None:
        if answer.get("created"):
            output.done(f"ok: tenant '{tenant_id}' created")
            output.done(f"api_key: {answer.get('api_key')}  (shown only now: keep it)")
        else:
            output.done(f"ok: tenant '{tenant_id}' updated")

    output.show(data, render)


@tenants.command("update")
@click.argument("tenant_id", metavar="ID")
@_tenant_options
@remote
def update_tenant(client: Client, tenant_id: str, **values: Any) -> None:
    """Change the fields given; the others keep their values."""
    stored = None
    if any(values.get(f"rate_limit_{k}") is not None for k in ("hourly", "daily", "behavior")):
        stored = client.get(f"/tenant/{tenant_id}").get("rate_limits")
    body = tenant_body(values, stored)
    if not body:
        raise click.UsageError("nothing to update: give at least one option")
    data = client.put(f"/tenant/{tenant_id}", body)
    output.show(data, lambda _: output.done(f"ok: tenant '{tenant_id}' updated"))


@tenants.command("delete")
@click.argument("tenant_id", metavar="ID")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@remote
def delete_tenant(client: Client, tenant_id: str, force: bool) -> None:
    """Delete a tenant with its key, accounts, messages and events."""
    if not force:
        if not stdin_is_terminal():
            raise click.UsageError(
                f"refusing to delete tenant '{tenant_id}' without confirmation "
                "(no terminal): add --force"
            )
        click.confirm(
            f"Delete tenant '{tenant_id}' with all its accounts, messages and events?",
            abort=True,
        )
    data = client.delete(f"/tenant/{tenant_id}")
    output.show(data, lambda _: output.done(f"ok: tenant '{tenant_id}' deleted"))


@tenants.command("sync-status")
@remote
def sync_status(client: Client) -> None:
    """Per-tenant report sync state: last and next call, DND, backlog, failures."""
    data = client.get("/tenants/sync-status")
    columns: list[Any] = ["id", "active", ("last sync", "last_sync_ts")]
    columns += [("next sync", "next_sync_ts"), ("due", "next_sync_due"), ("dnd", "in_dnd")]
    columns += [("pending", "pending_reports"), ("failures", "consecutive_failures")]
    columns += [("last error", "last_error")]
    output.show(data, lambda d: output.table(d["tenants"], columns))
