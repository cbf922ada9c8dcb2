"""``GET /health``: liveness plus a trivial database query (SPEC §3.3)."""

from __future__ import annotations

import falcon

from proxy.api import _auth
from proxy.api.deps import Deps


class Health:
    access = _auth.PUBLIC

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self.deps.store.ping():
            resp.media = {"ok": True, "status": "ok"}
        else:
            resp.status = 503
            resp.media = {"ok": False, "status": "error", "error": "database unavailable"}
