"""``mail-proxy messages``: list, show, events, delete and cleanup (SPEC §3.9, §3.10, §14).

The tenant is ``--tenant`` (a tenant token's own by default); ``list`` with the
admin token and no tenant shows every tenant's messages.
"""

from __future__ import annotations

from typing import Any

import click

from proxy.cli import output
from proxy.cli.client import Client, Failure, remote

STATUSES = ("pending", "deferred", "suspended", "sending", "sent", "error")
MESSAGE_COLUMNS: list[Any] = [
    "id",
    ("tenant", "tenant_id"),
    ("account", "account_id"),
    "priority",
    "status",
]
MESSAGE_COLUMNS += [("retries", "retry_count"), "created_at", ("done", "smtp_ts"), "error"]
EVENT_COLUMNS: list[Any] = [("event", "event_id"), ("type", "event_type"), ("time", "event_ts")]
EVENT_COLUMNS += ["description", ("reported", "reported_ts")]


@click.group()
def messages() -> None:
    """Inspect and remove the messages of --tenant."""


@messages.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only messages in this status.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N messages.")
@click.option("--offset", type=click.IntRange(min=0), metavar="N", help="Skip the first N.")
@click.option("--batch-code", metavar="CODE", help="Only this batch.")
@click.option("--active-only", is_flag=True, help="Only messages not yet sent or failed.")
@remote
def list_messages(
    client: Client,
    *,
    status: str | None,
    limit: int | None,
    offset: int | None,
    batch_code: str | None,
    active_only: bool,
) -> None:
    """List messages by priority, then age."""
    data = client.get(
        "/messages",
        tenant_id=client.tenant,
        status=status,
        limit=limit,
        offset=offset,
        batch_code=batch_code,
        active_only=active_only or None,
    )
    output.show(data, lambda d: output.table(d["messages"], MESSAGE_COLUMNS))


@messages.command("show")
@click.argument("message_id", metavar="ID")
@click.option("--history", is_flag=True, help="Add the message's events.")
@remote
def show_message(client: Client, message_id: str, history: bool) -> None:
    """Show one message: its state and its stored payload."""
    data = client.get(
        "/messages", tenant_id=client.tenant, id=message_id, include_history=history or None
    )
    if not data.get("messages"):
        raise Failure(f"message '{message_id}' not found")

    def render(answer: dict[str, Any]) -> None:
        record = dict(answer["messages"][0])
        events = record.pop("history", None)
        record.pop("message", None)  # the same object as payload
        output.fields(record)
        if events is not None:
            output.table(events, EVENT_COLUMNS, title="History")

    output.show(data, render)


@messages.command("events")
@click.argument("message_id", metavar="ID")
@remote
def message_events(client: Client, message_id: str) -> None:
    """One message's event history, oldest first."""
    data = client.get(f"/messages/{message_id}/events", tenant_id=client.tenant)
    output.show(data, lambda d: output.table(d["events"], EVENT_COLUMNS))


@messages.command("delete")
@click.argument("message_ids", metavar="ID...", nargs=-1, required=True)
@remote
def delete_messages(client: Client, message_ids: tuple[str, ...]) -> None:
    """Delete messages by id, whatever their state."""
    data = client.post(
        "/commands/delete-messages", {"ids": list(message_ids)}, tenant_id=client.tenant
    )

    def render(answer: dict[str, Any]) -> None:
        output.done(f"ok: {answer.get('removed', 0)} removed")
        for key in ("not_found", "unauthorized"):
            if answer.get(key):
                output.done(f"{key.replace('_', ' ')}: {', '.join(answer[key])}")

    output.show(data, render)


@messages.command("cleanup")
@click.option(
    "--older-than",
    type=int,
    metavar="S",
    help="Reported messages older than S seconds (default: the configured retention).",
)
@remote
def cleanup_messages(client: Client, older_than: int | None) -> None:
    """Remove sent or failed messages already reported to the tenant."""
    body = {"older_than_seconds": older_than} if older_than is not None else {}
    data = client.post("/commands/cleanup-messages", body, tenant_id=client.tenant)
    output.show(data, lambda d: output.done(f"ok: {d.get('removed', 0)} removed"))
