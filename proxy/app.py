"""``create_app(settings, store, engine)``: the Falcon app and THE route table.

Everything is passed in, so tests build the app over a real temporary store
and a recording fake engine. Resources are thin: validate, one store call,
one engine tell. Access levels come from each responder's ``@operation``.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator

import falcon

from proxy.api import _auth, _body, _errors
from proxy.api._doc import PUBLIC, Operation, operation_of
from proxy.api.access_log import AccessLogMiddleware
from proxy.api.accounts import AccountCollection, AccountItem
from proxy.api.audit import AuditMiddleware
from proxy.api.cleanup import CleanupMessages, DeleteMessages
from proxy.api.command_log import CommandLog
from proxy.api.commands import AddMessages, RunNow
from proxy.api.deps import Deps
from proxy.api.docs import DocsAsset, OpenApiDocument, Redoc, SwaggerUi
from proxy.api.downloads import Download
from proxy.api.health import Health
from proxy.api.instance import Instance
from proxy.api.messages import MessageCollection, MessageEvents
from proxy.api.metrics import MetricsResource
from proxy.api.status import Status
from proxy.api.suspension import Activate, Suspend
from proxy.api.sync_status import SyncStatus
from proxy.api.tenant_keys import TenantApiKey
from proxy.api.tenants import TenantCollection, TenantItem
from proxy.clock import SYSTEM_CLOCK, Clock
from proxy.config import Settings
from proxy.engine import Engine
from proxy.metrics import Metrics
from proxy.store import Database

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")


def routes(deps: Deps) -> list[tuple[str, object, str | None]]:
    """THE route table: (URI template, resource, responder suffix)."""
    accounts, tenants = AccountCollection(deps), TenantCollection(deps)
    return [
        ("/health", Health(deps), None),
        ("/openapi.json", OpenApiDocument(deps, lambda: operations(routes(deps))), None),
        ("/docs", SwaggerUi(), None),
        ("/redoc", Redoc(), None),
        ("/docs/assets/{name}", DocsAsset(), None),
        ("/metrics", MetricsResource(deps), None),
        ("/commands/run-now", RunNow(deps), None),
        ("/commands/add-messages", AddMessages(deps), None),
        ("/status", Status(deps), None),
        ("/commands/suspend", Suspend(deps), None),
        ("/commands/activate", Activate(deps), None),
        ("/commands/delete-messages", DeleteMessages(deps), None),
        ("/commands/cleanup-messages", CleanupMessages(deps), None),
        ("/account/{account_id}", AccountItem(deps), None),
        ("/messages/{message_id}/events", MessageEvents(deps), None),
        ("/account", accounts, None),
        ("/accounts", accounts, "list"),
        ("/messages", MessageCollection(deps), None),
        ("/tenant", tenants, None),
        ("/tenants", tenants, "list"),
        ("/tenant/{tenant_id}", TenantItem(deps), None),
        ("/tenant/{tenant_id}/api-key", TenantApiKey(deps), None),
        ("/tenants/sync-status", SyncStatus(deps), None),
        ("/instance", Instance(deps), None),
        ("/instance/reload-bounce", Instance(deps), "reload_bounce"),
        ("/command-log", CommandLog(deps), None),
        ("/command-log/export", CommandLog(deps), "export"),
        ("/command-log/purge", CommandLog(deps), "purge"),
        ("/download/{token}", Download(deps), None),
        ("/download/{token}/{filename}", Download(deps), "named"),
    ]


def operations(table: list[tuple[str, object, str | None]]) -> Iterator[tuple[str, str, Operation]]:
    """Every (template, method, Operation) the table serves; a responder without one is a bug."""
    for template, resource, suffix in table:
        for method in METHODS:
            name = f"on_{method.lower()}" + (f"_{suffix}" if suffix else "")
            responder = getattr(resource, name, None)
            if responder is None:
                continue
            op = operation_of(responder)
            if op is None:
                raise TypeError(f"{type(resource).__name__}.{name} has no @operation")
            yield template, method, op


class _RequestThread:
    """Tells the store the thread serving this request is a request thread (before any query)."""

    def __init__(self, store: Database) -> None:
        self._store = store

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._store.serve_requests_here()


def create_app(
    settings: Settings,
    store: Database,
    engine: Engine,
    *,
    metrics: Metrics | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> falcon.App:
    deps = Deps(settings, store, engine, metrics or Metrics(), clock)
    table = routes(deps)
    access = {(template, method): op.access for template, method, op in operations(table)}
    if settings.metrics_public:
        access[("/metrics", "GET")] = PUBLIC

    def tenant_for_digest(token_digest: str) -> str | None:
        found = store.tenants.tenant_for_key_hash(token_digest, deps.now())
        if found is None or not hmac.compare_digest(found[1], token_digest):
            return None
        return found[0]

    app = falcon.App(
        middleware=[
            _RequestThread(store),
            AccessLogMiddleware(),
            _auth.AuthMiddleware(
                access, lambda: _auth.admin_digest(settings, store), tenant_for_digest
            ),
            AuditMiddleware(deps),
            _body.TextParamsMiddleware(),
        ]
    )
    app.req_options.strip_url_path_trailing_slash = True
    app.resp_options.default_media_type = _body.JSON_UTF8  # SPEC §3.1.1, errors included
    app.resp_options.media_handlers[_body.JSON_UTF8] = app.resp_options.media_handlers[
        falcon.MEDIA_JSON
    ]
    _errors.install(app)
    for template, resource, suffix in table:
        _answer_head_like_get(resource, suffix)
        app.add_route(template, resource, suffix=suffix)
    return app


def _answer_head_like_get(resource: object, suffix: str | None) -> None:
    """HEAD is GET without the body (RFC 9110 §9.3.2): uptime checks probe ``/health`` so.

    Falcon sends no body for HEAD; the access rules of GET apply (``AuthMiddleware``).
    """
    tail = f"_{suffix}" if suffix else ""
    get = getattr(resource, f"on_get{tail}", None)
    if get is not None and not hasattr(resource, f"on_head{tail}"):
        setattr(resource, f"on_head{tail}", get)
