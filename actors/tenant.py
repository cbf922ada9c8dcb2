"""TenantActor: posts one tenant's delivery reports and heartbeats to its sync endpoint.

Receives:
  ReportsReady     new events: post them within ``REPORT_COALESCE_S`` (a burst of sends
                   becomes one call, not one call per message)
  SyncDue(force)   post unreported events, or a heartbeat or accelerated re-call when due;
                   ``force`` (tenant-token run-now) clears DND and failure backoff and calls now
  ReloadTenant     settings changed; nothing cached survives it (and, timers enabled,
                   sync now: a new target is called at once; test mode waits for run-now)
  IdleCheck        timer: report idleness when quiet and nothing is due soon
Sends:
  Idle("tenant", key)  to the Supervisor when it has nothing to do until its next heartbeat
  ChildFailed          (via ``Supervised.on_failure``) when a handler raises

Each tenant posts from its own thread, so a hanging endpoint delays no one
else. Events are marked reported only after a call carrying them was
acknowledged (SPEC §10.5); failures back off per tenant (§10.6); DND and the
backoff live in the store, so a reaped or restarted actor picks them up.
"""

from __future__ import annotations

import logging
import os
import uuid

import pykka
import requests
from requests.utils import get_environ_proxies

from actors._context import ActorContext
from actors._supervised import Supervised
from actors._timer import Cancel
from actors.messages import Flush, Idle, IdleCheck, ReloadTenant, ReportsReady, SyncDue
from proxy import sync
from proxy.store.records import EventRecord, TenantRecord

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
USER_AGENT = "mail-proxy/0.1.0"
MAX_REPLY_BYTES = 1 << 20
# Reports go out within this delay of an outcome (SPEC §10.3 rule 4 asks < 200 ms median),
# so a burst of sends becomes one call per interval instead of one call per message.
REPORT_COALESCE_S = 0.05
# A tenant quiet for TENANT_IDLE_S (at most; ``account_idle_stop`` when shorter) whose next
# call is further away than STAY_AWAKE_S is reaped; the Supervisor's store scan respawns
# it when the tenant is due again, so 1,000 quiet tenants hold no threads.
TENANT_IDLE_S = 60.0
STAY_AWAKE_S = 5.0
LEASE_RETRY_S = 0.2


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
        # requests re-reads the whole environment on every call when trust_env is set
        # (a tenth of a report call's CPU): proxies and the CA bundle are read once here
        # and per URL instead. (netrc credentials are not used: the tenant's are explicit.)
        self._session.trust_env = False
        self._verify: bool | str = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
        self._proxies: dict[str, dict[str, str]] = {}
        self._timer: Cancel | None = None
        self._coalesce: Cancel | None = None
        self._idle_timer: Cancel | None = None
        self._next_wake: float | None = None
        self._active_mono = self.ctx.clock.monotonic()
        self._last_call_mono = float("-inf")
        self._warned_no_target = False
        self._warned_bad_dnd = False
        # Failing or healthy, for logging each transition once (SPEC §10.6 rule 3). Not the
        # backoff counter, which a tenant-token run-now resets mid-outage; None until the
        # stored state is read, so a respawned actor continues its predecessor's outage.
        self._failing: bool | None = None
        # Unique per incarnation: a respawned actor waits for its predecessor's call.
        self._holder = f"{self.ctx.instance_id}/{uuid.uuid4().hex[:12]}"
        self._accelerated = False  # in the accelerated loop (SPEC §10.7 rule 5)
        self._call_cursor: int | None = None  # newest event id when the previous call began
        self._idle_recalls = 0
        if self.ctx.timers_enabled:  # test mode syncs only on run-now
            self.actor_ref.tell(SyncDue())

    def _cleanup(self) -> None:
        timers = ("_timer", "_coalesce", "_idle_timer")
        for timer in (getattr(self, name, None) for name in timers):
            if timer is not None:
                timer()
        session = getattr(self, "_session", None)
        if session is not None:
            session.close()
        super()._cleanup()

    def on_receive(self, message: object) -> object:
        match message:
            case ReportsReady():
                self._reports_ready()
            case SyncDue(force=force):
                self._coalesce = None
                self._sync(force=force)
            case ReloadTenant():
                self._warned_no_target = False
                if self.ctx.timers_enabled:  # test mode syncs only on run-now (SPEC §6.6)
                    self.actor_ref.tell(SyncDue())
            case IdleCheck():
                self._idle_timer = None
                self._idle_check()
            case Flush():
                return True
            case _:
                logger.warning(
                    "tenant actor got unknown message %r", message, extra=self._log_extra
                )
        return None

    def _reports_ready(self) -> None:
        self._active_mono = self.ctx.clock.monotonic()
        if self._coalesce is not None:
            return  # a call is already scheduled; it will carry these events too
        wait = self._last_call_mono + REPORT_COALESCE_S - self.ctx.clock.monotonic()
        if wait > 0 and self.ctx.timers_enabled:
            self._coalesce = self.ctx.timers.after(wait, self.actor_ref, SyncDue())
            return
        self._sync(force=False)

    # -- deciding whether to call -------------------------------------------------------

    def _sync(self, *, force: bool) -> None:
        store = self.ctx.store
        tenant = store.tenants.get(self.tenant_id, with_key=False)
        if tenant is None:
            return
        if self._failing is None:
            # ``last_error`` is set by every failed call and cleared only by a successful
            # one, so it tells whether an outage is under way, across restarts and run-nows.
            self._failing = tenant.last_error is not None
        now = self._now()
        if force:
            # A tenant-token run-now clears DND and failure backoff (SPEC §10.9 rule 2).
            if tenant.dnd_until is not None or tenant.consecutive_failures:
                store.tenants.clear_dnd_and_backoff(self.tenant_id)
                tenant = store.tenants.get(self.tenant_id, with_key=False) or tenant
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
            self._maybe_idle(None)
            return
        has_events = store.events.has_unreported(self.tenant_id)
        if not has_events and not force and not self._call_due(tenant, now):
            self._schedule_next(tenant, now)
            return
        if not store.sync_state.acquire(
            self.tenant_id, self._holder, now=now, lease_s=self._lease_s()
        ):
            # Another caller (an instance, or this actor's predecessor) is calling now.
            self._wake_at(self.ctx.clock.time() + LEASE_RETRY_S)
            return
        try:
            if (unusable := sync.unusable_credentials(target)) is not None:
                self._failed(tenant, unusable, now)
                return
            # Read under the lease: whatever a previous caller acknowledged is not re-sent.
            events = store.events.unreported(self.tenant_id, self.ctx.settings.report_batch_size)
            self._call(tenant, target, events)
        finally:
            store.sync_state.release(self.tenant_id, self._holder)

    def _call_due(self, tenant: TenantRecord, now: int) -> bool:
        """A call without events: a heartbeat or an accelerated re-call (never during DND)."""
        if tenant.dnd_until is not None and tenant.dnd_until > now:
            return False
        if self._accelerated:
            return (tenant.next_sync_ts or 0) <= now
        if not tenant.active:
            return False
        return tenant.last_sync_ts is None or now >= (tenant.next_sync_ts or 0)

    # -- one call --------------------------------------------------------------------------

    def _call(
        self, tenant: TenantRecord, target: sync.SyncTarget, events: list[EventRecord]
    ) -> None:
        store = self.ctx.store
        # "Accepted since the previous call began" (§10.7 rule 5): messages submitted while
        # the last call was in flight, or since, keep the accelerated loop going.
        cursor = self._call_cursor
        self._call_cursor = store.sync_state.last_event_id(self.tenant_id)
        if cursor is None:
            cursor = self._call_cursor
        self._last_call_mono = self._active_mono = self.ctx.clock.monotonic()
        result = self._post(target, sync.build_report(events))
        done = self._now()
        if isinstance(result, sync.Failed):
            self._failed(tenant, result, done)
            return
        store.events.mark_reported([e.event_id for e in events], done)
        for event in events:
            self.ctx.metrics.reported_events.labels(
                self.tenant_id, tenant.display_name, event.event_type
            ).inc()
        if result.client_error:
            self.ctx.metrics.sync_failures.labels(
                self.tenant_id, tenant.display_name, "client_error"
            ).inc()
            logger.info("tenant reported problems with some items", extra=self._log_extra)
        if result.ignored_next_sync_after is not None and not self._warned_bad_dnd:
            logger.warning(
                "tenant replied with an unusable next_sync_after (%s); ignored",
                result.ignored_next_sync_after,
                extra=self._log_extra,
            )
            self._warned_bad_dnd = True
        dnd = sync.dnd_until(result, done)
        next_ts = self._after_success(result, dnd, cursor, done)
        store.tenants.record_sync_success(self.tenant_id, done, dnd_until=dnd, next_sync_ts=next_ts)
        if self._failing:
            logger.info("sync endpoint healthy again", extra=self._log_extra)
        self._failing = False
        if len(events) >= self.ctx.settings.report_batch_size:
            self.actor_ref.tell(SyncDue())  # a backlog goes out call after call (§10.3 rule 3)
            return
        updated = store.tenants.get(self.tenant_id, with_key=False)
        if updated is not None:
            self._schedule_next(updated, done)

    def _after_success(self, ack: sync.Ack, dnd: int | None, cursor: int, now: int) -> int:
        """Advance the accelerated loop; return when the next call without events is due."""
        if ack.queued > 0 and dnd is None:
            if not self._accelerated:
                self._accelerated, self._idle_recalls = True, 0
            elif self.ctx.store.sync_state.accepted_since(self.tenant_id, cursor):
                self._idle_recalls = 0
            else:
                self._idle_recalls += 1
            delay = sync.accelerated_delay_s(self._idle_recalls)
            if delay is not None:
                return now + delay
        self._accelerated, self._idle_recalls = False, 0
        return sync.next_heartbeat_ts(now, self.ctx.settings.sync_interval, dnd)

    def _post(self, target: sync.SyncTarget, body: dict) -> sync.Ack | sync.Failed:
        """POST with a connect timeout, a read timeout and a deadline on the whole reply."""
        headers = {}
        if target.bearer_token:
            headers["Authorization"] = f"Bearer {target.bearer_token}"
        timeout_s = self.ctx.settings.sync_timeout
        deadline = self.ctx.clock.monotonic() + CONNECT_TIMEOUT_S + timeout_s
        try:
            proxies = self._proxies.get(target.url)
            if proxies is None:
                proxies = self._proxies[target.url] = get_environ_proxies(target.url)
            with self._session.post(
                target.url,
                proxies=proxies,
                verify=self._verify,
                json=body,
                headers=headers,
                auth=target.basic_auth,
                timeout=(CONNECT_TIMEOUT_S, timeout_s),
                stream=True,
            ) as response:
                content = bytearray()
                for chunk in response.iter_content(65536):
                    content += chunk
                    if self.ctx.clock.monotonic() > deadline:
                        return sync.Failed("timeout", "timeout")
                    if len(content) > MAX_REPLY_BYTES:
                        return sync.Failed("invalid_response", "reply too large")
                return sync.parse_reply(response.status_code, bytes(content))
        except requests.Timeout:
            return sync.Failed("timeout", "timeout")
        except requests.RequestException as exc:
            return sync.Failed("connection", type(exc).__name__)

    def _failed(self, tenant: TenantRecord, failure: sync.Failed, now: int) -> None:
        failures = tenant.consecutive_failures + 1
        retry_at = now + max(1, round(sync.failure_backoff_s(failures, self.ctx.rng)))
        self.ctx.store.tenants.record_sync_failure(
            self.tenant_id, now, error=failure.detail, next_sync_ts=retry_at
        )
        self.ctx.metrics.sync_failures.labels(
            self.tenant_id, tenant.display_name, failure.reason
        ).inc()
        if not self._failing:
            logger.warning("sync endpoint failing: %s", failure.detail, extra=self._log_extra)
        self._failing = True
        self._wake_at(retry_at)

    # -- scheduling ----------------------------------------------------------------------------

    def _schedule_next(self, tenant: TenantRecord, now: int) -> None:
        """Wait for the next heartbeat, DND end or accelerated re-call; reap when far away."""
        if not tenant.active and not self._accelerated:
            self._maybe_idle(None)  # no heartbeats; reports still wake it (ReportsReady)
            return
        wake = tenant.next_sync_ts if tenant.next_sync_ts is not None else now
        if tenant.dnd_until is not None and tenant.dnd_until > now:
            wake = max(wake, tenant.dnd_until)
        self._maybe_idle(wake)

    def _maybe_idle(self, wake: float | None) -> None:
        """Wait for ``wake``; when quiet for long and nothing is due soon, ask to be reaped."""
        self._wake_at(wake)
        if self.ctx.timers_enabled and self._idle_timer is None:
            self._idle_timer = self.ctx.timers.after(self._idle_s(), self.actor_ref, IdleCheck())

    def _idle_check(self) -> None:
        quiet_for = self.ctx.clock.monotonic() - self._active_mono
        wake_in = None if self._next_wake is None else self._next_wake - self.ctx.clock.time()
        busy = self._accelerated or self._coalesce is not None
        if busy or quiet_for < self._idle_s() or (wake_in is not None and wake_in < STAY_AWAKE_S):
            self._idle_timer = self.ctx.timers.after(self._idle_s(), self.actor_ref, IdleCheck())
            return
        self.tell_supervisor(Idle(self.kind, self.key))

    def _idle_s(self) -> float:
        return min(TENANT_IDLE_S, float(self.ctx.settings.account_idle_stop))

    def _wake_at(self, ts: float | None) -> None:
        self._next_wake = ts
        if ts is None or not self.ctx.timers_enabled:
            return
        if self._timer is not None:
            self._timer()
        delay = max(0.0, ts - self.ctx.clock.time())
        self._timer = self.ctx.timers.after(delay, self.actor_ref, SyncDue())

    def _lease_s(self) -> int:
        return int(CONNECT_TIMEOUT_S + self.ctx.settings.sync_timeout) + 5

    def _global_sync(self) -> sync.GlobalSync:
        s = self.ctx.settings
        return sync.GlobalSync(
            s.client_sync_url, s.client_sync_token, s.client_sync_user, s.client_sync_password
        )

    def _now(self) -> int:
        return int(self.ctx.clock.time())
