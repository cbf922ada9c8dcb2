"""``send FILE.eml``: parsing (pure) and a multipart file arriving intact at a real SMTP server."""

from __future__ import annotations

import base64
import email
import email.policy
import json
from email.message import EmailMessage
from pathlib import Path

import pytest

from proxy.cli.eml import EmlError, message_from_eml
from tests.fixtures.waiting import wait_until
from tests.proxy.cli.conftest import one_error_line

INVOICE = Path(__file__).parent / "data" / "invoice.eml"
INVOICE_ID = "invoice-42.20260120@acme.example"
SUBJECT = "Fattura n° 42 — résumé ✓"


def parse(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def original_attachment() -> tuple[str, bytes]:
    (part,) = parse(INVOICE.read_bytes()).iter_attachments()
    return part.get_filename(), part.get_payload(decode=True)


# -- parsing (pure) -------------------------------------------------------------------------


def test_invoice_headers_become_decoded_fields():
    payload = message_from_eml(INVOICE.read_bytes(), account_id="main", tenant_id="acme")
    assert payload["id"] == INVOICE_ID
    assert payload["message_id"] == f"<{INVOICE_ID}>"
    assert (payload["tenant_id"], payload["account_id"]) == ("acme", "main")
    assert payload["from"] == "François Müller <billing@acme.example>"
    assert payload["to"] == ["Ann Lee <ann@example.org>", "bob@example.org"]
    assert payload["cc"] == ["Élodée <elodie@example.org>"]
    assert payload["reply_to"] == ["Accounts <accounts@acme.example>"]
    assert payload["subject"] == SUBJECT
    assert payload["headers"] == {
        "User-Agent": "Mozilla Thunderbird",
        "In-Reply-To": "<order-7@example.org>",
        "List-Unsubscribe": "<mailto:unsubscribe@acme.example>",
    }
    assert payload["body"].startswith("Ciao Ann,\n\nla fattura n° 42 è in allegato.")
    assert payload["html"].startswith("<html><body><p>Ciao Ann,</p>")
    filename, data = original_attachment()
    assert payload["attachments"] == [
        {
            "filename": filename,
            "storage_path": "base64:" + base64.b64encode(data).decode(),
            "fetch_mode": "base64",
            "mime_type": "application/pdf",
        }
    ]


def build(**headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = headers.pop("From", "a@example.org")
    msg["To"] = "b@example.org"
    msg["Subject"] = "Hi"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    return msg


def test_plain_single_part_message():
    msg = build(Message_ID="<p1@example.org>", Bcc="hidden@example.org")
    msg.set_content("just text\n")
    payload = message_from_eml(msg.as_bytes(), account_id="main")
    assert payload["body"] == "just text\n"
    assert payload["bcc"] == ["hidden@example.org"]
    assert "html" not in payload
    assert "attachments" not in payload
    assert "tenant_id" not in payload


def test_html_only_message_is_an_html_body():
    msg = build(Message_ID="<h1@example.org>")
    msg.set_content("<p>only html</p>", subtype="html")
    payload = message_from_eml(msg.as_bytes(), account_id="main")
    assert payload["body"] == "<p>only html</p>\n"
    assert payload["content_type"] == "html"


def test_inline_images_attached_mails_and_nameless_parts_become_attachments():
    inner = build(Message_ID="<inner@example.org>")
    inner.set_content("forwarded")
    msg = build(Message_ID="<outer@example.org>")
    msg.set_content("text")
    msg.add_alternative("<p>html <img src='cid:logo'></p>", subtype="html")
    msg.get_payload()[1].add_related(b"\x89PNG\r\n", "image", "png", cid="<logo>")
    msg.add_attachment(inner)
    msg.add_attachment(b"\x00\x01", "application", "octet-stream")
    payload = message_from_eml(msg.as_bytes(), account_id="main")
    assert payload["body"] == "text\n"
    assert payload["html"].startswith("<p>html")
    found = [(a["filename"], a["mime_type"]) for a in payload["attachments"]]
    assert found == [
        ("attachment-1.png", "image/png"),
        ("attachment-2.eml", "message/rfc822"),
        ("attachment-3.bin", "application/octet-stream"),
    ]
    forwarded = base64.b64decode(payload["attachments"][1]["storage_path"].removeprefix("base64:"))
    assert parse(forwarded)["Message-ID"] == "<inner@example.org>"


def test_id_option_wins_and_a_file_without_message_id_needs_it():
    msg = build()
    msg.set_content("x")
    assert message_from_eml(msg.as_bytes(), account_id="m", message_id="MY-1")["id"] == "MY-1"
    with pytest.raises(EmlError, match="no Message-ID"):
        message_from_eml(msg.as_bytes(), account_id="m")


def test_a_file_without_from_is_refused():
    with pytest.raises(EmlError, match="no From"):
        message_from_eml(b"Subject: x\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n", account_id="m")


# -- against a running proxy and a real SMTP server -----------------------------------------------


@pytest.fixture
def acme(proxy, smtp_sink):
    proxy.api.add_tenant("acme")
    proxy.api.add_account("acme", "main", host=smtp_sink.host, port=smtp_sink.port)
    proxy.cli.tenant = "acme"
    return proxy


def test_multipart_eml_arrives_intact(acme, smtp_sink):
    result = acme.cli.ok("send", str(INVOICE), "--account", "main")
    assert result.stdout == f"ok: '{INVOICE_ID}' queued (1 attachment(s))\n"
    (received,) = smtp_sink.wait_for(1)
    assert sorted(received.rcpt_tos) == ["ann@example.org", "bob@example.org", "elodie@example.org"]
    assert received.mail_from == "billing@acme.example"
    mail = parse(received.data)
    assert mail["Subject"] == SUBJECT
    assert mail["Message-ID"] == f"<{INVOICE_ID}>"
    assert mail["From"].addresses[0].display_name == "François Müller"
    assert mail["Cc"].addresses[0].display_name == "Élodée"
    assert mail["In-Reply-To"] == "<order-7@example.org>"
    assert mail["List-Unsubscribe"] == "<mailto:unsubscribe@acme.example>"
    source = parse(INVOICE.read_bytes())
    for kind in ("plain", "html"):
        sent_text = mail.get_body(preferencelist=(kind,)).get_content().replace("\r\n", "\n")
        assert sent_text.strip() == source.get_body(preferencelist=(kind,)).get_content().strip()
    filename, data = original_attachment()
    (stored,) = acme.api.message(INVOICE_ID)["payload"]["attachments"]
    assert base64.b64decode(stored["storage_path"].removeprefix("base64:")) == data
    attachments = list(mail.iter_attachments())
    assert len(attachments) == 1, "the proxy did not deliver the attachment"
    attachment = attachments[0]
    assert attachment.get_filename() == filename == "fattura-n°-42.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_payload(decode=True) == data
    assert acme.api.wait_status(INVOICE_ID, "sent")["account_id"] == "main"


def test_send_options_reach_the_message(acme, smtp_sink):
    future = 4102444800
    acme.cli.ok(
        "send", str(INVOICE), "--account", "main", "--id", "INV-42", "--priority", "low",
        "--batch-code", "INV-2026", "--deferred-ts", str(future),
    )  # fmt: skip
    record = acme.api.message("INV-42")
    assert (record["priority"], record["batch_code"], record["status"]) == (
        3,
        "INV-2026",
        "deferred",
    )
    assert record["deferred_ts"] == future
    assert smtp_sink.messages == []


def test_send_reads_stdin(acme, smtp_sink):
    result = acme.cli("send", "-", "--account", "main", "--json", input=INVOICE.read_text("utf-8"))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"ok": True, "queued": 1, "rejected": []}
    smtp_sink.wait_for(1)


def test_a_rejected_message_is_exit_1_naming_the_reason(acme):
    result = acme.cli("send", str(INVOICE), "--account", "ghost")
    assert result.exit_code == 1
    assert one_error_line(result) == (
        "mail-proxy: HTTP 400: all messages rejected: "
        f"{INVOICE_ID} (account_id): account not found for tenant"
    )
    assert acme.api.message(INVOICE_ID) is None


def test_file_without_message_id_is_exit_2(acme, tmp_path):
    path = tmp_path / "draft.eml"
    path.write_bytes(b"From: a@example.org\r\nTo: b@example.org\r\nSubject: x\r\n\r\nbody\r\n")
    result = acme.cli("send", str(path), "--account", "main")
    assert result.exit_code == 2
    assert f"{path}: the file has no Message-ID header: give --id" in one_error_line(result)
    wait_until(lambda: acme.api.messages() == [], timeout_s=1)


def test_missing_file_is_exit_2(acme, tmp_path):
    result = acme.cli("send", str(tmp_path / "absent.eml"), "--account", "main")
    assert result.exit_code == 2
    assert "absent.eml" in one_error_line(result)
