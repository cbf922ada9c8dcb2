"""``GET /health``: liveness plus a trivial database query (SPEC §3.3)."""

from __future__ import annotations

from typing import Literal

import falcon
from pydantic import BaseModel

from proxy.api._doc import PUBLIC, operation
from proxy.api.deps import Deps


class HealthResponse(BaseModel):
    """The process runs and the database answered."""

    ok: Literal[True]
    status: Literal["ok"]


class Health:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @operation(
        summary="Liveness and database reachability",
        access=PUBLIC,
        tag="Health",
        response=HealthResponse,
        errors=(503,),
        description='503 `{"ok": false, "status": "error", "error": "database unavailable"}` '
        "when a trivial query fails.",
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self.deps.store.ping():
            resp.media = {"ok": True, "status": "ok"}
        else:
            resp.status = 503
            resp.media = {"ok": False, "status": "error", "error": "database unavailable"}
