"""PEC receipts (SPEC §12): recognition, event mapping, daticert.xml, timestamps, details."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.bounce.pec import Receipt, parse_daticert, parse_receipt, timeout_due

FIXTURES = Path(__file__).parent / "fixtures"
ORIGINAL = "<5a5a5a5a-0000-4000-8000-000000000015@pec.acme.example>"


def receipt(name: str) -> Receipt:
    found = parse_receipt((FIXTURES / name).read_bytes())
    assert found is not None, name
    return found


# fixture → (X-Ricevuta, event, final, pec_ts, recipient, details)
RECEIPTS = {
    "pec_accettazione.eml": ("accettazione", "pec_acceptance", False, 1770022805, None, None),
    "pec_presa_in_carico.eml": ("presa-in-carico", "pec_relay", False, 1770022807, None, None),
    "pec_avvenuta_consegna.eml": (
        "avvenuta-consegna",
        "pec_delivery",
        True,
        1770022809,
        "cliente@pec.cliente.example",
        None,
    ),
    "pec_errore_consegna.eml": (
        "errore-consegna",
        "pec_error",
        True,
        1770022890,
        "errato@pec.cliente.example",
        "5.1.1 - Utente sconosciuto: la casella errato@pec.cliente.example non esiste",
    ),
    "pec_non_accettazione.eml": (
        "non-accettazione",
        "pec_error",
        True,
        1770022804,
        None,
        "Destinatario non valido: cliente@@pec.cliente.example",
    ),
    "pec_preavviso_errore_consegna.eml": (
        "preavviso-errore-consegna",
        "pec_error",
        False,
        1770066005,
        "lento@pec.lento.example",
        "nessuna ricevuta di consegna entro 12 ore dall'invio",
    ),
    "pec_rilevazione_virus.eml": (
        "rilevazione-virus",
        "pec_error",
        True,
        1770022808,
        None,
        "Virus rilevato: Eicar-Test-Signature",
    ),
}


@pytest.mark.parametrize("name", sorted(RECEIPTS))
def test_receipt_maps_to_its_event_with_time_recipient_and_details(name: str) -> None:
    kind, event, final, ts, recipient, details = RECEIPTS[name]
    found = receipt(name)
    assert (found.receipt, found.event_type, found.is_final) == (kind, event, final)
    assert found.pec_ts == ts  # daticert <data zona="+0100">: 10:00:05 local = 09:00:05 UTC
    assert found.recipient == recipient
    assert found.details == details
    assert found.reference_ids[0] == ORIGINAL  # X-Riferimento-Message-ID first
    assert found.receipt_message_id is not None


def test_receipt_times_are_utc_epoch_seconds() -> None:
    # 02/02/2026 10:00:05 at +0100 is 2026-02-02T09:00:05Z.
    assert receipt("pec_accettazione.eml").pec_ts == 1770022805


def test_delivery_receipt_carries_the_original_and_its_client_id() -> None:
    found = receipt("pec_avvenuta_consegna.eml")
    assert found.genro_id == "PEC-15"  # from the attached postacert.eml
    assert found.reference_ids == (ORIGINAL,)


def test_receipt_without_x_ricevuta_is_recognised_by_its_subject() -> None:
    found = receipt("pec_subject_only_accettazione.eml")
    assert (found.receipt, found.event_type) == ("accettazione", "pec_acceptance")
    assert found.pec_ts == 1770103798  # X-Data-Ricevuta, 08:29:58 +0100
    assert found.reference_ids == ("<77777777-aaaa-4bbb-8ccc-000000000007@pec.acme.example>",)


def test_certified_mail_envelope_and_bounces_are_not_receipts() -> None:
    assert parse_receipt((FIXTURES / "pec_posta_certificata_envelope.eml").read_bytes()) is None
    assert parse_receipt((FIXTURES / "postfix_dsn_user_unknown.eml").read_bytes()) is None


def test_unknown_x_ricevuta_value_is_not_a_receipt() -> None:
    assert parse_receipt(b"X-Ricevuta: something-else\r\nSubject: ACCETTAZIONE: x\r\n\r\n") is None


@pytest.mark.parametrize(
    ("subject", "kind"),
    [
        ("NON ACCETTAZIONE: x", "non-accettazione"),
        ("AVVISO DI NON ACCETTAZIONE: x", "non-accettazione"),
        ("POSTA CERTIFICATA: AVVENUTA CONSEGNA x", "avvenuta-consegna"),
        ("AVVENUTA CONSEGNA: x", "avvenuta-consegna"),
        ("PRESA IN CARICO: x", "presa-in-carico"),
        ("ERRORE CONSEGNA: x", "errore-consegna"),
        ("MANCATA CONSEGNA: x", "errore-consegna"),
        ("AVVISO DI MANCATA CONSEGNA: x", "errore-consegna"),
        ("PREAVVISO DI MANCATA CONSEGNA: x", "preavviso-errore-consegna"),
        ("RILEVAZIONE VIRUS: x", "rilevazione-virus"),
        ("accettazione: lower case too", "accettazione"),
    ],
)
def test_subject_prefixes(subject: str, kind: str) -> None:
    raw = f"Subject: {subject}\r\nMessage-ID: <r@pec.example>\r\n\r\nErrore: boom\r\n".encode()
    found = parse_receipt(raw)
    assert found is not None
    assert found.receipt == kind


def test_details_come_from_body_lines_when_nothing_else_has_them() -> None:
    raw = b"X-Ricevuta: errore-consegna\r\n\r\nTesto.\r\nMotivo: casella piena\r\nCausa: quota\r\n"
    found = parse_receipt(raw)
    assert found is not None
    assert found.details == "casella piena quota"


def test_daticert_with_a_dtd_is_refused_unread() -> None:
    evil = b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaa">]><postacert tipo="x"/>'
    assert parse_daticert(evil) is None
    assert parse_daticert(b"<not-xml") is None
    assert parse_daticert(b"<other/>") is None


def test_daticert_fields() -> None:
    data = (
        b'<postacert tipo="errore-consegna" errore="no-dest"><dati>'
        b'<data zona="-0230"><giorno>31/12/2025</giorno><ora>23:00:00</ora></data>'
        b"<msgid>abc@host</msgid><consegna>x@pec.example</consegna>"
        b"<errore-esteso> 5.1.1  Utente\n sconosciuto </errore-esteso></dati></postacert>"
    )
    cert = parse_daticert(data)
    assert cert is not None
    assert cert.tipo == "errore-consegna"
    assert cert.errore == "no-dest"
    assert cert.ts == 1767231000  # 2026-01-01T01:30:00Z
    assert cert.msgid == "<abc@host>"
    assert cert.recipient == "x@pec.example"
    assert cert.details == "5.1.1 Utente sconosciuto"


@pytest.mark.parametrize(
    ("data", "ts"),
    [
        ('<data zona="+0100"><giorno>25/11/2026</giorno><ora>01:30:00</ora></data>', 1795566600),
        ('<data><giorno>25/11/2026</giorno><ora zona="+0200">01:30:00</ora></data>', 1795563000),
        (
            '<data zona="+0100"><giorno>25/11/2026</giorno><ora zona="+0200">01:30:00</ora></data>',
            1795563000,
        ),
        ("<data><giorno>25/11/2026</giorno><ora>01:30:00</ora></data>", 1795570200),  # UTC
    ],
)
def test_the_receipt_zone_may_stand_on_data_or_on_ora(data: str, ts: int) -> None:
    """SPEC §12.5 writes ``<ora zona=…>``; real receipts put the zone on ``<data>``."""
    xml = f'<postacert tipo="accettazione"><dati>{data}<msgid>a@b</msgid></dati></postacert>'
    cert = parse_daticert(xml.encode())
    assert cert is not None
    assert cert.ts == ts


def test_timeout_is_due_only_for_a_poll_that_began_after_the_deadline() -> None:
    assert not timeout_due(sent_ts=1000, timeout_s=1800, poll_started_ts=2800)
    assert timeout_due(sent_ts=1000, timeout_s=1800, poll_started_ts=2801)


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(sorted(p.name for p in FIXTURES.glob("pec_*.eml"))), data=st.data())
def test_parse_receipt_never_raises_on_damaged_receipts(name, data) -> None:
    raw = (FIXTURES / name).read_bytes()
    start = data.draw(st.integers(min_value=0, max_value=len(raw)))
    junk = data.draw(st.binary(max_size=300))
    result = parse_receipt(raw[:start] + junk + raw[start + len(junk) :])
    assert result is None or isinstance(result, Receipt)
