"""Demo-only stand-ins for the outside world: a capture SMTP server and a report sink.

Used when the ``[demo]`` config section enables them, so a newcomer can run the proxy
with no real mail server and no tenant application. Nothing in the delivery path
imports this module; it must never be needed in production.

``CaptureSmtpServer`` stores each received mail as one ``.eml`` file. The file holds
exactly the DATA received, preceded by two added headers so the envelope (which is
not part of DATA and may differ from ``To:``/``Cc:``) is not lost::

    X-Captured-Envelope-From: <MAIL FROM address, empty for a null sender>
    X-Captured-Envelope-To: <RCPT TO addresses, comma separated>

``ReportSink`` plays a tenant application for the sync protocol (SPEC §10): it accepts
every report, logs one line per item and answers ``{"ok": true, "queued": 0}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from collections import deque
from email.parser import BytesHeaderParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from proxy import clock

logger = logging.getLogger(__name__)

SMTP_HOSTNAME = "mail-proxy-capture"
MAX_ID_CHARS = 80
MAX_REPORT_BYTES = 32 * 1024 * 1024
# serve_forever polls for shutdown this often; small so stop() returns promptly.
POLL_INTERVAL_S = 0.05
STOP_TIMEOUT_S = 5.0
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._@+=-]+")


def _eml_name(counter: int, data: bytes) -> str:
    """Name sortable by arrival: UTC time, a per-server counter, then the Message-ID."""
    now = clock.SYSTEM_CLOCK.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    message_id = BytesHeaderParser().parsebytes(data).get("Message-ID", "")
    safe_id = _UNSAFE_ID_CHARS.sub("_", str(message_id).strip().strip("<>")).strip("._")
    return f"{stamp}-{counter:06d}-{safe_id[:MAX_ID_CHARS] or uuid.uuid4().hex}.eml"


def _envelope_headers(envelope: Envelope) -> bytes:
    """Headers recording the SMTP envelope; CR/LF are dropped so no header is forged."""
    mail_from = re.sub(r"[\r\n]", "", envelope.mail_from or "")
    rcpt_tos = ", ".join(re.sub(r"[\r\n]", "", rcpt) for rcpt in envelope.rcpt_tos)
    text = f"X-Captured-Envelope-From: {mail_from}\r\nX-Captured-Envelope-To: {rcpt_tos}\r\n"
    return text.encode("utf-8")


def _write_atomically(directory: Path, name: str, content: bytes) -> Path:
    """Write to a hidden temp file, then rename: a reader sees the whole file or none."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".capture-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(content)
        target = directory / name
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


class _CaptureHandler:
    """aiosmtpd handler; runs on the controller's loop thread, one message at a time."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._counter = itertools.count(1)

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        data = envelope.original_content or b""
        # Blocking file I/O on the loop is acceptable here: demo traffic, small files,
        # and it keeps files numbered in arrival order.
        try:
            path = _write_atomically(
                self._directory,
                _eml_name(next(self._counter), data),
                _envelope_headers(envelope) + data,
            )
        except OSError:
            logger.exception("capture: could not store a message in %s", self._directory)
            return "451 4.3.0 Could not store the message"
        logger.info("capture: stored %s (%d recipients)", path.name, len(envelope.rcpt_tos))
        return "250 2.0.0 OK: captured"


class _PreboundController(Controller):
    """Controller serving a socket bound by the caller.

    Binding in the caller's thread turns "port in use" into an immediate ``OSError``
    (aiosmtpd would otherwise only notice after ``ready_timeout``) and lets port 0 work.
    """

    def __init__(self, handler: _CaptureHandler, sock: socket.socket, **kwargs: Any) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, **kwargs)
        self._sock = sock

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._sock)

    def stop_after_failed_start(self, timeout_s: float) -> None:
        """Stop a controller whose ``start()`` raised; its thread may be anywhere.

        ``stop()`` is unsafe here: a stop landing while the loop still creates the
        server is swallowed, and the loop then runs forever. So ask again until the
        thread ends, and close the loop the thread left open.
        """
        deadline = time.monotonic() + timeout_s
        thread = self._thread
        while thread is not None and thread.is_alive() and time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError):  # the thread closed the loop meanwhile
                self.loop.call_soon_threadsafe(self.cancel_tasks)
            thread.join(POLL_INTERVAL_S)
        if thread is not None and thread.is_alive():
            logger.error("capture: SMTP loop thread did not stop within %ss", timeout_s)
            return
        self._thread = None
        if not self.loop.is_closed():
            self.loop.close()

    def _run(self, ready_event: threading.Event) -> None:
        # A start that timed out is stopped by cancelling the server's creation, which
        # aiosmtpd does not catch: keep that expected end out of the thread excepthook.
        try:
            super()._run(ready_event)
        except asyncio.CancelledError:
            logger.debug("capture: start-up cancelled")


class CaptureSmtpServer:
    """aiosmtpd on host:port storing every received mail as an .eml file in a folder."""

    def __init__(self, host: str, port: int, directory: str) -> None:
        self._host = host
        self._port = port
        self._directory = Path(directory)
        self._controller: _PreboundController | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Host and the port actually bound (useful when started with port 0)."""
        return self._host, self._port

    def start(self, ready_timeout_s: float = 5.0) -> None:
        """Bind, start the loop thread and wait until the server answers.

        Raises ``RuntimeError`` naming the address if it cannot bind or answer in time;
        no thread is left running in that case.
        """
        if self._controller is not None:
            raise RuntimeError("capture SMTP server already started")
        self._directory.mkdir(parents=True, exist_ok=True)
        try:
            family = socket.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)[0][0]
            sock = socket.create_server((self._host, self._port), family=family)
        except OSError as err:
            raise RuntimeError(
                f"capture SMTP server cannot listen on {self._host}:{self._port}: {err}"
            ) from err
        controller = _PreboundController(
            _CaptureHandler(self._directory),
            sock,
            ready_timeout=ready_timeout_s,
            server_hostname=SMTP_HOSTNAME,
            enable_SMTPUTF8=True,
            decode_data=False,  # raw bytes, and aiosmtpd then advertises 8BITMIME
        )
        try:
            controller.start()
        except Exception as err:
            controller.stop_after_failed_start(ready_timeout_s + STOP_TIMEOUT_S)
            sock.close()
            raise RuntimeError(
                f"capture SMTP server on {self._host}:{controller.port} did not start "
                f"within {ready_timeout_s}s: {err}"
            ) from err
        self._port = controller.port
        self._controller = controller
        logger.info(
            "capture SMTP server listening on %s:%s, writing to %s",
            self._host,
            self._port,
            self._directory,
        )

    def stop(self) -> None:
        """Stop the loop thread and free the port; safe to call more than once."""
        controller, self._controller = self._controller, None
        if controller is None:
            return
        controller.stop()
        logger.info("capture SMTP server on %s:%s stopped", self._host, self._port)


