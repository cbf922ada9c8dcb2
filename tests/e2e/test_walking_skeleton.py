"""End to end through the public interface: REST in, real SMTP out, report to a real tenant app."""

from __future__ import annotations

import email
import email.policy
import time

from tests.fixtures.proxy import fast_settings, message, running_proxy
from tests.fixtures.tenant_http import TenantApp
from tests.fixtures.waiting import wait_until


def _setup(api, sink, tenant_app: TenantApp | None = None) -> str:
    fields = {"name": "ACME Corporation"}
    if tenant_app is not None:
        fields["client_base_url"] = tenant_app.url
    key = api.add_tenant("acme", **fields)
    api.add_account("acme", "main", host=sink.host, port=sink.port, use_tls=False)
    return key


def test_message_is_delivered_reported_and_listed_as_sent(tmp_path, smtp_sink, tenant_app) -> None:
    with running_proxy(fast_settings(tmp_path)) as (_server, api):
        _setup(api, smtp_sink, tenant_app)
        response = api.add_messages(
            message(
                "INV-42",
                to=["Ann Lee <ann@example.org>"],
                cc=["carl@example.org"],
                bcc=["audit@example.org"],
                subject="Invoice 42 — ready",
                body="Hello Ann",
                html="<p>Hello <b>Ann</b></p>",
                headers={"X-Campaign": "nov"},
            )
        )
        assert response.status_code == 200
        assert response.json() == {"ok": True, "queued": 1, "rejected": []}

        (received,) = smtp_sink.wait_for(1)
        assert received.mail_from == "sender@acme.example"
        assert sorted(received.rcpt_tos) == [
            "ann@example.org",
            "audit@example.org",
            "carl@example.org",
        ]
        parsed = email.message_from_bytes(received.data, policy=email.policy.default)
        assert parsed["Subject"] == "Invoice 42 — ready"
        assert parsed["X-Genro-Mail-ID"] == "INV-42"
        assert parsed["X-Campaign"] == "nov"
        assert parsed["Bcc"] is None
        assert parsed.get_body(("plain",)).get_content().strip() == "Hello Ann"
        assert "<b>Ann</b>" in parsed.get_body(("html",)).get_content()

        (item,) = tenant_app.wait_for_items(lambda i: i.get("event") == "sent")
        stored = api.wait_status("INV-42", "sent")
        assert item["tenant_id"] == "acme"
        assert item["id"] == "INV-42"
        assert item["pk"] == stored["pk"]
        assert item["sent_ts"] == stored["sent_ts"] == stored["smtp_ts"]
        assert isinstance(item["event_id"], int)
        assert parsed["Message-ID"] == f"<{stored['pk']}@acme.example>"
        assert stored["tenant_name"] == "ACME Corporation"
        assert stored["payload"] == stored["message"]
        assert stored["payload"]["to"] == ["Ann Lee <ann@example.org>"]
        wait_until(lambda: "reported_ts" in api.message("INV-42"), what="report acknowledged")


def test_events_are_reported_once_acknowledged(tmp_path, smtp_sink, tenant_app) -> None:
    with running_proxy(fast_settings(tmp_path)) as (_server, api):
        _setup(api, smtp_sink, tenant_app)
        api.add_messages(message("m1"), message("m2"))
        smtp_sink.wait_for(2)
        items = tenant_app.wait_for_items(lambda i: i.get("event") == "sent", min_count=2)
        assert sorted(i["id"] for i in items) == ["m1", "m2"]
        wait_until(lambda: all("reported_ts" in m for m in api.messages()), what="reported_ts set")


def test_smtp_550_ends_as_an_error_report(tmp_path, smtp_sink, tenant_app) -> None:
    smtp_sink.script_data("550 5.7.1 Message rejected as spam")
    with running_proxy(fast_settings(tmp_path)) as (_server, api):
        _setup(api, smtp_sink, tenant_app)
        api.add_messages(message("SPAM-1"))
        (item,) = tenant_app.wait_for_items(lambda i: i.get("event") == "error")
        assert item["id"] == "SPAM-1"
        assert item["error"] == "SMTP 550: 5.7.1 Message rejected as spam"
        assert item["smtp_code"] == 550
        stored = api.wait_status("SPAM-1", "error")
        assert stored["error"] == "SMTP 550: 5.7.1 Message rejected as spam"
        assert stored["smtp_ts"] == stored["error_ts"]
        assert "sent_ts" not in stored


def test_temporary_failure_is_deferred_and_reported(tmp_path, smtp_sink, tenant_app) -> None:
    smtp_sink.script_data("451 4.7.1 Try again later")
    with running_proxy(fast_settings(tmp_path)) as (_server, api):
        _setup(api, smtp_sink, tenant_app)
        api.add_messages(message("GREY-1"))
        (item,) = tenant_app.wait_for_items(lambda i: i.get("event") == "deferred")
        assert item["deferred_reason"] == "SMTP 451: 4.7.1 Try again later"
        assert item["retry_count"] == 1
        stored = api.wait_status("GREY-1", "deferred")
        assert stored["deferred_ts"] == item["deferred_ts"]
        assert 54 <= item["deferred_ts"] - int(time.time()) <= 67  # 60 s ± 10 %
        assert stored["retry_count"] == 1


def test_immediate_message_overtakes_a_queued_backlog(tmp_path, smtp_sink) -> None:
    smtp_sink.data_delay_s = 0.05
    with running_proxy(fast_settings(tmp_path)) as (_server, api):
        _setup(api, smtp_sink)
        api.add_messages(*[message(f"bulk-{i}", priority="low") for i in range(60)])
        smtp_sink.wait_for(2)
        delivered_before = len(smtp_sink.messages)
        api.add_messages(message("urgent", priority="immediate"))
        smtp_sink.wait_for(61, timeout_s=30)
        order = [email.message_from_bytes(m.data)["X-Genro-Mail-ID"] for m in smtp_sink.messages]
        # Only the message being transmitted when it arrived may go before it.
        assert order.index("urgent") <= delivered_before + 1
