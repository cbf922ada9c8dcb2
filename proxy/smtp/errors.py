"""What one SMTP send attempt can end as, and the rules that classify it (SPEC §6.5).

Pure: no aiosmtplib, no network. ``client.py`` translates the library's
exceptions into these values at one boundary; everything else (actors, store,
reports) sees only this tree::

    Outcome
    ├── Sent(smtp_code, smtp_response, refused)    at least one recipient accepted;
    │                                              ``refused`` lists the others (§6.3.2)
    ├── TempFailure(description, reason, code)     retry later (§6.5.1)
    │   ├── reason="smtp"         4xx reply, or a reply that is not a definite 5xx
    │   ├── reason="connection"   refused/reset/closed, DNS, timeout, TLS handshake
    │   │                         or certificate, STARTTLS required but not offered
    │   └── reason="attachment"   an attachment fetch or large-file upload failed
    │                             (built by ``proxy/attachments/errors.py``)
    └── PermFailure(description, code)             give up now (§6.5.2)
        ├── 5xx reply (535 authentication failure included)
        ├── every recipient refused with 5xx       (§6.5.3; any 4xx makes it temporary)
        └── SMTPUTF8 needed but not offered

Descriptions are what the ``error`` event and reports carry: ``SMTP <code>:
<text>`` for a reply, otherwise a sentence naming the cause. They never hold
passwords or message bodies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

TempReason = Literal["smtp", "connection", "attachment"]

SMTPUTF8_UNSUPPORTED = "server does not support SMTPUTF8"
STARTTLS_UNSUPPORTED = "STARTTLS required but not offered by server"


@dataclass(frozen=True, slots=True)
class Refusal:
    """One recipient refused at RCPT while others were accepted (or all refused)."""

    address: str
    smtp_code: int
    message: str


@dataclass(frozen=True, slots=True)
class Sent:
    """The server accepted the message data for at least one recipient."""

    smtp_code: int
    smtp_response: str
    refused: tuple[Refusal, ...] = ()


@dataclass(frozen=True, slots=True)
class TempFailure:
    """Worth another attempt later; ``smtp_code`` is set when a server replied."""

    description: str
    reason: TempReason = "smtp"
    smtp_code: int | None = None


@dataclass(frozen=True, slots=True)
class PermFailure:
    """Retrying cannot help: the message ends as ``error``."""

    description: str
    smtp_code: int | None = None


Outcome = Sent | TempFailure | PermFailure
Failure = TempFailure | PermFailure


def is_permanent_code(code: int) -> bool:
    """Only a definite 5xx is permanent; anything else may succeed later."""
    return 500 <= code <= 599


def describe_reply(code: int, text: str) -> str:
    """Render a server reply the way SPEC §6.5.6 writes it: ``SMTP 550: <text>``."""
    return f"SMTP {code}: {' '.join(text.split())}"


def reply_failure(code: int, text: str) -> Failure:
    """Classify a negative server reply: 5xx permanent, everything else temporary.

    Odd codes (a 2xx/3xx where a failure was seen, or a malformed reply) are
    treated as temporary so that a confused server never loses a message.
    """
    description = describe_reply(code, text)
    if is_permanent_code(code):
        return PermFailure(description, smtp_code=code)
    return TempFailure(description, reason="smtp", smtp_code=code)


def connection_failure(description: str) -> TempFailure:
    """Describe a failure with no server reply behind it: always temporary (§6.5.1)."""
    return TempFailure(description, reason="connection")


def all_refused(refusals: Sequence[Refusal]) -> Failure:
    """Classify an attempt whose every recipient was refused (§6.5.3).

    Permanent only when every refusal is 5xx: a single 4xx means that recipient
    may accept later, so the whole message is retried. The reported code is the
    first refusal's whose class decided the outcome.
    """
    if not refusals:
        raise ValueError("all_refused needs at least one refusal")
    if len(refusals) == 1:
        description = describe_reply(refusals[0].smtp_code, refusals[0].message)
    else:
        detail = "; ".join(
            f"{r.address}: {describe_reply(r.smtp_code, r.message)}" for r in refusals
        )
        description = f"all recipients refused: {detail}"
    temporary = [r for r in refusals if not is_permanent_code(r.smtp_code)]
    if temporary:
        return TempFailure(description, reason="smtp", smtp_code=temporary[0].smtp_code)
    return PermFailure(description, smtp_code=refusals[0].smtp_code)
