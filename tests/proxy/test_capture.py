"""Demo capture SMTP server and report sink, over real loopback sockets."""

from __future__ import annotations

import email
import logging
import re
import smtplib
import threading
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
import requests

from proxy.capture import CaptureSmtpServer, ReportSink

NAME_PATTERN = re.compile(r"^\d{8}T\d{6}\.\d{3}Z-\d{6}-[A-Za-z0-9._@+=-]+\.eml$")


@pytest.fixture
def mail_dir(tmp_path: Path) -> Path:
    return tmp_path / "captured" / "mail"  # nested and missing: start() creates it


@pytest.fixture
def capture(mail_dir: Path) -> Iterator[CaptureSmtpServer]:
    server = CaptureSmtpServer("127.0.0.1", 0, str(mail_dir))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sink() -> Iterator[ReportSink]:
    server = ReportSink("127.0.0.1", 0)
    server.start()
    yield server
    server.stop()


def make_mail(subject: str = "Hello", body: str = "Body text\n", **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "sender@example.com"
    msg["To"] = "rcpt@example.org"
    msg["Subject"] = subject
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def send(server: CaptureSmtpServer, msg: EmailMessage, to_addrs: list[str] | None = None) -> None:
    host, port = server.address
    with smtplib.SMTP(host, port, timeout=5) as client:
        client.send_message(msg, to_addrs=to_addrs)


def eml_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.eml"))


def parse(path: Path) -> EmailMessage:
    return email.message_from_bytes(path.read_bytes(), policy=policy.default)


def text_of(msg: EmailMessage) -> str:
    """Body text with wire CRLFs (kept in the file, as received) made Python newlines."""
    return msg.get_content().replace("\r\n", "\n")


def test_received_mail_is_stored_as_one_eml_that_parses_back(capture, mail_dir):
    send(capture, make_mail("Quarterly report", "Numbers attached.\n"), ["a@x.org", "b@y.org"])

    [path] = eml_files(mail_dir)
    assert NAME_PATTERN.match(path.name)
    parsed = parse(path)
    assert parsed["Subject"] == "Quarterly report"
    assert text_of(parsed) == "Numbers attached.\n"
    assert parsed["X-Captured-Envelope-From"] == "sender@example.com"
    assert parsed["X-Captured-Envelope-To"] == "a@x.org, b@y.org"
    assert list(mail_dir.iterdir()) == [path]  # no temp file left behind


def test_file_holds_exactly_the_data_after_the_envelope_headers(capture, mail_dir):
    msg = make_mail()
    send(capture, msg)

    [path] = eml_files(mail_dir)
    raw = path.read_bytes()
    envelope, _, data = raw.partition(b"\r\nX-Captured-Envelope-To: rcpt@example.org\r\n")
    assert envelope == b"X-Captured-Envelope-From: sender@example.com"
    assert data == msg.as_bytes(policy=policy.SMTP)


def test_non_ascii_subject_body_and_address_survive(capture, mail_dir):
    msg = make_mail("Fattura n° 42 — città", "Grazie, è tutto a posto.\n")
    msg.replace_header("To", "utènte@exämple.org")
    send(capture, msg)  # an international address makes smtplib use SMTPUTF8

    parsed = parse(eml_files(mail_dir)[0])
    assert parsed["Subject"] == "Fattura n° 42 — città"
    assert text_of(parsed) == "Grazie, è tutto a posto.\n"
    assert parsed["X-Captured-Envelope-To"] == "utènte@exämple.org"


def test_eight_bit_body_is_accepted(capture, mail_dir):
    msg = EmailMessage()
    msg["From"] = "sender@example.com"
    msg["To"] = "rcpt@example.org"
    msg["Subject"] = "8bit"
    msg.set_content("Perché no?\n", cte="8bit")
    send(capture, msg)  # sent with BODY=8BITMIME

    assert text_of(parse(eml_files(mail_dir)[0])) == "Perché no?\n"


def test_two_mails_make_two_files_in_arrival_order(capture, mail_dir):
    send(capture, make_mail("first"))
    send(capture, make_mail("second"))

    files = eml_files(mail_dir)
    assert [parse(path)["Subject"] for path in files] == ["first", "second"]
    assert [path.name.split("-")[1] for path in files] == ["000001", "000002"]


def test_file_name_carries_a_sanitized_message_id(capture, mail_dir):
    send(capture, make_mail(Message_ID="<abc/../def 1@host.example>"))

    [path] = eml_files(mail_dir)
    assert path.name.endswith("-abc_.._def_1@host.example.eml")


def test_file_name_falls_back_to_a_uuid_without_message_id(capture, mail_dir):
    send(capture, make_mail())

    [path] = eml_files(mail_dir)
    assert re.fullmatch(r".*-\d{6}-[0-9a-f]{32}\.eml", path.name)


def test_stop_frees_the_port_and_is_idempotent(mail_dir):
    first = CaptureSmtpServer("127.0.0.1", 0, str(mail_dir))
    first.start()
    port = first.address[1]
    first.stop()
    first.stop()

    second = CaptureSmtpServer("127.0.0.1", port, str(mail_dir))
    second.start()
    try:
        assert second.address == ("127.0.0.1", port)
        send(second, make_mail("after restart"))
    finally:
        second.stop()
    assert parse(eml_files(mail_dir)[0])["Subject"] == "after restart"


def test_start_on_a_busy_port_fails_clearly_without_leaking_a_thread(capture, mail_dir):
    port = capture.address[1]
    threads_before = set(threading.enumerate())
    rival = CaptureSmtpServer("127.0.0.1", port, str(mail_dir))

    with pytest.raises(RuntimeError, match=f"cannot listen on 127.0.0.1:{port}"):
        rival.start()

    assert set(threading.enumerate()) == threads_before
    rival.stop()  # harmless after a failed start
    send(capture, make_mail("still served"))  # the first server is unaffected
    assert len(eml_files(mail_dir)) == 1


REPORT = {
    "delivery_report": [
        {
            "tenant_id": "acme",
            "id": "MSG-101",
            "pk": "550e8400-e29b-41d4-a716-446655440000",
            "event": "deferred",
            "event_id": 880,
            "deferred_ts": 1728458460,
            "deferred_reason": "SMTP 451: 4.7.1 Greylisted",
            "retry_count": 1,
        },
        {
            "tenant_id": "acme",
            "id": "MSG-101",
            "pk": "550e8400-e29b-41d4-a716-446655440000",
            "event": "sent",
            "event_id": 912,
            "sent_ts": 1728458462,
        },
    ]
}


def test_sink_records_a_report_and_acknowledges_it(sink, caplog):
    caplog.set_level(logging.INFO, logger="proxy.capture")

    response = requests.post(f"{sink.url}/mail-proxy/sync", json=REPORT, timeout=5)

    assert response.status_code == 200
    assert response.json() == {"ok": True, "queued": 0}
    assert sink.calls == [REPORT]
    messages = [r.getMessage() for r in caplog.records if r.name == "proxy.capture"]
    assert "report sink: tenant acme message MSG-101 deferred" in messages
    assert "report sink: tenant acme message MSG-101 sent" in messages
    assert not any("Greylisted" in message for message in messages)  # no bodies in logs


def test_sink_lists_recent_calls_on_get(sink):
    heartbeat = {"delivery_report": []}
    requests.post(f"{sink.url}/any/path", json=heartbeat, timeout=5)
    requests.post(f"{sink.url}/mail-proxy/sync", json=REPORT, timeout=5)

    response = requests.get(f"{sink.url}/", timeout=5)

    assert response.status_code == 200
    assert response.json() == {"calls": [heartbeat, REPORT]}


def test_sink_keeps_only_the_last_calls_and_returns_copies():
    sink = ReportSink("127.0.0.1", 0, keep=2)
    sink.start()
    try:
        for n in range(3):
            requests.post(sink.url, json={"delivery_report": [], "n": n}, timeout=5)
        calls = sink.calls
        calls[0]["n"] = 99
        assert [call["n"] for call in sink.calls] == [1, 2]
    finally:
        sink.stop()
        sink.stop()


def test_sink_rejects_a_body_that_is_not_a_json_object(sink):
    response = requests.post(sink.url, data=b"[1, 2]", timeout=5)

    assert response.status_code == 400
    assert response.json()["ok"] is False
    assert sink.calls == []


def test_sink_on_a_busy_port_fails_clearly(sink):
    port = int(sink.url.rsplit(":", 1)[1])
    rival = ReportSink("127.0.0.1", port)

    with pytest.raises(RuntimeError, match=f"report sink cannot listen on 127.0.0.1:{port}"):
        rival.start()
    rival.stop()


def test_a_start_that_times_out_cleans_up_its_thread_and_loop(mail_dir):
    # A zero ready timeout makes aiosmtpd give up at a random point of its start-up;
    # whatever the point, start() either works or fails clearly, and nothing survives.
    threads_before = set(threading.enumerate())
    errors = []
    for _ in range(20):
        server = CaptureSmtpServer("127.0.0.1", 0, str(mail_dir))
        try:
            server.start(ready_timeout_s=0.0)
        except RuntimeError as err:
            errors.append(str(err))
        server.stop()
    assert all("did not start within 0.0s" in error for error in errors)
    assert set(threading.enumerate()) == threads_before
