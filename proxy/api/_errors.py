"""The API's error tree and its one serializer (SPEC §3.1 rule 3).

    ApiError                     {"ok": false, "error": text, "detail": text | list}
     ├── BadRequest         400
     ├── Unauthorized       401  "Invalid or missing API token"
     ├── Forbidden          403
     ├── NotFound           404
     ├── Conflict           409
     ├── PayloadTooLarge    413
     ├── Unprocessable      422  detail = every problem, each with loc/msg/type
     └── Unavailable        503

Responders raise these; ``install(app)`` turns them, Falcon's own HTTP errors
and unexpected exceptions into the same body. A 500 never carries internals.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import falcon

logger = logging.getLogger(__name__)

AUTH_FAILED = "Invalid or missing API token"
ADMIN_REQUIRED = "Admin token required, tenant tokens not allowed for this operation"
WRONG_TENANT = "Token not authorized for this tenant"


class ApiError(Exception):
    status: int = 500

    def __init__(
        self, message: str, detail: Any = None, *, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = message if detail is None else detail
        self.body = body

    def to_body(self) -> dict[str, Any]:
        if self.body is not None:
            return self.body
        return {"ok": False, "error": self.message, "detail": self.detail}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401

    def __init__(self) -> None:
        super().__init__(AUTH_FAILED)


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class Unavailable(ApiError):
    status = 503


class Unprocessable(ApiError):
    status = 422

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        first = problems[0] if problems else {"loc": ["body"], "msg": "invalid body"}
        where = ".".join(str(part) for part in first["loc"])
        super().__init__(f"{where}: {first['msg']}", problems)


def problem(loc: list[str | int], msg: str, type_: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": type_}


def _send(resp: falcon.Response, status: int, body: dict[str, Any]) -> None:
    resp.status = status
    resp.media = body


def _api_error(req: falcon.Request, resp: falcon.Response, ex: ApiError, params: dict) -> None:
    _send(resp, ex.status, ex.to_body())


def _http_error(
    req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict
) -> None:
    text = ex.title if not ex.description else f"{ex.title}: {ex.description}"
    _send(resp, ex.status_code, {"ok": False, "error": text, "detail": text})


def _unexpected(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict) -> None:
    # The access log's id when it assigned one, so the 500 and its access line match.
    request_id = getattr(req.context, "request_id", None) or uuid.uuid4().hex[:12]
    logger.error(
        "unhandled error in %s %s",
        req.method,
        req.path,
        exc_info=ex,
        extra={"request_id": request_id},
    )
    text = f"Internal server error (request id {request_id})"
    _send(resp, 500, {"ok": False, "error": text, "detail": text})


def install(app: falcon.App) -> None:
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(falcon.HTTPError, _http_error)
    app.add_error_handler(ApiError, _api_error)
