"""BounceActor: polls the instance's bounce mailbox (SPEC §11). MailboxPoller: the shared loop.

Receives:
  PollMailbox   timer (every poll interval; after a failure, the backoff) or an admin
                run-now: take the mailbox lease, connect, list the new mail
  PollNext      self-message: fetch, parse, record and flag the next batch of mails
Sends:
  ReportsPending(tenant_id)  to the Supervisor after recording reportable events
  ChildFailed                (via ``Supervised.on_failure``) when a handler raises

All IMAP I/O runs in this actor's thread with socket timeouts, one batch per
handled message, so a slow server delays nobody else and a ``Stop`` waits for
one batch at most. Connection and login failures are logged once per state
change (failing, then recovered) and retried with backoff up to 10 minutes.
"""

from __future__ import annotations

import abc
import logging
import uuid
from collections.abc import Iterable

from actors._supervised import Supervised
from actors._timer import Cancel
from actors.messages import Flush, PollMailbox, PollNext, ReportsPending
from proxy import retry
from proxy.bounce import disposition
from proxy.bounce.disposition import Disposition
from proxy.bounce.imap import ImapAuthError, ImapEndpoint, ImapError
from proxy.bounce.parse import Bounce, NotBounce, Unparseable, classify, mail_key
from proxy.bounce.poll import MailboxPoll
from proxy.store.bounces import BOUNCE_MAILBOX, RecordedEvent
from proxy.store.records import is_unusable
from proxy.store.settings import BOUNCE_SETTINGS

logger = logging.getLogger(__name__)

LEASE_S = 600
BATCH = 5  # mails per handled message: a Stop waits for at most this many
PRUNE_EVERY_S = 86_400
PROCESSED_RETENTION_S = 180 * 86_400  # processed-mail rows older than this are forgotten
MAX_BACKOFF_S = 600.0
IMAP_TIMEOUT_S = 30.0
DEFAULT_POLL_INTERVAL_S = 60.0


class MailboxPoller(Supervised):
    """The poll loop; subclasses name the mailbox, its endpoint and how a mail is handled."""

    kind = "poller"

    # -- what a subclass provides ------------------------------------------------------

    @abc.abstractmethod
    def _mailbox_name(self) -> str:
        """A label for logs: which mailbox this poller reads."""

    @abc.abstractmethod
    def _endpoint(self) -> ImapEndpoint | None:
        """None while the mailbox is not configured (the poller waits an interval)."""

    def _interval_s(self) -> float:
        return DEFAULT_POLL_INTERVAL_S

    def _processed_folder(self) -> str | None:
        return None

    @abc.abstractmethod
    def _handle(self, raw: bytes) -> Disposition:
        """Parse one mail, record what it means, and say how to flag it."""

    def _after_poll(self, started_ts: int) -> None:
        """Runs after a successful poll that began at ``started_ts``, still under the lease."""

    # -- lifecycle -------------------------------------------------------------------------

    def on_start(self) -> None:
        self._timer: Cancel | None = None
        self._poll: MailboxPoll | None = None
        self._started_ts = 0
        self._failures = 0
        self._failing: str | None = None  # the failure state last logged
        self._holder = f"{self.ctx.instance_id}/{uuid.uuid4().hex[:12]}"
        self._pruned_mono = float("-inf")
        if self.ctx.timers_enabled:  # test mode polls only on an admin run-now
            self.actor_ref.tell(PollMailbox())

    def _cleanup(self) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer()
        if getattr(self, "_poll", None) is not None:
            self._end_poll()
        super()._cleanup()

    def on_receive(self, message: object) -> object:
        match message:
            case PollMailbox():
                self._begin()
            case PollNext():
                self._next_batch()
            case Flush():
                return True
            case _:
                logger.warning("%s poller got unknown message %r", self.kind, message)
        return None

    # -- one poll ------------------------------------------------------------------------------

    def _begin(self) -> None:
        if self._poll is not None:
            return  # a poll is running: it reschedules itself when done
        if self._timer is not None:
            self._timer()
            self._timer = None
        endpoint = self._endpoint()
        if endpoint is None:
            self._schedule(self._interval_s())
            return
        if is_unusable(endpoint.password):
            self._failed(ImapAuthError("credential decryption failed"))
            return
        now = self._now()
        bounces = self.ctx.store.bounces
        name = self._mailbox_name()
        lease = {"instance_id": self.ctx.instance_id, "now": now, "lease_s": LEASE_S}
        if not bounces.acquire_poll(name, self._holder, **lease):
            self._schedule(self._interval_s())  # another instance is polling it
            return
        self._started_ts = now
        self._poll = MailboxPoll(
            bounces,
            name,
            endpoint,
            self._handle,
            processed_folder=self._processed_folder(),
            timeout_s=IMAP_TIMEOUT_S,
        )
        try:
            self._poll.open()
        except ImapError as exc:
            self._failed(exc)
            return
        self.actor_ref.tell(PollNext())

    def _next_batch(self) -> None:
        poll = self._poll
        if poll is None:
            return
        if self.ctx.stopping.is_set():
            self._end_poll()  # shutting down: the cursor is saved, the rest waits for next time
            return
        try:
            more = poll.step(BATCH)
        except ImapError as exc:
            self._failed(exc)
            return
        if more:
            lease = {"instance_id": self.ctx.instance_id, "now": self._now(), "lease_s": LEASE_S}
            self.ctx.store.bounces.acquire_poll(self._mailbox_name(), self._holder, **lease)
            self.actor_ref.tell(PollNext())
            return
        self.ctx.store.bounces.poll_succeeded(self._mailbox_name(), self._started_ts)
        self._after_poll(self._started_ts)
        self._end_poll()
        self._prune_if_due()
        if self._failing is not None:
            logger.info("%s mailbox %s reachable again", self.kind, self._mailbox_name())
        self._failing, self._failures = None, 0
        self._schedule(self._interval_s())

    def _failed(self, exc: ImapError) -> None:
        self._end_poll()
        self._failures += 1
        state = type(exc).__name__
        delay = retry.exponential_s(
            self._failures, base_s=self._interval_s(), cap_s=max(MAX_BACKOFF_S, self._interval_s())
        )
        if self._failing != state:
            self._failing = state
            logger.warning(
                "%s mailbox %s unavailable: %s; retrying with backoff",
                self.kind,
                self._mailbox_name(),
                exc,
            )
        else:
            logger.debug(
                "%s mailbox %s still unavailable: %s", self.kind, self._mailbox_name(), exc
            )
        self._schedule(delay)

    def _end_poll(self) -> None:
        poll, self._poll = self._poll, None
        if poll is not None:
            poll.close()
            self.ctx.store.bounces.release_poll(self._mailbox_name(), self._holder)

    def _prune_if_due(self) -> None:
        if self.ctx.clock.monotonic() - self._pruned_mono >= PRUNE_EVERY_S:
            self._pruned_mono = self.ctx.clock.monotonic()
            self.ctx.store.bounces.prune_processed(self._now() - PROCESSED_RETENTION_S)

    def _schedule(self, delay_s: float) -> None:
        if self.ctx.timers_enabled:
            if self._timer is not None:
                self._timer()
            self._timer = self.ctx.timers.after(delay_s, self.actor_ref, PollMailbox())

    # -- shared by subclasses --------------------------------------------------------------------

    def _announce(self, events: Iterable[RecordedEvent]) -> None:
        """Count recorded events and wake the tenants' reports (SPEC §10.3 rule 4)."""
        names: dict[str, str] = {}
        for event in events:
            if event.tenant_id not in names:
                tenant = self.ctx.store.tenants.get(event.tenant_id)
                names[event.tenant_id] = tenant.display_name if tenant else event.tenant_id
            labels = (event.tenant_id, names[event.tenant_id], event.account_id, event.account_id)
            counter = self.ctx.metrics.bounces if event.event_type == "bounce" else None
            counter = counter or self.ctx.metrics.pec_events
            counter.labels(*labels, event.label).inc()
        for tenant_id in names:
            self.tell_supervisor(ReportsPending(tenant_id))

    def _now(self) -> int:
        return int(self.ctx.clock.time())


