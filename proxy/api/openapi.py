"""Build the OpenAPI 3.1 document from THE route table and each responder's ``@operation``.

One source of truth (SPEC §3.1 rule 8): paths come from ``proxy.app.routes()``, access
levels from the same ``Operation`` the auth middleware enforces, and body schemas from
the pydantic models the handlers validate with. Nothing here is hand-listed per route,
so a new responder is documented the moment it is routed. Pure: no falcon, no store.

Where an operation names no ``response`` model, its 200 answer is documented as a
generic JSON object (or a string, for a non-JSON media type). Error responses: 401 and
403 for Auth and Admin operations, 413 and 422 for those with a body model, 422 for
typed query parameters, plus each status in ``errors``; all use the one ``Error``
schema. ``Operation.extra`` is merged into the operation object last (``x-`` fields,
or an override).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from proxy.api._doc import ADMIN, AUTH, PUBLIC, Operation, Param

OPENAPI_VERSION = "3.1.0"
REF_TEMPLATE = "#/components/schemas/{model}"
ERROR_REF = {"$ref": "#/components/schemas/Error"}
API_TOKEN, METRICS_BEARER = "apiToken", "metricsBearer"
BEARER_PATHS = frozenset({"/metrics"})  # as in _auth.AuthMiddleware._authenticate

ACCESS_TEXT = {
    PUBLIC: "Public: no token needed.",
    AUTH: "Auth: the admin token or a tenant token (confined to its own tenant).",
    ADMIN: "Admin: the admin token only.",
}
ERROR_TEXT = {
    400: "Bad request",
    401: "Invalid or missing API token",
    403: "Token not allowed here (admin token required, or another tenant named)",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    422: "Invalid body or query; `detail` lists every problem with its location",
    500: "Unexpected server error (logged with a request id)",
    503: "Unavailable",
}
_FIELD = re.compile(r"\{(\w+)(?::(\w+)[^}]*)?\}")  # Falcon's {name} and {name:converter(...)}
_CONVERTER_TYPES = {"int": "integer", "float": "number", "uuid": "string"}

TableRow = tuple[str, str, Operation]  # (URI template, HTTP method, Operation)


def error_schema() -> dict[str, Any]:
    """SPEC §3.1 rule 3: every 4xx/5xx body. Extra fields are allowed (add-messages' 400)."""
    problem = {
        "type": "object",
        "title": "Problem",
        "properties": {
            "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
            "msg": {"type": "string"},
            "type": {"type": "string"},
        },
        "required": ["loc", "msg"],
    }
    return {
        "type": "object",
        "title": "Error",
        "description": "`error` is a short text; `detail` keeps the shape clients of the "
        "original expect: the same text, the list of problems (422) or an object.",
        "properties": {
            "ok": {"const": False},
            "error": {"type": "string"},
            "detail": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": problem},
                    {"type": "object"},
                ]
            },
        },
        "required": ["ok", "error"],
    }


def build_document(
    operations: Iterable[TableRow],
    *,
    title: str = "Mail Proxy API",
    version: str = "0.0.0",
    access_overrides: Mapping[tuple[str, str], str] | None = None,
) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document for ``(template, method, Operation)`` rows.

    ``access_overrides`` mirrors what ``create_app`` changes at start (``/metrics`` made
    public by ``GMP_METRICS_PUBLIC``), so the document states what is enforced.
    """
    rows = list(operations)
    overrides = access_overrides or {}
    refs, schemas = _schemas(rows)
    paths: dict[str, dict[str, Any]] = {}
    tags: list[str] = []
    for template, method, op in rows:
        access = overrides.get((template, method), op.access)
        path, parameters = _path_and_parameters(template)
        paths.setdefault(path, {})[method.lower()] = _operation(
            template, method, op, access=access, parameters=parameters, refs=refs
        )
        if op.tag not in tags:
            tags.append(op.tag)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": "Multi-tenant outbound mail proxy: REST in, SMTP out, delivery "
            "reports back to each tenant. Authenticate with the `X-API-Token` header; "
            "each operation states its access level (Public, Auth or Admin).",
        },
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "components": {
            "schemas": {"Error": error_schema(), **schemas},
            "securitySchemes": {
                API_TOKEN: {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Token",
                    "description": "The admin token or a tenant's API key.",
                },
                METRICS_BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin token as `Authorization: Bearer`, on /metrics.",
                },
            },
        },
    }


def _schemas(
    rows: list[TableRow],
) -> tuple[dict[tuple[type[BaseModel], str], dict[str, Any]], dict[str, Any]]:
    """Every request/response model as a component; returns each model's ``$ref``."""
    wanted: dict[tuple[type[BaseModel], Literal["validation", "serialization"]], None] = {}
    for _, _, op in rows:
        if op.request is not None:
            wanted[(op.request, "validation")] = None
        if op.response is not None:
            wanted[(op.response, "serialization")] = None
    if not wanted:
        return {}, {}
    refs, top = models_json_schema(list(wanted), ref_template=REF_TEMPLATE)
    return dict(refs), top.get("$defs", {})


