"""Reading requests: size limit, JSON decoding, query booleans, pydantic errors → 422."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import falcon
import pydantic

from proxy.api._errors import PayloadTooLarge, Unprocessable, problem

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})
MB = 1 << 20
MAX_INT64 = 2**63 - 1  # the database's integer range: larger numbers are refused, not a 500

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)


def read_json(req: falcon.Request, max_mb: float, *, required: bool = True) -> Any:
    """Decode the body; oversized ones are refused by Content-Length, unread (SPEC §3.1.4)."""
    length = req.content_length
    if length is not None and length > max_mb * MB:
        raise PayloadTooLarge(f"Request body exceeds {max_mb:g} MB")
    raw = getattr(req.context, "raw_body", None)  # already read by the audit middleware
    if raw is None:
        raw = req.bounded_stream.read() if length else b""
    if not raw.strip():
        if required:
            raise Unprocessable([problem(["body"], "field required", "missing")])
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Unprocessable([problem(["body"], "invalid JSON", "json_invalid")]) from None


def read_object(req: falcon.Request, max_mb: float, *, required: bool = True) -> dict[str, Any]:
    body = read_json(req, max_mb, required=required)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise Unprocessable([problem(["body"], "expected a JSON object", "dict_type")])
    return body


def validate(model: type[ModelT], data: dict[str, Any]) -> ModelT:
    """Validate with a pydantic model, listing every problem with its ``body.…`` location."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise Unprocessable(
            [
                problem(["body", *err["loc"]], err["msg"], err["type"])
                for err in exc.errors(include_url=False, include_input=False)
            ]
        ) from None


def query_bool(req: falcon.Request, name: str, default: bool = False) -> bool:
    value = req.get_param(name)
    if value is None or value == "":
        return default
    lowered = value.lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise Unprocessable([problem(["query", name], "expected a boolean", "bool_parsing")])


def query_int(
    req: falcon.Request, name: str, *, minimum: int = 0, maximum: int | None = MAX_INT64
) -> int | None:
    """An integer query parameter; beyond ``maximum`` (the database's range) it is a 422."""
    value = req.get_param(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise Unprocessable(
            [problem(["query", name], "expected an integer", "int_parsing")]
        ) from None
    if number < minimum:
        raise Unprocessable(
            [problem(["query", name], f"must be >= {minimum}", "greater_than_equal")]
        )
    if maximum is not None and number > maximum:
        raise Unprocessable([problem(["query", name], f"must be <= {maximum}", "less_than_equal")])
    return number


def omit_none(data: dict[str, Any]) -> dict[str, Any]:
    """Null fields are omitted from responses (SPEC §3.1 rule 2)."""
    return {k: v for k, v in data.items() if v is not None}
