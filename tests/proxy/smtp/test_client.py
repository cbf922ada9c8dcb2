import socket
import threading
import time

import pytest

from proxy.smtp.client import Overlap, SmtpConnection, SmtpEndpoint, tls_mode
from proxy.smtp.errors import (
    SMTPUTF8_UNSUPPORTED,
    STARTTLS_UNSUPPORTED,
    PermFailure,
    Refusal,
    Sent,
    TempFailure,
)
from proxy.smtp.mime import BuiltMessage, build
from tests.fixtures.smtp import DROP, SINK_PASSWORD, SINK_USER, STALL, SmtpSink, start_sink
from tests.fixtures.waiting import wait_until

NOW_TS = 1768903200


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def message(*, to=("ann@example.org",), pk="pk-1", **overrides) -> BuiltMessage:
    payload = {
        "id": pk,
        "from": "ACME <billing@acme.example>",
        "to": list(to),
        "subject": "Invoice",
        "body": "Hello\n.a line starting with a dot\n",
    }
    payload.update(overrides)
    return build(payload, pk=pk, now_ts=NOW_TS)


@pytest.fixture
def connect():
    """Make SmtpConnections to a sink; all are closed at teardown."""
    made: list[SmtpConnection] = []

    def factory(sink: SmtpSink, **options) -> SmtpConnection:
        endpoint_options = {
            k: options.pop(k)
            for k in ("user", "password", "use_tls", "use_ssl", "tls_verify", "ttl_s")
            if k in options
        }
        options.setdefault("helo_name", "client.test")
        options.setdefault("connect_timeout_s", 5)
        options.setdefault("send_timeout_s", 5)
        conn = SmtpConnection(SmtpEndpoint(sink.host, sink.port, **endpoint_options), **options)
        made.append(conn)
        return conn

    yield factory
    for conn in made:
        conn.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- delivery and reuse ------------------------------------------------------------


def test_plain_send_is_delivered_with_the_right_envelope(smtp_sink, connect):
    msg = message(to=["ann@example.org", "bob@example.org"], bcc=["carol@example.org"])
    outcome = connect(smtp_sink).send(msg)

    assert outcome == Sent(250, "OK")
    [received] = smtp_sink.wait_for(1)
    assert received.mail_from == "billing@acme.example"
    assert received.rcpt_tos == ["ann@example.org", "bob@example.org", "carol@example.org"]
    assert received.data.rstrip(b"\r\n") == msg.data.rstrip(b"\r\n")  # dot-stuffing undone
    assert "SMTPUTF8" not in received.mail_options


def test_connection_is_reused_across_sends(smtp_sink, connect):
    conn = connect(smtp_sink)
    outcomes = [conn.send(message(pk=f"pk-{i}")) for i in range(3)]

    assert all(isinstance(o, Sent) for o in outcomes)
    assert len(smtp_sink.wait_for(3)) == 3
    assert smtp_sink.connections_opened == 1
    assert conn.is_connected


def test_close_sends_quit_and_is_idempotent(smtp_sink, connect):
    conn = connect(smtp_sink)
    conn.send(message())
    conn.close()
    conn.close()

    assert smtp_sink.quits == 1
    assert not conn.is_connected
    wait_until(lambda: smtp_sink.open_connections == 0, what="server saw the close")
    with pytest.raises(RuntimeError):
        conn.send(message())


def test_server_closed_idle_connection_reconnects_silently(smtp_sink, connect):
    conn = connect(smtp_sink)
    assert isinstance(conn.send(message(pk="a")), Sent)
    smtp_sink.drop_connections()

    assert isinstance(conn.send(message(pk="b")), Sent)
    assert len(smtp_sink.wait_for(2)) == 2
    assert smtp_sink.connections_opened == 2


def test_noop_checks_a_connection_idle_for_5_seconds(smtp_sink, connect):
    clock = FakeClock()
    conn = connect(smtp_sink, clock=clock)
    conn.send(message(pk="a"))
    clock.now += 4.9
    conn.send(message(pk="b"))
    assert smtp_sink.noops == 0

    clock.now += 5
    assert isinstance(conn.send(message(pk="c")), Sent)
    assert smtp_sink.noops == 1
    assert smtp_sink.connections_opened == 1


