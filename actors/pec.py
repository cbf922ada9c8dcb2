"""PecActor: polls one PEC account's mailbox for receipts (SPEC §12); and the pollers' table.

Receives:
  PollMailbox   timer (every 60 s; after a failure, the backoff) or an admin run-now
  PollNext      self-message: handle the next batch of mails
Sends:
  ReportsPending(tenant_id)  to the Supervisor after recording ``pec_*`` events
  ChildFailed                (via ``Supervised.on_failure``) when a handler raises

After each successful poll it decides the ``pec_timeout`` events (§12 rule 6):
only then, so an IMAP outage never produces a false timeout.

``Pollers`` is the Supervisor's bookkeeping for the bounce and PEC pollers
(which to run, restarting them on reload), kept here so the Supervisor only
routes to it.
"""

from __future__ import annotations

import logging

import pykka

from actors._context import ActorContext
from actors.bounce import BounceActor, MailboxPoller
from actors.messages import PollMailbox
from proxy.bounce import disposition
from proxy.bounce.disposition import Disposition
from proxy.bounce.imap import ImapEndpoint
from proxy.bounce.parse import mail_key
from proxy.bounce.pec import Receipt, parse_receipt
from proxy.store.bounces import pec_mailbox
from proxy.store.records import AccountRecord
from proxy.store.settings import BOUNCE_SETTINGS

logger = logging.getLogger(__name__)

POLLER_KINDS = ("bounce", "pec")


class PecActor(MailboxPoller):
    kind = "pec"
    poll_interval_s = 60.0  # SPEC §12 rule 2; tests use a subclass with a shorter one

    def __init__(
        self, ctx: ActorContext, supervisor: pykka.ActorRef, tenant_id: str, account_id: str
    ) -> None:
        super().__init__(ctx, supervisor)
        self.tenant_id = tenant_id
        self.account_id = account_id

    @property
    def key(self) -> tuple[str, ...]:
        return (self.tenant_id, self.account_id)

    def _mailbox_name(self) -> str:
        return pec_mailbox(self.tenant_id, self.account_id)

    def _endpoint(self) -> ImapEndpoint | None:
        account = self.ctx.store.accounts.get(self.tenant_id, self.account_id)
        return pec_endpoint(account) if account is not None else None

    def _interval_s(self) -> float:
        return self.poll_interval_s

    def _handle(self, raw: bytes) -> Disposition:
        try:
            receipt: Receipt | None = parse_receipt(raw)
        except Exception:  # a parser bug on one mail must not wedge the mailbox
            logger.exception("the PEC receipt parser failed on a mail; it is left in place")
            return disposition.UNPARSEABLE_MAIL
        if receipt is None:
            return disposition.NOT_A_RECEIPT
        recorded = self.ctx.store.bounces.record_receipt(
            self.tenant_id, self.account_id, mail_key(raw), receipt, self._now()
        )
        if recorded.unmatched:
            logger.info(
                "PEC receipt %s matches no message of %s/%s",
                receipt.receipt,
                self.tenant_id,
                self.account_id,
            )
        self._announce(recorded.events)
        return disposition.after_recording(recorded.matched)

    def _after_poll(self, started_ts: int) -> None:
        events = self.ctx.store.bounces.record_pec_timeouts(
            self.tenant_id,
            self.account_id,
            poll_started_ts=started_ts,
            timeout_s=self.ctx.settings.pec_acceptance_timeout,
            now=self._now(),
        )
        self._announce(events)


def pec_endpoint(account: AccountRecord) -> ImapEndpoint | None:
    """The IMAP side of a PEC account (SPEC §3.8 defaults); None when it has none."""
    if not account.is_pec_account or not account.imap_host:
        return None
    use_ssl = account.imap_ssl is not False
    return ImapEndpoint(
        host=account.imap_host,
        port=account.imap_port or (993 if use_ssl else 143),
        user=account.imap_user or account.user or "",
        password=account.imap_password or account.password or "",
        use_ssl=use_ssl,
        folder=account.imap_folder or "INBOX",
        tls_verify=account.tls_verify,
    )


class Pollers:
    """Which mailbox pollers run: the BounceActor when enabled, a PecActor per PEC account."""

    def __init__(
        self,
        ctx: ActorContext,
        supervisor: pykka.ActorRef,
        *,
        bounce_kind: type[BounceActor] = BounceActor,
        pec_kind: type[PecActor] = PecActor,
    ) -> None:
        self.ctx = ctx
        self.supervisor = supervisor
        self.bounce_kind = bounce_kind
        self.pec_kind = pec_kind
        self.bounce: pykka.ActorRef | None = None
        self.pecs: dict[tuple[str, str], pykka.ActorRef] = {}

    def refs(self) -> list[pykka.ActorRef]:
        return [ref for ref in (self.bounce, *self.pecs.values()) if ref is not None]

    def start_all(self) -> None:
        self.start_bounce()
        for account in self.ctx.store.accounts.list():
            if pec_endpoint(account) is not None:
                self.start_pec((account.tenant_id, account.id))

    def start_bounce(self) -> None:
        """Start the BounceActor when bounce detection is enabled (seeding the settings once)."""
        if self.bounce is not None and self.bounce.is_alive():
            return
        self.ctx.store.settings.seed_bounce(self.ctx.settings)
        values = self.ctx.store.settings.typed(BOUNCE_SETTINGS)
        if values["bounce_enabled"] and values["bounce_imap_host"]:
            self.bounce = self.bounce_kind.start(self.ctx, self.supervisor)

    def reload_bounce(self) -> None:
        """``POST /instance/reload-bounce``: a fresh poller from the stored settings, or none."""
        self.stop("bounce", ())
        self.start_bounce()

    def start_pec(self, key: tuple[str, str]) -> None:
        ref = self.pecs.get(key)
        if ref is None or not ref.is_alive():
            self.pecs[key] = self.pec_kind.start(self.ctx, self.supervisor, *key)

    def account_changed(self, key: tuple[str, str]) -> None:
        """An account was created or replaced: its PEC poller restarts with the new settings."""
        self.stop("pec", key)
        account = self.ctx.store.accounts.get(*key)
        if account is not None and pec_endpoint(account) is not None:
            self.start_pec(key)

    def tenant_removed(self, tenant_id: str) -> None:
        for key in [k for k in self.pecs if k[0] == tenant_id]:
            self.stop("pec", key)

    def poll_all(self) -> None:
        """An admin run-now: one poll of every mailbox (SPEC §6.6)."""
        for ref in self.refs():
            ref.tell(PollMailbox())

    def stop(self, kind: str, key: tuple[str, ...]) -> None:
        ref = self.forget(kind, key)
        if ref is not None:
            ref.stop(block=False)

    def forget(self, kind: str, key: tuple[str, ...]) -> pykka.ActorRef | None:
        """Drop a poller from the table (it crashed or is stopping); its ref, if any."""
        if kind == "bounce":
            ref, self.bounce = self.bounce, None
            return ref
        if kind == "pec" and len(key) == 2:
            return self.pecs.pop((key[0], key[1]), None)
        return None

    def restart(self, kind: str, key: tuple[str, ...]) -> None:
        """A crashed poller's backoff elapsed: start it again if it is still wanted."""
        if kind == "bounce":
            self.start_bounce()
        elif kind == "pec" and len(key) == 2:
            self.account_changed((key[0], key[1]))
