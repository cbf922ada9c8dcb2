"""Authentication middleware: ``X-API-Token`` → ``req.context.principal`` (SPEC §2).

Each responder's ``@operation(access=...)`` (``proxy.api._doc``) decides its
level; ``proxy.app`` hands the middleware the resulting map of
``(uri_template, method) → level``. A route missing from the map needs a token.
Authentication runs before the body is read, so an unauthenticated request
with a malformed body gets 401, not 422.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import falcon

from proxy.api._doc import ADMIN, AUTH, PUBLIC
from proxy.api._errors import ADMIN_REQUIRED, WRONG_TENANT, Forbidden, Unauthorized
from proxy.store.settings import API_TOKEN_SHA256

if TYPE_CHECKING:
    from proxy.config import Settings
    from proxy.store import Database


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str | None  # None = the admin

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None


ADMIN_PRINCIPAL = Principal(None)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=4)
def _configured_digest(token: str) -> str:
    """The configured admin token's digest, computed once instead of per request."""
    return digest(token)


def admin_digest(settings: Settings, store: Database) -> str | None:
    """The admin token's digest, or None when no admin token is in force (SPEC §2.1 rule 2).

    The configured token (flag, environment, file) wins; only without one does the
    digest stored through ``PUT /instance`` count. The stored value is cached for a
    few seconds and dropped at once when this process writes it.
    """
    if settings.api_token:
        return _configured_digest(settings.api_token)
    stored = store.settings.cached(API_TOKEN_SHA256)
    return stored or None


def require_tenant(principal: Principal, tenant_id: str | None) -> str | None:
    """The tenant a request acts for: a tenant token may only name its own (403 otherwise).

    Returns the tenant id (the token's own when omitted), or None for an admin
    request that named none.
    """
    if principal.is_admin:
        return tenant_id or None
    if tenant_id and tenant_id != principal.tenant_id:
        raise Forbidden(WRONG_TENANT)
    return principal.tenant_id


class AuthMiddleware:
    def __init__(
        self,
        access: Mapping[tuple[str, str], str],
        admin_digest: Callable[[], str | None],
        tenant_for_digest: Callable[[str], str | None],
    ) -> None:
        self._access = access
        self._admin_digest = admin_digest
        self._tenant_for_digest = tenant_for_digest

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict
    ) -> None:
        if resource is None:
            return
        method = "GET" if req.method == "HEAD" else req.method  # HEAD is GET without a body
        access = self._access.get((req.uri_template, method), AUTH)
        if access == PUBLIC:
            req.context.principal = ADMIN_PRINCIPAL
            return
        principal = self._authenticate(req)
        if access == ADMIN and not principal.is_admin:
            raise Forbidden(ADMIN_REQUIRED)
        req.context.principal = principal

    def _authenticate(self, req: falcon.Request) -> Principal:
        token = req.get_header("X-API-Token")
        if token is None and req.path == "/metrics":
            auth = req.get_header("Authorization") or ""
            if auth.lower().startswith("bearer "):
                token = auth[7:].strip()
        admin = self._admin_digest()
        if token:
            token_digest = digest(token)
            if admin and hmac.compare_digest(token_digest, admin):
                return ADMIN_PRINCIPAL
            tenant_id = self._tenant_for_digest(token_digest)
            if tenant_id is not None:
                return Principal(tenant_id)
        if not admin:
            return ADMIN_PRINCIPAL  # no admin token configured: open (SPEC §2.1 rule 8)
        raise Unauthorized
