"""Turn an ``.eml`` file into one add-messages payload (SPEC §4.1, §4.2); pure.

Headers become fields (From, To, Cc, Bcc, Reply-To, Subject, Message-ID), decoded
from RFC 2047 so the proxy can encode them again; other headers that describe the
message (In-Reply-To, References, List-*, X-*) go to ``headers``, while transport
and MIME-structure headers (Received, DKIM-Signature, Content-Type…) are dropped,
since the proxy builds a new MIME tree. The first text/plain and text/html parts
become ``body`` and ``html``; every other leaf part (inline images and attached
messages included) becomes a base64 attachment. Content-ID links of inline images
are not kept: the attachment object has no field for them.
"""

from __future__ import annotations

import base64
import email
import email.policy
import mimetypes
import re
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any, cast

ADDRESS_FIELDS = (("To", "to"), ("Cc", "cc"), ("Bcc", "bcc"), ("Reply-To", "reply_to"))
DROPPED_HEADERS = frozenset(
    {"from", "to", "cc", "bcc", "reply-to", "subject", "message-id", "date", "sender"}
    | {"mime-version", "content-type", "content-transfer-encoding", "content-disposition"}
    | {"content-id", "content-description", "content-language", "content-length"}
    | {"received", "return-path", "delivered-to", "x-original-to", "envelope-to"}
    | {"dkim-signature", "domainkey-signature", "arc-seal", "arc-message-signature"}
    | {"arc-authentication-results", "authentication-results", "received-spf"}
    | {"x-genro-mail-id", "status", "x-status", "x-uid", "x-keywords", "x-mozilla-status"}
    | {"x-mozilla-status2", "lines"}
)
_LINE_BREAK = re.compile(r"\s*[\r\n]+\s*")


class EmlError(ValueError):
    """The file cannot become a message (no id, no From)."""


def message_from_eml(
    data: bytes,
    *,
    account_id: str,
    message_id: str | None = None,
    tenant_id: str | None = None,
) -> dict[str, Any]:
    """The add-messages payload for ``data``; the id defaults to the file's Message-ID."""
    msg = cast(EmailMessage, email.message_from_bytes(data, policy=email.policy.default))
    header_id = _text(msg.get("Message-ID")).strip()
    client_id = message_id or header_id.strip("<>").strip()
    if not client_id:
        raise EmlError("the file has no Message-ID header: give --id")
    sender = _addresses(msg.get("From"))
    if not sender:
        raise EmlError("the file has no From header")
    payload: dict[str, Any] = {"id": client_id, "account_id": account_id}
    if tenant_id is not None:
        payload["tenant_id"] = tenant_id
    payload |= {"from": sender[0] if len(sender) == 1 else ", ".join(sender)}
    for header, field in ADDRESS_FIELDS:
        found = _addresses(msg.get(header))
        if found:
            payload[field] = found
    payload["subject"] = _text(msg.get("Subject"))
    if header_id:
        payload["message_id"] = header_id
    payload |= _bodies(msg)
    extra = _extra_headers(msg)
    if extra:
        payload["headers"] = extra
    attachments = [_attachment(part, n) for n, part in enumerate(_attachment_parts(msg), 1)]
    if attachments:
        payload["attachments"] = attachments
    return payload


def _text(header: Any) -> str:
    return "" if header is None else _LINE_BREAK.sub(" ", str(header)).strip()


def _addresses(header: Any) -> list[str]:
    if header is None:
        return []
    found = [str(address) for address in getattr(header, "addresses", ())]
    return found or ([_text(header)] if _text(header) else [])


def _body_parts(msg: EmailMessage) -> tuple[EmailMessage | None, EmailMessage | None]:
    return msg.get_body(preferencelist=("plain",)), msg.get_body(preferencelist=("html",))


def _bodies(msg: EmailMessage) -> dict[str, Any]:
    text_part, html_part = _body_parts(msg)
    text = text_part.get_content() if text_part is not None else None
    html = html_part.get_content() if html_part is not None else None
    if text is not None and html is not None:
        return {"body": text, "html": html}
    if html is not None:
        return {"body": html, "content_type": "html"}
    return {"body": text or ""}


def _extra_headers(msg: EmailMessage) -> dict[str, str]:
    return {
        name: _text(value)
        for name, value in msg.items()
        if name.lower() not in DROPPED_HEADERS and _text(value)
    }


def _leaves(part: EmailMessage) -> Iterator[EmailMessage]:
    if part.get_content_maintype() == "multipart":
        for sub in part.iter_parts():
            yield from _leaves(sub)  # type: ignore[arg-type]
    else:
        yield part


def _attachment_parts(msg: EmailMessage) -> Iterator[EmailMessage]:
    bodies = [part for part in _body_parts(msg) if part is not None]
    for leaf in _leaves(msg):
        if not any(leaf is body for body in bodies):
            yield leaf


def _attachment(part: EmailMessage, number: int) -> dict[str, Any]:
    mime_type = part.get_content_type()
    if mime_type == "message/rfc822":
        inner = part.get_payload(0)
        data = inner.as_bytes() if isinstance(inner, email.message.Message) else b""
    else:
        data = part.get_payload(decode=True) or b""
    filename = _text(part.get_filename())
    if not filename:
        filename = f"attachment-{number}{mimetypes.guess_extension(mime_type) or '.bin'}"
    return {
        "filename": filename,
        "storage_path": "base64:" + base64.b64encode(data).decode("ascii"),
        "fetch_mode": "base64",
        "mime_type": mime_type,
    }
