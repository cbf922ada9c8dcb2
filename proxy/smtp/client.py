"""One reusable SMTP connection for one account (SPEC §6.2, §6.4, §6.5).

The only module, with its DATA helper ``data.py``, that imports aiosmtplib.
``SmtpConnection`` is synchronous on the outside and owns a private asyncio
loop (STYLE §3, option A): it is built in its owner's thread (an AccountActor's
``on_start``), used only there, and every call runs one coroutine with
``run_until_complete`` under a deadline. It never raises for SMTP, network,
TLS or timeout problems: ``send`` returns an ``Outcome`` and ``_translate`` is
the one place where the library's exceptions become ``errors`` values.

Must not: log passwords or message bodies, share its loop with another thread,
or retry a transaction once the message data has been transmitted (a lost
reply after DATA may still mean delivery, and duplicates are worse than a
deferred retry).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import aiosmtplib

from proxy.smtp.data import send_data
from proxy.smtp.errors import (
    SMTPUTF8_UNSUPPORTED,
    STARTTLS_UNSUPPORTED,
    Failure,
    Outcome,
    PermFailure,
    Refusal,
    Sent,
    all_refused,
    connection_failure,
    reply_failure,
)
from proxy.smtp.mime import BuiltMessage

logger = logging.getLogger(__name__)

T = TypeVar("T")
TlsMode = Literal["implicit", "starttls", "opportunistic", "plain"]

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_SEND_TIMEOUT_S = 30.0
NOOP_AFTER_IDLE_S = 5.0
NOOP_TIMEOUT_S = 5.0
QUIT_TIMEOUT_S = 5.0
RSET_TIMEOUT_S = 5.0
IMPLICIT_TLS_PORT = 465
SERVICE_CLOSING = 421

_ERRORS = (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError)


@dataclass(frozen=True, slots=True)
class SmtpEndpoint:
    """Where and how to connect; ``password`` is kept out of ``repr`` (and logs)."""

    host: str
    port: int
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    use_tls: bool | None = None
    use_ssl: bool | None = None
    tls_verify: bool = True
    ttl_s: int = 300


def tls_mode(endpoint: SmtpEndpoint) -> TlsMode:
    """Apply the table of SPEC §6.4 (port 465 means implicit TLS unless told plain)."""
    if endpoint.use_ssl:
        return "implicit"
    if endpoint.use_tls is False:
        return "plain"
    if endpoint.port == IMPLICIT_TLS_PORT:
        return "implicit"
    return "starttls" if endpoint.use_tls else "opportunistic"


def tls_context(*, verify: bool) -> ssl.SSLContext:
    """Return the client TLS context: the system trust store, honouring ``SSL_CERT_FILE``.

    Loading the trust store costs ~20 ms, so contexts are shared process-wide
    (an ``SSLContext`` is safe to share between client connections and threads),
    one per verification mode and trust-store location.
    """
    return _shared_tls_context(
        verify, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    )


@functools.lru_cache(maxsize=8)
def _shared_tls_context(verify: bool, cafile: str | None, capath: str | None) -> ssl.SSLContext:
    # cafile/capath only key the cache: create_default_context reads the same variables.
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@functools.cache
def default_helo_name() -> str:
    """Return the host's FQDN, looked up once per process (it may block on DNS)."""
    return socket.getfqdn()


class _OutcomeError(Exception):
    """Carries an outcome decided inside a coroutine (not a library error)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.description)
        self.failure = failure


@dataclass(frozen=True, slots=True)
class Overlap:
    """The owner's own work, run while the server is busy with this message.

    ``envelope`` runs once MAIL FROM has been written and before its reply is
    read, so always before any byte of the data goes out; ``final_reply`` runs
    once the data has been written, before the final reply is read. A send
    runs each hook at most once and not at all when it ends before that point
    (the owner then runs its work itself). A hook's exception is not an SMTP
    outcome: the session is dropped and the exception leaves ``send``.
    """

    envelope: Callable[[], None] | None = None
    final_reply: Callable[[], None] | None = None


class _HookFailed(Exception):
    """An ``Overlap`` hook raised; carries the original exception out of the coroutine."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


