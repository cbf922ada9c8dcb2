"""Wiring: store → scheduler → Supervisor → waitress; stopped in reverse (SPEC §17).

Start-up and shutdown order is written once, here. ``ProxyServer`` is what
tests start in-process; ``serve()`` adds signal handling for the CLI. A send
still running at the shutdown deadline keeps its claim and the store is left
open under it: the message is retried after restart, never lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import signal
import socket
import threading
import time
from types import FrameType

import pykka
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask

from actors._context import ActorContext
from actors._timer import Scheduler
from actors.engine import ActorEngine
from actors.supervisor import ChildKinds, ListChildren, Supervisor
from proxy import bootstrap
from proxy.app import create_app
from proxy.capture import CaptureSmtpServer, ReportSink
from proxy.clock import SYSTEM_CLOCK, now_ts
from proxy.config import ConfigError, Settings
from proxy.crypto import cipher_from_settings
from proxy.engine import Engine, NullEngine
from proxy.heartbeat import Heartbeat
from proxy.logs import setup_logging
from proxy.metrics import Metrics
from proxy.store import Database, StoreError, open_store
from proxy.store.instances import InstanceIdInUse
from proxy.store.rekey import reencrypt_secrets

logger = logging.getLogger(__name__)

HTTP_THREADS = 8
MB = 1 << 20
BODY_CAP_MARGIN = MB  # waitress's hard cap sits this far above max_request_mb (SPEC §3.1.4)


class JsonErrorTask(ErrorTask):
    """waitress's own answers in SPEC §3.1's error body, not its plain text.

    waitress answers before the app sees the request: a body over its hard cap
    (413, judged by Content-Length), an unparsable request (400), headers too large
    (431). A 413 names the configured limit, as the app's own does; the others give
    only their reason, since waitress's detail may quote a header line (a token).
    """

    def execute(self) -> None:
        error = self.request.error
        text = error.reason
        if error.code == 413:
            limit_mb = (self.channel.adj.max_request_body_size - BODY_CAP_MARGIN) / MB
            text = f"Request body exceeds {limit_mb:g} MB"
        body = json.dumps({"ok": False, "error": text, "detail": text}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json; charset=utf-8"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):
    error_task_class = JsonErrorTask  # waitress's own hook for the error answer


class ProxyServer:
    """One proxy instance: start() brings every layer up in order, stop() takes them down."""

    def __init__(self, settings: Settings, *, kinds: ChildKinds | None = None) -> None:
        self.settings = settings
        self.kinds = kinds
        self.instance_id = settings.effective_instance_id
        self.metrics = Metrics()
        self.store: Database | None = None
        self.scheduler: Scheduler | None = None
        self.supervisor: pykka.ActorRef | None = None
        self.ctx: ActorContext | None = None
        self._http = None
        self._listener: socket.socket | None = None  # port 0: bound before the instance id
        self._http_thread: threading.Thread | None = None
        self._capture: CaptureSmtpServer | None = None
        self._sink: ReportSink | None = None
        self._heartbeat: Heartbeat | None = None

    # -- start ---------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        if self.settings.port == 0 and not self.settings.instance_id:
            # "Any free port": the default instance id names the port actually bound
            # (SPEC §15.2), so two such instances on one host never share an id.
            self._listener = _bound_socket(self.settings.host)
            port = self._listener.getsockname()[1]
            self.settings = dataclasses.replace(self.settings, port=port)
            self.instance_id = self.settings.effective_instance_id
        s = self.settings
        self._start_demo()
        try:
            self.store = open_store(
                s.db_url, pool_size=s.db_pool_size, cipher=cipher_from_settings(s)
            )
        except StoreError as exc:
            raise ConfigError(str(exc)) from None
        try:
            self.store.hold_instance_id(self.instance_id)
        except InstanceIdInUse as exc:
            raise ConfigError(str(exc)) from None
        with self.store.exclusive("start-up"):  # instances starting together take turns
            bootstrap.apply_config(s, self.store, now_ts())
            reencrypt_secrets(self.store)
        self._heartbeat = Heartbeat(self.store.instances, self.instance_id, active=s.start_active)
        self._heartbeat.start()
        # SQLite: the only instance, so everything left claimed belongs to a dead run.
        own = None if self.store.is_sqlite else self.instance_id
        released = self.store.messages.recover_after_crash(own)
        self.store.sync_state.release_instance(own)
        if released:
            logger.info("released %s claims left by a previous run", released)
        for account in self.store.accounts.list():
            tenant = self.store.tenants.get(account.tenant_id)
            name = tenant.display_name if tenant else account.tenant_id
            self.metrics.init_account(
                account.tenant_id, name, account.id, account.id, is_pec=account.is_pec_account
            )
        engine: Engine = NullEngine()
        if s.start_active:
            self.scheduler = Scheduler()
            self.scheduler.start()
            self.ctx = ActorContext(
                store=self.store,
                settings=s,
                timers=self.scheduler,
                clock=SYSTEM_CLOCK,
                metrics=self.metrics,
                instance_id=self.instance_id,
            )
            self.supervisor = Supervisor.start(self.ctx, self.kinds)
            engine = ActorEngine(self.supervisor, test_mode=s.test_mode)
        app = create_app(s, self.store, engine, metrics=self.metrics)
        where = (
            {"sockets": [self._listener]} if self._listener else {"host": s.host, "port": s.port}
        )
        self._listener = None  # waitress owns it now
        self._http = create_server(
            app,
            **where,
            threads=HTTP_THREADS,
            ident="mail-proxy",
            max_request_body_size=int(s.max_request_mb * MB) + BODY_CAP_MARGIN,
            clear_untrusted_proxy_headers=True,
        )
        self._http.channel_class = JsonErrorChannel  # the class it makes each connection from
        self._http_thread = threading.Thread(target=self._http.run, name="http", daemon=True)
        self._http_thread.start()
        self._log_banner()

    def _start_demo(self) -> None:
        s = self.settings
        if s.demo_capture_enabled:
            self._capture = CaptureSmtpServer(
                s.demo_capture_host, s.demo_capture_port, s.demo_capture_dir
            )
            self._capture.start()
        if s.demo_sink_enabled:
            self._sink = ReportSink(s.demo_sink_host, s.demo_sink_port)
            self._sink.start()

    @property
    def port(self) -> int:
        return int(self._http.effective_port) if self._http is not None else self.settings.port

    @property
    def url(self) -> str:
        host = self.settings.host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 (display only)
        return f"http://{host}:{self.port}"

    def _log_banner(self) -> None:
        s = self.settings
        logger.info(
            "mail-proxy %s listening on %s (API docs: %s/docs)",
            self.instance_id,
            self.url,
            self.url,
        )
        if not s.api_token:
            logger.warning("no admin token configured: the API is open to anyone who can reach it")
        if s.test_mode:
            logger.info("test mode: sending and syncing happen only on POST /commands/run-now")
        if not s.start_active:
            logger.info("API-only instance: this process neither sends nor syncs")
        if self._capture is not None:
            logger.info(
                "demo capture SMTP server on %s:%s stores mail in %s",
                *self._capture.address,
                s.demo_capture_dir,
            )
        if self._sink is not None:
            logger.info(
                "demo report sink on %s (GET / lists the reports it received)", self._sink.url
            )

    # -- stop ------------------------------------------------------------------------

    def stop(self) -> bool:
        """Stop in reverse start order; returns False when a send outlived the deadline."""
        deadline = time.monotonic() + self.settings.shutdown_timeout
        if self.ctx is not None:
            self.ctx.stopping.set()  # first: the send in flight is the last one
        self._stop_http()
        if self._listener is not None:  # start-up failed before the HTTP server took it
            self._listener.close()
            self._listener = None
        clean = self._stop_actors(deadline)
        if self.scheduler is not None:
            self.scheduler.stop()
            self.scheduler = None
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        if self.store is not None:
            if clean:
                self.store.messages.release_claims(self.instance_id)
                self.store.close()
            else:
                logger.error(
                    "a send outlived the shutdown deadline; its claim is kept and the "
                    "message is retried after restart"
                )
            self.store = None
        for server in (self._sink, self._capture):
            if server is not None:
                server.stop()
        self._sink = self._capture = None
        return clean

    def _stop_http(self) -> None:
        """Stop accepting, let requests in flight finish, then close every connection.

        Sockets are closed from waitress's own loop thread (via its trigger),
        never under a running ``select``.
        """
        server, self._http = self._http, None
        if server is None:
            return
        trigger = server.trigger
        wake = trigger._physical_pull

        def wake_unless_closed() -> None:
            # A response finishing while the loop closes may wake an already closed pipe.
            with contextlib.suppress(OSError):
                wake()

        trigger._physical_pull = wake_unless_closed
        trigger.pull_trigger(lambda: wasyncore.dispatcher.close(server))
        server.task_dispatcher.shutdown(cancel_pending=False, timeout=5)

        def close_everything() -> None:
            wasyncore.close_all(server._map, ignore_all=True)

        trigger.pull_trigger(close_everything)
        if self._http_thread is not None:
            self._http_thread.join(5)
            self._http_thread = None

    def _stop_actors(self, deadline: float) -> bool:
        supervisor, self.supervisor = self.supervisor, None
        if supervisor is None or self.ctx is None:
            return True
        children: list[pykka.ActorRef] = []
        with contextlib.suppress(pykka.ActorDeadError, pykka.Timeout):
            children = supervisor.ask(ListChildren(), timeout=5)
        with contextlib.suppress(pykka.ActorDeadError, pykka.Timeout):
            supervisor.stop(block=True, timeout=5)
        # Accounts first (they finish the send in flight), then tenants, then the reporter.
        futures = [(ref, ref.stop(block=False)) for ref in children]
        survivors = []
        for ref, future in futures:
            try:
                future.get(timeout=max(0.0, deadline - time.monotonic()))
            except pykka.Timeout:
                survivors.append(ref)
            except pykka.ActorDeadError:
                continue
        for ref in survivors:
            logger.error("actor still running at shutdown deadline: %s", ref)
        return not survivors


def _bound_socket(host: str) -> socket.socket:
    """A TCP socket bound to a free port of ``host`` (waitress listens on it)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    return sock


def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; the exit code for the CLI."""
    setup_logging(settings.log_level, settings.log_format)
    stop_requested = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("received %s: shutting down", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server = ProxyServer(settings)
    server.start()
    try:
        while not stop_requested.wait(1.0):
            pass
    finally:
        clean = server.stop()
    logger.info("stopped%s", "" if clean else " (a send was still in flight)")
    return 0
