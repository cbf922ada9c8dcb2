"""The command log middleware: every mutating command is appended after it runs (SPEC §3.13).

Installed after ``_auth.AuthMiddleware``: only requests that authenticated are
recorded (also when the command then failed: ``response_status`` says how it
ended). The body of a logged request is read once, in ``process_resource``,
into ``req.context.raw_body``, where ``_body.read_json`` finds it; a body over
the request limit is left unread so the responder still answers 413 unread.

The payload is the request (path parameters, query, body object) with every
secret replaced by the mask (§16 rule 7) and message bodies and attachment
contents cut to 1 KB (``logged_payload``, pure).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import falcon

from proxy.api._auth import Principal
from proxy.api._body import MB
from proxy.api.deps import Deps
from proxy.api.schemas import TENANT_ID_PATTERN
from proxy.store.command_log import CommandLogStore
from proxy.store.records import MASK

logger = logging.getLogger(__name__)

# (URI template, method) → command name in the log.
COMMANDS: dict[tuple[str, str], str] = {
    ("/commands/add-messages", "POST"): "addMessages",
    ("/commands/delete-messages", "POST"): "deleteMessages",
    ("/commands/cleanup-messages", "POST"): "cleanupMessages",
    ("/account", "POST"): "addAccount",
    ("/account/{account_id}", "DELETE"): "deleteAccount",
    ("/tenant", "POST"): "addTenant",
    ("/tenant/{tenant_id}", "PUT"): "updateTenant",
    ("/tenant/{tenant_id}", "DELETE"): "deleteTenant",
    ("/tenant/{tenant_id}/api-key", "POST"): "createApiKey",
    ("/tenant/{tenant_id}/api-key", "DELETE"): "revokeApiKey",
    ("/commands/suspend", "POST"): "suspend",
    ("/commands/activate", "POST"): "activate",
    ("/commands/run-now", "POST"): "runNow",
    ("/instance", "PUT"): "updateInstance",
}
SECRET_KEYS = frozenset(
    {"password", "token", "api_token", "api_key", "secret", "imap_password"}
    | {"bounce_imap_password"}
)
MASKED_TREES = frozenset({"storage_options"})  # every string inside is a secret (§9.7)
# Message texts and attachment contents (base64 content travels in storage_path).
TRUNCATED_KEYS = frozenset({"body", "html", "content", "storage_path"})
MAX_TEXT_BYTES = 1024


def _truncated(text: str) -> str:
    data = text.encode("utf-8")
    if len(data) <= MAX_TEXT_BYTES:
        return text
    return data[:MAX_TEXT_BYTES].decode("utf-8", errors="ignore")


def _mask_all(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _mask_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_all(v) for v in value]
    return MASK if isinstance(value, str) else value


def logged_payload(value: Any) -> Any:
    """``value`` with secrets masked and long texts cut, at any depth (pure)."""
    if isinstance(value, list):
        return [logged_payload(item) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in SECRET_KEYS and item is not None:
            out[key] = MASK
        elif key in MASKED_TREES:
            out[key] = _mask_all(item)
        elif key in TRUNCATED_KEYS and isinstance(item, str):
            out[key] = _truncated(item)
        else:
            out[key] = logged_payload(item)
    return out


def _decoded_body(raw: bytes | None) -> dict[str, Any]:
    if not raw or not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {"invalid_body": True}  # never stored raw: it may hold a secret
    return body if isinstance(body, dict) else {"body": body}


def command_tenant(
    command: str, principal: Principal, request: dict[str, Any], body: dict[str, Any]
) -> str | None:
    """The tenant a command acted for: the token's, else the one the request named.

    A named value that cannot be a tenant id (a refused request's garbage) is not
    recorded as one: the entry keeps it in its payload only.
    """
    if principal.tenant_id is not None:
        return principal.tenant_id
    named: list[Any] = [request.get("tenant_id"), body.get("tenant_id")]
    if command == "addTenant":
        named.append(body.get("id"))
    if command == "addMessages" and isinstance(body.get("messages"), list):
        in_messages = {m.get("tenant_id") for m in body["messages"] if isinstance(m, dict)}
        if len(in_messages) == 1:
            named.append(next(iter(in_messages)))
    return next((t for t in named if isinstance(t, str) and _TENANT_ID.match(t)), None)


_TENANT_ID = re.compile(TENANT_ID_PATTERN)


class AuditMiddleware:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._log = CommandLogStore(deps.store.db)

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict
    ) -> None:
        if resource is None or (req.uri_template, req.method) not in COMMANDS:
            return
        req.context.path_params = dict(params)
        length = req.content_length
        if length and length <= self._deps.settings.max_request_mb * MB:
            req.context.raw_body = req.bounded_stream.read()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        command = COMMANDS.get((req.uri_template, req.method)) if resource is not None else None
        principal = getattr(req.context, "principal", None)
        if command is None or not isinstance(principal, Principal):
            return  # not a command, or refused by authentication: nothing ran
        request = {**req.params, **getattr(req.context, "path_params", {})}
        body = _decoded_body(getattr(req.context, "raw_body", None))
        try:
            self._log.append(
                command_ts=self._deps.now(),
                endpoint=command,
                tenant_id=command_tenant(command, principal, request, body),
                actor="admin" if principal.is_admin else "tenant",
                payload=logged_payload({**request, **body}),
                response_status=resp.status_code,
            )
        except Exception:  # boundary: the command already ran and answered
            logger.exception("command log append failed", extra={"command": command})
