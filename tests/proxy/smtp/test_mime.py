import email
import email.policy
import re
from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.smtp.mime import AttachmentContent, BuiltMessage, build

NOW_TS = 1768903200  # 2026-01-20 10:00:00 UTC
BASE_HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "X-Genro-Mail-ID"]


def payload(**overrides):
    base = {
        "id": "msg-1",
        "from": "ACME <billing@acme.example>",
        "to": ["Ann Lee <ann@example.org>"],
        "subject": "Your invoice",
        "body": "Hello Ann,\nplease find your invoice.\n",
        "content_type": "plain",
    }
    base.update(overrides)
    return base


def make(pk="pk-1", **kwargs) -> BuiltMessage:
    attachments = kwargs.pop("attachments", ())
    bounce = kwargs.pop("bounce_return_path", None)
    return build(
        payload(**kwargs),
        pk=pk,
        now_ts=NOW_TS,
        bounce_return_path=bounce,
        attachments=attachments,
    )


def parse(built: BuiltMessage) -> EmailMessage:
    # Raw UTF-8 headers (SMTPUTF8 messages) parse best from text.
    return email.message_from_string(built.data.decode("utf-8"), policy=email.policy.default)


def header_block(built: BuiltMessage) -> bytes:
    return built.data.split(b"\r\n\r\n", 1)[0]


def first_attachment(built: BuiltMessage) -> EmailMessage:
    return next(parse(built).iter_attachments())


def crlf_only(data: bytes) -> bool:
    return re.search(rb"(?<!\r)\n|\r(?!\n)", data) is None


def test_plain_message_headers_and_body():
    built = make()
    msg = parse(built)
    assert list(msg.keys()) == [*BASE_HEADERS, "Content-Type", "Content-Transfer-Encoding"]
    assert msg["From"].addresses[0].display_name == "ACME"
    assert msg["From"].addresses[0].addr_spec == "billing@acme.example"
    assert str(msg["To"]) == "Ann Lee <ann@example.org>"
    assert msg["Subject"] == "Your invoice"
    assert msg["Date"] == "Tue, 20 Jan 2026 10:00:00 +0000"
    assert msg["MIME-Version"] == "1.0"
    assert msg["X-Genro-Mail-ID"] == "msg-1"
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert msg["Content-Transfer-Encoding"] == "7bit"
    assert msg.get_content().replace("\r\n", "\n") == "Hello Ann,\nplease find your invoice.\n"


def test_envelope_of_a_plain_message():
    built = make(cc=["cc@example.org"], bcc=["bcc@example.org"])
    assert built.envelope_from == "billing@acme.example"
    assert built.recipients == ("ann@example.org", "cc@example.org", "bcc@example.org")
    assert built.needs_smtputf8 is False


def test_html_message():
    msg = parse(make(body="<p>Hello</p>", content_type="html"))
    assert msg.get_content_type() == "text/html"
    assert msg.get_content_charset() == "utf-8"
    assert msg.get_content().strip() == "<p>Hello</p>"


