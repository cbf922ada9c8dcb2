"""Pydantic models that DESCRIBE the add-messages contract (SPEC §3.7, §4.1, §4.2) for OpenAPI.

They do not validate requests: ``proxy.api.validation.parse_batch`` judges each message
on its own and answers per message (SPEC §4.3), which a pydantic model of the whole
batch cannot do. To keep the two from drifting, ``tests/proxy/api/test_openapi.py``
checks that SPEC §4.5's example validates here AND is accepted by ``parse_batch``, and
the shared limits below are imported from ``validation`` and ``attachment_fields``
rather than repeated.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from proxy.api.attachment_fields import MAX_FILENAME_CHARS
from proxy.api.validation import (
    MAX_BATCH_CODE_CHARS,
    MAX_ID_CHARS,
    MAX_MESSAGES,
)

PriorityName = Literal["immediate", "high", "medium", "low"]
Priority = Annotated[
    Annotated[int, Field(ge=0)] | PriorityName | Annotated[str, Field(pattern=r"^[0-9]+$")],
    Field(
        description="0-3 or its name (immediate, high, medium, low); numeric strings are "
        "accepted and values above 3 count as 3 (SPEC §4.4)."
    ),
]
AddressList = Annotated[
    str | list[str],
    Field(description="One address or several, as a list or separated by ',' or ';'."),
]


class AttachmentAuth(BaseModel):
    """Credentials for fetching an attachment; same rules as a tenant's ``client_auth``."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["none", "bearer", "basic"]
    token: str | None = Field(None, description="Required for method 'bearer'.")
    user: str | None = Field(None, description="Required for method 'basic'.")
    password: str | None = Field(None, description="Required for method 'basic'.")


class Attachment(BaseModel):
    """One attachment (SPEC §4.2, §9): unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")

    filename: Annotated[str, Field(min_length=1, max_length=MAX_FILENAME_CHARS)] = Field(
        description="No CR/LF; may carry a {MD5:<hex>} marker (SPEC §9.3)."
    )
    storage_path: Annotated[str, Field(min_length=1)] = Field(
        description="Its meaning depends on fetch_mode (SPEC §9.1)."
    )
    fetch_mode: Literal["endpoint", "http_url", "base64", "filesystem"] | None = Field(
        None, description="Inferred from storage_path when absent."
    )
    mime_type: str | None = Field(None, description="type/subtype; else guessed.")
    content_md5: Annotated[str, Field(pattern=r"^[a-fA-F0-9]{32}$")] | None = None
    auth: AttachmentAuth | None = None


class MessagePayload(BaseModel):
    """One message to send (SPEC §4.1). Unknown top-level fields are ignored, not stored."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)] = Field(
        description="The client's id, unique per tenant; no control characters."
    )
    tenant_id: str | None = Field(
        None, description="Required with the admin token; defaults to a tenant token's own."
    )
    account_id: Annotated[str, Field(min_length=1)]
    from_: Annotated[str, Field(min_length=1)] = Field(
        alias="from", description='One address, optionally with a display name ("A <a@b.c>").'
    )
    from_name: str | None = Field(None, description="Display name when `from` has none.")
    to: AddressList
    cc: AddressList | None = None
    bcc: AddressList | None = Field(None, description="Receive the mail; no Bcc: header.")
    reply_to: AddressList | None = None
    return_path: str | None = Field(None, description="Envelope MAIL FROM only.")
    subject: Annotated[str, Field(min_length=1)]
    body: str = ""
    content_type: Literal["plain", "text/plain", "html", "text/html"] = "plain"
    html: str | bool | None = Field(
        None, description="An HTML alternative to a plain body; true = content_type html."
    )
    headers: dict[str, str | int | float | bool | None] | None = Field(
        None, description="Extra headers; null values are skipped, reserved names refused."
    )
    message_id: str | None = Field(None, description="Message-ID; must contain '@'.")
    attachments: list[Attachment] | None = None
    priority: Priority | None = None
    deferred_ts: float | None = Field(
        None, description="Not sent before this Unix time; floored; past means now."
    )
    batch_code: Annotated[str, Field(max_length=MAX_BATCH_CODE_CHARS)] | None = None


# SPEC §4.5's example request: shown in the documentation and checked by the tests.
EXAMPLE_REQUEST: dict[str, Any] = {
    "default_priority": "high",
    "messages": [
        {
            "id": "WELCOME-77",
            "tenant_id": "acme",
            "account_id": "main",
            "from": "ACME <hello@acme.example>",
            "to": "ann@example.org, bob@example.org",
            "subject": "Welcome aboard",
            "body": "Hi! Your account is ready.",
            "html": "<p>Hi! Your account is <b>ready</b>.</p>",
            "headers": {"List-Unsubscribe": "<mailto:unsub@acme.example>"},
        },
        {
            "id": "INV-2026-0042",
            "tenant_id": "acme",
            "account_id": "main",
            "from": "billing@acme.example",
            "to": ["carl@example.org"],
            "subject": "Invoice 42",
            "body": "See attachment.",
            "priority": "low",
            "batch_code": "INV-2026-01",
            "attachments": [
                {
                    "filename": "invoice-42_{MD5:9e107d9d372bb6826bd81d3542a419d6}.pdf",
                    "storage_path": "doc_id=INV-42",
                }
            ],
        },
        {
            "id": "BAD-1",
            "tenant_id": "acme",
            "account_id": "main",
            "from": "hello@acme.example",
            "to": "missing-domain@",
            "subject": "x",
        },
    ],
}


class AddMessagesRequest(BaseModel):
    """The add-messages body (SPEC §3.7): each message is judged on its own (SPEC §4.3)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [EXAMPLE_REQUEST]})

    messages: Annotated[list[MessagePayload], Field(max_length=MAX_MESSAGES)] = Field(
        description=f"At most {MAX_MESSAGES}; more is refused with 400 and nothing is queued."
    )
    default_priority: Priority | None = Field(
        None, description="Priority of messages that carry none."
    )


def example_request() -> dict[str, Any]:
    """A fresh copy of SPEC §4.5's example request."""
    return copy.deepcopy(EXAMPLE_REQUEST)
