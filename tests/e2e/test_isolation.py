"""Tenant isolation and the immediate lane under load (no timing assertions: order and counts)."""

from __future__ import annotations

import email

import pytest

from tests.fixtures.proxy import fast_settings, message, running_proxy
from tests.fixtures.smtp import start_sink

pytestmark = pytest.mark.slow


def _ids(sink) -> list[str]:
    return [email.message_from_bytes(m.data)["X-Genro-Mail-ID"] for m in sink.messages]


def _queue(api, tenant_id: str, count: int, **fields: object) -> None:
    for start in range(0, count, 500):
        batch = [
            message(f"{tenant_id}-{i:04d}", tenant_id=tenant_id, **fields)
            for i in range(start, min(start + 500, count))
        ]
        response = api.add_messages(*batch)
        assert response.json()["queued"] == len(batch), response.text


def test_a_noisy_tenant_does_not_delay_a_quiet_one(tmp_path) -> None:
    with (
        start_sink() as slow,
        start_sink() as fast,
        running_proxy(fast_settings(tmp_path, batch_size_per_account=50)) as (_server, api),
    ):
        slow.data_delay_s = 0.1
        api.add_tenant("noisy")
        api.add_account("noisy", "main", host=slow.host, port=slow.port, use_tls=False)
        api.add_tenant("quiet")
        api.add_account("quiet", "main", host=fast.host, port=fast.port, use_tls=False)
        _queue(api, "noisy", 2000)
        slow.wait_for(1)
        _queue(api, "quiet", 100)
        fast.wait_for(100, timeout_s=60)
        assert len(slow.messages) < 200  # less than 10 % of the noisy backlog went meanwhile


def test_immediate_message_goes_next_behind_a_large_low_priority_backlog(tmp_path) -> None:
    with start_sink() as sink, running_proxy(fast_settings(tmp_path)) as (_server, api):
        sink.data_delay_s = 0.02
        api.add_tenant("acme")
        api.add_account("acme", "main", host=sink.host, port=sink.port, use_tls=False)
        _queue(api, "acme", 2000, priority="low")
        sink.wait_for(3)
        response = api.add_messages(message("urgent", priority=0))
        assert response.json()["queued"] == 1
        # Counted once the proxy has accepted it: sends finished while the request was
        # still being handled came before the message existed.
        delivered_before = len(sink.messages)
        sink.wait_for(delivered_before + 3, timeout_s=30)
        order = _ids(sink)
        assert "urgent" in order
        # Only the low-priority message in flight when it was accepted may precede it.
        assert order.index("urgent") <= delivered_before + 1
