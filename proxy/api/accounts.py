"""Account resources: ``POST /account`` and ``GET /accounts`` (SPEC §3.8)."""

from __future__ import annotations

from typing import Any

import falcon

from proxy.api import _auth
from proxy.api._body import omit_none, read_object, validate
from proxy.api._doc import AUTH, Param, operation
from proxy.api._errors import NotFound, Unprocessable, problem
from proxy.api.deps import Deps
from proxy.api.schemas import AccountPayload
from proxy.clock import iso_utc
from proxy.store.accounts import ACCOUNT_FIELDS, SECRET_FIELDS
from proxy.store.records import AccountRecord


def account_info(account: AccountRecord) -> dict[str, Any]:
    """AccountInfo: every field but the secrets, plus ``*_set`` flags."""
    fields = {name: getattr(account, name) for name in ACCOUNT_FIELDS if name not in SECRET_FIELDS}
    return omit_none(
        {"id": account.id, "tenant_id": account.tenant_id}
        | fields
        | {
            "password_set": account.password is not None,
            "imap_password_set": account.imap_password is not None,
            "created_at": iso_utc(account.created_ts),
            "updated_at": iso_utc(account.updated_ts),
        }
    )


def tenant_scope(principal: _auth.Principal, tenant_id: str | None, *, loc: list[str]) -> str:
    """The one tenant a request acts on; an admin request must name it (422 otherwise)."""
    scoped = _auth.require_tenant(principal, tenant_id)
    if scoped is None:
        raise Unprocessable([problem(loc, "field required", "missing")])
    return scoped


class AccountCollection:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @operation(
        summary="Create or replace an SMTP account",
        access=AUTH,
        tag="Accounts",
        request=AccountPayload,
        errors=(403, 404, 413, 422),
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        payload = validate(AccountPayload, read_object(req, self.deps.settings.max_request_mb))
        tenant_id = tenant_scope(
            req.context.principal, payload.tenant_id, loc=["body", "tenant_id"]
        )
        tenant = self.deps.store.tenants.get(tenant_id)
        if tenant is None:
            raise NotFound(f"Tenant '{tenant_id}' not found")
        created = self.deps.store.accounts.upsert(
            tenant_id, payload.id, payload.stored_fields(), self.deps.now()
        )
        self.deps.metrics.init_account(tenant_id, tenant.display_name, payload.id, payload.id)
        self.deps.engine.account_changed(tenant_id, payload.id)
        resp.media = {"ok": True, "created": True} if created else {"ok": True}

    @operation(
        summary="List SMTP accounts",
        access=AUTH,
        tag="Accounts",
        errors=(403,),
        query=(Param("tenant_id", description="optional with the admin token"),),
    )
    def on_get_list(self, req: falcon.Request, resp: falcon.Response) -> None:
        tenant_id = _auth.require_tenant(req.context.principal, req.get_param("tenant_id"))
        accounts = self.deps.store.accounts.list(tenant_id)
        resp.media = {"ok": True, "accounts": [account_info(a) for a in accounts]}