class BounceActor(MailboxPoller):
    """The one bounce mailbox of the installation, from the instance settings (SPEC §11.1)."""

    kind = "bounce"

    def on_start(self) -> None:
        self._settings: dict[str, object] = {}
        super().on_start()

    def _mailbox_name(self) -> str:
        return BOUNCE_MAILBOX

    def _endpoint(self) -> ImapEndpoint | None:
        # Re-read every poll: a changed setting takes effect at the next poll (SPEC §3.12).
        s = self._settings = self.ctx.store.settings.typed(BOUNCE_SETTINGS)
        if not s["bounce_enabled"] or not s["bounce_imap_host"]:
            return None
        use_ssl = s["bounce_imap_ssl"] is not False
        return ImapEndpoint(
            host=str(s["bounce_imap_host"]),
            port=int(s["bounce_imap_port"] or (993 if use_ssl else 143)),
            user=str(s["bounce_imap_user"] or ""),
            password=s["bounce_imap_password"] or "",
            use_ssl=use_ssl,
            folder=str(s["bounce_imap_folder"] or "INBOX"),
        )

    def _interval_s(self) -> float:
        interval = self._settings.get("bounce_poll_interval")
        return float(interval) if isinstance(interval, int) and interval > 0 else 60.0

    def _processed_folder(self) -> str | None:
        folder = self._settings.get("bounce_processed_folder")
        return str(folder) if folder else None

    def _handle(self, raw: bytes) -> Disposition:
        key = mail_key(raw)
        try:
            result = classify(raw)
        except Exception:  # a parser bug on one stranger's mail must not wedge the mailbox
            logger.exception("the bounce parser failed on a mail; it is left in place")
            result = Unparseable("parser error")
        bounces = self.ctx.store.bounces
        match result:
            case Bounce():
                recorded = bounces.record_bounce(key, result, self._now())
                if recorded.unmatched:
                    self.ctx.metrics.bounces_unmatched.inc(recorded.unmatched)
                self._announce(recorded.events)
                return disposition.after_recording(recorded.matched)
            case NotBounce():
                return disposition.IGNORED_MAIL
            case Unparseable(reason=reason):
                if bounces.remember_unparseable(key, self._now()):
                    self.ctx.metrics.bounces_unmatched.inc()
                    logger.warning("unparseable mail left in the bounce mailbox: %s", reason)
                return disposition.UNPARSEABLE_MAIL
        return disposition.IGNORED_MAIL
