"""Commands: ``POST /commands/add-messages`` and ``POST /commands/run-now`` (SPEC §3.5, §3.7).

The other commands live beside: ``suspension.py`` (suspend, activate) and
``cleanup.py`` (delete-messages, cleanup-messages).
"""

from __future__ import annotations

import falcon
from pydantic import BaseModel, ConfigDict

from proxy.api import _auth, validation
from proxy.api._body import read_json
from proxy.api._doc import AUTH, operation
from proxy.api._errors import WRONG_TENANT, ApiError, BadRequest, Forbidden, Unprocessable
from proxy.api.deps import Deps
from proxy.api.message_schema import AddMessagesRequest

ALL_REJECTED = "all messages rejected"


class RejectedItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    field: str
    reason: str


class AddMessagesResult(BaseModel):
    """200 body; the 400 (all rejected, too many) repeats it with ``ok: false`` and ``error``."""

    model_config = ConfigDict(extra="forbid")
    ok: bool
    queued: int
    rejected: list[RejectedItem]


class RunNowResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ok: bool


class AddMessages:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @operation(
        summary="Validate and enqueue messages",
        description=(
            "Body: {messages: [MessagePayload, ...], default_priority?}. Bad messages are "
            "listed in rejected, the good ones queued; 400 when all are rejected or more "
            "than 1000 are sent."
        ),
        access=AUTH,
        tag="Commands",
        request=AddMessagesRequest,
        response=AddMessagesResult,
        errors=(400, 403, 413, 422),
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        principal: _auth.Principal = req.context.principal
        store, settings = self.deps.store, self.deps.settings
        body = read_json(req, settings.max_request_mb, per_item_key="messages")
        try:
            batch = validation.parse_batch(
                body,
                principal_tenant=principal.tenant_id,
                instance_default_priority=settings.default_priority,
                tenant_exists=store.tenants.exists,
                account_exists=store.accounts.exists,
                allowed_dirs=settings.attachment_allowed_dirs,
            )
        except validation.BodyError as exc:
            raise Unprocessable(exc.problems) from None
        except validation.TooManyMessages as exc:
            raise _rejected(str(exc), []) from None
        except validation.ForeignTenant:
            raise Forbidden(WRONG_TENANT) from None
        result = store.messages.enqueue(batch.accepted, self.deps.now())
        rejected = [r.as_dict() for r in (*batch.rejected, *result.rejected)]
        self.deps.engine.messages_added(result.touched, result.immediate)
        if result.queued == 0 and rejected:
            raise _rejected(ALL_REJECTED, rejected)
        resp.media = {"ok": True, "queued": result.queued, "rejected": rejected}


def _rejected(message: str, rejected: list[dict]) -> ApiError:
    return BadRequest(
        message,
        body={
            "ok": False,
            "queued": 0,
            "rejected": rejected,
            "error": message,
            "detail": {"error": message, "rejected": rejected},
        },
    )


class RunNow:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @operation(
        summary="Wake sending and syncing now",
        description=(
            "No body needed. A tenant token wakes its tenant only and clears its DND (a "
            "tenant_id in the query must be its own: 403). The admin token wakes every "
            "tenant."
        ),
        access=AUTH,
        tag="Commands",
        response=RunNowResult,
        errors=(403,),
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        # No body required; any body is ignored (SPEC §3.5).
        principal: _auth.Principal = req.context.principal
        if not principal.is_admin:  # a tenant id the request names must be the owner (§2.3)
            _auth.require_tenant(principal, req.get_param("tenant_id"))
        deps, tenant_id = self.deps, principal.tenant_id
        if not deps.store.is_sqlite:  # the other instances act on it too (SPEC §18.5)
            deps.store.wakeups.post(
                tenant_id,
                origin=deps.settings.effective_instance_id,
                origin_active=deps.settings.start_active,
                now=deps.now(),
            )
        deps.engine.run_now(tenant_id)
        resp.media = {"ok": True}
