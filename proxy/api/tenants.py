"""Tenant resources: ``POST /tenant``, ``GET /tenants``, ``GET /tenant/{id}`` (SPEC §3.11)."""

from __future__ import annotations

import secrets
from typing import Any

import falcon

from proxy.api import _auth
from proxy.api._body import omit_none, query_bool, read_object, validate
from proxy.api._doc import ADMIN, AUTH, Param, operation
from proxy.api._errors import NotFound
from proxy.api.deps import Deps
from proxy.api.schemas import TenantPayload
from proxy.clock import iso_utc
from proxy.store.records import MASK, TenantRecord


def new_api_key() -> str:
    """43 URL-safe characters from the CSPRNG (SPEC §2.1 rule 3)."""
    return secrets.token_urlsafe(32)


def _masked(obj: dict[str, Any] | None, keys: tuple[str, ...]) -> dict[str, Any] | None:
    if obj is None:
        return None
    return {k: (MASK if k in keys and v is not None else v) for k, v in obj.items()}


def tenant_info(tenant: TenantRecord, now: int) -> dict[str, Any]:
    """TenantInfo: every payload field, secrets masked, plus key and suspension state."""
    large = tenant.large_file_config
    if large and large.get("storage_options"):
        large = large | {"storage_options": dict.fromkeys(large["storage_options"], MASK)}
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


class TenantCollection:
    """``POST /tenant`` (create or merge) and ``GET /tenants``."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @operation(
        summary="Create or update a tenant",
        access=ADMIN,
        tag="Tenants",
        request=TenantPayload,
        errors=(413, 422),
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        payload = validate(TenantPayload, read_object(req, self.deps.settings.max_request_mb))
        now = self.deps.now()
        created = self.deps.store.tenants.upsert(payload.id, payload.stored_fields(), now)
        body: dict[str, Any] = {"ok": True}
        if created:
            api_key = new_api_key()
            self.deps.store.tenants.set_api_key(
                payload.id, _auth.digest(api_key), payload.api_key_expires_at, now
            )
            body |= {"created": True, "api_key": api_key}
        self.deps.engine.tenant_changed(payload.id)
        resp.media = body

    @operation(
        summary="List tenants",
        access=ADMIN,
        tag="Tenants",
        query=(Param("active_only", "boolean"),),
    )
    def on_get_list(self, req: falcon.Request, resp: falcon.Response) -> None:
        now = self.deps.now()
        tenants = self.deps.store.tenants.list(active_only=query_bool(req, "active_only"))
        resp.media = {"ok": True, "tenants": [tenant_info(t, now) for t in tenants]}


class TenantItem:
    """``GET /tenant/{tenant_id}``: a single TenantInfo, no ``ok`` wrapper (as the original)."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @operation(summary="Read one tenant", access=AUTH, tag="Tenants", errors=(403, 404))
    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        _auth.require_tenant(req.context.principal, tenant_id)
        tenant = self.deps.store.tenants.get(tenant_id)
        if tenant is None:
            raise NotFound(f"Tenant '{tenant_id}' not found")
        resp.media = tenant_info(tenant, self.deps.now())
