"""The access log: one INFO line per request on the ``proxy.access`` logger (SPEC §15.2).

First in the middleware list, so it times the whole request and sees every
answer, 401s included. Each line carries ``method``, ``path``, ``status``,
``duration_ms`` and ``request_id`` (also as context of every other line logged
while the request runs, and sent back as ``X-Request-ID``). Query strings are
never logged, and the token segment of ``/download/<token>/…`` paths is
replaced, because the link is the credential (§9.8). Silence the access log
alone with ``logging.getLogger("proxy.access").setLevel(logging.WARNING)``.
"""

from __future__ import annotations

import logging
import re
import secrets
import time

import falcon

from proxy.logs import bind_request_id

logger = logging.getLogger("proxy.access")

REQUEST_ID_HEADER = "X-Request-ID"
REDACTED = "<redacted>"
_DOWNLOAD_PREFIX = "/download/"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def redacted_path(path: str) -> str:
    """``path`` safe to log: the download token replaced, control characters escaped."""
    if path.startswith(_DOWNLOAD_PREFIX):
        _token, sep, rest = path[len(_DOWNLOAD_PREFIX) :].partition("/")
        path = f"{_DOWNLOAD_PREFIX}{REDACTED}{sep}{rest}"
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", path)


def request_id_for(req: falcon.Request) -> str:
    """The caller's ``X-Request-ID`` when it is a short plain token, else a new one."""
    given = req.get_header(REQUEST_ID_HEADER)
    if given and _CLIENT_REQUEST_ID.fullmatch(given):
        return given
    return secrets.token_hex(6)


class AccessLogMiddleware:
    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.request_id = request_id_for(req)
        req.context.started_s = time.monotonic()
        bind_request_id(req.context.request_id)
        resp.set_header(REQUEST_ID_HEADER, req.context.request_id)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        started = getattr(req.context, "started_s", None)
        duration_ms = round((time.monotonic() - started) * 1000, 1) if started else 0.0
        request_id = getattr(req.context, "request_id", None)
        path = redacted_path(req.path)
        principal = getattr(req.context, "principal", None)
        extra = {
            "method": req.method,
            "path": path,
            "status": resp.status_code,
            "duration_ms": duration_ms,
            "request_id": request_id,
            "tenant_id": getattr(principal, "tenant_id", None),
        }
        logger.info("%s %s %s %.1fms", req.method, path, resp.status_code, duration_ms, extra=extra)
        bind_request_id(None)
