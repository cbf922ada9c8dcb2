"""Pure helpers shared by the bounce and PEC parsers: reading mails leniently.

Mails come from strangers' servers, so nothing here raises on bad input:
undecodable bytes are replaced, malformed headers read as None. Parsing uses
the compat32 policy, which never raises while reading headers.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser
from email.utils import getaddresses, parseaddr

# Where MTAs that do not use RFC 3464 start the copy of the returned message.
ORIGINAL_MARKERS = re.compile(
    r"^.*(?:below this line is a copy of the message"
    r"|this is a copy of (?:the|your) message"
    r"|original message follows"
    r"|header of the original message"
    r"|-{3,} ?original message ?-{3,}"
    r"|undelivered message headers"
    r"|returned message follows).*$",
    re.IGNORECASE | re.MULTILINE,
)
_MESSAGE_ID_LINE = re.compile(r"^Message-ID:[ \t]*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
_GENRO_LINE = re.compile(r"^X-Genro-Mail-ID:[ \t]*(\S[^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_TAGS = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Original:
    """What identifies the message a bounce or receipt is about (SPEC §11.4, §12 rule 4)."""

    message_id: str | None = None
    genro_id: str | None = None


def parse_bytes(raw: bytes) -> Message:
    return message_from_bytes(raw)


def squeeze(text: str, limit: int | None = None) -> str:
    """Collapse whitespace (folded headers, wrapped lines) and cut to ``limit`` characters."""
    flat = _SPACES.sub(" ", text).strip()
    return flat[:limit] if limit is not None else flat


def header_text(msg: Message, name: str) -> str | None:
    """A header's value, RFC 2047-decoded and unfolded; None when absent or empty."""
    value = msg.get(name)
    if value is None:
        return None
    try:
        text = str(make_header(decode_header(str(value))))
    except (ValueError, LookupError, UnicodeError):
        text = str(value)
    text = squeeze(text)
    return text or None


def bare_address(value: str | None) -> str | None:
    """``Name <a@b>`` or ``rfc822; a@b`` → ``a@b``; None when no address is there."""
    if not value:
        return None
    if ";" in value and "@" not in value.partition(";")[0]:
        value = value.partition(";")[2]  # DSN form: "rfc822; ann@example.org"
    address = parseaddr(value.strip())[1].strip()
    return address if "@" in address else None


def addresses(values: list[str]) -> list[str]:
    """Bare addresses of address-list header values, lower-cased."""
    return [addr.lower() for _, addr in getaddresses(values) if "@" in addr]


def normalize_message_id(value: str | None) -> str | None:
    """``<id@host>`` form of a Message-ID (brackets added when missing); None when blank."""
    if not value:
        return None
    text = value.strip()
    match = re.search(r"<[^<>\s]+>", text)
    if match:
        return match.group(0)
    token = text.split()[0] if text.split() else ""
    return f"<{token}>" if token else None


def mail_key(raw: bytes) -> str:
    """The 64-character key a processed mail is remembered by (SPEC §11.2 rule 4, §12 rule 7).

    A SHA-256 of the mail's own Message-ID, so the same bounce or receipt fetched
    again (even re-delivered as a new file) is recognised; of its bytes when it has none.
    """
    message_id = normalize_message_id(
        header_text(BytesHeaderParser().parsebytes(raw), "Message-ID")
    )
    if message_id is not None:
        return hashlib.sha256(b"mid:" + message_id.encode("utf-8", "replace")).hexdigest()
    return hashlib.sha256(b"raw:" + raw).hexdigest()


def part_text(part: Message) -> str:
    """The decoded text of a non-multipart part (transfer encoding and charset undone)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        inner = part.get_payload()
        return inner if isinstance(inner, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def body_text(msg: Message) -> str:
    """The human-readable text of a mail, without attached messages.

    text/plain parts are joined; text/html is used (tags stripped) only when no
    plain part exists. Parts inside ``message/rfc822`` attachments are skipped.
    """
    plain: list[str] = []
    html: list[str] = []
    _collect_text(msg, plain, html)
    if plain:
        return "\n".join(plain)
    return "\n".join(_TAGS.sub(" ", text) for text in html)


def _collect_text(part: Message, plain: list[str], html: list[str]) -> None:
    content_type = part.get_content_type()
    if content_type in ("message/rfc822", "message/global"):
        return
    if part.is_multipart():
        for sub in part.get_payload():
            if isinstance(sub, Message):
                _collect_text(sub, plain, html)
        return
    if part.get_content_disposition() == "attachment":
        return
    if content_type == "text/plain":
        plain.append(part_text(part))
    elif content_type == "text/html":
        html.append(part_text(part))


def before_original(text: str) -> tuple[str, str]:
    """Split a plain-text bounce into (notice, returned copy) at the first copy marker."""
    match = ORIGINAL_MARKERS.search(text)
    if match is None:
        return text, ""
    return text[: match.start()], text[match.end() :]


def find_original(msg: Message, text: str) -> Original:
    """The returned original's identifiers (SPEC §11.4).

    Looked for in an embedded ``message/rfc822`` part, then a
    ``text/rfc822-headers`` part, then in the text after a copy marker (or the
    whole text when there is none).
    """
    for part in msg.walk():
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "message/global") and part.is_multipart():
            inner = part.get_payload(0)
            if isinstance(inner, Message):
                found = _from_headers(inner)
                if found.message_id or found.genro_id:
                    return found
        elif content_type in ("text/rfc822-headers", "message/global-headers"):
            found = _from_headers(HeaderParser().parsestr(part_text(part).lstrip()))
            if found.message_id or found.genro_id:
                return found
    _, copy = before_original(text)
    return from_text(copy or text)


def from_text(text: str) -> Original:
    """Identifiers written as header lines somewhere in ``text``."""
    message_id = _MESSAGE_ID_LINE.search(text)
    genro = _GENRO_LINE.search(text)
    return Original(
        message_id=message_id.group(1) if message_id else None,
        genro_id=genro.group(1).strip() if genro else None,
    )


def _from_headers(headers: Message) -> Original:
    return Original(
        message_id=normalize_message_id(header_text(headers, "Message-ID")),
        genro_id=header_text(headers, "X-Genro-Mail-ID"),
    )
