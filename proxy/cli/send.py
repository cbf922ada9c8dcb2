"""``mail-proxy send FILE.eml``: submit a stored e-mail through add-messages.

The file is parsed by ``proxy.cli.eml``; a file that cannot become a message is a
usage error (exit 2), a message the proxy rejects a failure (exit 1).
"""

from __future__ import annotations

from typing import Any, BinaryIO

import click

from proxy.cli import output
from proxy.cli.client import Client, remote
from proxy.cli.eml import EmlError, message_from_eml

PRIORITIES = ("0", "1", "2", "3", "immediate", "high", "medium", "low")


@click.command()
@click.argument("file", type=click.File("rb"), metavar="FILE.eml")
@click.option("--account", required=True, metavar="A", help="SMTP account of the tenant.")
@click.option("--id", "message_id", metavar="ID", help="Client id (default: the Message-ID).")
@click.option("--priority", type=click.Choice(PRIORITIES), help="0/immediate … 3/low.")
@click.option("--batch-code", metavar="C", help="Batch, for suspend/activate --batch.")
@click.option(
    "--deferred-ts", type=click.IntRange(min=0), metavar="TS", help="Not before (Unix seconds)."
)
@remote
def send(
    client: Client,
    *,
    file: BinaryIO,
    account: str,
    message_id: str | None,
    priority: str | None,
    batch_code: str | None,
    deferred_ts: int | None,
) -> None:
    """Send a stored e-mail (.eml) through the proxy.

    Headers, text and HTML parts and attachments are taken from FILE.eml (- reads
    stdin); non-ASCII headers are decoded. The id defaults to its Message-ID.
    """
    try:
        payload = message_from_eml(
            file.read(), account_id=account, message_id=message_id, tenant_id=client.tenant
        )
    except EmlError as error:
        raise click.UsageError(f"{file.name}: {error}") from None
    if priority is not None:
        payload["priority"] = int(priority) if priority.isdigit() else priority
    if batch_code is not None:
        payload["batch_code"] = batch_code
    if deferred_ts is not None:
        payload["deferred_ts"] = deferred_ts
    data = client.post("/commands/add-messages", {"messages": [payload]})

    def render(answer: dict[str, Any]) -> None:
        count = len(payload.get("attachments", ()))
        output.done(f"ok: '{payload['id']}' queued ({count} attachment(s))")

    output.show(data, render)
