"""TenantActor against a real tenant HTTP server, with a manual clock and scheduler.

``ManualScheduler.advance`` moves the clock and fires due timers; ``ask(Flush())``
waits until the actor has handled everything told before it. No sleeps.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest

from actors._context import ActorContext
from actors._timer import ManualScheduler
from actors.messages import ChildFailed, Flush, ReloadTenant, ReportsReady, SyncDue
from actors.tenant import TenantActor
from proxy import sync
from proxy.metrics import Metrics
from proxy.smtp.errors import Sent
from proxy.store import Database, open_store
from tests.fixtures.stores import accepted, make_settings
from tests.fixtures.tenant_http import Reply, TenantApp

START = 1_767_225_600.0


class Recorder(pykka.ThreadingActor):
    """Stands in for the Supervisor: records what the child tells it."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[object] = []

    def on_receive(self, message: object) -> object:
        if isinstance(message, Flush):
            return list(self.received)
        self.received.append(message)
        return None


@pytest.fixture
def clock() -> ManualScheduler:
    return ManualScheduler(start_ts=START)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    store = open_store(str(tmp_path / "sync.db"))
    yield store
    store.close()


def make_ctx(db: Database, clock: ManualScheduler, **settings: object) -> ActorContext:
    values = {"sync_interval": 300, "sync_timeout": 1.0, "report_batch_size": 1000} | settings
    return ActorContext(
        store=db,
        settings=make_settings(**values),
        timers=clock,
        clock=clock,
        metrics=Metrics(),
        instance_id="test-node",
        rng=random.Random(1),
    )


class Harness:
    def __init__(self, db: Database, clock: ManualScheduler, app: TenantApp, **settings: object):
        self.db, self.clock, self.app = db, clock, app
        self.ctx = make_ctx(db, clock, **settings)
        self.supervisor = Recorder.start()
        self.ref: pykka.ActorRef | None = None

    def start(self) -> None:
        self.ref = TenantActor.start(self.ctx, self.supervisor, "acme")
        self.flush()  # on_start has run (it runs before any message is handled) …
        self.flush()  # … and so has the SyncDue it told itself

    def flush(self) -> None:
        assert self.ref is not None
        self.ref.ask(Flush(), timeout=10)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.flush()

    def tell(self, message: object) -> None:
        assert self.ref is not None
        self.ref.tell(message)
        self.flush()

    def now(self) -> int:
        return int(self.clock.time())

    def sent_events(self, *ids: str) -> None:
        """Messages that were sent: one reportable ``sent`` event each."""
        store, now = self.db, self.now()
        store.messages.enqueue([accepted(i) for i in ids], now)
        tenant = store.tenants.get("acme")
        for claimed in store.messages.claim_due(
            tenant, "main", me="n", now=now, lease_s=30, limit=999
        ):
            sending = store.messages.begin_attempt(claimed.pk, tenant, me="n", now=now, lease_s=30)
            store.messages.record_outcome(
                sending,
                Sent(250, "OK"),
                me="n",
                now=now,
                message_id=None,
                max_retries=5,
                retry_delays=(60,),
                rng=random.Random(0),
            )

    def calls(self) -> list:
        return list(self.app.calls)


@pytest.fixture
def harness(db, clock, tenant_app) -> Iterator[Harness]:
    db.tenants.upsert("acme", {"client_base_url": tenant_app.url}, int(START))
    db.accounts.upsert("acme", "main", {"host": "127.0.0.1", "port": 25}, int(START))
    h = Harness(db, clock, tenant_app)
    yield h
    pykka.ActorRegistry.stop_all()


def test_first_heartbeat_is_immediate_then_every_interval(harness: Harness) -> None:
    harness.start()
    assert [c.body for c in harness.calls()] == [{"delivery_report": []}]
    harness.advance(299)
    assert len(harness.calls()) == 1
    harness.advance(1)
    assert len(harness.calls()) == 2
    status = harness.db.tenants.get("acme")
    assert status.last_sync_ts == harness.now()
    assert status.next_sync_ts == harness.now() + 300