def test_failed_noop_reconnects_silently(smtp_sink, connect):
    clock = FakeClock()
    conn = connect(smtp_sink, clock=clock)
    conn.send(message(pk="a"))
    smtp_sink.drop_connections()
    clock.now += 60

    assert isinstance(conn.send(message(pk="b")), Sent)
    assert smtp_sink.connections_opened == 2


def test_close_if_expired_quits_after_ttl(smtp_sink, connect):
    clock = FakeClock()
    conn = connect(smtp_sink, clock=clock, ttl_s=300)
    assert conn.close_if_expired() is False  # nothing open
    conn.send(message())
    clock.now += 300
    assert conn.close_if_expired() is False
    clock.now += 1
    assert conn.close_if_expired() is True

    assert smtp_sink.quits == 1
    assert not conn.is_connected
    assert isinstance(conn.send(message(pk="again")), Sent)  # the loop is still usable


# -- TLS and AUTH ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("use_ssl", "use_tls", "port", "mode"),
    [
        (True, None, 25, "implicit"),
        (True, False, 587, "implicit"),
        (None, True, 465, "implicit"),
        (False, True, 587, "starttls"),
        (None, False, 465, "plain"),
        (False, False, 25, "plain"),
        (None, None, 465, "implicit"),
        (None, None, 587, "opportunistic"),
    ],
)
def test_tls_mode_table(use_ssl, use_tls, port, mode):
    assert tls_mode(SmtpEndpoint("h", port, use_tls=use_tls, use_ssl=use_ssl)) == mode


def test_starttls_with_verified_certificate(smtp_sink_starttls, trusted_tls_ca, connect):
    outcome = connect(smtp_sink_starttls, use_tls=True).send(message())

    assert isinstance(outcome, Sent)
    assert smtp_sink_starttls.wait_for(1)[0].tls is True


def test_opportunistic_starttls_when_offered(smtp_sink_starttls, trusted_tls_ca, connect):
    assert isinstance(connect(smtp_sink_starttls).send(message()), Sent)
    assert smtp_sink_starttls.wait_for(1)[0].tls is True


def test_untrusted_certificate_is_a_temporary_tls_failure(smtp_sink_starttls, connect):
    outcome = connect(smtp_sink_starttls, use_tls=True).send(message())

    assert isinstance(outcome, TempFailure)
    assert outcome.reason == "connection"
    assert "TLS" in outcome.description
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.description


def test_tls_verify_false_accepts_an_untrusted_certificate(connect):
    with start_sink(tls="starttls") as sink:  # its own CA, trusted by no one
        outcome = connect(sink, use_tls=True, tls_verify=False).send(message())
        assert isinstance(outcome, Sent)
        assert sink.wait_for(1)[0].tls is True


def test_starttls_required_but_not_offered_is_temporary(smtp_sink, connect):
    outcome = connect(smtp_sink, use_tls=True).send(message())

    assert outcome == TempFailure(STARTTLS_UNSUPPORTED, reason="connection")
    assert smtp_sink.messages == []


def test_implicit_tls(smtp_sink_tls, trusted_tls_ca, connect):
    outcome = connect(smtp_sink_tls, use_ssl=True).send(message())

    assert isinstance(outcome, Sent)
    assert smtp_sink_tls.wait_for(1)[0].tls is True


def test_implicit_tls_untrusted_is_temporary(smtp_sink_tls, connect):
    outcome = connect(smtp_sink_tls, use_ssl=True).send(message())

    assert isinstance(outcome, TempFailure)
    assert outcome.reason == "connection"
    assert "TLS" in outcome.description


def test_auth_success(smtp_sink_auth, connect):
    conn = connect(smtp_sink_auth, user=SINK_USER, password=SINK_PASSWORD)

    assert isinstance(conn.send(message()), Sent)
    assert smtp_sink_auth.wait_for(1)[0].login == SINK_USER


def test_auth_failure_is_permanent_535(smtp_sink_auth, connect):
    outcome = connect(smtp_sink_auth, user=SINK_USER, password="wrong").send(message())

    assert isinstance(outcome, PermFailure)
    assert outcome.smtp_code == 535
    assert outcome.description.startswith("SMTP 535: ")
    assert "wrong" not in outcome.description


