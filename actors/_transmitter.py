"""One message from stored payload to SMTP reply: the AccountActor's collaborator.

The actor decides which message goes next and when; the ``Transmitter`` turns a
begun message into bytes (fetching its attachments within the memory budget,
SPEC §9) and runs the SMTP transaction over the account's one reused connection
(SPEC §6.2), timing it. Used only in its actor's thread, like the connection.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from actors._context import ActorContext
from actors._pipeline import Ready
from proxy.attachments import pipeline as attachments
from proxy.attachments.errors import AttachmentFailure
from proxy.smtp import mime
from proxy.smtp.client import Overlap, SmtpConnection, SmtpEndpoint
from proxy.smtp.errors import PermFailure, TempFailure
from proxy.store.outcomes import Outcome
from proxy.store.records import DECRYPTION_FAILED, AccountRecord, MessageToSend

logger = logging.getLogger(__name__)


def endpoint_for(account: AccountRecord) -> SmtpEndpoint:
    return SmtpEndpoint(
        host=account.host,
        port=account.port,
        user=account.user,
        password=account.password,
        use_tls=account.use_tls,
        use_ssl=account.use_ssl,
        tls_verify=account.tls_verify,
        ttl_s=account.ttl,
    )


class Transmitter:
    """Builds and sends one account's messages over a connection opened on first use."""

    def __init__(self, ctx: ActorContext, tenant_id: str, account_id: str) -> None:
        self._ctx = ctx
        self._log_extra = {"tenant_id": tenant_id, "account_id": account_id}
        self._conn: SmtpConnection | None = None
        self._send_duration = ctx.metrics.send_duration.labels(tenant_id, account_id)
        # The instance's bounce return path: re-read by the actor once per claimed batch.
        self.bounce_return_path: str | None = None

    @property
    def is_connected(self) -> bool:
        return self._conn is not None and self._conn.is_connected

    def close(self) -> None:
        """QUIT and forget the connection (the next send connects with fresh settings)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close_if_expired(self) -> None:
        if self._conn is not None:
            self._conn.close_if_expired()

    def transmit(
        self, account: AccountRecord | None, ready: Ready, overlap: Overlap
    ) -> tuple[Outcome, str | None]:
        """Build (unless ``ready`` was built ahead) and send; the outcome and the Message-ID."""
        if account is None:
            return PermFailure("account not found"), None
        if account.password_unusable:  # no configured key decrypts it (SPEC §16 rule 4)
            return TempFailure(DECRYPTION_FAILED, "connection"), None
        if ready.built is not None:
            return self._deliver(account, ready.built, overlap), ready.built.message_id
        sending = ready.sending
        try:
            # Fetch attachments, apply large-file rules, hold their memory until sent (SPEC §9).
            with attachments.prepare(self._ctx, sending, now=self._now()) as prepared:
                try:
                    built = prepared.complete(
                        self.build(sending, prepared.payload, prepared.take_contents())
                    )
                except (ValueError, TypeError, UnicodeError) as exc:
                    logger.exception(
                        "message %s could not be built", sending.pk, extra=self._log_extra
                    )
                    return PermFailure(f"message could not be built: {exc}"), None
                return self._deliver(account, built, overlap), built.message_id
        except AttachmentFailure as failure:
            return failure.outcome, None

    def build(
        self,
        sending: MessageToSend,
        payload: Mapping[str, Any],
        contents: Sequence[mime.AttachmentContent] = (),
    ) -> mime.BuiltMessage:
        return mime.build(
            payload,
            pk=sending.pk,
            now_ts=self._now(),
            bounce_return_path=self.bounce_return_path,
            attachments=contents,
        )

    def _deliver(
        self, account: AccountRecord, built: mime.BuiltMessage, overlap: Overlap
    ) -> Outcome:
        """One SMTP transaction, with the actor's own work overlapped (``Overlap``)."""
        if self._conn is None:
            settings = self._ctx.settings
            self._conn = SmtpConnection(
                endpoint_for(account),
                connect_timeout_s=settings.smtp_connect_timeout,
                send_timeout_s=settings.smtp_send_timeout,
                helo_name=settings.helo_name,
            )
        started = self._ctx.clock.monotonic()
        outcome = self._conn.send(built, overlap)
        self._send_duration.observe(self._ctx.clock.monotonic() - started)
        return outcome

    def _now(self) -> int:
        return int(self._ctx.clock.time())