def test_reports_go_out_at_once_and_are_acknowledged(harness: Harness) -> None:
    harness.start()
    harness.sent_events("m1", "m2")
    harness.tell(ReportsReady())
    harness.advance(0.05)  # reports are coalesced for at most 50 ms
    report = harness.calls()[-1].body["delivery_report"]
    assert [(i["id"], i["event"]) for i in report] == [("m1", "sent"), ("m2", "sent")]
    assert harness.db.events.count_unreported("acme") == 0


def test_dnd_holds_heartbeats_but_not_reports(harness: Harness) -> None:
    quiet_until = harness.now() + 1000
    harness.app.reply_with(body={"ok": True, "next_sync_after": quiet_until})
    harness.start()
    assert harness.db.tenants.get("acme").dnd_until == quiet_until
    harness.advance(999)
    assert len(harness.calls()) == 1  # no heartbeat during DND
    harness.sent_events("m1")
    harness.tell(ReportsReady())
    harness.advance(0.05)
    assert harness.calls()[-1].body["delivery_report"][0]["id"] == "m1"  # reports still go
    harness.tell(SyncDue())  # an admin run-now respects DND
    assert len(harness.calls()) == 2
    harness.advance(1)  # the first heartbeat is due at dnd_until itself
    assert harness.calls()[-1].body == {"delivery_report": []}
    assert len(harness.calls()) == 3
    assert harness.db.tenants.get("acme").dnd_until is None  # its end is not in the future


def test_dnd_survives_a_restart(harness: Harness) -> None:
    harness.app.reply_with(body={"ok": True, "next_sync_after": harness.now() + 600})
    harness.start()
    assert harness.ref is not None
    harness.ref.stop()
    harness.start()  # a new incarnation reads DND from the store
    assert len(harness.calls()) == 1
    harness.advance(600)
    assert len(harness.calls()) == 2


def test_tenant_run_now_clears_dnd_and_calls_now(harness: Harness) -> None:
    harness.app.reply_with(body={"ok": True, "next_sync_after": harness.now() + 3600})
    harness.start()
    harness.app.reply_with(body={"ok": True})
    harness.tell(SyncDue(force=True))
    assert len(harness.calls()) == 2
    assert harness.db.tenants.get("acme").dnd_until is None


def test_failures_back_off_and_recover(harness: Harness) -> None:
    harness.app.reply_with(status=503)
    harness.sent_events("m1")
    harness.start()
    assert len(harness.calls()) == 1
    tenant = harness.db.tenants.get("acme")
    assert (tenant.consecutive_failures, tenant.last_error) == (1, "HTTP 503")
    first_wait = tenant.next_sync_ts - harness.now()
    assert 4 <= first_wait <= 6  # 5 s ± 10 %
    harness.tell(ReportsReady())  # new events do not shorten the backoff
    assert len(harness.calls()) == 1
    harness.advance(first_wait)
    assert len(harness.calls()) == 2
    second_wait = harness.db.tenants.get("acme").next_sync_ts - harness.now()
    assert 9 <= second_wait <= 11
    harness.app.reply_with(body={"ok": True})
    harness.advance(second_wait)
    assert len(harness.calls()) == 3
    assert harness.db.tenants.get("acme").consecutive_failures == 0
    assert harness.db.events.count_unreported("acme") == 0
    # The same event went out in every call until one was acknowledged.
    ids = [c.body["delivery_report"][0]["event_id"] for c in harness.calls()]
    assert len(set(ids)) == 1


def test_non_json_2xx_is_not_an_acknowledgement(harness: Harness) -> None:
    harness.app.reply_with(status=200, body=b"<html>maintenance</html>")
    harness.sent_events("m1")
    harness.start()
    assert harness.db.events.count_unreported("acme") == 1
    assert harness.db.tenants.get("acme").last_error == "reply is not JSON"


