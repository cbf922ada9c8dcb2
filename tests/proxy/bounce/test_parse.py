"""Bounce classification on real-world-shaped samples (SPEC §11.3, §11.4)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.bounce.parse import (
    Bounce,
    BouncedRecipient,
    NotBounce,
    Original,
    Unparseable,
    classify,
    mail_key,
)

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def one_bounce(name: str) -> tuple[Bounce, BouncedRecipient]:
    result = classify(load(name))
    assert isinstance(result, Bounce), result
    assert len(result.recipients) == 1, result.recipients
    return result, result.recipients[0]


# fixture → (kind, recipient, type, code, smtp code, reason starts with, Message-ID, client id)
SINGLE_BOUNCES = {
    "postfix_dsn_user_unknown.eml": (
        "dsn",
        "ann@example.org",
        "hard",
        "5.1.1",
        "550",
        "550 5.1.1 <ann@example.org>: Recipient address rejected: User unknown",
        "<0b9e6f1c-5a4e-4a37-9a8e-2f0e6f5f5a10@acme.example>",
        "INV-42",
    ),
    "postfix_dsn_delayed.eml": (
        "dsn",
        "bob@slow.example.net",
        "soft",
        "4.4.1",
        None,
        "connect to mx.slow.example.net[198.51.100.7]:25: Connection timed out",
        "<7a1f3c2e-0d44-4a4f-9d0b-3a5b8c6e1f22@acme.example>",
        "REM-7",
    ),
    "postfix_plain_undelivered.eml": (
        "non-standard",
        "erin@example.org",
        "hard",
        "5.7.1",
        "550",
        "550 5.7.1 <erin@example.org>: Relay access denied",
        "<1d2e3f40-aaaa-4bbb-8ccc-ddddeeeeffff@acme.example>",
        "TICKET-9",
    ),
    "exim_failure.eml": (
        "non-standard",
        "frank@example.net",
        "hard",
        "5.1.1",
        "550",
        "550 5.1.1 <frank@example.net>: Recipient address rejected: User unknown",
        "<5e6f7a8b-1234-4c5d-9e0f-a1b2c3d4e5f6@acme.example>",
        "INV-77",
    ),
    "exim_delay_warning.eml": (
        "non-standard",
        "gina@busy.example.com",
        "soft",
        "4.7.1",
        "451",
        "451 4.7.1 Greylisting in action",
        "<9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a@acme.example>",
        "WEEKLY-4",
    ),
    "office365_ndr.eml": (
        "dsn",
        "hank@contoso.com",
        "hard",
        "5.1.10",
        "550",
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound",
        "<3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f@acme.example>",
        "CONTRACT-2026",
    ),
    "gmail_dsn.eml": (
        "dsn",
        "nobody.here@gmail.com",
        "hard",
        "5.1.1",
        "550",
        "550-5.1.1 The email account that you tried to reach does not exist.",
        "<ab12cd34-ef56-4a78-9b0c-d1e2f3a4b5c6@acme.example>",
        "ORDER-5521",
    ),
    "qmail_failure_notice.eml": (
        "non-standard",
        "ivan@oldhost.example",
        "hard",
        "5.1.1",
        "550",
        "550 5.1.1 <ivan@oldhost.example>... User unknown",
        "<e7d6c5b4-a392-4817-86f5-e4d3c2b1a098@acme.example>",
        "INV-88",
    ),
    "sendmail_dsn.eml": (
        "dsn",
        "judy@partner.example",
        "hard",
        "5.2.2",
        "552",
        "552 5.2.2 Mailbox full",
        "<f1e2d3c4-b5a6-4978-8695-a4b3c2d1e0f9@acme.example>",
        "PAY-2026-01-judy",
    ),
}


@pytest.mark.parametrize("name", sorted(SINGLE_BOUNCES))
def test_real_world_bounce_yields_recipient_codes_reason_and_original(name: str) -> None:
    kind, recipient, kind_type, code, smtp, reason, message_id, genro = SINGLE_BOUNCES[name]
    result, block = one_bounce(name)
    assert result.kind == kind
    assert block.recipient == recipient
    assert block.bounce_type == kind_type
    assert block.bounce_code == code
    assert block.smtp_code == smtp
    assert block.reason.startswith(reason), block.reason
    assert len(block.reason) <= 500
    assert result.original == Original(message_id=message_id, genro_id=genro)


def test_dsn_with_two_failed_recipients_yields_one_block_each() -> None:
    result = classify(load("postfix_dsn_two_recipients.eml"))
    assert isinstance(result, Bounce)
    assert [
        (b.recipient, b.bounce_code, b.smtp_code, b.bounce_type) for b in result.recipients
    ] == [
        ("carl@example.com", "5.1.1", "550", "hard"),
        ("dora@example.com", "5.2.2", "552", "hard"),
    ]
    assert result.original.genro_id == "NEWS-2026-01"  # from text/rfc822-headers


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("postfix_success_dsn.eml", "success"),
        ("auto_reply_out_of_office.eml", "auto-reply"),
        ("auto_reply_vacation_daemon_subject.eml", "auto-reply"),
        ("human_reply.eml", "not a bounce"),
        ("pec_accettazione.eml", "not a bounce"),
    ],
)
def test_success_reports_auto_replies_and_ordinary_mail_are_not_bounces(name, reason) -> None:
    assert classify(load(name)) == NotBounce(reason)


def test_a_delivery_report_without_recipient_blocks_is_unparseable() -> None:
    assert isinstance(classify(load("broken_dsn.eml")), Unparseable)


def test_a_mail_without_headers_is_unparseable() -> None:
    assert isinstance(classify(b"\r\n\r\njust text"), Unparseable)


def test_daemon_bounce_without_codes_defaults_to_hard_with_a_generic_code() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example\r\nSubject: Returned mail\r\n"
        b"Message-ID: <x@mx.example>\r\n\r\n"
        b"<zed@example.org>:\r\nThe mailbox is disabled.\r\n"
    )
    result, block = one_bounce_from(raw)
    assert (block.recipient, block.bounce_type, block.bounce_code) == (
        "zed@example.org",
        "hard",
        "5.0.0",
    )
    assert block.smtp_code is None
    assert "mailbox is disabled" in block.reason
    assert result.original == Original()


def test_failure_subject_from_a_person_is_still_a_bounce_candidate() -> None:
    raw = (
        b"From: Exchange Admin <admin@corp.example>\r\nSubject: Undeliverable: Invoice\r\n\r\n"
        b"Delivery has failed to these recipients:\r\n\r\n  kim@corp.example\r\n"
        b"Remote server returned '550 5.4.1 Recipient address rejected: Access denied'\r\n"
    )
    _, block = one_bounce_from(raw)
    assert (block.recipient, block.bounce_code, block.smtp_code) == (
        "kim@corp.example",
        "5.4.1",
        "550",
    )


def test_ip_addresses_and_success_codes_are_not_taken_for_failure_codes() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example\r\nSubject: failure notice\r\n\r\n"
        b"<lee@example.org>:\r\nConnected to 10.4.5.123 but got 250 2.0.0 then\r\n"
        b"451 4.3.0 temporary failure\r\n"
    )
    _, block = one_bounce_from(raw)
    assert (block.bounce_code, block.smtp_code, block.bounce_type) == ("4.3.0", "451", "soft")


def test_reason_is_cut_to_500_characters() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example\r\nSubject: failure notice\r\n\r\n"
        + b"<m@example.org>:\r\n550 5.1.1 "
        + b"x" * 2000
    )
    _, block = one_bounce_from(raw)
    assert len(block.reason) == 500


def test_mail_key_is_the_message_id_and_survives_redelivery() -> None:
    raw = load("postfix_dsn_user_unknown.eml")
    assert mail_key(raw) == mail_key(b"X-Extra: 1\r\n" + raw)
    assert mail_key(raw) != mail_key(load("gmail_dsn.eml"))
    assert len(mail_key(b"no message id")) == 64


def one_bounce_from(raw: bytes) -> tuple[Bounce, BouncedRecipient]:
    result = classify(raw)
    assert isinstance(result, Bounce), result
    assert len(result.recipients) == 1, result.recipients
    return result, result.recipients[0]


ALL_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.eml"))


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=4000))
def test_classify_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    assert isinstance(classify(raw), Bounce | NotBounce | Unparseable)


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(ALL_FIXTURES),
    cut=st.floats(min_value=0, max_value=1),
    junk=st.binary(max_size=200),
)
def test_classify_never_raises_on_truncated_or_corrupted_samples(name, cut, junk) -> None:
    raw = load(name)
    position = int(len(raw) * cut)
    damaged = raw[:position] + junk + raw[position + len(junk) :]
    result = classify(damaged)
    assert isinstance(result, Bounce | NotBounce | Unparseable)
    if isinstance(result, Bounce):
        assert all(len(b.reason) <= 500 for b in result.recipients)
        assert all(b.bounce_type in {"hard", "soft"} for b in result.recipients)
