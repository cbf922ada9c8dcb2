"""AccountActor: sends one SMTP account's messages, one at a time, over one connection.

Receives:
  WorkAvailable(immediate)  claim due rows (priority-0 rows first when asked) and start sending
  SendNext                  self-message: attempt the next claimed row, then tell itself again
  ReloadAccount             settings changed: drop the connection, re-read the account
  IdleCheck                 timer: close an expired connection; report idleness
  (a rate-limit Defer pauses claiming until its window ends; ReloadAccount lifts it)
Sends:
  ReportsPending(tenant_id) to the Supervisor after writing a reportable event
  Idle("account", key)      to the Supervisor after ``account_idle_stop`` seconds without work
  PassDone(tenant, account) to the Supervisor in test mode when a run-now's pass ends
  ChildFailed               (via ``Supervised.on_failure``) when a handler raises

A handled ``SendNext`` sends until something arrives in the inbox (at most
``SENDS_PER_TURN``): a ``Stop`` or an immediate message never waits behind more
than the one send in flight. The actor works while the server does (``_pipeline``):
the next message is begun and built while the final reply is awaited, and each
outcome is committed while the next MAIL FROM is answered, before any of the next
message's data goes out (SPEC §18.3). ``Transmitter`` builds and sends.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque

import pykka

from actors._context import ActorContext
from actors._pipeline import Attempted, Ready
from actors._supervised import Supervised
from actors._timer import Cancel
from actors._transmitter import Transmitter
from actors.messages import (
    Flush,
    Idle,
    IdleCheck,
    PassDone,
    ReloadAccount,
    ReportsPending,
    SendNext,
    WorkAvailable,
)
from proxy import ratelimit
from proxy.smtp.client import Overlap
from proxy.smtp.errors import PermFailure, Sent
from proxy.store.outcomes import Outcome
from proxy.store.records import (
    AccountRecord,
    ClaimedMessage,
)

logger = logging.getLogger(__name__)

SENDS_PER_TURN = 8  # sends per handled SendNext while the inbox stays empty


class AccountActor(Supervised):
    kind = "account"

    def __init__(
        self, ctx: ActorContext, supervisor: pykka.ActorRef, tenant_id: str, account_id: str
    ) -> None:
        super().__init__(ctx, supervisor)
        self.tenant_id = tenant_id
        self.account_id = account_id
        self._log_extra = {"tenant_id": tenant_id, "account_id": account_id}

    @property
    def key(self) -> tuple[str, ...]:
        return (self.tenant_id, self.account_id)

    # -- lifecycle -------------------------------------------------------------------

    def on_start(self) -> None:
        self._queue: deque[ClaimedMessage] = deque()
        self._busy = False
        self._account: AccountRecord | None = None
        self._tx = Transmitter(self.ctx, self.tenant_id, self.account_id)
        self._idle_timer: Cancel | None = None
        self._idle_since = self.ctx.clock.monotonic()
        self._last_renewal = self.ctx.clock.monotonic()
        self._paused_until = 0.0  # a reached rate-limit window: claim nothing before it ends
        self._pause_timer: Cancel | None = None
        self._ready: Ready | None = None  # the next message, begun while the last was answered
        self._unrecorded: Attempted | None = None  # written during the next send's envelope
        self._wrote_event = False  # since the tenant was last told
        # Test mode: when the run-now's pass began. It claims only what was due then, so
        # a message it deferred is not attempted twice in one pass (SPEC §6.6).
        self._pass_started_ts: int | None = None
        self._overlap = Overlap(envelope=self._record_unrecorded, final_reply=self._prepare_next)
        # Claims this instance holds for this account belong to a predecessor
        # that crashed or was stopped: give them back so they are sent at once.
        self.ctx.store.messages.release_account_claims(
            self.tenant_id, self.account_id, me=self.ctx.instance_id
        )
        if self.ctx.timers_enabled:  # test mode sends only on run-now
            self.actor_ref.tell(WorkAvailable())

    def _cleanup(self) -> None:
        if getattr(self, "_unrecorded", None) is not None:
            try:
                self._record_unrecorded()
            except Exception:  # the store failed: the claim's lease brings the message back
                logger.exception("outcome could not be written", extra=self._log_extra)
        for timer in (getattr(self, "_idle_timer", None), getattr(self, "_pause_timer", None)):
            if timer is not None:
                timer()
        if getattr(self, "_tx", None) is not None:
            self._tx.close()
        if getattr(self, "_queue", None) or getattr(self, "_ready", None):
            self._release_queue()  # not yet attempted: hand them back (SPEC §17)
        super()._cleanup()

    # -- dispatch ------------------------------------------------------------------------

    def on_receive(self, message: object) -> object:
        match message:
            case WorkAvailable(immediate=immediate):
                self._on_work(immediate=immediate)
            case SendNext():
                self._send_next()
            case ReloadAccount():
                self._reload()
            case IdleCheck():
                self._idle_check()
            case Flush():
                return True
            case _:
                logger.warning(
                    "account actor got unknown message %r", message, extra=self._log_extra
                )
        return None

    def _on_work(self, *, immediate: bool) -> None:
        if not self.ctx.timers_enabled:  # test mode: only a run-now wakes an account
            self._pass_started_ts = self._now()
        if immediate and self._busy:
            # Jump the queue: claimed priority-0 rows go before the rest of the batch.
            fresh = self._claim(max_priority=0)
            if fresh:
                self._requeue_ready()  # prepared before it arrived: it waits again
                self._queue.extendleft(reversed(fresh))
        if not self._busy:
            self._busy = True
            self._cancel_idle_timer()
            self.actor_ref.tell(SendNext())

    def _reload(self) -> None:
        self._tx.close()
        self._account = None
        self._paused_until = 0.0  # new limits: try again

    # -- sending ---------------------------------------------------------------------------

    def _send_next(self) -> None:
        """Send up to ``SENDS_PER_TURN`` messages while nothing else waits in the inbox.

        A ``Stop``, an immediate message or a reload still waits behind at most the
        one send in flight: the inbox is checked before every further send. Fewer
        hand-offs per message, and the tenant is told about new events once a turn.
        An outcome left for the next send's envelope is written before the turn ends.
        """
        attempted = None
        try:
            for _ in range(SENDS_PER_TURN):
                attempted = self._send_one()
                if attempted is None or not self.actor_inbox.empty():
                    break
        finally:
            self._record_unrecorded()
        self._announce_reports()
        if attempted is not None:
            self.actor_ref.tell(SendNext())

    def _announce_reports(self) -> None:
        if self._wrote_event:
            self._wrote_event = False
            self.tell_supervisor(ReportsPending(self.tenant_id))

    def _send_one(self) -> bool | None:
        """Attempt the next message; None when out of work."""
        if self.ctx.stopping.is_set():
            return None
        if self.ctx.clock.time() < self._paused_until:
            self._release_queue()
            self._go_idle()
            return None
        if self._ready is None and not self._queue:
            self._queue.extend(self._claim())
            self._last_renewal = self.ctx.clock.monotonic()
            # Read once per batch: it changes only through PUT /instance.
            self._tx.bounce_return_path = self.ctx.store.settings.get("bounce_return_path")
            if not self._queue:
                self._go_idle()
                return None
        self._renew_leases_if_due()
        self._attempt()
        return True

    def _claim(self, max_priority: int | None = None) -> list[ClaimedMessage]:
        tenant = self.ctx.store.tenants.get(self.tenant_id, with_key=False)
        account = self._load_account()
        if tenant is None or account is None:
            return []
        now = self._now()
        if self._pass_started_ts is not None:
            now = min(now, self._pass_started_ts)
        return self.ctx.store.messages.claim_due(
            tenant,
            self.account_id,
            me=self.ctx.instance_id,
            now=now,
            lease_s=self.ctx.settings.claim_lease_seconds,
            limit=account.batch_size or self.ctx.settings.batch_size_per_account,
            max_priority=max_priority,
        )

    def _attempt(self) -> None:
        """Send the prepared message or the next claimed row; its outcome is written later.

        The outcome is written while the next send's MAIL FROM is answered (before
        any of its data goes out, SPEC §18.3 rule 2) or at the end of the turn.
        """
        ready, self._ready = self._ready, None
        if ready is None:
            ready = self._begin(self._queue.popleft())
            if ready is None:
                return
        decision, outcome, message_id = self._send_within_limits(ready)
        self._record_unrecorded()  # a no-op when the send's envelope hook wrote it
        rate_limited = not isinstance(decision, ratelimit.Allow)
        self._unrecorded = Attempted(
            ready.sending, outcome, message_id, rate_limited, ready.tenant_name
        )

    def _begin(self, claimed: ClaimedMessage) -> Ready | None:
        """Re-read a claimed row and mark it sending (SPEC §18.3 rule 1); None: skip it."""
        tenant = self.ctx.store.tenants.get(self.tenant_id, with_key=False)
        sending = self.ctx.store.messages.begin_attempt(
            claimed.pk,
            tenant,
            me=self.ctx.instance_id,
            now=self._now(),
            lease_s=self.ctx.settings.claim_lease_seconds,
        )
        return None if sending is None else Ready(claimed, sending, tenant)

    def _prepare_next(self) -> None:
        """While the server works on a message: begin and build the next one.

        Not when something waits in the inbox (a ``Stop`` or an immediate message
        goes first) or the account is paused. A message with attachments is only
        begun: its attachments are fetched just before its own send.
        """
        if self._ready is not None or not self._queue or not self.actor_inbox.empty():
            return
        if self.ctx.stopping.is_set() or self.ctx.clock.time() < self._paused_until:
            return
        ready = self._begin(self._queue.popleft())
        if ready is not None and not ready.sending.payload.get("attachments"):
            with contextlib.suppress(ValueError, TypeError, UnicodeError):  # built again, reported
                ready.built = self._tx.build(ready.sending, ready.sending.payload)
        self._ready = ready

    def _record_unrecorded(self) -> None:
        """Write the last attempt's outcome and event, release its claim, count it."""
        attempted, self._unrecorded = self._unrecorded, None
        if attempted is None:
            return
        sending = attempted.sending
        recorded = self.ctx.store.messages.record_outcome(
            sending,
            attempted.outcome,
            me=self.ctx.instance_id,
            now=self._now(),
            message_id=attempted.message_id,
            max_retries=self.ctx.settings.max_retries,
            retry_delays=self.ctx.settings.retry_delays,
            rng=self.ctx.rng,
        )
        if recorded is None:
            logger.info(
                "outcome of %s discarded: claim lost or message deleted",
                sending.pk,
                extra=self._log_extra | {"pk": sending.pk},
            )
            return
        self._wrote_event = True
        tenant_name = attempted.tenant_name
        self._count(recorded.event_type, tenant_name)
        if attempted.rate_limited:
            self.ctx.metrics.rate_limited.labels(
                self.tenant_id, tenant_name, self.account_id, self.account_id
            ).inc()
        if self.ctx.settings.log_delivery_activity:
            logger.info(
                "attempt %s of %s: %s",
                sending.attempt,
                sending.id,
                recorded.event_type,
                extra=self._log_extra | {"pk": sending.pk},
            )

    def _send_within_limits(self, ready: Ready) -> tuple[ratelimit.Decision, Outcome, str | None]:
        """Reserve rate-limit units (SPEC §7.1 rule 3), then send; a failed send gives them back."""
        account = self._load_account()
        limits = ratelimit.limits_for(account, ready.tenant) if account is not None else ()
        ids = {"tenant_id": self.tenant_id, "account_id": self.account_id}
        reserved_at = self._now()
        decision = self.ctx.store.ratelimits.reserve(limits, now=reserved_at, **ids)
        match decision:
            case ratelimit.Defer(until_ts=until_ts):
                self._pause(until_ts)
                return decision, decision, None
            case ratelimit.Reject(reason=reason):
                return decision, PermFailure(reason), None
        outcome, message_id = self._tx.transmit(self._load_account(), ready, self._overlap)
        if not isinstance(outcome, Sent):
            self.ctx.store.ratelimits.release(limits, reserved_at=reserved_at, **ids)
        return decision, outcome, message_id

    def _count(self, event_type: str, tenant_name: str) -> None:
        labels = (self.tenant_id, tenant_name, self.account_id, self.account_id)
        counter = {
            "sent": self.ctx.metrics.sent,
            "error": self.ctx.metrics.errors,
            "deferred": self.ctx.metrics.deferred,
        }.get(event_type)
        if counter is not None:
            counter.labels(*labels).inc()

    def _pause(self, until_ts: int) -> None:
        """A limit is reached: claim nothing until its window ends (SPEC §7.4 rule 5)."""
        self._paused_until = float(until_ts)
        self._release_queue()
        if self.ctx.timers_enabled:
            if self._pause_timer is not None:
                self._pause_timer()
            delay = max(0.0, until_ts - self.ctx.clock.time())
            self._pause_timer = self.ctx.timers.after(delay, self.actor_ref, WorkAvailable())

    def _requeue_ready(self) -> None:
        """Put a prepared (begun, not sent) message back at the head of the queue."""
        ready, self._ready = self._ready, None
        if ready is not None and self.ctx.store.messages.abandon_attempt(
            ready.claimed.pk, me=self.ctx.instance_id
        ):
            self._queue.appendleft(ready.claimed)

    def _release_queue(self) -> None:
        self._requeue_ready()
        if self._queue:
            self.ctx.store.messages.release_claims_of(
                [c.pk for c in self._queue], me=self.ctx.instance_id
            )
            self._queue.clear()

    def _renew_leases_if_due(self) -> None:
        lease_s = self.ctx.settings.claim_lease_seconds
        if self._queue and self.ctx.clock.monotonic() - self._last_renewal >= lease_s / 3:
            self.ctx.store.messages.renew_leases(
                [c.pk for c in self._queue],
                me=self.ctx.instance_id,
                now=self._now(),
                lease_s=lease_s,
            )
            self._last_renewal = self.ctx.clock.monotonic()

    def _load_account(self) -> AccountRecord | None:
        if self._account is None:
            self._account = self.ctx.store.accounts.get(self.tenant_id, self.account_id)
        return self._account

    # -- idling --------------------------------------------------------------------------------

    def _go_idle(self) -> None:
        # The pass's last outcome is written and announced first: in test mode the
        # run-now's sync, released by PassDone, would otherwise miss it.
        self._record_unrecorded()
        self._announce_reports()
        self._busy = False
        self._idle_since = self.ctx.clock.monotonic()
        if not self.ctx.timers_enabled:  # test mode: the run-now's sync waits for this
            self.tell_supervisor(PassDone(self.tenant_id, self.account_id))
        self._schedule_idle_check()

    def _schedule_idle_check(self) -> None:
        if not self.ctx.timers_enabled:
            return
        ttl = self._account.ttl if self._account is not None else 300
        idle_stop = self.ctx.settings.account_idle_stop
        delay = min(ttl, idle_stop) if self._tx.is_connected else idle_stop
        self._cancel_idle_timer()
        self._idle_timer = self.ctx.timers.after(max(delay, 0.05), self.actor_ref, IdleCheck())

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer()
            self._idle_timer = None

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self._busy:
            return
        self._tx.close_if_expired()
        idle_for = self.ctx.clock.monotonic() - self._idle_since
        if idle_for >= self.ctx.settings.account_idle_stop:
            self.tell_supervisor(Idle(self.kind, self.key))
            return
        self._schedule_idle_check()

    def _now(self) -> int:
        return int(self.ctx.clock.time())
