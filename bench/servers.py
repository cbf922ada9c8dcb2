"""The benchmark's counterparts, each in its own process: an SMTP sink and a tenant receiver.

Separate processes so that neither shares a GIL with the sender it measures. Both
bind 127.0.0.1 port 0 and send their real port back over a pipe; both are stopped
with SIGTERM (they hold nothing worth flushing). Times are ``time.monotonic()``,
which on Linux is one system-wide clock, so the parent can compare them with its own.

* ``Sink``: aiosmtpd accepting everything, an optional delay per DATA (a slow
  server), counting accepted messages and the time of the last one in shared memory.
* ``Receiver``: a ``ThreadingHTTPServer`` that answers every POST ``{"ok": true}``
  and counts distinct ``sent`` delivery_report items per tenant; ``GET /counts``
  returns them as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from typing import Any

import requests

HOST = "127.0.0.1"
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
_CTX = multiprocessing.get_context("spawn")


class _Child:
    """A spawned server process that reports its port once listening."""

    def __init__(self, target: Any, *args: Any) -> None:
        parent_end, child_end = _CTX.Pipe(duplex=False)
        self._process = _CTX.Process(target=target, args=(child_end, *args), daemon=True)
        self._process.start()
        child_end.close()
        if not parent_end.poll(READY_TIMEOUT_S):
            self.stop()
            raise RuntimeError(f"{target.__name__} did not start within {READY_TIMEOUT_S}s")
        self.port: int = parent_end.recv()
        parent_end.close()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(STOP_TIMEOUT_S)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(STOP_TIMEOUT_S)

    def __enter__(self) -> _Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Sink(_Child):
    """An aiosmtpd sink process; ``count`` and ``last_ts`` are read from shared memory."""

    def __init__(self, data_delay_s: float = 0.0, times_path: str | None = None) -> None:
        self._count = _CTX.Value("q", 0)
        self._last_ts = _CTX.Value("d", 0.0)
        self.times_path = times_path
        super().__init__(_run_sink, self._count, self._last_ts, data_delay_s, times_path)

    def accepted_times(self) -> dict[str, float]:
        """When each X-Genro-Mail-ID was accepted (monotonic), if ``times_path`` was given."""
        if self.times_path is None:
            return {}
        times: dict[str, float] = {}
        with open(self.times_path) as lines:
            for line in lines:
                message_id, _, ts = line.rstrip("\n").partition("\t")
                times.setdefault(message_id, float(ts))
        return times

    @property
    def count(self) -> int:
        return int(self._count.value)

    @property
    def last_ts(self) -> float:
        return float(self._last_ts.value)


class Receiver(_Child):
    """A tenant report receiver process; ``counts()`` asks it over HTTP."""

    def __init__(self) -> None:
        super().__init__(_run_receiver)
        self.url = f"http://{HOST}:{self.port}"
        self._session = requests.Session()

    def counts(self) -> dict[str, Any]:
        """``{"sent": {tenant: n}, "total_sent": n, "last_ts": {tenant: t}, ...}``.

        ``last_ts`` is when the tenant's newest distinct ``sent`` item arrived; ``items``,
        ``calls`` and ``connections`` count every item, POST and TCP connection seen.
        """
        return self._session.get(self.url + "/counts", timeout=5).json()

    def sent_times(self) -> dict[str, float]:
        """When the first ``sent`` report of each message id arrived (monotonic)."""
        return self._session.get(self.url + "/sent_times", timeout=10).json()

    def stop(self) -> None:
        self._session.close()
        super().stop()


# -- child processes ---------------------------------------------------------------------


def _exit_on_sigterm() -> None:
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us; Ctrl-C is its business


def _run_sink(
    ready: Connection, count: Any, last_ts: Any, data_delay_s: float, times_path: str | None
) -> None:
    import re  # noqa: PLC0415 (child-only import)

    from aiosmtpd.smtp import SMTP  # noqa: PLC0415 (child-only import)

    _exit_on_sigterm()
    mail_id = re.compile(rb"X-Genro-Mail-ID: ([^\r\n]+)")
    times = open(times_path, "a", buffering=1) if times_path else None  # noqa: SIM115

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            if data_delay_s:
                await asyncio.sleep(data_delay_s)
            now = time.monotonic()
            with count.get_lock():
                count.value += 1
                last_ts.value = now
            if times is not None and (found := mail_id.search(envelope.original_content or b"")):
                times.write(f"{found.group(1).decode(errors='replace')}\t{now}\n")
            return "250 OK"

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(Handler(), hostname="bench-sink", ident="bench-sink"), HOST, 0
        )
        ready.send(server.sockets[0].getsockname()[1])
        ready.close()
        await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


class _QuietServer(ThreadingHTTPServer):
    """Threads per connection; a peer that goes away (the proxy stopping) is not an error."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Counts:
    def __init__(self) -> None:
        self.sent: dict[str, set[str]] = {}
        self.last_ts: dict[str, float] = {}
        self.first_sent: dict[str, float] = {}
        self.items = 0
        self.calls = 0
        self.connections = 0


def _run_receiver(ready: Connection) -> None:
    import threading  # noqa: PLC0415 (child-only import)

    _exit_on_sigterm()
    counts, lock = _Counts(), threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the proxy's requests.Session expects

        def setup(self) -> None:
            super().setup()
            with lock:
                counts.connections += 1

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with contextlib.suppress(ValueError):
                report = json.loads(body).get("delivery_report") or []
                self._count(report)
            self._answer(b'{"ok": true}')

        def do_GET(self) -> None:
            if self.path == "/sent_times":
                with lock:
                    payload = json.dumps(counts.first_sent).encode()
                self._answer(payload)
                return
            with lock:
                sent = {tenant: len(ids) for tenant, ids in counts.sent.items()}
                data = {
                    "sent": sent,
                    "total_sent": sum(sent.values()),
                    "last_ts": dict(counts.last_ts),
                    "items": counts.items,
                    "calls": counts.calls,
                    "connections": counts.connections,
                }
            self._answer(json.dumps(data).encode())

        def _count(self, report: list[dict[str, Any]]) -> None:
            with lock:
                counts.calls += 1
                counts.items += len(report)
                for item in report:
                    if item.get("event") == "sent":
                        tenant = str(item.get("tenant_id"))
                        ids = counts.sent.setdefault(tenant, set())
                        before = len(ids)
                        ids.add(str(item.get("id")))
                        if len(ids) != before:
                            counts.last_ts[tenant] = time.monotonic()
                            counts.first_sent.setdefault(str(item.get("id")), time.monotonic())

        def _answer(self, payload: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: one line per call would cost more than the call."""

    server = _QuietServer((HOST, 0), Handler)
    ready.send(server.server_address[1])
    ready.close()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(poll_interval=0.2)
