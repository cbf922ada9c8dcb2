"""Pure bounce classification (SPEC §11.3): DSN, non-standard bounce, or not a bounce.

``classify(raw)`` reads one mail and returns a ``Bounce`` (one block per failed
recipient, plus the returned original's identifiers), a ``NotBounce`` (auto-reply,
success notification, ordinary mail) or an ``Unparseable`` (a delivery report
whose status could not be read). No I/O, no clock; nothing here raises on bad
input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

from proxy.bounce._mail import (
    Original,
    bare_address,
    before_original,
    body_text,
    find_original,
    header_text,
    mail_key,
    parse_bytes,
    part_text,
    squeeze,
)

__all__ = [
    "Bounce",
    "BouncedRecipient",
    "Classification",
    "NotBounce",
    "Original",
    "Unparseable",
    "classify",
    "is_auto_reply",
    "mail_key",
]

HARD = "hard"
SOFT = "soft"
REASON_MAX_CHARS = 500

ENHANCED_CODE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
SMTP_CODE = re.compile(r"(?<![\w.])([45]\d\d)(?![\d.]|\w)")
_SUCCESS_ACTIONS = frozenset({"delivered", "relayed", "expanded"})
_DAEMONS = re.compile(
    r"^(mailer[-_.]?daemon|mail[-_.]?daemon|postmaster|mail delivery (sub)?system)$", re.IGNORECASE
)
_FAILURE_SUBJECT = re.compile(
    r"undeliver|returned (mail|to sender)|delivery status notification"
    r"|mail delivery (failed|failure)|delivery (has )?failed|delivery failure|failure notice"
    r"|non[- ]?delivery|could not be delivered|delayed mail|warning: message .* delayed",
    re.IGNORECASE,
)
_AUTO_SUBJECT = re.compile(
    r"^(auto(matic)?[- ]?(reply|response|antwort|risposta)|out of (the )?office|abwesenheit"
    r"|fuori ufficio|risposta automatica|vacation|absence|ooo\b)",
    re.IGNORECASE,
)
_DELAY_WORDING = re.compile(
    r"\bdelayed\b|still being retried|will (continue to )?(be )?retr|has not (yet )?been delivered",
    re.IGNORECASE,
)
# Lines naming one failed recipient in plain-text bounces: "<a@b>:" (Postfix, qmail) or
# an address alone on an indented line (Exim).
_RECIPIENT_LINE = re.compile(
    r"^(?:[ \t]*<([^<>\s@]+@[^<>\s@]+)>:|[ \t]+([^<>\s@:]+@[^<>\s@:]+?)[ \t]*$)", re.MULTILINE
)


@dataclass(frozen=True, slots=True)
class BouncedRecipient:
    recipient: str | None
    bounce_type: str  # hard | soft
    bounce_code: str  # enhanced status, e.g. "5.1.1" ("5.0.0"/"4.0.0" when none was given)
    smtp_code: str | None  # e.g. "550"
    reason: str  # ≤ 500 chars
    action: str | None = None


@dataclass(frozen=True, slots=True)
class Bounce:
    kind: str  # "dsn" | "non-standard"
    recipients: tuple[BouncedRecipient, ...]
    original: Original


@dataclass(frozen=True, slots=True)
class NotBounce:
    reason: str  # "auto-reply" | "success" | "not a bounce"


@dataclass(frozen=True, slots=True)
class Unparseable:
    reason: str


Classification = Bounce | NotBounce | Unparseable


def classify(raw: bytes) -> Classification:
    """What one mail of the bounce mailbox is (SPEC §11.3)."""
    msg = parse_bytes(raw)
    if not msg.keys():
        return Unparseable("no headers")
    status_part = _delivery_status_part(msg)
    if status_part is not None:
        return _from_dsn(msg, status_part)
    if _is_daemon_sender(msg):
        return _from_text(msg)  # bounces often say "Auto-Submitted: auto-replied" too
    if is_auto_reply(msg):
        return NotBounce("auto-reply")
    if _FAILURE_SUBJECT.search(header_text(msg, "Subject") or ""):
        return _from_text(msg)
    return NotBounce("not a bounce")


def is_auto_reply(msg: Message) -> bool:
    """RFC 3834 auto-replies and the common vacation markers (never DSNs)."""
    auto = (header_text(msg, "Auto-Submitted") or "").lower()
    if auto.startswith("auto-replied"):
        return True
    if header_text(msg, "X-Autoreply") or header_text(msg, "X-Autorespond"):
        return True
    if (header_text(msg, "Precedence") or "").lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.search(header_text(msg, "Subject") or ""))


# -- RFC 3464 -----------------------------------------------------------------------


def _delivery_status_part(msg: Message) -> Message | None:
    for part in msg.walk():
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            return part
    return None


def _status_blocks(part: Message) -> list[Message]:
    """The field blocks of a delivery-status part (per-message block first)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    text = part_text(part).replace("\r\n", "\n")
    return [HeaderParser().parsestr(chunk) for chunk in re.split(r"\n\s*\n", text) if chunk.strip()]


def _from_dsn(msg: Message, part: Message) -> Classification:
    failed: list[BouncedRecipient] = []
    succeeded = 0
    for block in _status_blocks(part):
        recipient = bare_address(
            header_text(block, "Final-Recipient") or header_text(block, "Original-Recipient")
        )
        action = (header_text(block, "Action") or "").lower() or None
        status = header_text(block, "Status")
        if recipient is None and action is None and status is None:
            continue  # the per-message block (Reporting-MTA, Arrival-Date …)
        if action in _SUCCESS_ACTIONS or (status or "").startswith("2."):
            succeeded += 1
            continue
        failed.append(
            _dsn_recipient(recipient, action, status, header_text(block, "Diagnostic-Code"))
        )
    text = body_text(msg)
    original = find_original(msg, text)
    if failed:
        return Bounce("dsn", tuple(failed), original)
    if succeeded:
        return NotBounce("success")
    fallback = _from_text(msg)
    if isinstance(fallback, Bounce) and fallback.recipients[0].smtp_code:
        return Bounce("dsn", fallback.recipients, fallback.original)
    return Unparseable("delivery-status part has no recipient block")


