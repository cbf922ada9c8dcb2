"""Tenant resources (SPEC §3.11): ``POST /tenant``, ``GET /tenants``, ``/tenant/{tenant_id}``.

API keys are in ``tenant_keys.py`` and the sync status in ``sync_status.py``.
Secrets are never returned: ``client_auth`` secrets and every string of
``large_file_config.storage_options`` are masked, and a mask sent back keeps the
stored value (``proxy.store.tenants``).
"""

from __future__ import annotations

import secrets
from typing import Any

import falcon
from pydantic import BaseModel, ConfigDict, ValidationError

from proxy import netpolicy
from proxy.api import _auth
from proxy.api._body import omit_none, query_bool, read_object, validate
from proxy.api._doc import ADMIN, AUTH, Param, operation
from proxy.api._errors import Forbidden, NotFound, Unprocessable, problem
from proxy.api.deps import Deps
from proxy.api.schemas import (
    ClientAuth,
    LargeFileConfig,
    RateLimits,
    TenantFields,
    TenantPayload,
)
from proxy.attachments import large
from proxy.clock import iso_utc
from proxy.store.records import MASK, TenantRecord
from proxy.store.tenants import AdminFieldChange, mask_strings

CLOSED = ConfigDict(extra="forbid")
# Operator-decided fields a tenant token may not change (SPEC §2.3 rule 4).
ADMIN_ONLY_FIELDS = ("rate_limits", "large_file_config", "active")
NESTED_MODELS: dict[str, type[BaseModel]] = {
    "client_auth": ClientAuth,
    "rate_limits": RateLimits,
    "large_file_config": LargeFileConfig,
}


class ClientAuthInfo(BaseModel):
    model_config = CLOSED
    method: str
    token: str | None = None  # always the mask
    user: str | None = None
    password: str | None = None  # always the mask


class RateLimitsInfo(BaseModel):
    model_config = CLOSED
    hourly: int | None = None
    daily: int | None = None
    behavior: str = "defer"


class LargeFileInfo(BaseModel):
    """``large_file_config`` as stored; every string in ``storage_options`` is masked."""

    model_config = CLOSED
    enabled: bool = False
    max_size_mb: float = 10.0
    storage_url: str | None = None
    storage_options: dict[str, Any] | None = None
    public_base_url: str | None = None
    file_ttl_days: int = 30
    lifespan_after_download_days: int | None = None
    action: str = "warn"


class TenantInfo(BaseModel):
    model_config = CLOSED
    id: str
    name: str | None = None
    client_base_url: str | None = None
    client_sync_path: str | None = None
    client_attachment_path: str | None = None
    client_auth: ClientAuthInfo | None = None
    rate_limits: RateLimitsInfo | None = None
    large_file_config: LargeFileInfo | None = None
    active: bool
    api_key_set: bool
    api_key_expires_at: int | None = None
    suspended_batches: list[str]
    dnd_until: int | None = None
    created_at: str
    updated_at: str


class TenantList(BaseModel):
    model_config = CLOSED
    ok: bool
    tenants: list[TenantInfo]


class TenantWritten(BaseModel):
    """``created`` and the new ``api_key`` (shown only here) come with a new tenant."""

    model_config = CLOSED
    ok: bool
    created: bool | None = None
    api_key: str | None = None


class Ok(BaseModel):
    model_config = CLOSED
    ok: bool


def check_download_links(config: dict[str, Any] | None, public_url: str | None) -> None:
    """A ``rewrite`` config needs somewhere to serve links from (SPEC §9.8 rule 2): 422 if not."""
    reason = large.link_base_problem(config, public_url)
    if reason is not None:
        loc = ["body", "large_file_config", "public_base_url"]
        raise Unprocessable([problem(loc, reason, "missing")])


def new_api_key() -> str:
    """43 URL-safe characters from the CSPRNG (SPEC §2.1 rule 3)."""
    return secrets.token_urlsafe(32)


def normalized(name: str, value: Any) -> Any:
    """A nested object in its validated form, defaults filled, so equal settings compare equal."""
    model = NESTED_MODELS.get(name)
    if model is None or not isinstance(value, dict):
        return value
    try:
        return model.model_validate(value).model_dump(exclude_none=True)
    except ValidationError:
        return value


def not_found(tenant_id: str) -> NotFound:
    return NotFound(f"Tenant '{tenant_id}' not found")


def _masked(obj: dict[str, Any] | None, keys: tuple[str, ...]) -> dict[str, Any] | None:
    if obj is None:
        return None
    return {k: (MASK if k in keys and v is not None else v) for k, v in obj.items()}


def tenant_info(tenant: TenantRecord, now: int) -> dict[str, Any]:
    """TenantInfo: every payload field, secrets masked, plus key and suspension state."""
    large = tenant.large_file_config
    if large and large.get("storage_options") is not None:
        large = large | {"storage_options": mask_strings(large["storage_options"])}
    return omit_none(
        {
            "id": tenant.id,
            "name": tenant.name,
            "client_base_url": tenant.client_base_url,
            "client_sync_path": tenant.client_sync_path,
            "client_attachment_path": tenant.client_attachment_path,
            "client_auth": _masked(tenant.client_auth, ("token", "password")),
            "rate_limits": tenant.rate_limits,
            "large_file_config": large,
            "active": tenant.active,
            "api_key_set": tenant.api_key_set,
            "api_key_expires_at": tenant.api_key_expires_at,
            "suspended_batches": list(tenant.suspended_batches),
            "dnd_until": tenant.dnd_until if tenant.dnd_until and tenant.dnd_until > now else None,
            "created_at": iso_utc(tenant.created_ts),
            "updated_at": iso_utc(tenant.updated_ts),
        }
    )