def test_endpoint_repr_hides_the_password():
    assert "hunter2" not in repr(SmtpEndpoint("h", 25, user="u", password="hunter2"))


# -- replies and failures ----------------------------------------------------------


def test_451_on_data_is_temporary(smtp_sink, connect):
    smtp_sink.data_reply = ["451 4.7.1 Try again later"]
    outcome = connect(smtp_sink).send(message())

    assert outcome == TempFailure("SMTP 451: 4.7.1 Try again later", reason="smtp", smtp_code=451)


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        ("421 4.3.2 Service shutting down", TempFailure),
        ("452 4.3.1 Insufficient system storage", TempFailure),
        ("554 5.7.1 Message rejected", PermFailure),
    ],
)
def test_data_reply_classes(smtp_sink, connect, reply, kind):
    smtp_sink.data_reply = [reply]
    conn = connect(smtp_sink)
    outcome = conn.send(message())

    assert type(outcome) is kind
    assert outcome.smtp_code == int(reply[:3])
    assert outcome.description == f"SMTP {reply[:3]}: {reply[4:]}"
    assert isinstance(conn.send(message(pk="next")), Sent)  # the next send still works


def test_one_refused_recipient_is_listed_in_sent(smtp_sink, connect):
    smtp_sink.rcpt_reply = {"bad@example.org": "550 5.1.1 no such user"}
    outcome = connect(smtp_sink).send(message(to=["bad@example.org", "good@example.org"]))

    assert outcome == Sent(250, "OK", (Refusal("bad@example.org", 550, "5.1.1 no such user"),))
    assert smtp_sink.wait_for(1)[0].rcpt_tos == ["good@example.org"]


def test_all_recipients_refused_with_5xx_is_permanent(smtp_sink, connect):
    smtp_sink.rcpt_reply = lambda address: "550 5.1.1 no such user"
    conn = connect(smtp_sink)
    outcome = conn.send(message(to=["a@example.org", "b@example.org"]))

    assert isinstance(outcome, PermFailure)
    assert outcome.smtp_code == 550
    assert smtp_sink.data_commands == 0
    smtp_sink.rcpt_reply = None
    assert isinstance(conn.send(message(pk="next")), Sent)  # RSET left the session usable
    assert smtp_sink.connections_opened == 1


def test_all_recipients_refused_with_a_4xx_is_temporary(smtp_sink, connect):
    smtp_sink.rcpt_reply = {"a@example.org": "550 5.1.1 no", "b@example.org": "450 4.2.1 busy"}
    outcome = connect(smtp_sink).send(message(to=["a@example.org", "b@example.org"]))

    assert isinstance(outcome, TempFailure)
    assert outcome.smtp_code == 450


def test_connection_dropped_mid_data_is_temporary_and_not_resent(smtp_sink, connect):
    conn = connect(smtp_sink)
    conn.send(message(pk="first"))  # the next send reuses this session
    smtp_sink.data_reply = [DROP]
    outcome = conn.send(message(pk="second"))

    assert isinstance(outcome, TempFailure)
    assert outcome.reason == "connection"
    assert smtp_sink.data_commands == 2  # no silent resend after DATA


def test_stall_past_send_timeout_is_temporary_and_quick(smtp_sink, connect):
    smtp_sink.data_reply = [STALL]
    conn = connect(smtp_sink, send_timeout_s=0.5)
    started = time.monotonic()
    outcome = conn.send(message())

    assert time.monotonic() - started < 3
    assert isinstance(outcome, TempFailure)
    assert outcome.reason == "connection"
    assert "timeout" in outcome.description
    assert not conn.is_connected
    assert isinstance(conn.send(message(pk="next")), Sent)


def test_connection_refused_is_temporary(connect):
    conn = SmtpConnection(SmtpEndpoint("127.0.0.1", closed_port()), helo_name="client.test")
    try:
        outcome = conn.send(message())
    finally:
        conn.close()

    assert isinstance(outcome, TempFailure)
    assert outcome.reason == "connection"
    assert outcome.smtp_code is None


def test_smtputf8_needed_but_unsupported_is_permanent(connect):
    with start_sink(smtputf8=False) as sink:
        outcome = connect(sink).send(message(to=["zoë@exämple.org"]))

        assert outcome == PermFailure(SMTPUTF8_UNSUPPORTED)
        assert sink.data_commands == 0


