"""Operation metadata on responders: the one source for access levels and OpenAPI.

Every responder is decorated with ``@operation(...)``. ``proxy.app`` reads the
metadata once at start to build the access map the auth middleware enforces,
and ``proxy.api.openapi`` reads the same metadata to describe the API, so the
documentation can never disagree with what is enforced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

F = TypeVar("F", bound=Callable[..., Any])

PUBLIC, AUTH, ADMIN = "public", "auth", "admin"


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter: name, JSON-schema type, whether required, and a description."""

    name: str
    type: str = "string"  # string | integer | boolean
    required: bool = False
    description: str = ""
    enum: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Operation:
    summary: str
    access: str  # PUBLIC | AUTH | ADMIN
    tag: str
    description: str = ""
    request: type[BaseModel] | None = None  # JSON body model
    request_required: bool = True
    response: type[BaseModel] | None = None  # 200 body model
    response_media: str = "application/json"
    errors: tuple[int, ...] = ()  # documented error statuses besides auth's
    query: tuple[Param, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def operation(**kwargs: Any) -> Callable[[F], F]:
    """Attach an ``Operation`` to a responder (``on_get``, ``on_post_list`` …)."""
    op = Operation(**kwargs)

    def mark(fn: F) -> F:
        fn.__operation__ = op  # type: ignore[attr-defined]
        return fn

    return mark


def operation_of(responder: object) -> Operation | None:
    return getattr(responder, "__operation__", None)
