"""Delivery through the proxy against real SMTP servers: TLS modes, AUTH, test mode, metrics."""

from __future__ import annotations

import email
import time

import pytest

from actors.messages import ListChildren
from tests.fixtures.proxy import Api, fast_settings, message, running_proxy
from tests.fixtures.smtp import DROP, SINK_PASSWORD, SINK_USER, STALL, start_sink
from tests.fixtures.waiting import wait_until


def _tenant_and_account(api, sink, **account: object) -> None:
    api.add_tenant("acme")
    api.add_account("acme", "main", host=sink.host, port=sink.port, **account)


def test_starttls_with_verified_certificate_and_auth(tmp_path, tls_ca, trusted_tls_ca) -> None:
    with (
        start_sink(tls="starttls", ca=tls_ca, auth=(SINK_USER, SINK_PASSWORD)) as sink,
        running_proxy(fast_settings(tmp_path)) as (_server, api),
    ):
        _tenant_and_account(api, sink, use_tls=True, user=SINK_USER, password=SINK_PASSWORD)
        api.add_messages(message("secure-1"))
        (received,) = sink.wait_for(1)
        assert received.tls
        assert received.login == SINK_USER
        api.wait_status("secure-1", "sent")
        listed = api.get("/accounts", params={"tenant_id": "acme"}).json()["accounts"][0]
        assert listed["password_set"] is True
        assert "password" not in listed


def test_implicit_tls_with_verification_off_for_a_self_signed_server(tmp_path, tls_ca) -> None:
    with (
        start_sink(tls="implicit", ca=tls_ca) as sink,
        running_proxy(fast_settings(tmp_path)) as (_server, api),
    ):
        _tenant_and_account(api, sink, use_ssl=True, tls_verify=False)
        api.add_messages(message("tls-1"))
        (received,) = sink.wait_for(1)
        assert received.tls


def test_untrusted_certificate_is_a_temporary_failure(tmp_path, tls_ca) -> None:
    with (
        start_sink(tls="implicit", ca=tls_ca) as sink,
        running_proxy(fast_settings(tmp_path)) as (_server, api),
    ):
        _tenant_and_account(api, sink, use_ssl=True)  # tls_verify defaults to true
        api.add_messages(message("tls-2"))
        deferred = api.wait_status("tls-2", "deferred")
        assert deferred["retry_count"] == 1
        assert sink.messages == []


def test_wrong_password_is_a_permanent_error(tmp_path) -> None:
    with (
        start_sink(auth=(SINK_USER, SINK_PASSWORD), auth_require_tls=False) as sink,
        running_proxy(fast_settings(tmp_path)) as (_server, api),
    ):
        _tenant_and_account(api, sink, use_tls=False, user=SINK_USER, password="wrong")
        api.add_messages(message("auth-1"))
        failed = api.wait_status("auth-1", "error")
        assert failed["error"].startswith("SMTP 535")


def test_account_change_reconnects_with_the_new_settings(tmp_path, smtp_sink) -> None:
    with start_sink() as other, running_proxy(fast_settings(tmp_path)) as (_server, api):
        _tenant_and_account(api, smtp_sink, use_tls=False)
        api.add_messages(message("before"))
        smtp_sink.wait_for(1)
        api.add_account("acme", "main", host=other.host, port=other.port, use_tls=False)
        api.add_messages(message("after"))
        (received,) = other.wait_for(1)
        assert email.message_from_bytes(received.data)["X-Genro-Mail-ID"] == "after"
        assert len(smtp_sink.messages) == 1


def test_test_mode_sends_only_on_run_now(tmp_path, smtp_sink) -> None:
    with running_proxy(fast_settings(tmp_path, test_mode=True)) as (_server, api):
        _tenant_and_account(api, smtp_sink, use_tls=False)
        api.add_messages(message("held-1"), message("held-2"))
        assert api.message("held-1")["status"] == "pending"
        assert smtp_sink.data_commands == 0
        assert api.post("/commands/run-now").json() == {"ok": True}
        smtp_sink.wait_for(2)
        api.wait_status("held-2", "sent")


