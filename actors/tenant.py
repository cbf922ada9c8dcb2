"""TenantActor: posts one tenant's delivery reports and heartbeats to its sync endpoint.

Receives:
  ReportsReady     new events: post them within ``REPORT_COALESCE_S`` (a burst of sends
                   becomes one call, not one call per message)
  SyncDue(force)   post unreported events (or a heartbeat when due, or when forced by
                   a tenant-token run-now, which also clears DND and failure backoff)
  ReloadTenant     settings changed; nothing cached survives it
Sends:
  ChildFailed      (via ``Supervised.on_failure``) when a handler raises

Each tenant posts from its own thread, so a hanging endpoint delays no one
else. Events are marked reported only after a call carrying them was
acknowledged (SPEC §10.5); failures back off per tenant (§10.6).
"""

from __future__ import annotations

import logging

import pykka
import requests

from actors._context import ActorContext
from actors._supervised import Supervised
from actors._timer import Cancel
from actors.messages import ReloadTenant, ReportsReady, SyncDue
from proxy import sync
from proxy.store.records import EventRecord, TenantRecord

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
# Reports go out within this delay of an outcome (SPEC §10.3 rule 4 asks < 200 ms median),
# so a burst of sends becomes one call per interval instead of one call per message.
REPORT_COALESCE_S = 0.05
USER_AGENT = "mail-proxy/0.1.0"


