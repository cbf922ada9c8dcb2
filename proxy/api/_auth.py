"""Authentication middleware: ``X-API-Token`` → ``req.context.principal`` (SPEC §2).

Resources declare ``access = "public" | "auth" | "admin"`` (per resource, or a
dict per HTTP method). Authentication runs before the body is read, so an
unauthenticated request with a malformed body gets 401, not 422.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

import falcon

from proxy.api._errors import ADMIN_REQUIRED, WRONG_TENANT, Forbidden, Unauthorized

PUBLIC, AUTH, ADMIN = "public", "auth", "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str | None  # None = the admin

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None


ADMIN_PRINCIPAL = Principal(None)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


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
        admin_token: Callable[[], str | None],
        tenant_for_digest: Callable[[str], str | None],
        *,
        public_metrics: bool = False,
    ) -> None:
        self._admin_token = admin_token
        self._tenant_for_digest = tenant_for_digest
        self._public_metrics = public_metrics

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict
    ) -> None:
        if resource is None:
            return
        access = getattr(resource, "access", AUTH)
        if isinstance(access, dict):
            access = access.get(req.method, AUTH)
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
        admin = self._admin_token()
        if token:
            token_digest = digest(token)
            if admin and hmac.compare_digest(token_digest, digest(admin)):
                return ADMIN_PRINCIPAL
            tenant_id = self._tenant_for_digest(token_digest)
            if tenant_id is not None:
                return Principal(tenant_id)
        if not admin:
            return ADMIN_PRINCIPAL  # no admin token configured: open (SPEC §2.1 rule 8)
        raise Unauthorized