def test_test_mode_run_now_attempts_each_due_message_once(tmp_path, smtp_sink, tenant_app):
    """SPEC §6.6: one run-now is one pass, every due message attempted once, even when a
    message it deferred becomes due again before the pass ends."""
    smtp_sink.script_data("451 4.3.0 later")
    smtp_sink.hold_data(lambda received: b"Subject: Subject of slow" in received.data)
    # A 3 s retry: "first" shows as deferred for at least 2 s (1 s could be a few ms).
    settings = fast_settings(tmp_path, test_mode=True, retry_delays=(3, 3), max_retries=5)
    with running_proxy(settings) as (_server, api):
        api.add_tenant("acme", client_base_url=tenant_app.url)
        api.add_account("acme", "main", host=smtp_sink.host, port=smtp_sink.port, use_tls=False)
        api.add_messages(message("first", priority=0), message("slow", priority=3))
        assert api.post("/commands/run-now").status_code == 200
        deferred = api.wait_status("first", "deferred")
        assert smtp_sink.held.wait(10)
        # The pass is still on "slow" when "first" is due again.
        wait_until(
            lambda: time.time() >= deferred["deferred_ts"] + 1, timeout_s=10, what="its retry time"
        )
        smtp_sink.release()
        # The pass's one sync call comes once the pass is over (SPEC §6.6).
        (call,) = tenant_app.wait_for_calls(1)
        reported = [(i["id"], i["event"]) for i in call.body["delivery_report"]]
        assert sorted(reported) == [("first", "deferred"), ("slow", "sent")]
        assert smtp_sink.data_commands == 2  # not a third: "first" waits for the next run-now
        assert api.message("first")["retry_count"] == 1

        assert api.post("/commands/run-now").status_code == 200
        api.wait_status("first", "sent")


def _settle_account_actors(server) -> None:
    """Wait until every AccountActor handled what it was told, and what it told itself."""
    from actors.account import AccountActor
    from actors.messages import Flush, ListChildren

    for ref in server.supervisor.ask(ListChildren(), timeout=10):
        if ref.actor_class is AccountActor:
            ref.ask(Flush(), timeout=10)
            ref.ask(Flush(), timeout=10)


def test_test_mode_activation_and_account_changes_do_not_send(tmp_path, smtp_sink) -> None:
    """SPEC §6.6: in test mode sending happens only on run-now; an activation or an
    account update does not wake it."""
    with running_proxy(fast_settings(tmp_path, test_mode=True)) as (server, api):
        _tenant_and_account(api, smtp_sink, use_tls=False)
        assert api.post("/commands/suspend", params={"tenant_id": "acme"}).status_code == 200
        api.add_messages(message("m1"))
        assert api.post("/commands/run-now").status_code == 200  # suspended: nothing to send
        _settle_account_actors(server)
        assert api.post("/commands/activate", params={"tenant_id": "acme"}).status_code == 200
        api.add_account("acme", "main", host=smtp_sink.host, port=smtp_sink.port, use_tls=False)
        server.supervisor.ask(ListChildren(), timeout=10)  # it handled both
        _settle_account_actors(server)
        assert smtp_sink.data_commands == 0
        assert api.message("m1")["status"] == "pending"

        assert api.post("/commands/run-now").status_code == 200
        api.wait_status("m1", "sent")


def test_metrics_count_outcomes_per_account(tmp_path, smtp_sink) -> None:
    smtp_sink.script_data("250 OK", "550 5.1.1 no such user", "451 4.3.0 later")
    with running_proxy(fast_settings(tmp_path)) as (_server, api):
        api.add_tenant("acme", name="ACME")
        api.add_account("acme", "main", host=smtp_sink.host, port=smtp_sink.port, use_tls=False)
        api.add_messages(message("ok"), message("bad"), message("later"))
        api.wait_status("ok", "sent")
        api.wait_status("bad", "error")
        api.wait_status("later", "deferred")
        labels = 'account_id="main",account_name="main",tenant_id="acme",tenant_name="ACME"'

        def metric(name: str) -> str | None:
            text = api.get("/metrics").text
            for line in text.splitlines():
                if line.startswith(f"{name}{{{labels}}} "):
                    return line.rsplit(" ", 1)[1]
            return None

        wait_until(lambda: metric("gmp_sent_total") == "1.0")
        assert metric("gmp_errors_total") == "1.0"
        assert metric("gmp_deferred_total") == "1.0"
        assert metric("gmp_rate_limited_total") == "0.0"
        text = api.get("/metrics").text
        assert "_created" not in text
        assert 'gmp_sent_total{account_id="default",account_name="default"' in text
        assert api.as_token(None).get("/metrics").status_code == 401
        bearer = {"Authorization": "Bearer test-admin-token"}
        assert api.as_token(None).get("/metrics", headers=bearer).status_code == 200