def follow_rename(deps: Deps, tenant_id: str, old_name: str) -> None:
    """Metric series carry the tenant's name (SPEC §13): a new name moves them."""
    tenant = deps.store.tenants.get(tenant_id, with_key=False)
    if tenant is not None and tenant.display_name != old_name:
        deps.metrics.rename_tenant(tenant_id, tenant.display_name)


class TenantCollection:
    """``POST /tenant`` (create or merge) and ``GET /tenants``."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @operation(
        summary="Create or update a tenant",
        description="A new tenant gets an API key, shown only in this answer. An existing one "
        "is merged: omitted fields keep their values, null resets a field to its default.",
        access=ADMIN,
        tag="Tenants",
        request=TenantPayload,
        response=TenantWritten,
        errors=(413, 422),
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        payload = validate(TenantPayload, read_object(req, self.deps.settings.max_request_mb))
        fields = payload.stored_fields()
        check_download_links(fields.get("large_file_config"), self.deps.settings.public_url)
        now = self.deps.now()
        before = self.deps.store.tenants.get(payload.id, with_key=False)
        created = self.deps.store.tenants.upsert(payload.id, fields, now)
        body: dict[str, Any] = {"ok": True}
        if created:
            api_key = new_api_key()
            self.deps.store.tenants.set_api_key(
                payload.id, _auth.digest(api_key), payload.api_key_expires_at, now
            )
            body |= {"created": True, "api_key": api_key}
        elif before is not None:
            follow_rename(self.deps, payload.id, before.display_name)
        self.deps.engine.tenant_changed(payload.id)
        resp.media = body

    @operation(
        summary="List tenants",
        description="Ordered by id; secrets masked.",
        access=ADMIN,
        tag="Tenants",
        response=TenantList,
        errors=(422,),
        query=(Param("active_only", "boolean", description="only active tenants"),),
    )
    def on_get_list(self, req: falcon.Request, resp: falcon.Response) -> None:
        now = self.deps.now()
        tenants = self.deps.store.tenants.list(active_only=query_bool(req, "active_only"))
        resp.media = {"ok": True, "tenants": [tenant_info(t, now) for t in tenants]}


class TenantItem:
    """``GET``, ``PUT`` and ``DELETE /tenant/{tenant_id}``."""

    def __init__(self, deps: Deps, resolve: netpolicy.Resolver = netpolicy.system_resolve) -> None:
        self.deps = deps
        settings = deps.settings
        self._policy = netpolicy.Policy.from_settings(
            settings.http_allow_private_networks, settings.http_allowed_networks
        )
        self._resolve = resolve

    @operation(
        summary="Read one tenant",
        description="A single TenantInfo object, without an ok wrapper (as the original).",
        access=AUTH,
        tag="Tenants",
        response=TenantInfo,
        errors=(403, 404),
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        _auth.require_tenant(req.context.principal, tenant_id)
        tenant = self.deps.store.tenants.get(tenant_id)
        if tenant is None:
            raise not_found(tenant_id)
        resp.media = tenant_info(tenant, self.deps.now())

    @operation(
        summary="Partially update a tenant",
        description="Absent or null fields are unchanged. A tenant token may not change "
        "rate_limits, large_file_config or active (403; sending back the stored value is "
        "allowed), and a new client_base_url must pass the outbound-address policy (422).",
        access=AUTH,
        tag="Tenants",
        request=TenantFields,
        response=Ok,
        errors=(403, 404, 413, 422),
    )
    def on_put(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        principal: _auth.Principal = req.context.principal
        _auth.require_tenant(principal, tenant_id)
        payload = validate(TenantFields, read_object(req, self.deps.settings.max_request_mb))
        fields = {k: v for k, v in payload.stored_fields().items() if v is not None}
        check_download_links(fields.get("large_file_config"), self.deps.settings.public_url)
        tenant = self.deps.store.tenants.get(tenant_id)
        if tenant is None:
            raise not_found(tenant_id)
        if not principal.is_admin:
            self._check_base_url(tenant, fields.get("client_base_url"))
        admin_only = () if principal.is_admin else ADMIN_ONLY_FIELDS
        try:
            changed = self.deps.store.tenants.update(
                tenant_id, fields, self.deps.now(), admin_only=admin_only, normalize=normalized
            )
        except AdminFieldChange as exc:
            raise Forbidden(f"Field '{exc.field}' requires the admin token") from None
        if changed is None:
            raise not_found(tenant_id)
        if "name" in changed:
            follow_rename(self.deps, tenant_id, tenant.display_name)
        if changed:
            self.deps.engine.tenant_changed(tenant_id)
        resp.media = {"ok": True}

    @operation(
        summary="Delete a tenant and everything it owns",
        description="Its key, accounts, messages, events and rate counters go with it.",
        access=ADMIN,
        tag="Tenants",
        response=Ok,
        errors=(404,),
    )
    def on_delete(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        tenant = self.deps.store.tenants.get(tenant_id)
        accounts = None if tenant is None else self.deps.store.tenants.delete(tenant_id)
        if tenant is None or accounts is None:
            raise not_found(tenant_id)
        for account_id in accounts:
            self.deps.metrics.remove_account(tenant_id, tenant.display_name, account_id)
        self.deps.metrics.remove_tenant(tenant_id)
        self.deps.engine.tenant_removed(tenant_id)
        resp.media = {"ok": True}

    def _check_base_url(self, tenant: TenantRecord, url: str | None) -> None:
        """A tenant token's new ``client_base_url`` must not reach private networks (§9.6)."""
        if url is None or url == tenant.client_base_url:
            return
        reason = netpolicy.url_refusal(url, self._policy, self._resolve)
        if reason is not None:
            raise Unprocessable([problem(["body", "client_base_url"], reason, "url_forbidden")])