def test_smtputf8_is_used_when_offered(smtp_sink, connect):
    outcome = connect(smtp_sink).send(message(to=["Zoë <zoë@exämple.org>"]))

    assert isinstance(outcome, Sent)
    [received] = smtp_sink.wait_for(1)
    assert received.rcpt_tos == ["zoë@exämple.org"]
    assert "SMTPUTF8" in received.mail_options


# -- sink scripting used by other suites ---------------------------------------------


def test_held_data_reply_waits_for_release(smtp_sink):
    smtp_sink.hold_data(lambda received: "held@example.org" in received.rcpt_tos)
    outcomes = []

    def send_in_own_thread():
        conn = SmtpConnection(SmtpEndpoint(smtp_sink.host, smtp_sink.port), helo_name="t")
        try:
            outcomes.append(conn.send(message(to=["held@example.org"])))
        finally:
            conn.close()

    sender = threading.Thread(target=send_in_own_thread)
    sender.start()
    assert smtp_sink.held.wait(5)
    assert outcomes == []
    assert smtp_sink.messages == []

    smtp_sink.release()
    sender.join(5)
    assert not sender.is_alive()
    assert isinstance(outcomes[0], Sent)
    assert len(smtp_sink.wait_for(1)) == 1


# -- overlapping the owner's work with the server's ----------------------------------


def test_overlap_hooks_run_while_the_server_answers(smtp_sink, connect):
    conn = connect(smtp_sink)
    seen: list[tuple[str, int]] = []

    def envelope() -> None:  # MAIL FROM is on the wire; no data can have been sent yet
        seen.append(("envelope", smtp_sink.data_commands))

    def final_reply() -> None:  # the data is on the wire: the server gets it while we work
        wait_until(lambda: smtp_sink.data_commands == 1, what="server has the data")
        seen.append(("final_reply", len(smtp_sink.messages)))

    outcome = conn.send(message(), Overlap(envelope=envelope, final_reply=final_reply))

    assert isinstance(outcome, Sent)
    assert seen == [("envelope", 0), ("final_reply", 1)]
    assert len(smtp_sink.wait_for(1)) == 1


def test_overlap_hooks_run_once_across_a_silent_reconnect(smtp_sink, connect):
    conn = connect(smtp_sink)
    assert isinstance(conn.send(message(pk="a")), Sent)
    smtp_sink.drop_connections()
    calls: list[str] = []

    outcome = conn.send(
        message(pk="b"),
        Overlap(envelope=lambda: calls.append("envelope"), final_reply=lambda: calls.append("f")),
    )

    assert isinstance(outcome, Sent)
    assert calls == ["envelope", "f"]
    assert len(smtp_sink.wait_for(2)) == 2


def test_overlap_hook_error_is_raised_and_nothing_is_sent(smtp_sink, connect):
    conn = connect(smtp_sink)

    def envelope() -> None:
        raise RuntimeError("store is down")

    with pytest.raises(RuntimeError, match="store is down"):
        conn.send(message(pk="a"), Overlap(envelope=envelope))

    assert not conn.is_connected  # left mid-transaction: dropped
    assert smtp_sink.data_commands == 0
    assert isinstance(conn.send(message(pk="b")), Sent)  # a fresh session works
    assert [m.data.count(b"X-Genro-Mail-ID: b") for m in smtp_sink.wait_for(1)] == [1]


def test_overlap_hooks_not_reached_are_not_run(smtp_sink, connect):
    calls: list[str] = []
    overlap = Overlap(
        envelope=lambda: calls.append("envelope"), final_reply=lambda: calls.append("f")
    )
    refused = SmtpConnection(SmtpEndpoint("127.0.0.1", closed_port()), helo_name="client.test")
    try:
        assert isinstance(refused.send(message(), overlap), TempFailure)
    finally:
        refused.close()
    assert calls == []

    smtp_sink.rcpt_reply = {"ann@example.org": "550 5.1.1 no such user"}
    assert isinstance(connect(smtp_sink).send(message(), overlap), PermFailure)
    assert calls == ["envelope"]  # MAIL was answered; there was no data to wait for
