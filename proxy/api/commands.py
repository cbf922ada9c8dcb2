"""Commands: ``POST /commands/add-messages`` and ``POST /commands/run-now`` (SPEC §3.5, §3.7)."""

from __future__ import annotations

import falcon

from proxy.api import _auth, validation
from proxy.api._body import read_json
from proxy.api._doc import AUTH, operation
from proxy.api._errors import WRONG_TENANT, ApiError, BadRequest, Forbidden, Unprocessable
from proxy.api.deps import Deps

ALL_REJECTED = "all messages rejected"


class AddMessages:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @operation(
        summary="Validate and enqueue messages",
        access=AUTH,
        tag="Commands",
        errors=(400, 403, 413, 422),
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        principal: _auth.Principal = req.context.principal
        store, settings = self.deps.store, self.deps.settings
        body = read_json(req, settings.max_request_mb)
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

    @operation(summary="Wake sending and syncing now", access=AUTH, tag="Commands")
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        # No body required; any body is ignored (SPEC §3.5).
        self.deps.engine.run_now(req.context.principal.tenant_id)
        resp.media = {"ok": True}