class _SinkHandler(BaseHTTPRequestHandler):
    """Request handler; the ``server`` attribute is a ``_SinkServer``."""

    server: _SinkServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REPORT_BYTES:
            self._answer(413, {"ok": False, "error": "report too large"})
            return
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._answer(400, {"ok": False, "error": "body is not a JSON object"})
            return
        self.server.sink._record(self.path, body)
        self._answer(200, {"ok": True, "queued": 0})

    def do_GET(self) -> None:
        self._answer(200, {"calls": self.server.sink.calls})

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("report sink %s: %s", self.address_string(), format % args)


class _SinkServer(ThreadingHTTPServer):
    """Carries the sink to its handlers and keeps handler errors out of stderr."""

    def __init__(self, address: tuple[str, int], sink: ReportSink) -> None:
        super().__init__(address, _SinkHandler)
        self.sink = sink

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.warning("report sink: error serving %s", client_address, exc_info=True)


class ReportSink:
    """A tiny HTTP server playing a tenant application.

    It accepts POST on any path, logs each delivery_report item at INFO (tenant_id, id,
    event; no bodies), keeps the last ``keep`` calls in memory and answers 200
    ``{"ok": true, "queued": 0}``. GET on any path returns ``{"calls": [...]}``, the
    recent request bodies, for curious users. Authentication is not checked.
    """

    def __init__(self, host: str, port: int, keep: int = 200) -> None:
        self._host = host
        self._port = port
        self._calls: deque[dict[str, Any]] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._server: _SinkServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, with the port actually bound once started."""
        return f"http://{self._host}:{self._port}"

    @property
    def calls(self) -> list[dict[str, Any]]:
        """Recorded request bodies, oldest first (a deep copy)."""
        with self._lock:
            return copy.deepcopy(list(self._calls))

    def start(self) -> None:
        """Bind and serve in a daemon thread; ``RuntimeError`` if the port is unavailable."""
        if self._server is not None:
            raise RuntimeError("report sink already started")
        try:
            server = _SinkServer((self._host, self._port), self)
        except OSError as err:
            raise RuntimeError(
                f"report sink cannot listen on {self._host}:{self._port}: {err}"
            ) from err
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL_S},
            name="report-sink",
            daemon=True,
        )
        self._thread.start()
        logger.info("report sink listening on %s", self.url)

    def stop(self) -> None:
        """Stop serving and free the port; safe to call more than once."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        logger.info("report sink on %s stopped", self.url)

    def _record(self, path: str, body: dict[str, Any]) -> None:
        """Keep one call and log its items; called from handler threads."""
        with self._lock:
            self._calls.append(body)
        items = body.get("delivery_report")
        if not isinstance(items, list):
            logger.info("report sink: call to %s without a delivery_report list", path)
            return
        if not items:
            logger.debug("report sink: heartbeat on %s", path)
        for item in items:
            if isinstance(item, dict):
                logger.info(
                    "report sink: tenant %s message %s %s",
                    item.get("tenant_id"),
                    item.get("id"),
                    item.get("event"),
                    extra={"tenant_id": item.get("tenant_id"), "event_id": item.get("event_id")},
                )
