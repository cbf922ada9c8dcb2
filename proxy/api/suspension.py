"""``POST /commands/suspend`` and ``POST /commands/activate`` (SPEC §3.6, §8).

With a tenant (named, or the tenant token's own) they change that tenant's
``suspended_batches``. With the admin token and no ``tenant_id`` they switch the
deployment-wide scheduler, stored as the ``scheduler_active`` instance setting
that every claim reads (``proxy.store.messages``). A blank ``tenant_id`` or
``batch_code`` is a 422, never "absent": a client's empty variable must not
widen a suspension to a whole tenant or to every tenant.
"""

from __future__ import annotations

from collections.abc import Sequence

import falcon
from pydantic import BaseModel, ConfigDict

from proxy.api import _auth
from proxy.api._doc import AUTH, Param, operation
from proxy.api._errors import BadRequest, NotFound, Unprocessable, problem
from proxy.api.accounts import named_param
from proxy.api.deps import Deps
from proxy.store.messages import SCHEDULER_ACTIVE_KEY

ALL = "*"
MAX_BATCH_CODE = 64
WHOLE_TENANT_SUSPENDED = "cannot activate a single batch while the whole tenant is suspended"


class SuspendResponse(BaseModel):
    """Tenant form: ``tenant_id``, ``batch_code``?, ``suspended_batches``, ``pending_messages``.

    Scheduler form (admin token, no ``tenant_id``): ``scheduler_active`` only.
    """

    model_config = ConfigDict(extra="forbid")
    ok: bool
    tenant_id: str | None = None
    batch_code: str | None = None
    suspended_batches: list[str] | None = None
    pending_messages: int | None = None
    scheduler_active: bool | None = None


class WholeTenantSuspended(Exception):
    """Activating one batch of a tenant suspended with ``*`` (§8 rule 5)."""


def suspended_after(
    current: Sequence[str], *, suspend: bool, batch_code: str | None
) -> tuple[str, ...]:
    """The tenant's suspension list after the command (§8 rules 1, 4, 5); pure."""
    if suspend:
        if batch_code is None or ALL in current:
            return (ALL,)
        return tuple(sorted({*current, batch_code}))
    if batch_code is None:
        return ()
    if ALL in current:
        raise WholeTenantSuspended
    return tuple(sorted(set(current) - {batch_code}))


def _batch_code(req: falcon.Request) -> str | None:
    code = named_param(req, "batch_code")
    if code is None:
        return None
    reason = None
    if len(code) > MAX_BATCH_CODE:
        reason = f"at most {MAX_BATCH_CODE} characters"
    elif code == ALL:
        reason = "'*' is reserved: omit batch_code to mean the whole tenant"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in code):
        reason = "control characters are not allowed"
    if reason is not None:
        raise Unprocessable([problem(["query", "batch_code"], reason, "value_error")])
    return code


QUERY = (
    Param("tenant_id", description="omit with the admin token to switch the whole scheduler"),
    Param("batch_code", description="one batch of the tenant; omit for the whole tenant"),
)


class _Switch:
    suspend: bool

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def _handle(self, req: falcon.Request, resp: falcon.Response) -> None:
        tenant_id = _auth.require_tenant(req.context.principal, named_param(req, "tenant_id"))
        batch_code = _batch_code(req)
        if tenant_id is None:
            if batch_code is not None:
                raise Unprocessable([problem(["query", "tenant_id"], "field required", "missing")])
            self.deps.store.settings.set(SCHEDULER_ACTIVE_KEY, "false" if self.suspend else "true")
            if not self.suspend:
                self.deps.engine.wake_accounts(None)
            resp.media = {"ok": True, "scheduler_active": not self.suspend}
            return
        batches = self._apply(tenant_id, batch_code)
        if not self.suspend:
            self.deps.engine.wake_accounts(tenant_id)
        pending = self.deps.store.messages.pending_count(tenant_id, batch_code)
        resp.media = {"ok": True, "tenant_id": tenant_id}
        if batch_code is not None:
            resp.media["batch_code"] = batch_code
        resp.media |= {"suspended_batches": list(batches), "pending_messages": pending}

    def _apply(self, tenant_id: str, batch_code: str | None) -> tuple[str, ...]:
        """Read, change and store the list in one write transaction (no lost update)."""
        store = self.deps.store
        with store.tx():
            tenant = store.tenants.get(tenant_id)
            if tenant is None:
                raise NotFound(f"Tenant '{tenant_id}' not found")
            try:
                batches = suspended_after(
                    tenant.suspended_batches, suspend=self.suspend, batch_code=batch_code
                )
            except WholeTenantSuspended:
                raise BadRequest(WHOLE_TENANT_SUSPENDED) from None
            if batches != tenant.suspended_batches:
                store.tenants.set_suspended_batches(tenant_id, batches, self.deps.now())
        return batches


class Suspend(_Switch):
    suspend = True

    @operation(
        summary="Suspend a tenant, one of its batches, or the whole scheduler",
        description=(
            "Suspended messages stay queued and show status 'suspended'. Without tenant_id "
            "and with the admin token, stops all sending of the deployment."
        ),
        access=AUTH,
        tag="Commands",
        response=SuspendResponse,
        errors=(403, 404, 422),
        query=QUERY,
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._handle(req, resp)


class Activate(_Switch):
    suspend = False

    @operation(
        summary="Resume a tenant, one of its batches, or the whole scheduler",
        description=(
            "Resumed messages are sent at once (subject to rate limits). 400 when activating "
            "one batch of a tenant suspended as a whole."
        ),
        access=AUTH,
        tag="Commands",
        response=SuspendResponse,
        errors=(400, 403, 404, 422),
        query=QUERY,
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._handle(req, resp)