@pytest.mark.parametrize(
    ("reply", "status", "event"),
    [
        ("421 4.3.2 Service shutting down", "deferred", "deferred"),
        ("451 4.7.1 Greylisted, try again", "deferred", "deferred"),
        ("452 4.2.2 Mailbox full", "deferred", "deferred"),
        ("550 5.1.1 No such user", "error", "error"),
        ("554 5.7.1 Rejected as spam", "error", "error"),
        (DROP, "deferred", "deferred"),
    ],
)
def test_each_failure_class_through_the_proxy(
    tmp_path, smtp_sink, tenant_app, reply, status, event
) -> None:
    smtp_sink.script_data(reply)
    with running_proxy(fast_settings(tmp_path)) as (_server, api):
        api.add_tenant("acme", client_base_url=tenant_app.url)
        api.add_account("acme", "main", host=smtp_sink.host, port=smtp_sink.port, use_tls=False)
        api.add_messages(message("m1"))
        stored = api.wait_status("m1", status)
        (item,) = tenant_app.wait_for_items(lambda i: i["event"] == event)
        events = api.get("/messages/m1/events", params={"tenant_id": "acme"}).json()["events"]
        attempt = events[-1]
        assert attempt["event_type"] == event
        assert attempt["metadata"]["attempt"] == 1
        if reply != DROP:
            code = int(reply[:3])
            assert attempt["metadata"]["smtp_code"] == code
            text = f"SMTP {code}: {reply[4:]}"
            assert (item.get("deferred_reason") or item.get("error")) == text
        if status == "deferred":
            assert stored["retry_count"] == 1
            assert attempt["metadata"]["reason"] == ("connection" if reply == DROP else "smtp")


def test_a_stalled_server_times_out_and_is_retried(tmp_path, smtp_sink) -> None:
    smtp_sink.script_data(STALL)
    with running_proxy(fast_settings(tmp_path, smtp_send_timeout=1.0)) as (_server, api):
        _tenant_and_account(api, smtp_sink, use_tls=False)
        api.add_messages(message("slow"))
        stored = api.wait_status("slow", "deferred", timeout_s=15)
        assert stored["retry_count"] == 1


def test_each_outcome_is_written_before_the_next_message_goes_out(tmp_path, smtp_sink) -> None:
    """SPEC §18.3 rule 2 with the account's send pipeline: whenever the server holds a
    message's data, every message it accepted earlier is already recorded as sent."""
    with running_proxy(fast_settings(tmp_path)) as (server, api):
        _tenant_and_account(api, smtp_sink, use_tls=False)
        reader = Api(server.url)  # used from the SMTP server's thread
        accepted: list[str] = []
        not_recorded: list[tuple[str, str]] = []

        def check(received) -> bool:
            mail_id = email.message_from_bytes(received.data)["X-Genro-Mail-ID"]
            for earlier in accepted:
                status = reader.message(earlier)["status"]
                if status != "sent":
                    not_recorded.append((earlier, status))
            accepted.append(mail_id)
            return False  # never hold: only look

        smtp_sink.hold_data(check)
        api.add_messages(*(message(f"m{i:02d}") for i in range(20)))

        assert len(smtp_sink.wait_for(20)) == 20
        assert not_recorded == []
        wait_until(lambda: all(m["status"] == "sent" for m in api.messages()), what="all sent")
