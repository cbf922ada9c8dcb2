"""Pure PEC receipt recognition (SPEC §12): X-Ricevuta or subject → a ``pec_*`` event.

``parse_receipt(raw)`` returns a ``Receipt`` or None (not a receipt: ordinary
certified mail, a transport envelope, anything else). The attached
``daticert.xml`` is read with ``xml.etree`` when present; a document with a
DTD is refused unread (receipts never carry one, and entity tricks live there).
No I/O, no clock.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.message import Message
from email.utils import parsedate_to_datetime

from proxy.bounce._mail import (
    bare_address,
    body_text,
    find_original,
    header_text,
    normalize_message_id,
    parse_bytes,
    squeeze,
)

DETAILS_MAX_CHARS = 500

# X-Ricevuta value → (event type, whether it is final for its recipient) — SPEC §12 rule 3.
RECEIPT_EVENTS: dict[str, tuple[str, bool]] = {
    "accettazione": ("pec_acceptance", False),
    "presa-in-carico": ("pec_relay", False),
    "avvenuta-consegna": ("pec_delivery", True),
    "non-accettazione": ("pec_error", True),
    "errore-consegna": ("pec_error", True),
    "mancata-consegna": ("pec_error", True),
    "preavviso-errore-consegna": ("pec_error", False),
    "rilevazione-virus": ("pec_error", True),
}
# Subject prefixes when X-Ricevuta is missing; longer prefixes first where one extends another.
SUBJECT_PREFIXES: tuple[tuple[str, str], ...] = (
    ("AVVISO DI NON ACCETTAZIONE", "non-accettazione"),
    ("NON ACCETTAZIONE:", "non-accettazione"),
    ("ACCETTAZIONE:", "accettazione"),
    ("POSTA CERTIFICATA: AVVENUTA CONSEGNA", "avvenuta-consegna"),
    ("AVVENUTA CONSEGNA:", "avvenuta-consegna"),
    ("CONSEGNA:", "avvenuta-consegna"),
    ("PRESA IN CARICO:", "presa-in-carico"),
    ("PREAVVISO DI MANCATA CONSEGNA", "preavviso-errore-consegna"),
    ("AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO", "preavviso-errore-consegna"),
    ("AVVISO DI MANCATA CONSEGNA PER VIRUS", "rilevazione-virus"),
    ("AVVISO DI MANCATA CONSEGNA", "errore-consegna"),
    ("ERRORE CONSEGNA:", "errore-consegna"),
    ("MANCATA CONSEGNA:", "errore-consegna"),
    ("RILEVAZIONE VIRUS", "rilevazione-virus"),
    ("PROBLEMA DI SICUREZZA", "rilevazione-virus"),
)
_DETAIL_LINE = re.compile(r"^[ \t]*(?:Errore|Motivo|Causa)[ \t]*:[ \t]*(.+)$", re.IGNORECASE | re.M)


@dataclass(frozen=True, slots=True)
class Daticert:
    """The fields of ``daticert.xml`` the proxy uses."""

    tipo: str | None = None
    errore: str | None = None
    ts: int | None = None
    msgid: str | None = None
    recipient: str | None = None
    details: str | None = None
    identificativo: str | None = None


@dataclass(frozen=True, slots=True)
class Receipt:
    receipt: str  # the X-Ricevuta value (or the one its subject implies)
    event_type: str  # pec_acceptance | pec_relay | pec_delivery | pec_error
    is_final: bool
    reference_ids: tuple[str, ...]  # Message-IDs that may name our message, best first
    genro_id: str | None
    receipt_message_id: str | None
    pec_ts: int | None
    recipient: str | None
    details: str | None


def parse_receipt(raw: bytes) -> Receipt | None:
    msg = parse_bytes(raw)
    kind = receipt_kind(msg)
    if kind is None:
        return None
    event_type, is_final = RECEIPT_EVENTS[kind]
    cert = _daticert_of(msg)
    text = body_text(msg)
    original = find_original(msg, text)
    references = [
        normalize_message_id(header_text(msg, "X-Riferimento-Message-ID")),
        cert.msgid,
        original.message_id,
    ]
    return Receipt(
        receipt=kind,
        event_type=event_type,
        is_final=is_final,
        reference_ids=tuple(dict.fromkeys(ref for ref in references if ref)),
        genro_id=header_text(msg, "X-Genro-Mail-ID") or original.genro_id,
        receipt_message_id=normalize_message_id(header_text(msg, "Message-ID")),
        pec_ts=cert.ts
        or _date_ts(header_text(msg, "X-Data-Ricevuta"))
        or _date_ts(header_text(msg, "Date")),
        recipient=bare_address(header_text(msg, "X-Destinatario")) or cert.recipient,
        details=_details(msg, cert, text),
    )


def receipt_kind(msg: Message) -> str | None:
    """The receipt type from ``X-Ricevuta``, else from the subject (SPEC §12 rule 3)."""
    header = (header_text(msg, "X-Ricevuta") or "").lower()
    if header:
        return header if header in RECEIPT_EVENTS else None
    subject = (header_text(msg, "Subject") or "").upper()
    for prefix, kind in SUBJECT_PREFIXES:
        if subject.startswith(prefix):
            return kind
    return None


def timeout_due(sent_ts: int, timeout_s: int, poll_started_ts: int) -> bool:
    """SPEC §12 rule 6: only a poll that *began* after the deadline may declare a timeout."""
    return poll_started_ts > sent_ts + timeout_s


# -- daticert.xml -------------------------------------------------------------------------


def parse_daticert(data: bytes) -> Daticert | None:
    """The receipt data of a ``daticert.xml``; None when it is not readable XML."""
    if b"<!DOCTYPE" in data.upper() or b"<!ENTITY" in data.upper():
        return None
    try:
        root = ET.fromstring(data)  # noqa: S314 (no DTD, checked above; expat expands nothing else)
    except ET.ParseError:
        return None
    if root.tag != "postacert":
        return None
    dati = root.find("dati")
    if dati is None:
        return Daticert(tipo=root.get("tipo"), errore=root.get("errore"))
    return Daticert(
        tipo=root.get("tipo"),
        errore=root.get("errore"),
        ts=_daticert_ts(dati.find("data")),
        msgid=normalize_message_id(_text(dati, "msgid")),
        recipient=bare_address(_text(dati, "consegna")),
        details=_text(dati, "errore-esteso"),
        identificativo=_text(dati, "identificativo"),
    )


def _daticert_of(msg: Message) -> Daticert:
    for part in msg.walk():
        if part.is_multipart():
            continue
        name = (part.get_filename() or "").lower()
        if name == "daticert.xml":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return parse_daticert(payload) or Daticert()
    return Daticert()


def _text(parent: ET.Element, tag: str) -> str | None:
    node = parent.find(tag)
    if node is None or node.text is None:
        return None
    return squeeze(node.text) or None


def _daticert_ts(data: ET.Element | None) -> int | None:
    """``<data zona="+0100"><giorno>dd/mm/yyyy</giorno><ora>hh:mm:ss</ora></data>`` → epoch.

    The zone may stand on ``<ora>`` instead (SPEC §12.5 writes ``<ora zona=…>``); a zone on
    ``<ora>`` wins over one on ``<data>``. No zone at all means UTC.
    """
    if data is None:
        return None
    day, hour = _text(data, "giorno"), _text(data, "ora")
    ora = data.find("ora")
    zone = (ora.get("zona") if ora is not None else None) or data.get("zona")
    if not day or not hour:
        return None
    try:
        local = datetime.strptime(f"{day} {hour}", "%d/%m/%Y %H:%M:%S")  # noqa: DTZ007 (zone below)
    except ValueError:
        return None
    return int(local.replace(tzinfo=_zone(zone)).timestamp())


def _zone(value: str | None) -> timezone:
    match = re.fullmatch(r"\s*([+-])(\d\d):?(\d\d)\s*", value or "")
    if match is None:
        return UTC
    sign = 1 if match.group(1) == "+" else -1
    return timezone(sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3))))


def _date_ts(value: str | None) -> int | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def _details(msg: Message, cert: Daticert, text: str) -> str | None:
    """The error text: X-Errore, <errore-esteso>, or Errore:/Motivo:/Causa: body lines."""
    found = header_text(msg, "X-Errore") or cert.details
    if not found:
        lines = [match.group(1) for match in _DETAIL_LINE.finditer(text)]
        found = " ".join(lines) if lines else None
    return squeeze(found, DETAILS_MAX_CHARS) if found else None
