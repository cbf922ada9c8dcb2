"""Build the bytes of one outgoing message from a stored payload (SPEC §6.3).

Pure: no network, no database, no clock (the send time is ``now_ts``). This is
the one place that turns a payload into MIME.

Why the compat32 API (``email.message.Message``, ``email.utils``) and not
``EmailMessage`` with the ``default`` policy: the latter is ~40x slower and MIME
building decides throughput (STYLE §9). Correctness is kept by hand instead:

* header text that is not plain, single-spaced printable ASCII is written as
  RFC 2047 ``B`` encoded words, so CR/LF or odd whitespace in a value can never
  start a new header line and parses back unchanged;
* text bodies are 7bit when they are short-lined ASCII, otherwise
  quoted-printable or base64, whichever is shorter (8bit is not safe on every
  server);
* multipart boundaries start with ``=_``, which neither quoted-printable nor
  base64 can produce, and a 7bit part never contains it, so no collision check
  is needed and the output is deterministic for a given payload and ``now_ts``.

Addresses that are not ASCII are written raw in UTF-8 (RFC 6532); such a
message needs SMTPUTF8, which ``BuiltMessage.needs_smtputf8`` tells the client.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as email_policy
from email.generator import BytesGenerator
from email.message import Message
from email.utils import format_datetime, formataddr, getaddresses, parseaddr
from typing import Any

_POLICY = email_policy.compat32.clone(linesep="\r\n")
_TEXT_MAX_LINE = 998
_HEADER_LINE = 78
# Before a run of spaces that follows a non-space and precedes one: folding
# there never leaves a line of only whitespace.
_FOLD_POINT = re.compile(r"(?<=[^ ])(?= +[^ ])")
# An encoded word is at most 75 characters; "=?utf-8?b?" and "?=" take 12.
_EW_MAX = 75
_EW_OVERHEAD = 12
_BOUNDARY_MARK = "=_"
_SIMPLE_TEXT = re.compile(r"[!-~]+(?: [!-~]+)*")
_PRINTABLE_ASCII = re.compile(r"[ -~]*")
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
_RFC2231_SAFE = frozenset(
    b"!#$&+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
_RFC2231_SEGMENT = 60
RESERVED_HEADERS = frozenset(
    {"content-type", "content-transfer-encoding", "mime-version", "bcc", "x-genro-mail-id"}
)


@dataclass(frozen=True, slots=True)
class AttachmentContent:
    """A fetched attachment, ready to be wrapped in a MIME part."""

    filename: str  # already cleaned
    mime_type: str  # "type/subtype"
    content: bytes


@dataclass(frozen=True, slots=True)
class BuiltMessage:
    """What the SMTP client needs: envelope plus the flattened message."""

    envelope_from: str  # bare address
    recipients: tuple[str, ...]  # to+cc+bcc, de-duplicated case-insensitively, order kept
    data: bytes  # the full message, CRLF line endings
    message_id: str  # "<...>" form, the value written in Message-ID
    needs_smtputf8: bool  # true when any envelope address is non-ASCII


def build(
    payload: Mapping[str, Any],
    *,
    pk: str,
    now_ts: int,
    bounce_return_path: str | None = None,
    attachments: Sequence[AttachmentContent] = (),
) -> BuiltMessage:
    """Build one message; ``payload`` must already be validated and normalised.

    ``pk`` (the proxy's own message key) names the default Message-ID and seeds
    the multipart boundaries, so the same inputs always give the same bytes.
    """
    from_name, from_addr = parseaddr(payload["from"])
    to, cc, bcc = (_pairs(payload.get(field)) for field in ("to", "cc", "bcc"))
    envelope_from = _bare(payload.get("return_path")) or _bare(bounce_return_path) or from_addr
    recipients = _dedupe(addr for _, addr in (*to, *cc, *bcc))
    headers = _headers(
        payload,
        sender=(from_name or payload.get("from_name") or "", from_addr),
        to=to,
        cc=cc,
        default_message_id=f"<{pk}@{_id_domain(from_addr)}>",
        now_ts=now_ts,
    )
    root = Message()
    for name, value in headers.values():
        _add(root, name, value)
    _fill_body(root, payload, attachments, _boundary_seed(pk, now_ts))
    return BuiltMessage(
        envelope_from=envelope_from,
        recipients=recipients,
        data=_flatten(root),
        message_id=headers["message-id"][1],
        needs_smtputf8=not all(a.isascii() for a in (envelope_from, *recipients)),
    )


def _headers(
    payload: Mapping[str, Any],
    *,
    sender: tuple[str, str],
    to: list[tuple[str, str]],
    cc: list[tuple[str, str]],
    default_message_id: str,
    now_ts: int,
) -> dict[str, tuple[str, str]]:
    """Top-level headers by lower-cased name, in SPEC §6.3.4 order; custom ones last.

    A custom header replaces a same-named one in place (so a custom Message-ID
    is also the one reported); reserved names are ignored, never overridden.
    """
    headers: dict[str, tuple[str, str]] = {}

    def put(name: str, value: str) -> None:
        headers[name.lower()] = (name, value)

    put("From", _address_list([sender]))
    put("To", _address_list(to))
    if cc:
        put("Cc", _address_list(cc))
    if reply_to := _pairs(payload.get("reply_to")):
        put("Reply-To", _address_list(reply_to))
    put("Subject", _unstructured("Subject", payload.get("subject", "")))
    put("Date", format_datetime(datetime.fromtimestamp(now_ts, tz=UTC)))
    put("Message-ID", payload.get("message_id") or default_message_id)
    put("MIME-Version", "1.0")
    put("X-Genro-Mail-ID", _custom_value("X-Genro-Mail-ID", str(payload["id"])))
    for name, value in (payload.get("headers") or {}).items():
        if value is not None and name.lower() not in RESERVED_HEADERS:
            put(name, _custom_value(name, str(value)))
    return headers


# -- addresses -----------------------------------------------------------------


def _pairs(values: str | Iterable[str] | None) -> list[tuple[str, str]]:
    """(display name, address) pairs of a field, dropping empty addresses."""
    if not values:
        return []
    if isinstance(values, str):
        values = [values]
    return [(name, addr) for name, addr in getaddresses(list(values)) if addr]


def _bare(value: str | None) -> str:
    """Return the bare address of an envelope value that may carry brackets or a name."""
    if not value:
        return ""
    return parseaddr(value)[1] or value


def _dedupe(addresses: Iterable[str]) -> tuple[str, ...]:
    """Keep the first spelling of each address, compared case-insensitively."""
    seen: dict[str, str] = {}
    for addr in addresses:
        seen.setdefault(addr.lower(), addr)
    return tuple(seen.values())


def _id_domain(address: str) -> str:
    """Return an ASCII domain for a generated Message-ID (IDNA when possible)."""
    domain = address.rpartition("@")[2] or "localhost"
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "localhost"


def _address_list(pairs: Sequence[tuple[str, str]]) -> str:
    """Format an address header value; raw UTF-8 when an address needs it.

    A non-ASCII address cannot be RFC 2047-encoded, so the value is handed to
    the generator as surrogate-escaped bytes, which compat32 writes verbatim.
    """
    value = ", ".join(_address(name, addr) for name, addr in pairs)
    if value.isascii():
        return value
    return value.encode("utf-8").decode("ascii", "surrogateescape")


def _address(name: str, addr: str) -> str:
    if not name:
        return addr
    if _is_simple(name) and addr.isascii():
        return formataddr((name, addr))
    # One encoded word, never split: parsers disagree on whitespace between
    # adjacent encoded words inside a display name.
    return f"{_encoded_word(name.encode('utf-8'))} <{addr}>"


# -- header text ---------------------------------------------------------------


def _is_simple(text: str) -> bool:
    """Single-spaced printable ASCII that a parser reads back unchanged."""
    return _SIMPLE_TEXT.fullmatch(text) is not None and "=?" not in text


def _unstructured(name: str, text: str) -> str:
    """Encode a Subject-like value: plain when simple, else RFC 2047 words."""
    if not text or _is_simple(text):
        return text
    return _encoded_words(text, len(name) + 2)


def _custom_value(name: str, text: str) -> str:
    """Encode a custom header value; printable ASCII is kept (it may be structured)."""
    if _PRINTABLE_ASCII.fullmatch(text):
        return text
    return _encoded_words(text, len(name) + 2)


def _encoded_word(data: bytes) -> str:
    return "=?utf-8?b?" + binascii.b2a_base64(data, newline=False).decode("ascii") + "?="


def _encoded_words(text: str, used: int) -> str:
    """RFC 2047 words split on UTF-8 character boundaries, each fitting a 78-column line.

    ``used`` is the width of ``Name: ``, which the first word shares its line with.
    """
    data = text.encode("utf-8")
    words = []
    start, size = 0, len(data)
    room = min(_EW_MAX, _HEADER_LINE - used)
    while start < size:
        chunk = max((room - _EW_OVERHEAD) // 4 * 3, 3)  # base64: 3 bytes per 4 characters
        end = min(start + chunk, size)
        while end < size and (data[end] & 0xC0) == 0x80:  # continuation byte
            end -= 1
        if end == start:  # one character wider than the room: take it whole
            end = start + 1
            while end < size and (data[end] & 0xC0) == 0x80:
                end += 1
        words.append(_encoded_word(data[start:end]))
        start = end
        room = _EW_MAX  # continuation lines start with one space
    return " ".join(words)


# -- body ----------------------------------------------------------------------


def _fill_body(
    root: Message,
    payload: Mapping[str, Any],
    attachments: Sequence[AttachmentContent],
    seed: str,
) -> None:
    """Give ``root`` its content: text, alternative and/or mixed (SPEC §6.3.3)."""
    body = payload.get("body") or ""
    html = payload.get("html")
    if isinstance(html, str):
        main = [("plain", body), ("html", html)]
    elif payload.get("content_type", "plain") in ("html", "text/html"):
        main = [("html", body)]
    else:
        main = [("plain", body)]

    if not attachments:
        _fill_main(root, main, seed)
        return
    first = Message()
    _fill_main(first, main, seed)
    parts = [first]
    parts += [_attachment(att) for att in attachments]
    _fill_multipart(root, "mixed", parts, f"{_BOUNDARY_MARK}{seed}_m")


def _fill_main(target: Message, main: list[tuple[str, str]], seed: str) -> None:
    if len(main) == 1:
        _fill_text(target, *main[0])
        return
    parts = []
    for subtype, text in main:
        part = Message()
        _fill_text(part, subtype, text)
        parts.append(part)
    _fill_multipart(target, "alternative", parts, f"{_BOUNDARY_MARK}{seed}_a")


def _fill_text(target: Message, subtype: str, text: str) -> None:
    """Choose the transfer encoding: 7bit, else the shorter of QP and base64."""
    _add(target, "Content-Type", f'text/{subtype}; charset="utf-8"')
    if text.isascii() and _BOUNDARY_MARK not in text and _short_lines(text):
        _add(target, "Content-Transfer-Encoding", "7bit")
        target.set_payload(text)  # the generator writes its line breaks as CRLF
        return
    data = text.encode("utf-8")
    ascii_count = len(text.encode("ascii", "ignore"))
    qp_estimate = ascii_count + 3 * (len(data) - ascii_count)
    if qp_estimate <= len(data) * 4 // 3:
        # Line breaks stay unencoded and become CRLF hard breaks on output.
        lf_text = _LINE_BREAKS.sub("\n", text).encode("utf-8")
        _add(target, "Content-Transfer-Encoding", "quoted-printable")
        target.set_payload(binascii.b2a_qp(lf_text, istext=True).decode("ascii"))
    else:
        # base64 carries the bytes verbatim, so give it the canonical CRLF form.
        _add(target, "Content-Transfer-Encoding", "base64")
        target.set_payload(_b64_wrapped(_LINE_BREAKS.sub("\r\n", text).encode("utf-8")))


def _short_lines(text: str) -> bool:
    return all(len(line) <= _TEXT_MAX_LINE for line in _LINE_BREAKS.split(text))


def _b64_wrapped(data: bytes) -> str:
    return base64.encodebytes(data).decode("ascii")  # 76-character lines (RFC 2045 §6.8)


def _fill_multipart(target: Message, subtype: str, parts: list[Message], boundary: str) -> None:
    _add(target, "Content-Type", f'multipart/{subtype}; boundary="{boundary}"')
    target.set_payload(parts)


def _attachment(att: AttachmentContent) -> Message:
    """Make a base64 part with ``Content-Disposition: attachment`` (SPEC §6.3.6)."""
    mime_type = att.mime_type if att.mime_type.count("/") == 1 else "application/octet-stream"
    part = Message()
    _add(part, "Content-Type", f"{mime_type}; {_param('name', att.filename)}")
    _add(part, "Content-Transfer-Encoding", "base64")
    _add(part, "Content-Disposition", f"attachment; {_param('filename', att.filename)}")
    part.set_payload(_b64_wrapped(att.content))
    return part


def _param(key: str, value: str) -> str:
    """Format a MIME parameter; RFC 2231 (continued when long) for non-ASCII.

    compat32's own RFC 2231 support writes one unbounded line and quotes the
    extended value, which RFC 2231 does not allow; this writes it correctly.
    """
    if _PRINTABLE_ASCII.fullmatch(value):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{key}="{escaped}"'
    segments = _rfc2231_segments(value)
    if len(segments) == 1:
        return f"{key}*=utf-8''{segments[0]}"
    first = f"{key}*0*=utf-8''{segments[0]}"
    rest = [f"{key}*{i}*={seg}" for i, seg in enumerate(segments[1:], start=1)]
    return "; ".join([first, *rest])


def _rfc2231_segments(value: str) -> list[str]:
    """Percent-encoded UTF-8, cut between characters into short segments."""
    segments, current = [], ""
    for char in value:
        encoded = "".join(
            chr(byte) if byte in _RFC2231_SAFE else f"%{byte:02X}" for byte in char.encode()
        )
        if current and len(current) + len(encoded) > _RFC2231_SEGMENT:
            segments.append(current)
            current = ""
        current += encoded
    segments.append(current)
    return segments


class _Folded:
    """A header value we folded ourselves, so compat32 skips its slow ``Header`` folding.

    compat32 treats any non-str value as Header-like and calls ``encode``; our
    values are already ASCII (or deliberate raw UTF-8), so folding is only
    breaking long lines before a space, which unfolding undoes exactly.
    """

    __slots__ = ("_text", "_used")

    def __init__(self, name: str, text: str) -> None:
        self._text = text
        self._used = len(name) + 2

    def __str__(self) -> str:
        return self._text

    def encode(self, linesep: str = "\n", maxlinelen: int | None = None, **_: Any) -> str:
        """Return the value with folds before spaces wherever a line would pass 78."""
        limit = maxlinelen or _HEADER_LINE
        text = self._text
        if self._used + len(text) <= limit:
            return text
        lines, line, width = [], "", self._used
        for piece in _FOLD_POINT.split(text):
            if line and width + len(piece) > limit:
                lines.append(line)
                line, width = piece, len(piece)
            else:
                line += piece
                width += len(piece)
        lines.append(line)
        return linesep.join(lines)


def _add(msg: Message, name: str, value: str) -> None:
    msg[name] = _Folded(name, value)


# -- output --------------------------------------------------------------------


def _boundary_seed(pk: str, now_ts: int) -> str:
    return hashlib.blake2b(f"{pk}:{now_ts}".encode(), digest_size=10).hexdigest()


def _flatten(root: Message) -> bytes:
    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=_POLICY).flatten(root, linesep="\r\n")
    return out.getvalue()