class TenantActor(Supervised):
    kind = "tenant"

    def __init__(self, ctx: ActorContext, supervisor: pykka.ActorRef, tenant_id: str) -> None:
        super().__init__(ctx, supervisor)
        self.tenant_id = tenant_id
        self._log_extra = {"tenant_id": tenant_id}

    @property
    def key(self) -> tuple[str, ...]:
        return (self.tenant_id,)

    def on_start(self) -> None:
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._timer: Cancel | None = None
        self._coalesce: Cancel | None = None
        self._last_call_mono = float("-inf")
        self._warned_no_target = False
        if self.ctx.timers_enabled:  # test mode syncs only on run-now
            self.actor_ref.tell(SyncDue())

    def _cleanup(self) -> None:
        for timer in (getattr(self, "_timer", None), getattr(self, "_coalesce", None)):
            if timer is not None:
                timer()
        session = getattr(self, "_session", None)
        if session is not None:
            session.close()
        super()._cleanup()

    def on_receive(self, message: object) -> None:
        match message:
            case ReportsReady():
                self._reports_ready()
            case SyncDue(force=force):
                self._coalesce = None
                self._sync(force=force)
            case ReloadTenant():
                self._warned_no_target = False
                self.actor_ref.tell(SyncDue())
            case _:
                logger.warning(
                    "tenant actor got unknown message %r", message, extra=self._log_extra
                )

    def _reports_ready(self) -> None:
        if self._coalesce is not None:
            return  # a call is already scheduled; it will carry these events too
        wait = self._last_call_mono + REPORT_COALESCE_S - self.ctx.clock.monotonic()
        if wait > 0 and self.ctx.timers_enabled:
            self._coalesce = self.ctx.timers.after(wait, self.actor_ref, SyncDue())
            return
        self._sync(force=False)

    # -- one sync call ---------------------------------------------------------------

    def _sync(self, *, force: bool) -> None:
        store = self.ctx.store
        tenant = store.tenants.get(self.tenant_id)
        if tenant is None:
            return
        now = self._now()
        if force:
            # A tenant-token run-now clears DND and failure backoff (SPEC §10.9 rule 2).
            if tenant.dnd_until is not None or tenant.consecutive_failures:
                store.tenants.clear_dnd_and_backoff(self.tenant_id)
                tenant = store.tenants.get(self.tenant_id) or tenant
        elif tenant.consecutive_failures and (tenant.next_sync_ts or 0) > now:
            self._wake_at(tenant.next_sync_ts)  # in failure backoff: new events do not shorten it
            return
        target = sync.sync_target(tenant, self._global_sync())
        if target is None:
            if not self._warned_no_target:
                logger.info(
                    "tenant has no sync target; reports stay pending", extra=self._log_extra
                )
                self._warned_no_target = True
            return
        events = store.events.unreported(self.tenant_id, self.ctx.settings.report_batch_size)
        if not events and not force and not self._heartbeat_due(tenant, now):
            self._wake_at(self._next_heartbeat(tenant, now))
            return
        self._call(tenant, target, events, now)

    def _call(
        self, tenant: TenantRecord, target: sync.SyncTarget, events: list[EventRecord], now: int
    ) -> None:
        self._last_call_mono = self.ctx.clock.monotonic()
        result = self._post(target, sync.build_report(events))
        store = self.ctx.store
        if isinstance(result, sync.Failed):
            self._failed(tenant, result, self._now())
            return
        done = self._now()
        store.events.mark_reported([e.event_id for e in events], done)
        for event in events:
            self.ctx.metrics.reported_events.labels(
                self.tenant_id, tenant.display_name, event.event_type
            ).inc()
        if result.client_error:
            self.ctx.metrics.sync_failures.labels(
                self.tenant_id, tenant.display_name, "client_error"
            ).inc()
        dnd = sync.dnd_until(result, done)
        next_ts = sync.next_heartbeat_ts(done, self.ctx.settings.sync_interval, dnd)
        store.tenants.record_sync_success(self.tenant_id, done, dnd_until=dnd, next_sync_ts=next_ts)
        if tenant.consecutive_failures:
            logger.info("sync endpoint healthy again", extra=self._log_extra)
        if len(events) >= self.ctx.settings.report_batch_size:
            self.actor_ref.tell(SyncDue())  # a backlog goes out call after call (§10.3 rule 3)
        else:
            self._wake_at(next_ts)

    def _post(self, target: sync.SyncTarget, body: dict) -> sync.Ack | sync.Failed:
        headers = {}
        if target.bearer_token:
            headers["Authorization"] = f"Bearer {target.bearer_token}"
        try:
            response = self._session.post(
                target.url,
                json=body,
                headers=headers,
                auth=target.basic_auth,
                timeout=(CONNECT_TIMEOUT_S, self.ctx.settings.sync_timeout),
            )
        except requests.Timeout:
            return sync.Failed("timeout", "timeout")
        except requests.RequestException as exc:
            return sync.Failed("connection", type(exc).__name__)
        return sync.parse_reply(response.status_code, response.content)

    def _failed(self, tenant: TenantRecord, failure: sync.Failed, now: int) -> None:
        failures = tenant.consecutive_failures + 1
        retry_at = now + max(1, round(sync.failure_backoff_s(failures, self.ctx.rng)))
        self.ctx.store.tenants.record_sync_failure(
            self.tenant_id, now, error=failure.detail, next_sync_ts=retry_at
        )
        self.ctx.metrics.sync_failures.labels(
            self.tenant_id, tenant.display_name, failure.reason
        ).inc()
        if failures == 1:
            logger.warning("sync endpoint failing: %s", failure.detail, extra=self._log_extra)
        self._wake_at(retry_at)

    # -- scheduling ----------------------------------------------------------------------

    def _heartbeat_due(self, tenant: TenantRecord, now: int) -> bool:
        if not tenant.active or (tenant.dnd_until is not None and tenant.dnd_until > now):
            return False
        return tenant.last_sync_ts is None or now >= (tenant.next_sync_ts or 0)

    def _next_heartbeat(self, tenant: TenantRecord, now: int) -> int:
        if tenant.dnd_until is not None and tenant.dnd_until > now:
            return tenant.dnd_until
        return tenant.next_sync_ts or now + self.ctx.settings.sync_interval

    def _wake_at(self, ts: int | None) -> None:
        if ts is None or not self.ctx.timers_enabled:
            return
        if self._timer is not None:
            self._timer()
        delay = max(0.0, ts - self.ctx.clock.time())
        self._timer = self.ctx.timers.after(delay, self.actor_ref, SyncDue())

    def _global_sync(self) -> sync.GlobalSync:
        s = self.ctx.settings
        return sync.GlobalSync(
            s.client_sync_url, s.client_sync_token, s.client_sync_user, s.client_sync_password
        )

    def _now(self) -> int:
        return int(self.ctx.clock.time())
