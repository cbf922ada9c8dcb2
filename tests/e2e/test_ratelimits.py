"""Rate limits through the proxy: defer pauses, reject fails, tenant limits span accounts.

Daily windows keep the tests clear of minute and hour boundaries.
"""

from __future__ import annotations

import time

from tests.fixtures.proxy import fast_settings, message, running_proxy
from tests.fixtures.waiting import wait_until


def _next_midnight() -> int:
    return (int(time.time()) // 86400 + 1) * 86400


def _by_status(api, tenant_id: str = "acme") -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for m in api.messages(tenant_id):
        grouped.setdefault(m["status"], []).append(m["id"])
    return grouped


def _metric(api, name: str, account: str = "main") -> float:
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(f"{name}{{") and f'account_id="{account}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_defer_sends_up_to_the_limit_then_waits_for_the_window(tmp_path, smtp_sink, tenant_app):
    with running_proxy(fast_settings(tmp_path)) as (_server, api):
        api.add_tenant("acme", client_base_url=tenant_app.url)
        api.add_account(
            "acme", "main", host=smtp_sink.host, port=smtp_sink.port, use_tls=False, limit_per_day=2
        )
        api.add_messages(*[message(f"m{i}") for i in range(5)])
        smtp_sink.wait_for(2)
        (item,) = tenant_app.wait_for_items(lambda i: i["event"] == "deferred")
        assert item["deferred_reason"] == "rate limit: account limit_per_day (2)"
        assert item["deferred_ts"] == _next_midnight()
        assert item["retry_count"] == 0  # a rate limit is not a failed attempt
        grouped = wait_until(lambda: (g := _by_status(api)).get("sent") and g)
        assert len(grouped["sent"]) == 2
        assert len(grouped["deferred"]) == 1
        assert len(grouped["pending"]) == 2  # never claimed while the window is full
        assert len(smtp_sink.messages) == 2
        assert _metric(api, "gmp_rate_limited_total") == 1.0
        assert _metric(api, "gmp_deferred_total") == 1.0


def test_reject_fails_what_exceeds_the_limit(tmp_path, smtp_sink):
    with running_proxy(fast_settings(tmp_path)) as (_server, api):
        api.add_tenant("acme")
        api.add_account(
            "acme",
            "main",
            host=smtp_sink.host,
            port=smtp_sink.port,
            use_tls=False,
            limit_per_day=1,
            limit_behavior="reject",
        )
        api.add_messages(message("a"), message("b"), message("c"))
        grouped = wait_until(lambda: len((g := _by_status(api)).get("error", [])) == 2 and g)
        assert len(grouped["sent"]) == 1
        failed = [api.message(i) for i in grouped["error"]]
        assert {m["error"] for m in failed} == {"rate limit exceeded: account limit_per_day (1)"}
        assert _metric(api, "gmp_rate_limited_total") == 2.0
        assert _metric(api, "gmp_errors_total") == 2.0


def test_tenant_limit_spans_all_its_accounts(tmp_path, smtp_sink):
    with running_proxy(fast_settings(tmp_path)) as (_server, api):
        api.add_tenant("acme", rate_limits={"daily": 3})
        for account in ("one", "two"):
            api.add_account(
                "acme", account, host=smtp_sink.host, port=smtp_sink.port, use_tls=False
            )
        api.add_messages(
            *[message(f"one-{i}", account_id="one") for i in range(3)],
            *[message(f"two-{i}", account_id="two") for i in range(3)],
        )
        smtp_sink.wait_for(3)
        wait_until(lambda: len(_by_status(api).get("deferred", [])) >= 1)
        assert len(smtp_sink.messages) == 3
        deferred = [api.message(i) for i in _by_status(api)["deferred"]]
        assert all(m["deferred_ts"] == _next_midnight() for m in deferred)
