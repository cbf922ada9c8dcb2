"""``GET /metrics``: Prometheus text format (SPEC §13); admin unless ``GMP_METRICS_PUBLIC``."""

from __future__ import annotations

import falcon

from proxy.api._doc import ADMIN, operation
from proxy.api.deps import Deps
from proxy.metrics import CONTENT_TYPE


class MetricsResource:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @operation(
        summary="Prometheus metrics",
        access=ADMIN,
        tag="Health",
        response_media="text/plain",
        description="Also accepts `Authorization: Bearer <admin token>`; public with "
        "GMP_METRICS_PUBLIC.",
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        # Counted at scrape time, so the gauge is exact right after an enqueue or a delete
        # and in test mode (no timers); the ReporterActor's refresh keeps it current between.
        self.deps.metrics.pending.set(self.deps.store.messages.pending_count())
        resp.content_type = CONTENT_TYPE
        resp.data = self.deps.metrics.render()