def test_html_alternative_puts_plain_first():
    msg = parse(make(body="Hello", html="<p>Hello</p>"))
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert [p.get_content().strip() for p in parts] == ["Hello", "<p>Hello</p>"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert "MIME-Version" not in parts[0]


def test_attachments_wrap_the_body_in_mixed():
    pdf = bytes(range(256)) * 10
    built = make(
        body="See attached",
        html="<p>See attached</p>",
        attachments=[
            AttachmentContent("invoice.pdf", "application/pdf", pdf),
            AttachmentContent("notes.txt", "text/plain", b"plain\nnotes"),
        ],
    )
    msg = parse(built)
    assert msg.get_content_type() == "multipart/mixed"
    body, first, second = msg.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert first.get_content_type() == "application/pdf"
    assert first.get_content_disposition() == "attachment"
    assert first.get_filename() == "invoice.pdf"
    assert first["Content-Transfer-Encoding"] == "base64"
    assert first.get_content() == pdf
    assert second.get_filename() == "notes.txt"
    assert second["Content-Transfer-Encoding"] == "base64"
    assert second.get_payload(decode=True) == b"plain\nnotes"
    assert crlf_only(built.data)


def test_non_ascii_attachment_filename_uses_rfc2231():
    name = "fattura n°1 — März.pdf"
    built = make(attachments=[AttachmentContent(name, "application/pdf", b"%PDF")])
    assert b"filename*=utf-8''fattura%20n%C2%B01%20%E2%80%94%20M%C3%A4rz.pdf" in built.data
    part = first_attachment(built)
    assert part.get_filename() == name
    assert part.get_content() == b"%PDF"


def test_long_non_ascii_filename_is_continued_on_short_lines():
    name = "請求書" * 80 + ".pdf"
    built = make(attachments=[AttachmentContent(name, "application/pdf", b"x")])
    assert b"filename*0*=utf-8''" in built.data
    assert max(len(line) for line in header_block_lines(built)) <= 998
    assert first_attachment(built).get_filename() == name


def header_block_lines(built: BuiltMessage) -> list[bytes]:
    return [line for line in built.data.split(b"\r\n") if not line.startswith(b"--")]


def test_filename_with_quotes_is_escaped():
    built = make(attachments=[AttachmentContent('a "b" c\\d.txt', "text/plain", b"x")])
    assert first_attachment(built).get_filename() == 'a "b" c\\d.txt'


def test_bad_mime_type_falls_back_to_octet_stream():
    built = make(attachments=[AttachmentContent("x.bin", "nonsense", b"x")])
    assert first_attachment(built).get_content_type() == ("application/octet-stream")


def test_utf8_subject_and_display_names_are_rfc2047_encoded():
    built = make(
        subject="Fattura n° 12 — scadenza 請求書",
        **{"from": "Zoë Ünïcode <zoe@example.org>"},
        to=["Jürgen Groß <jg@example.org>"],
    )
    assert header_block(built).isascii()
    assert b"=?utf-8?" in header_block(built)
    msg = parse(built)
    assert msg["Subject"] == "Fattura n° 12 — scadenza 請求書"
    assert msg["From"].addresses[0].display_name == "Zoë Ünïcode"
    assert msg["To"].addresses[0].display_name == "Jürgen Groß"


def test_from_name_applies_only_when_from_has_none():
    assert parse(make(**{"from": "x@acme.example"}, from_name="Billing"))["From"].addresses[
        0
    ].display_name == ("Billing")
    assert parse(make(from_name="Ignored"))["From"].addresses[0].display_name == "ACME"


def test_display_names_with_specials_are_quoted():
    msg = parse(make(to=['"Lee, Ann" <ann@example.org>', "Bob (work) <bob@example.org>"]))
    names = [a.display_name for a in msg["To"].addresses]
    assert names[0] == "Lee, Ann"
    assert [a.addr_spec for a in msg["To"].addresses] == ["ann@example.org", "bob@example.org"]


def test_bcc_is_not_a_header_but_is_a_recipient():
    built = make(bcc=["secret@example.org"])
    msg = parse(built)
    assert "Bcc" not in msg
    assert b"secret@example.org" not in built.data
    assert "secret@example.org" in built.recipients


def test_cc_and_reply_to_headers():
    msg = parse(make(cc=["cc@example.org"], reply_to=["Help <help@acme.example>"]))
    assert str(msg["Cc"]) == "cc@example.org"
    assert str(msg["Reply-To"]) == "Help <help@acme.example>"
    assert list(msg.keys()).index("Cc") == 2


def test_recipients_are_deduplicated_case_insensitively_keeping_first_spelling():
    built = make(
        to=["Ann <Ann@Example.org>", "bob@example.org"],
        cc=["ANN@example.org", "carol@example.org"],
        bcc=["Bob@Example.ORG", "dave@example.org"],
    )
    assert built.recipients == (
        "Ann@Example.org",
        "bob@example.org",
        "carol@example.org",
        "dave@example.org",
    )


def test_custom_header_replaces_a_default_in_place():
    built = make(
        reply_to=["a@example.org"],
        headers={"reply-to": "b@example.org", "X-Campaign": "spring", "List-Id": "<l.x.org>"},
    )
    msg = parse(built)
    assert msg.get_all("Reply-To") == ["b@example.org"]
    assert list(msg.keys())[:9] == [
        "From",
        "To",
        "reply-to",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "X-Genro-Mail-ID",
        "X-Campaign",
    ]
    assert msg["X-Campaign"] == "spring"
    assert msg["List-Id"] == "<l.x.org>"


def test_custom_message_id_is_the_one_reported():
    built = make(headers={"Message-ID": "<custom@tenant.example>"})
    assert built.message_id == "<custom@tenant.example>"
    assert parse(built).get_all("Message-ID") == ["<custom@tenant.example>"]


def test_reserved_custom_headers_are_ignored():
    msg = parse(
        make(headers={"Content-Type": "text/html", "Bcc": "x@y.org", "X-Genro-Mail-ID": "z"})
    )
    assert msg.get_content_type() == "text/plain"
    assert "Bcc" not in msg
    assert msg.get_all("X-Genro-Mail-ID") == ["msg-1"]


def test_non_ascii_custom_header_value_is_encoded():
    built = make(headers={"X-Note": "però sì", "X-Empty": None})
    assert header_block(built).isascii()
    msg = parse(built)
    assert msg["X-Note"] == "però sì"
    assert "X-Empty" not in msg


def test_long_header_name_with_wide_characters():
    name = "X-" + "Long" * 18
    built = make(headers={name: "😀" * 30})
    assert parse(built)[name] == "😀" * 30


def test_envelope_from_precedence():
    assert make().envelope_from == "billing@acme.example"
    assert make(bounce_return_path="bounces@proxy.example").envelope_from == (
        "bounces@proxy.example"
    )
    built = make(return_path="rp@acme.example", bounce_return_path="bounces@proxy.example")
    assert built.envelope_from == "rp@acme.example"
    assert "Return-Path" not in parse(built)


def test_default_message_id_uses_pk_and_from_domain():
    built = make(pk="0a1b2c")
    assert built.message_id == "<0a1b2c@acme.example>"
    assert parse(built)["Message-ID"] == "<0a1b2c@acme.example>"


def test_client_message_id_is_used():
    built = make(message_id="<abc@tenant.example>")
    assert built.message_id == "<abc@tenant.example>"
    assert parse(built)["Message-ID"] == "<abc@tenant.example>"


def test_crlf_everywhere():
    built = make(
        body="line1\nline2\r\nline3\rline4 però\n",
        html="<p>a</p>\n<p>b</p>",
        subject="x " * 60,
        to=[f"Person {i} <p{i}@example.org>" for i in range(10)],
        attachments=[AttachmentContent("a.bin", "application/octet-stream", b"\n\r\n" * 100)],
    )
    assert crlf_only(built.data)
    assert max(len(line) for line in built.data.split(b"\r\n")) <= 78


def test_body_line_endings_survive_every_encoding():
    for body in ["a\nb\n", "à\nb\n" * 3, "日本語\n本文\n", "x" * 2000 + "\n"]:
        msg = parse(make(body=body))
        assert msg.get_content().replace("\r\n", "\n") == body


def test_transfer_encoding_choice():
    def cte(body):
        return parse(make(body=body))["Content-Transfer-Encoding"]

    assert cte("plain ascii\n") == "7bit"
    assert cte("a" * 1000) == "quoted-printable"  # too long for 7bit
    assert cte("Caffè e cornetto, grazie mille per tutto\n") == "quoted-printable"
    assert cte("日本語のメール本文です。" * 5) == "base64"


def test_non_ascii_address_needs_smtputf8_and_is_written_raw():
    built = make(to=["Zoë <zoë@exämple.org>"])
    assert built.needs_smtputf8 is True
    assert built.recipients == ("zoë@exämple.org",)
    assert "zoë@exämple.org".encode() in header_block(built)
    assert parse(built)["To"].addresses[0].addr_spec == "zoë@exämple.org"


def test_non_ascii_from_domain_gives_an_ascii_message_id():
    built = make(**{"from": "a@exämple.org"}, pk="p1")
    assert built.message_id == "<p1@xn--exmple-cua.org>"
    assert built.needs_smtputf8 is True


def test_output_is_deterministic():
    kwargs = {
        "html": "<p>x</p>",
        "attachments": [AttachmentContent("a.txt", "text/plain", b"a")],
    }
    assert make(**kwargs).data == make(**kwargs).data
    assert make(pk="other", **kwargs).data != make(**kwargs).data


def test_boundary_text_in_a_7bit_body_does_not_break_the_structure():
    body = "--=_fake\n=_ boundary-looking text\n"
    msg = parse(make(body=body, html="<p>x</p>"))
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert next(msg.iter_parts()).get_content().replace("\r\n", "\n") == body


printable = st.text(st.characters(codec="utf-8").filter(str.isprintable), min_size=1, max_size=120)


@settings(max_examples=200, deadline=None)
@given(subject=printable, name=printable)
def test_subject_and_display_name_round_trip(subject, name):
    built = make(subject=subject, **{"from": "sender@example.org"}, from_name=name)
    msg = parse(built)
    assert list(msg.keys()) == [*BASE_HEADERS, "Content-Type", "Content-Transfer-Encoding"]
    assert msg["Subject"] == subject
    # The stdlib parser collapses runs of whitespace inside display names.
    assert " ".join(msg["From"].addresses[0].display_name.split()) == " ".join(name.split())
    assert crlf_only(built.data)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=80))
def test_control_characters_never_add_a_header_line(text):
    built = make(
        subject=text or "x",
        from_name=text,
        **{"from": "sender@example.org"},
        headers={"X-Custom": text},
    )
    # compat32 parsing: it does not interpret address contents, only header lines.
    msg = email.message_from_bytes(built.data, policy=email.policy.compat32)
    assert list(msg.keys()) == [
        *BASE_HEADERS,
        "X-Custom",
        "Content-Type",
        "Content-Transfer-Encoding",
    ]
    assert not msg.defects
    assert crlf_only(built.data)
