"""``POST /commands/delete-messages`` and ``POST /commands/cleanup-messages`` (SPEC §14).

Both act inside one tenant and never tell the engine: a deleted message that
an account has claimed is skipped at its attempt, and one being sent has its
outcome discarded (the row is gone), so no actor needs to hear about it.
"""

from __future__ import annotations

from typing import Annotated

import falcon
from pydantic import BaseModel, ConfigDict, Field

from proxy import sync
from proxy.api._body import read_object, validate
from proxy.api._doc import AUTH, Param, operation
from proxy.api._errors import NotFound
from proxy.api.accounts import named_param, tenant_scope
from proxy.api.deps import Deps
from proxy.store.records import TenantRecord

TENANT_QUERY = (Param("tenant_id", description="required with the admin token"),)


class DeleteMessagesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ids: list[Annotated[str, Field(max_length=255)]] | None = None


class DeleteResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ok: bool
    removed: int
    not_found: list[str]
    unauthorized: list[str]


class CleanupRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    older_than_seconds: int | None = None  # negative means 0; absent: the configured retention


class CleanupResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ok: bool
    removed: int


class _TenantCommand:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def _tenant(self, req: falcon.Request) -> TenantRecord:
        tenant_id = tenant_scope(
            req.context.principal, named_param(req, "tenant_id"), loc=["query", "tenant_id"]
        )
        tenant = self.deps.store.tenants.get(tenant_id)
        if tenant is None:
            raise NotFound(f"Tenant '{tenant_id}' not found")
        return tenant


class DeleteMessages(_TenantCommand):
    @operation(
        summary="Delete messages by client id",
        description=(
            "Each distinct id, sorted: deleted with its events whatever its state (removed), "
            "else listed in unauthorized when another tenant has it, else in not_found. A "
            "message being sent at that moment may still go out; its outcome is discarded."
        ),
        access=AUTH,
        tag="Commands",
        request=DeleteMessagesRequest,
        request_required=False,
        response=DeleteResult,
        errors=(403, 404, 413, 422),
        query=TENANT_QUERY,
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        tenant = self._tenant(req)
        body = read_object(req, self.deps.settings.max_request_mb, required=False)
        ids = validate(DeleteMessagesRequest, body).ids or []
        done = self.deps.store.messages.delete_many(tenant.id, ids)
        resp.media = {
            "ok": True,
            "removed": done.removed,
            "not_found": list(done.not_found),
            "unauthorized": list(done.unauthorized),
        }


class CleanupMessages(_TenantCommand):
    @operation(
        summary="Remove old reported messages",
        description=(
            "Removes the tenant's terminal, fully reported messages reported more than "
            "older_than_seconds ago (default: the configured retention); for a tenant "
            "without a sync target, terminal messages finished that long ago."
        ),
        access=AUTH,
        tag="Commands",
        request=CleanupRequest,
        request_required=False,
        response=CleanupResult,
        errors=(403, 404, 413, 422),
        query=TENANT_QUERY,
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        tenant = self._tenant(req)
        body = read_object(req, self.deps.settings.max_request_mb, required=False)
        older_than = validate(CleanupRequest, body).older_than_seconds
        settings = self.deps.settings
        if older_than is None:
            older_than = settings.delivery_report_retention_seconds
        target = sync.sync_target(tenant, sync.GlobalSync(url=settings.client_sync_url))
        now = self.deps.now()
        # Negative means 0 (§14.2); older than the epoch matches nothing (and fits SQL).
        older_than = min(max(0, older_than), now)
        removed = self.deps.store.messages.cleanup(
            tenant.id,
            cutoff_ts=now - older_than,
            has_sync_target=target is not None,
        )
        resp.media = {"ok": True, "removed": removed}
