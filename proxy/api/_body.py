"""Reading requests: size limit, JSON decoding, query booleans, pydantic errors → 422."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import falcon
import pydantic
from pydantic_core import ErrorDetails

from proxy.api._errors import PayloadTooLarge, Unprocessable, problem

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})
MB = 1 << 20
JSON_UTF8 = "application/json; charset=utf-8"  # every JSON response says so (SPEC §3.1.1)
MAX_INT64 = 2**63 - 1  # the database's integer range: larger numbers are refused, not a 500

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)


def read_json(
    req: falcon.Request, max_mb: float, *, required: bool = True, per_item_key: str | None = None
) -> Any:
    """Decode the body; oversized ones are refused by Content-Length, unread (SPEC §3.1.4).

    A NUL anywhere is a 422 naming it, except inside the list under ``per_item_key``:
    the caller judges those items one by one (add-messages' ``messages``, SPEC §4.3
    rule 1), so one bad item does not sink the others.
    """
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
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Unprocessable([problem(["body"], "invalid JSON", "json_invalid")]) from None
    if b"\\u0000" in raw:  # JSON can carry NUL only escaped; no mail or database text can
        where = _nul_location(_without_items(body, per_item_key), ["body"])
        if where is not None:
            raise Unprocessable([problem(where, NUL_MESSAGE, "string_pattern_mismatch")])
    return body


NUL_MESSAGE = "must not contain NUL (U+0000) characters"


def _without_items(body: Any, key: str | None) -> Any:
    """``body`` without the list under ``key`` (judged per item elsewhere); else as it is."""
    if key is None or not isinstance(body, dict) or not isinstance(body.get(key), list):
        return body
    return {k: v for k, v in body.items() if k != key}


def _nul_location(value: Any, loc: list[str | int]) -> list[str | int] | None:
    """Where the first string containing NUL is (keys included), or None."""
    if isinstance(value, str):
        return loc if "\x00" in value else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if isinstance(key, str) and "\x00" in key:
            return [*loc, key]
        found = _nul_location(item, [*loc, key])
        if found is not None:
            return found
    return None


class TextParamsMiddleware:
    """Refuse NUL characters in path and query values (422 naming them), before any handler.

    No stored text may hold NUL (PostgreSQL refuses it outright), and no valid
    identifier, address or filter contains one.
    """

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict
    ) -> None:
        named = [("path", k, v) for k, v in params.items()]
        named += [("query", k, v) for k, v in req.params.items()]
        for where, name, value in named:
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, str) and "\x00" in v for v in values) or "\x00" in name:
                refused = problem([where, name], NUL_MESSAGE, "string_pattern_mismatch")
                raise Unprocessable([refused])


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
                problem(["body", *err["loc"]], _message(err), err["type"])
                for err in exc.errors(include_url=False, include_input=False)
            ]
        ) from None


def _message(error: ErrorDetails) -> str:
    """Return pydantic's text in SPEC §3.1.3's words (``field required``), no prefix.

    Only pydantic's own wording changes: a model's custom ``missing`` text stays.
    """
    text = error["msg"].removeprefix("Value error, ")
    return "field required" if text == "Field required" else text


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
