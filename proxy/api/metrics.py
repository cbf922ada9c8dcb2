"""``GET /metrics``: Prometheus text format (SPEC §13); admin unless ``GMP_METRICS_PUBLIC``."""

from __future__ import annotations

import falcon

from proxy.api import _auth
from proxy.api.deps import Deps
from proxy.metrics import CONTENT_TYPE


class MetricsResource:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.access = _auth.PUBLIC if deps.settings.metrics_public else _auth.ADMIN

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE
        resp.data = self.deps.metrics.render()
