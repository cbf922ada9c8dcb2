"""``messages``, ``status``, ``stats``, ``run-now``, ``suspend``, ``activate`` on a live proxy."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.proxy import message
from tests.fixtures.waiting import wait_until
from tests.proxy.cli.conftest import one_error_line


@pytest.fixture
def acme(proxy, smtp_sink):
    """Tenant acme with account main on a real SMTP sink."""
    proxy.api.add_tenant("acme", name="ACME")
    proxy.api.add_account("acme", "main", host=smtp_sink.host, port=smtp_sink.port)
    return proxy


def sent(proxy, *ids: str) -> None:
    response = proxy.api.add_messages(*(message(i) for i in ids))
    assert response.status_code == 200, response.text
    for message_id in ids:
        proxy.api.wait_status(message_id, "sent")


def test_list_show_and_events_of_a_sent_message(acme):
    sent(acme, "M-1", "M-2")
    cli = acme.cli.as_tenant("acme", acme.cli.token)
    header, _rule, *rows = cli.ok("messages", "list").stdout.splitlines()
    assert header.split()[:5] == ["ID", "TENANT", "ACCOUNT", "PRIORITY", "STATUS"]
    assert [row.split()[:5] for row in rows] == [
        ["M-1", "acme", "main", "2", "sent"],
        ["M-2", "acme", "main", "2", "sent"],
    ]
    limited = json.loads(cli.ok("--json", "messages", "list", "--limit", "1").stdout)
    assert [m["id"] for m in limited["messages"]] == ["M-1"]
    assert cli.ok("messages", "list", "--status", "error").stdout == "(none)\n"

    shown = cli.ok("messages", "show", "M-1", "--history").stdout
    assert "status" in shown
    assert "Subject of M-1" in shown
    assert "History" in shown
    assert "queued" in shown

    events = cli.ok("messages", "events", "M-1").stdout.splitlines()
    assert events[0].split()[:3] == ["EVENT", "TYPE", "TIME"]
    assert [row.split()[1] for row in events[2:]] == ["queued", "sent"]


def test_show_unknown_message_is_exit_1(acme):
    result = acme.cli("--tenant", "acme", "messages", "show", "nope")
    assert result.exit_code == 1
    assert one_error_line(result) == "mail-proxy: message 'nope' not found"
    events = acme.cli("--tenant", "acme", "messages", "events", "nope")
    assert one_error_line(events) == "mail-proxy: HTTP 404: Message 'nope' not found"


def test_admin_without_tenant_must_name_it_for_events(acme):
    result = acme.cli("messages", "events", "M-1")
    assert result.exit_code == 1
    assert one_error_line(result).endswith("(give --tenant or GMP_TENANT)")


def test_delete_reports_removed_and_not_found(acme):
    sent(acme, "M-1")
    result = acme.cli.ok("--tenant", "acme", "messages", "delete", "M-1", "GHOST")
    assert result.stdout == "ok: 1 removed\nnot found: GHOST\n"
    assert acme.api.message("M-1") is None


def test_cleanup_removes_old_finished_messages(acme):
    sent(acme, "M-1")
    kept = acme.cli.ok("--tenant", "acme", "messages", "cleanup")
    assert kept.stdout == "ok: 0 removed\n"  # the default retention is 7 days

    def cleaned() -> bool:
        out = acme.cli.ok("--tenant", "acme", "messages", "cleanup", "--older-than", "0").stdout
        return out == "ok: 1 removed\n"

    wait_until(cleaned, timeout_s=5, interval_s=0.2, what="M-1 older than its smtp_ts second")
    assert acme.api.message("M-1") is None


def test_status_and_stats(acme):
    sent(acme, "M-1")
    status = acme.cli.ok("status").stdout
    assert "scheduler_active  yes" in status
    assert "pending_messages  0" in status
    stats = acme.cli.ok("stats").stdout.splitlines()
    counts = {" ".join(line.split()[:-1]): line.split()[-1] for line in stats[2:]}
    assert counts["sent"] == "1"
    assert counts["pending"] == "0"


def test_suspend_and_activate_a_batch_and_the_scheduler(acme, smtp_sink):
    cli = acme.cli
    suspended = cli.ok("--tenant", "acme", "suspend", "--batch", "NL-1").stdout
    assert "suspended_batches  NL-1" in suspended
    response = acme.api.add_messages(message("B-1", batch_code="NL-1"))
    assert response.status_code == 200
    acme.api.wait_status("B-1", "suspended")
    assert "suspended_batches" in cli.ok("--tenant", "acme", "activate", "--batch", "NL-1").stdout
    acme.api.wait_status("B-1", "sent")

    assert cli.ok("suspend").stdout == "ok: scheduler suspended for every tenant\n"
    assert "scheduler_active  no" in cli.ok("status").stdout
    assert cli.ok("activate").stdout == "ok: scheduler active for every tenant\n"
    assert cli.ok("run-now").stdout == "ok: woken\n"


def test_activating_one_batch_of_a_fully_suspended_tenant_is_exit_1(acme):
    acme.cli.ok("--tenant", "acme", "suspend")
    result = acme.cli("--tenant", "acme", "activate", "--batch", "NL-1")
    assert result.exit_code == 1
    assert one_error_line(result).startswith("mail-proxy: HTTP 400: cannot activate")
