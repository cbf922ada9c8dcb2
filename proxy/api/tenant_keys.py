"""``POST`` and ``DELETE /tenant/{tenant_id}/api-key``: rotate or revoke a tenant key (SPEC §2.1).

One key per tenant: only its SHA-256 digest is stored, and a new key replaces
the old one in the same transaction, so the old key stops working at once.
The key itself appears only in the answer that created it.
"""

from __future__ import annotations

from typing import Annotated

import falcon
from pydantic import BaseModel, ConfigDict, Field

from proxy.api import _auth
from proxy.api._body import MAX_INT64, omit_none, read_object, validate
from proxy.api._doc import ADMIN, operation
from proxy.api._errors import Unprocessable, problem
from proxy.api.deps import Deps
from proxy.api.tenants import Ok, new_api_key, not_found


class ApiKeyRequest(BaseModel):
    """Optional body; without ``expires_at`` the key does not expire."""

    model_config = ConfigDict(extra="ignore")
    expires_at: Annotated[int, Field(le=MAX_INT64)] | None = Field(
        default=None, description="Unix seconds; must be in the future"
    )


class ApiKeyCreated(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ok: bool
    api_key: str
    expires_at: int | None = None


class TenantApiKey:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @operation(
        summary="Create or rotate the tenant's API key",
        description="The previous key is invalid at once. The key is shown only here.",
        access=ADMIN,
        tag="Tenants",
        request=ApiKeyRequest,
        request_required=False,
        response=ApiKeyCreated,
        errors=(404, 413, 422),
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        body = read_object(req, self.deps.settings.max_request_mb, required=False)
        expires_at = validate(ApiKeyRequest, body).expires_at
        now = self.deps.now()
        if expires_at is not None and expires_at <= now:
            raise Unprocessable(
                [problem(["body", "expires_at"], "must be in the future", "greater_than")]
            )
        api_key = new_api_key()
        if not self.deps.store.tenants.set_api_key(
            tenant_id, _auth.digest(api_key), expires_at, now
        ):
            raise not_found(tenant_id)
        resp.media = omit_none({"ok": True, "api_key": api_key, "expires_at": expires_at})

    @operation(
        summary="Revoke the tenant's API key",
        description="The tenant then has no key until a new one is created.",
        access=ADMIN,
        tag="Tenants",
        response=Ok,
        errors=(404,),
    )
    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        if not self.deps.store.tenants.revoke_api_key(tenant_id):
            raise not_found(tenant_id)
        resp.media = {"ok": True}
