"""Supervision: a crashed actor is restarted with backoff; its work resumes from the store."""

from __future__ import annotations

import email
import threading

import pykka

from actors.account import AccountActor
from actors.supervisor import ChildKinds
from actors.tenant import TenantActor
from tests.fixtures.proxy import fast_settings, message, running_proxy
from tests.fixtures.waiting import wait_until


class CrashOnceAccount(AccountActor):
    """Raises in the middle of its first attempt, after the row was marked ``sending``."""

    crashed = threading.Event()

    def _send_within_limits(self, ready):
        if not CrashOnceAccount.crashed.is_set():
            CrashOnceAccount.crashed.set()
            raise RuntimeError("simulated bug in the send path")
        return super()._send_within_limits(ready)


class CrashOnceTenant(TenantActor):
    crashed = threading.Event()

    def _call(self, tenant, target, events):
        if events and not CrashOnceTenant.crashed.is_set():
            CrashOnceTenant.crashed.set()
            raise RuntimeError("simulated bug in the sync path")
        return super()._call(tenant, target, events)


def _metric(api, name: str) -> str:
    text = api.get("/metrics").text
    return next((line for line in text.splitlines() if line.startswith(name)), "")


def test_crashed_account_actor_is_restarted_and_sends_the_message(tmp_path, smtp_sink) -> None:
    CrashOnceAccount.crashed.clear()
    kinds = ChildKinds(account=CrashOnceAccount)
    with running_proxy(fast_settings(tmp_path), kinds=kinds) as (_server, api):
        api.add_tenant("acme")
        api.add_account("acme", "main", host=smtp_sink.host, port=smtp_sink.port, use_tls=False)
        api.add_messages(message("m1"), message("m2"))
        assert CrashOnceAccount.crashed.wait(5)
        received = smtp_sink.wait_for(2, timeout_s=15)
        ids = sorted(email.message_from_bytes(r.data)["X-Genro-Mail-ID"] for r in received)
        assert ids == ["m1", "m2"]
        api.wait_status("m1", "sent")
        api.wait_status("m2", "sent")
        assert _metric(api, 'gmp_actor_restarts_total{actor="account"}').endswith(" 1.0")


def test_crashed_tenant_actor_is_restarted_and_reports(tmp_path, smtp_sink, tenant_app) -> None:
    CrashOnceTenant.crashed.clear()
    kinds = ChildKinds(tenant=CrashOnceTenant)
    with running_proxy(fast_settings(tmp_path), kinds=kinds) as (_server, api):
        api.add_tenant("acme", client_base_url=tenant_app.url)
        api.add_account("acme", "main", host=smtp_sink.host, port=smtp_sink.port, use_tls=False)
        api.add_messages(message("m1"))
        (item,) = tenant_app.wait_for_items(lambda i: i["event"] == "sent", timeout_s=15)
        assert item["id"] == "m1"
        assert CrashOnceTenant.crashed.is_set()


def test_idle_account_actor_is_stopped_and_respawned_on_demand(tmp_path, smtp_sink) -> None:
    settings = fast_settings(tmp_path, account_idle_stop=1)
    with running_proxy(settings) as (_server, api):
        api.add_tenant("acme")
        api.add_account("acme", "main", host=smtp_sink.host, port=smtp_sink.port, use_tls=False)
        api.add_messages(message("m1"))
        smtp_sink.wait_for(1)
        wait_until(
            lambda: not pykka.ActorRegistry.get_by_class(AccountActor),
            timeout_s=10,
            what="idle account actor reaped",
        )
        wait_until(lambda: smtp_sink.open_connections == 0, what="its connection closed too")
        api.add_messages(message("m2"))
        smtp_sink.wait_for(2)
        api.wait_status("m2", "sent")