def test_accelerated_loop_recalls_at_once_then_spaces_idle_recalls(harness: Harness) -> None:
    harness.app.reply_with(body={"ok": True, "queued": 5})
    harness.start()
    harness.advance(0)  # queued > 0: call again at once
    assert len(harness.calls()) == 2
    waits = []
    for _ in range(5):
        wait = harness.db.tenants.get("acme").next_sync_ts - harness.now()
        waits.append(wait)
        harness.advance(wait)
    assert waits == [1, 2, 4, 8, 16]
    assert len(harness.calls()) == 7
    # After five idle re-calls the tenant is back on the heartbeat schedule.
    assert harness.db.tenants.get("acme").next_sync_ts - harness.now() == 300


def test_accelerated_loop_goes_on_while_the_tenant_submits(harness: Harness) -> None:
    harness.app.reply_with(body={"ok": True, "queued": 5})
    harness.start()
    for n in range(3):
        harness.db.messages.enqueue([accepted(f"new-{n}")], harness.now())
        harness.advance(0)
        assert harness.db.tenants.get("acme").next_sync_ts == harness.now()  # no idle spacing
    harness.app.reply_with(body={"ok": True, "queued": 0})
    harness.advance(0)
    assert harness.db.tenants.get("acme").next_sync_ts == harness.now() + 300


def test_a_backlog_goes_out_in_consecutive_calls(harness: Harness) -> None:
    harness.ctx = make_ctx(harness.db, harness.clock, report_batch_size=100)
    harness.sent_events(*[f"m{i}" for i in range(250)])
    harness.start()
    harness.app.wait_for_calls(3)
    harness.flush()
    sizes = [len(c.body["delivery_report"]) for c in harness.calls()]
    assert sizes == [100, 100, 50]
    event_ids = [i["event_id"] for c in harness.calls() for i in c.body["delivery_report"]]
    assert event_ids == sorted(event_ids)


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ({"method": "bearer", "token": "s3cret"}, "Bearer s3cret"),
        ({"method": "basic", "user": "ann", "password": "pw"}, "Basic YW5uOnB3"),
        (None, None),
    ],
)
def test_sync_calls_carry_the_tenant_credentials(harness: Harness, auth, expected) -> None:
    harness.db.tenants.upsert("acme", {"client_auth": auth}, harness.now())
    harness.start()
    assert harness.calls()[0].headers.get("authorization") == expected
    assert harness.calls()[0].headers["user-agent"].startswith("mail-proxy/")


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy"])
def test_sync_calls_go_through_the_proxy_the_environment_names(
    harness: Harness, monkeypatch, variable
) -> None:
    """Operators whose tenants are reachable only through an egress proxy set HTTP(S)_PROXY.

    The tenant app plays the proxy here: it receives the absolute URL of the tenant's
    (unresolvable) endpoint, which only a proxied request carries.
    """
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, harness.app.url)
    base = "http://tenant-app.invalid:8080"
    harness.db.tenants.upsert("acme", {"client_base_url": base}, harness.now())
    harness.start()
    assert [call.path for call in harness.calls()] == [f"{base}/mail-proxy/sync"]


