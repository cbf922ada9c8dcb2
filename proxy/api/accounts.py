"""Account resources: ``POST /account``, ``GET /accounts``, ``DELETE /account/{id}`` (SPEC §3.8).

Also the two helpers every scoped command shares: ``named_param`` (a blank
query value is an error, never "absent", so an empty ``tenant_id`` cannot widen
a command to every tenant) and ``tenant_scope`` (the one tenant a request acts on).
"""

from __future__ import annotations

from typing import Any

import falcon
from pydantic import BaseModel, ConfigDict

from proxy.api import _auth
from proxy.api._body import omit_none, read_object, validate
from proxy.api._doc import AUTH, Param, operation
from proxy.api._errors import Conflict, NotFound, Unprocessable, problem
from proxy.api.deps import Deps
from proxy.api.schemas import AccountPayload
from proxy.clock import iso_utc
from proxy.store.accounts import ACCOUNT_FIELDS, SECRET_FIELDS
from proxy.store.records import AccountRecord

CLOSED = ConfigDict(extra="forbid")


class AccountInfo(BaseModel):
    """Every AccountPayload field but the secrets, plus ``*_set`` flags and ISO times."""

    model_config = CLOSED
    id: str
    tenant_id: str
    host: str
    port: int
    user: str | None = None
    use_tls: bool | None = None
    use_ssl: bool | None = None
    tls_verify: bool
    ttl: int
    limit_per_minute: int | None = None
    limit_per_hour: int | None = None
    limit_per_day: int | None = None
    limit_behavior: str
    batch_size: int | None = None
    is_pec_account: bool
    imap_host: str | None = None
    imap_port: int | None = None
    imap_user: str | None = None
    imap_ssl: bool | None = None
    imap_folder: str | None = None
    password_set: bool
    imap_password_set: bool
    created_at: str
    updated_at: str


class AccountList(BaseModel):
    model_config = CLOSED
    ok: bool
    accounts: list[AccountInfo]


class AccountWritten(BaseModel):
    model_config = CLOSED
    ok: bool
    created: bool | None = None


class AccountDeleted(BaseModel):
    model_config = CLOSED
    ok: bool


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


def named_param(req: falcon.Request, name: str) -> str | None:
    """A query value: None when absent; present but blank is a 422 naming it."""
    value = req.get_param(name)
    if value is not None and not value.strip():
        raise Unprocessable([problem(["query", name], "must not be empty", "string_too_short")])
    return value


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
        response=AccountWritten,
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
        self.deps.metrics.init_account(
            tenant_id, tenant.display_name, payload.id, payload.id, is_pec=payload.is_pec_account
        )
        self.deps.engine.account_changed(tenant_id, payload.id)
        resp.media = {"ok": True, "created": True} if created else {"ok": True}

    @operation(
        summary="List SMTP accounts",
        description="Ordered by id. With the admin token and no tenant_id: every tenant's.",
        access=AUTH,
        tag="Accounts",
        response=AccountList,
        errors=(403,),
        query=(Param("tenant_id", description="optional with the admin token: all tenants"),),
    )
    def on_get_list(self, req: falcon.Request, resp: falcon.Response) -> None:
        tenant_id = _auth.require_tenant(req.context.principal, req.get_param("tenant_id"))
        accounts = self.deps.store.accounts.list(tenant_id)
        resp.media = {"ok": True, "accounts": [account_info(a) for a in accounts]}


class AccountItem:
    """``DELETE /account/{account_id}``: unsent messages become errors, reported (SPEC §3.8)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @operation(
        summary="Delete an SMTP account",
        description=(
            "Its messages not yet sent end as errors ('account deleted') and are reported; "
            "its rate-limit counters are dropped. With the admin token and no tenant_id, "
            "the one tenant having this account id is meant (409 when several have it)."
        ),
        access=AUTH,
        tag="Accounts",
        response=AccountDeleted,
        errors=(403, 404, 409, 422),
        query=(Param("tenant_id", description="optional: admin token (unique owner) or tenant"),),
    )
    def on_delete(self, req: falcon.Request, resp: falcon.Response, account_id: str) -> None:
        store = self.deps.store
        tenant_id = self._owner(req.context.principal, named_param(req, "tenant_id"), account_id)
        tenant = store.tenants.get(tenant_id)
        if store.accounts.delete(tenant_id, account_id, self.deps.now()) is None:
            raise NotFound(f"Account '{account_id}' not found for tenant '{tenant_id}'")
        tenant_name = tenant.display_name if tenant is not None else tenant_id
        self.deps.metrics.remove_account(tenant_id, tenant_name, account_id)
        self.deps.engine.account_removed(tenant_id, account_id)
        resp.media = {"ok": True}

    def _owner(self, principal: _auth.Principal, named: str | None, account_id: str) -> str:
        tenant_id = _auth.require_tenant(principal, named)
        if tenant_id is not None:
            return tenant_id
        owners = self.deps.store.accounts.tenants_with_account(account_id)
        if not owners:
            raise NotFound(f"Account '{account_id}' not found")
        if len(owners) > 1:
            raise Conflict(f"Account '{account_id}' exists in several tenants; give tenant_id")
        return owners[0]