def _dsn_recipient(
    recipient: str | None, action: str | None, status: str | None, diagnostic: str | None
) -> BouncedRecipient:
    detail = _strip_type(diagnostic or "")
    enhanced = _failure_code(status or "") or _failure_code(detail)
    smtp = SMTP_CODE.search(detail)
    code_class = enhanced.group(1) if enhanced else (smtp.group(1)[0] if smtp else None)
    if action == "failed":
        bounce_type = HARD
    elif action == "delayed":
        bounce_type = SOFT
    else:
        bounce_type = SOFT if code_class == "4" else HARD
    reason = detail or f"{action or 'failed'} ({status or 'no status'})"
    return BouncedRecipient(
        recipient=recipient,
        bounce_type=bounce_type,
        bounce_code=_code(enhanced, smtp, bounce_type),
        smtp_code=smtp.group(1) if smtp else None,
        reason=squeeze(reason, REASON_MAX_CHARS),
        action=action,
    )


def _strip_type(diagnostic: str) -> str:
    """``smtp; 550 5.1.1 …`` → ``550 5.1.1 …`` (the diagnostic-type token goes)."""
    head, sep, tail = diagnostic.partition(";")
    if sep and re.fullmatch(r"\s*[A-Za-z][\w-]*\s*", head):
        return squeeze(tail)
    return squeeze(diagnostic)


def _failure_code(text: str) -> re.Match[str] | None:
    """The first enhanced status code of class 4 or 5 (a 2.x.x success code is no failure)."""
    for match in ENHANCED_CODE.finditer(text):
        if match.group(1) != "2":
            return match
    return None


def _start(match: re.Match[str]) -> int:
    return match.start()


def _code(enhanced: re.Match[str] | None, smtp: re.Match[str] | None, bounce_type: str) -> str:
    if enhanced is not None:
        return ".".join(enhanced.groups())
    if smtp is not None:
        return f"{smtp.group(1)[0]}.0.0"
    return "4.0.0" if bounce_type == SOFT else "5.0.0"


# -- non-standard bounces ---------------------------------------------------------------


def _is_daemon_sender(msg: Message) -> bool:
    """The sender is MAILER-DAEMON, postmaster or similar (SPEC §11.3.2)."""
    sender = header_text(msg, "From") or ""
    address = bare_address(sender) or sender
    local = address.partition("@")[0].strip().strip('"')
    display = sender.partition("<")[0].strip().strip('"')
    return bool(_DAEMONS.match(local) or _DAEMONS.match(display))


def _from_text(msg: Message) -> Classification:
    text = body_text(msg).replace("\r\n", "\n")
    notice, _copy = before_original(text)
    original = find_original(msg, text)
    subject = header_text(msg, "Subject") or ""
    is_delay = bool(_DELAY_WORDING.search(subject) or _DELAY_WORDING.search(notice[:2000]))
    segments = _segments(notice)
    if not segments:
        failed = header_text(msg, "X-Failed-Recipients")
        listed = [a.strip() for a in (failed or "").split(",") if "@" in a]
        segments = [(a, notice) for a in listed] or [(None, notice)]
    recipients = tuple(_text_recipient(addr, chunk, is_delay) for addr, chunk in segments)
    return Bounce("non-standard", recipients, original)


def _segments(notice: str) -> list[tuple[str | None, str]]:
    """Split the notice at each line naming a recipient; each piece describes that one.

    A line repeating the address just named (a wrapped diagnostic) is no new piece.
    """
    starts: list[tuple[str, int]] = []
    for mark in _RECIPIENT_LINE.finditer(notice):
        address = (mark.group(1) or mark.group(2)).lower()
        if not starts or starts[-1][0] != address:
            starts.append((address, mark.start()))
    if not starts:
        return []
    ends = [start for _, start in starts[1:]] + [len(notice)]
    return [
        (address, notice[start:end]) for (address, start), end in zip(starts, ends, strict=True)
    ]


def _text_recipient(address: str | None, text: str, is_delay: bool) -> BouncedRecipient:
    enhanced = _failure_code(text)
    smtp = SMTP_CODE.search(text)
    code_class = enhanced.group(1) if enhanced else (smtp.group(1)[0] if smtp else None)
    if code_class is not None:
        bounce_type = SOFT if code_class == "4" else HARD
    else:
        bounce_type = SOFT if is_delay else HARD
    return BouncedRecipient(
        recipient=address,
        bounce_type=bounce_type,
        bounce_code=_code(enhanced, smtp, bounce_type),
        smtp_code=smtp.group(1) if smtp else None,
        reason=_reason(text, min((m for m in (smtp, enhanced) if m), key=_start, default=None)),
    )


def _reason(text: str, code: re.Match[str] | None) -> str:
    """The diagnostic: the paragraph holding the first code, from the code on."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    if code is None:
        return squeeze(paragraphs[0] if paragraphs else text, REASON_MAX_CHARS)
    offset = 0
    for paragraph in re.split(r"(\n\s*\n)", text):
        if offset <= code.start() < offset + len(paragraph):
            return squeeze(paragraph[code.start() - offset :], REASON_MAX_CHARS)
        offset += len(paragraph)
    return squeeze(text[code.start() :], REASON_MAX_CHARS)