def test_no_proxy_hosts_are_called_directly(harness: Harness, monkeypatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    harness.start()
    assert [call.path for call in harness.calls()] == ["/mail-proxy/sync"]


def test_global_target_and_token_for_tenants_without_a_base_url(db, clock, tenant_app) -> None:
    db.tenants.upsert("acme", {}, int(START))
    h = Harness(
        db,
        clock,
        tenant_app,
        client_sync_url=f"{tenant_app.url}/global/sync",
        client_sync_token="global-token",
    )
    h.start()
    (call,) = h.calls()
    assert call.path == "/global/sync"
    assert call.headers["authorization"] == "Bearer global-token"


def test_hanging_endpoint_times_out_and_backs_off(harness: Harness) -> None:
    harness.app.script(Reply(hang=True))
    harness.sent_events("m1")
    harness.start()  # the call times out after sync_timeout (1 s)
    harness.app.release_hung()
    tenant = harness.db.tenants.get("acme")
    assert tenant.consecutive_failures == 1
    assert tenant.last_error == "timeout"
    assert harness.db.events.count_unreported("acme") == 1


# -- audit findings: fractional and unusable next_sync_after, test mode, health logging --


def supervisor_heard(harness: Harness) -> list[object]:
    return harness.supervisor.ask(Flush(), timeout=10)


def test_a_fractional_next_sync_after_holds_calls_until_the_second_after_it(harness) -> None:
    harness.start()  # first heartbeat, plain {"ok": true}
    # The tenant answers every call with the same fractional moment half a second ahead.
    quiet_until = harness.now() + 0.5
    harness.app.reply_with(body={"ok": True, "next_sync_after": quiet_until})
    harness.tell(SyncDue(force=True))  # a tenant-token run-now
    assert len(harness.calls()) == 2
    assert harness.db.tenants.get("acme").dnd_until == harness.now() + 1  # rounded up
    harness.advance(0)
    harness.advance(0.5)
    harness.advance(0.49)
    assert len(harness.calls()) == 2  # no call before the DND moment
    harness.advance(0.01)
    assert len(harness.calls()) == 3  # one heartbeat at dnd_until itself
    assert harness.calls()[-1].body == {"delivery_report": []}
    # Its answer is now in the past: DND cleared, the next heartbeat a full interval away.
    tenant = harness.db.tenants.get("acme")
    assert (tenant.dnd_until, tenant.next_sync_ts) == (None, harness.now() + 300)
    harness.advance(0)
    harness.advance(299)
    assert len(harness.calls()) == 3
    harness.advance(1)
    assert len(harness.calls()) == 4


def test_a_fractional_next_sync_after_read_mid_second_is_rounded_up(db, tenant_app) -> None:
    clock = ManualScheduler(start_ts=START + 0.3)
    db.tenants.upsert("acme", {"client_base_url": tenant_app.url}, int(START))
    tenant_app.reply_with(body={"ok": True, "next_sync_after": START + 0.6})
    h = Harness(db, clock, tenant_app)
    try:
        h.start()
        assert db.tenants.get("acme").dnd_until == START + 1
        h.advance(0)
        h.advance(0.6)  # past next_sync_after itself, not yet past its whole second
        assert len(h.calls()) == 1
        h.advance(0.2)
        assert len(h.calls()) == 2
    finally:
        pykka.ActorRegistry.stop_all()


@pytest.mark.parametrize("offset", [0, -0.5, -10, -86_400])
def test_a_present_or_past_next_sync_after_waits_a_full_interval(harness, offset) -> None:
    harness.app.reply_with(body={"ok": True, "next_sync_after": START + offset})
    harness.start()
    tenant = harness.db.tenants.get("acme")
    assert (tenant.dnd_until, tenant.next_sync_ts) == (None, harness.now() + 300)
    harness.advance(0)
    harness.advance(299.9)
    assert len(harness.calls()) == 1


@pytest.mark.parametrize(
    "raw",
    [b"1e20", b"1" + b"0" * 400, str(2**63).encode(), b"1e308"],
)
def test_a_huge_next_sync_after_is_clamped_and_does_not_crash_the_actor(harness, raw) -> None:
    harness.app.reply_with(body=b'{"ok": true, "next_sync_after": ' + raw + b"}")
    harness.sent_events("m1")
    harness.start()
    assert harness.ref is not None
    assert harness.ref.is_alive()
    assert not [m for m in supervisor_heard(harness) if isinstance(m, ChildFailed)]
    tenant = harness.db.tenants.get("acme")
    assert tenant.dnd_until == harness.now() + sync.MAX_DND_S
    assert tenant.next_sync_ts == tenant.dnd_until
    assert harness.db.events.count_unreported("acme") == 0  # the report was acknowledged


@pytest.mark.parametrize("raw", [b"Infinity", b"-Infinity", b"NaN", b"1e400"])
def test_a_non_finite_next_sync_after_is_ignored_and_logged_once(harness, raw, caplog) -> None:
    harness.app.reply_with(body=b'{"ok": true, "next_sync_after": ' + raw + b"}")
    harness.sent_events("m1")
    with caplog.at_level(logging.WARNING, logger="actors.tenant"):
        harness.start()
        harness.tell(SyncDue(force=True))
        harness.tell(SyncDue(force=True))
    assert len(harness.calls()) == 3
    assert harness.ref is not None
    assert harness.ref.is_alive()
    assert not [m for m in supervisor_heard(harness) if isinstance(m, ChildFailed)]
    tenant = harness.db.tenants.get("acme")
    assert (tenant.dnd_until, tenant.next_sync_ts) == (None, harness.now() + 300)
    assert harness.db.events.count_unreported("acme") == 0
    warnings = [r for r in caplog.records if "next_sync_after" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING


@pytest.fixture
def test_mode_harness(db, clock, tenant_app) -> Iterator[Harness]:
    db.tenants.upsert("acme", {"client_base_url": tenant_app.url}, int(START))
    h = Harness(db, clock, tenant_app, test_mode=True)
    yield h
    pykka.ActorRegistry.stop_all()


def test_in_test_mode_a_tenant_reload_makes_no_sync_call(test_mode_harness) -> None:
    h = test_mode_harness
    h.start()
    h.tell(ReloadTenant())  # POST /tenant or PUT /tenant
    h.flush()  # anything it told itself has been handled too
    h.advance(3600)
    assert h.calls() == []
    assert h.clock.pending() == []  # and no timer was set
    h.tell(SyncDue())  # a run-now: the one way to sync in test mode
    assert len(h.calls()) == 1


def health_lines(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "actors.tenant" and "sync endpoint" in r.getMessage()
    ]


def test_one_outage_logs_failing_once_and_healthy_once_despite_run_nows(harness, caplog) -> None:
    harness.app.reply_with(status=503)
    harness.sent_events("m1")
    with caplog.at_level(logging.INFO, logger="actors.tenant"):
        harness.start()
        for _ in range(3):  # tenant-token run-nows reset the backoff counter
            harness.tell(SyncDue(force=True))
        harness.advance(6)  # and a retry after the backoff
        assert len(harness.calls()) == 5
        harness.app.reply_with(body={"ok": True})
        harness.tell(SyncDue(force=True))  # the run-now that finds it healthy again
        harness.advance(300)
    assert len(harness.calls()) == 7
    assert health_lines(caplog) == [
        "sync endpoint failing: HTTP 503",
        "sync endpoint healthy again",
    ]


def test_an_outage_across_a_restart_is_logged_once_each_way(harness, caplog) -> None:
    harness.app.reply_with(status=503)
    harness.sent_events("m1")
    with caplog.at_level(logging.INFO, logger="actors.tenant"):
        harness.start()
        assert harness.ref is not None
        harness.ref.stop()
        harness.start()  # a new incarnation, in backoff: no call
        harness.tell(SyncDue(force=True))  # still failing: no second "failing" line
        harness.app.reply_with(body={"ok": True})
        harness.ref.stop()
        harness.start()
        harness.advance(harness.db.tenants.get("acme").next_sync_ts - harness.now())
        # The outage was stored: the incarnation that sees the recovery logs it.
    assert len(harness.calls()) == 3
    assert health_lines(caplog) == [
        "sync endpoint failing: HTTP 503",
        "sync endpoint healthy again",
    ]