def _path_and_parameters(template: str) -> tuple[str, list[dict[str, Any]]]:
    parameters = [
        {
            "name": match.group(1),
            "in": "path",
            "required": True,
            "schema": {"type": _CONVERTER_TYPES.get(match.group(2) or "", "string")},
        }
        for match in _FIELD.finditer(template)
    ]
    return _FIELD.sub(r"{\1}", template), parameters


def _operation(
    template: str,
    method: str,
    op: Operation,
    *,
    access: str,
    parameters: list[dict[str, Any]],
    refs: Mapping[tuple[type[BaseModel], str], dict[str, Any]],
) -> dict[str, Any]:
    description = "\n\n".join(part for part in (op.description, ACCESS_TEXT[access]) if part)
    doc: dict[str, Any] = {
        "tags": [op.tag],
        "summary": op.summary,
        "description": description,
        "operationId": _operation_id(method, template),
        "x-access-level": access,
        "security": _security(template, access),
    }
    parameters = parameters + [_query_parameter(param) for param in op.query]
    if parameters:
        doc["parameters"] = parameters
    if op.request is not None:
        doc["requestBody"] = {
            "required": op.request_required,
            "content": {"application/json": {"schema": refs[(op.request, "validation")]}},
        }
    doc["responses"] = {"200": _success(op, refs), **_errors(op, access)}
    return doc | op.extra


def _operation_id(method: str, template: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", _FIELD.sub(r"\1", template)).strip("_")
    return f"{method.lower()}_{slug or 'root'}"


def _security(template: str, access: str) -> list[dict[str, list[str]]]:
    if access == PUBLIC:
        return []
    schemes = [{API_TOKEN: []}]
    if template in BEARER_PATHS:
        schemes.append({METRICS_BEARER: []})
    return schemes


def _query_parameter(param: Param) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": param.type}
    if param.enum:
        schema["enum"] = list(param.enum)
    found = {"name": param.name, "in": "query", "required": param.required, "schema": schema}
    if param.description:
        found["description"] = param.description
    return found


def _success(
    op: Operation, refs: Mapping[tuple[type[BaseModel], str], dict[str, Any]]
) -> dict[str, Any]:
    if op.response is not None:
        schema = refs[(op.response, "serialization")]
        description = (op.response.__doc__ or "Success").strip().splitlines()[0]
    elif "json" in op.response_media:
        schema, description = {"type": "object"}, "Success (a JSON object)"
    else:
        schema, description = {"type": "string"}, "Success"
    return {"description": description, "content": {op.response_media: {"schema": schema}}}


def _errors(op: Operation, access: str) -> dict[str, Any]:
    statuses = set(op.errors)
    if access != PUBLIC:
        statuses |= {401, 403}
    if op.request is not None:
        statuses |= {413, 422}
    if any(param.type != "string" or param.enum for param in op.query):
        statuses.add(422)
    return {
        str(status): {
            "description": ERROR_TEXT.get(status, "Error"),
            "content": {"application/json": {"schema": ERROR_REF}},
        }
        for status in sorted(statuses)
    }