@dataclass(slots=True)
class _Progress:
    overlap: Overlap = Overlap()
    data_started: bool = False
    hooks_run: set[str] = field(default_factory=set)

    def run_hook(self, name: str) -> None:
        hook = getattr(self.overlap, name)
        if hook is None or name in self.hooks_run:
            return
        self.hooks_run.add(name)
        try:
            hook()
        except Exception as exc:
            raise _HookFailed(exc) from exc


class SmtpConnection:
    """A lazily opened, reused SMTP session with NOOP checks and one silent reconnect."""

    def __init__(
        self,
        endpoint: SmtpEndpoint,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
        helo_name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._endpoint = endpoint
        self._connect_timeout_s = connect_timeout_s
        self._send_timeout_s = send_timeout_s
        self._helo_name = helo_name
        self._clock = clock
        self._loop = asyncio.new_event_loop()
        self._smtp: aiosmtplib.SMTP | None = None
        self._last_used = 0.0

    @property
    def is_connected(self) -> bool:
        """Whether a session is open (as far as this thread has seen)."""
        return self._smtp is not None and self._smtp.is_connected

    def send(self, msg: BuiltMessage, overlap: Overlap = Overlap()) -> Outcome:
        """Deliver one message; connection trouble comes back as a failure, never raised.

        ``overlap`` is work of the owner's to run while the server answers (see
        ``Overlap``); only its exceptions are raised.
        """
        if self._loop.is_closed():
            raise RuntimeError("SmtpConnection used after close()")
        progress = _Progress(overlap)
        smtp = self._idle_checked_session()
        reused = smtp is not None
        if smtp is None:
            smtp = self._connect()
            if not isinstance(smtp, aiosmtplib.SMTP):
                return smtp
        outcome, connection_lost = self._attempt(smtp, msg, progress)
        if connection_lost and reused:
            # SPEC §6.2.3: a stale reused session failed before DATA; not an attempt.
            logger.info("reused SMTP connection to %s failed; reconnecting", self._where())
            smtp = self._connect()
            if not isinstance(smtp, aiosmtplib.SMTP):
                return smtp
            outcome, _ = self._attempt(smtp, msg, progress)
        return outcome

    def close_if_expired(self) -> bool:
        """QUIT when idle longer than the endpoint's ``ttl_s`` (SPEC §6.2.4)."""
        if self._smtp is None or self._clock() - self._last_used <= self._endpoint.ttl_s:
            return False
        self._quit()
        return True

    def close(self) -> None:
        """QUIT if open, then close the private loop. Idempotent."""
        if self._loop.is_closed():
            return
        try:
            self._quit()
            self._loop.run_until_complete(asyncio.sleep(0))  # let transports finish closing
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
        finally:
            self._loop.close()

    # -- session ---------------------------------------------------------------

    def _idle_checked_session(self) -> aiosmtplib.SMTP | None:
        """Return the open session if it still answers (NOOP after 5 s idle), else None."""
        smtp = self._smtp
        if smtp is None:
            return None
        if not smtp.is_connected:
            self._drop()
            return None
        if self._clock() - self._last_used < NOOP_AFTER_IDLE_S:
            return smtp
        try:
            self._run(smtp.noop(timeout=NOOP_TIMEOUT_S), NOOP_TIMEOUT_S)
        except _ERRORS as exc:
            logger.info("NOOP on %s failed (%s); reconnecting", self._where(), exc)
            self._drop()
            return None
        self._last_used = self._clock()
        return smtp

    def _connect(self) -> aiosmtplib.SMTP | Failure:
        self._drop()
        try:
            smtp = self._run(self._open(), self._connect_timeout_s)
        except _ERRORS as exc:
            failure, _ = _translate(exc, f"connecting to {self._where()}")
            logger.info("SMTP connect failed: %s", failure.description)
            return failure
        except _OutcomeError as exc:
            logger.info("SMTP connect failed: %s", exc.failure.description)
            return exc.failure
        self._smtp = smtp
        self._last_used = self._clock()
        return smtp

    async def _open(self) -> aiosmtplib.SMTP:
        """TCP, TLS, greeting, EHLO, STARTTLS and AUTH: all under the connect deadline."""
        endpoint = self._endpoint
        mode = tls_mode(endpoint)
        smtp = aiosmtplib.SMTP(
            hostname=endpoint.host,
            port=endpoint.port,
            local_hostname=self._helo_name or default_helo_name(),
            timeout=self._connect_timeout_s,
            use_tls=mode == "implicit",
            start_tls=False,
            tls_context=None if mode == "plain" else tls_context(verify=endpoint.tls_verify),
        )
        try:
            await smtp.connect()
            await _greet(smtp)
            if mode in ("starttls", "opportunistic"):
                await _starttls(smtp, required=mode == "starttls")
            if endpoint.user and endpoint.password:
                await smtp.login(endpoint.user, endpoint.password)
        except BaseException:
            _abort(smtp)
            raise
        # Each transaction runs under one deadline (``_run``): per-command timers
        # (``asyncio.wait_for`` on every reply) would only repeat it, at a cost per command.
        smtp.timeout = None
        return smtp

    def _quit(self) -> None:
        smtp = self._smtp
        if smtp is None:
            return
        if smtp.is_connected:
            transport = smtp.transport
            try:
                self._run(smtp.quit(timeout=QUIT_TIMEOUT_S), QUIT_TIMEOUT_S)
            except _ERRORS as exc:
                logger.debug("QUIT on %s failed: %s", self._where(), exc)
            if transport is not None:
                transport.abort()  # skip the TLS close_notify dance after 221
        self._drop()

    def _drop(self) -> None:
        if self._smtp is not None:
            _abort(self._smtp)
            self._smtp = None

    # -- transaction -------------------------------------------------------------

    def _attempt(
        self, smtp: aiosmtplib.SMTP, msg: BuiltMessage, progress: _Progress
    ) -> tuple[Outcome, bool]:
        """Run MAIL..DATA once; also say whether the session was lost before DATA."""
        progress.data_started = False
        try:
            outcome = self._run(_transaction(smtp, msg, progress), self._send_timeout_s)
        except _HookFailed as failed:
            self._drop()  # left mid-transaction: never reuse it
            raise failed.original from None
        except _ERRORS as exc:
            failure, lost = _translate(exc, f"sending to {self._where()}")
            if lost or isinstance(exc, TimeoutError) or not smtp.is_connected:
                self._drop()  # unknown protocol state: never reuse it
            else:
                self._reset(smtp)
            return failure, lost and not progress.data_started
        self._last_used = self._clock()
        if not isinstance(outcome, Sent):
            self._reset(smtp)
        return outcome, False

    def _reset(self, smtp: aiosmtplib.SMTP) -> None:
        """RSET after a refused transaction so the session can carry the next one."""
        try:
            self._run(smtp.rset(timeout=RSET_TIMEOUT_S), RSET_TIMEOUT_S)
        except _ERRORS:
            self._drop()

    def _run(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        return self._loop.run_until_complete(_within(coro, timeout_s))

    def _where(self) -> str:
        return f"{self._endpoint.host}:{self._endpoint.port}"


async def _within(coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
    """``coro`` under a deadline, without the extra task ``asyncio.wait_for`` creates."""
    async with asyncio.timeout(timeout_s):
        return await coro


async def _greet(smtp: aiosmtplib.SMTP) -> None:
    """EHLO, falling back to HELO for servers that refuse EHLO with 5xx."""
    try:
        await smtp.ehlo()
    except aiosmtplib.SMTPHeloError as exc:
        if not smtp.is_connected or exc.code < 500:
            raise
        await smtp.helo()


async def _starttls(smtp: aiosmtplib.SMTP, *, required: bool) -> None:
    """Upgrade when offered; a required upgrade that is not offered is a failure."""
    if smtp.supports_extension("starttls"):
        await smtp.starttls()
        await _greet(smtp)
    elif required:
        raise _OutcomeError(connection_failure(STARTTLS_UNSUPPORTED))


async def _transaction(smtp: aiosmtplib.SMTP, msg: BuiltMessage, progress: _Progress) -> Outcome:
    """MAIL, one RCPT per recipient (refusals collected), then DATA."""
    options, encoding = [], "ascii"
    if msg.needs_smtputf8:
        if not smtp.supports_extension("smtputf8"):
            return PermFailure(SMTPUTF8_UNSUPPORTED)
        options.append("SMTPUTF8")
        encoding = "utf-8"
        if smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
    if smtp.supports_extension("size"):
        options.append(f"SIZE={len(msg.data)}")
    await _mail(smtp, msg.envelope_from, options, encoding, progress)
    refused = []
    for recipient in msg.recipients:
        try:
            await smtp.rcpt(recipient, encoding=encoding)
        except aiosmtplib.SMTPRecipientRefused as exc:
            if exc.code == SERVICE_CLOSING:
                raise  # about the session, not this recipient
            refused.append(Refusal(recipient, exc.code, exc.message))
    if len(refused) == len(msg.recipients):
        return all_refused(refused)
    progress.data_started = True
    response = await send_data(  # streamed: no whole-message copies
        smtp, msg.data, while_waiting=lambda: progress.run_hook("final_reply")
    )
    return Sent(response.code, response.message, tuple(refused))


async def _mail(
    smtp: aiosmtplib.SMTP, sender: str, options: list[str], encoding: str, progress: _Progress
) -> None:
    """MAIL FROM, with the ``envelope`` hook run while the server answers it."""
    if progress.overlap.envelope is None or "envelope" in progress.hooks_run:
        await smtp.mail(sender, options=options, encoding=encoding)
        return
    mail = asyncio.ensure_future(smtp.mail(sender, options=options, encoding=encoding))
    try:
        await asyncio.sleep(0)  # the task runs up to its read: the command is on the wire
        progress.run_hook("envelope")
    except BaseException:
        mail.cancel()
        await asyncio.wait([mail])
        if not mail.cancelled():
            mail.exception()  # retrieved: asyncio would log it otherwise
        raise
    await mail


def _abort(smtp: aiosmtplib.SMTP) -> None:
    """Close at once: abort skips TLS shutdown, which could outlive the loop."""
    if smtp.transport is not None:
        smtp.transport.abort()
    smtp.close()


def _translate(exc: BaseException, doing: str) -> tuple[Failure, bool]:
    """Turn a library or OS exception into a failure, plus "was the session lost?".

    The boolean drives the single reconnect of SPEC §6.2.3: the server went away
    (closed, reset, or 421) rather than answering about this message.
    """
    failure: Failure
    lost = False
    match exc:
        case aiosmtplib.SMTPRecipientsRefused():
            failure = all_refused([Refusal(e.recipient, e.code, e.message) for e in exc.recipients])
        case aiosmtplib.SMTPResponseException():
            failure = reply_failure(exc.code, exc.message)
            lost = exc.code == SERVICE_CLOSING
        case TimeoutError():
            failure = connection_failure(f"timeout {doing}")
        case aiosmtplib.SMTPServerDisconnected() | ConnectionError() if not isinstance(
            exc, aiosmtplib.SMTPConnectError
        ):
            failure = connection_failure(f"connection lost {doing}: {exc}")
            lost = True
        case aiosmtplib.SMTPNotSupported():
            failure = PermFailure(f"{doing}: {exc}")
        case aiosmtplib.SMTPException() | OSError():
            kind = "TLS failure" if _is_tls_error(exc) else "failure"
            failure = connection_failure(f"{kind} {doing}: {exc}")
        case _:
            failure = PermFailure(f"cannot send ({doing}): {exc}")
    return failure, lost


def _is_tls_error(exc: BaseException) -> bool:
    return isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError)
