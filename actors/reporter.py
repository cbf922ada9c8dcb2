"""ReporterActor: process-wide gauges and retention.

Receives:
  RefreshGauges   timer (every 5 s outside test mode): refresh ``gmp_pending_messages``
                  (GET /metrics also counts it at each scrape, test mode included)
  RunRetention    timer (every 10 min) and admin run-now: remove old fully reported
                  messages (SPEC §14.1) and prune old rate-limit counters (§7.1 rule 4);
                  in test mode also the large-file cleanup (§6.6)
  RunLargeFileCleanup  timer (hourly): delete expired large files (SPEC §9.8 rule 4)
Sends:
  ChildFailed     (via ``Supervised.on_failure``) when a handler raises
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from actors._supervised import Supervised
from actors._timer import Cancel
from actors.messages import Flush, RefreshGauges, RunRetention
from proxy import sync
from proxy.attachments import large

logger = logging.getLogger(__name__)

REFRESH_INTERVAL_S = 5.0
RETENTION_INTERVAL_S = 600.0
FIRST_RETENTION_S = 60.0
LARGE_FILE_CLEANUP_INTERVAL_S = 3600.0


@dataclass(frozen=True, slots=True)
class RunLargeFileCleanup:
    """Timer: delete expired large files (received only here; belongs in actors/messages.py)."""


class ReporterActor(Supervised):
    kind = "reporter"

    def on_start(self) -> None:
        self._timer: Cancel | None = None
        self._retention_timer: Cancel | None = None
        self._cleanup_timer: Cancel | None = None
        self.actor_ref.tell(RefreshGauges())
        if self.ctx.timers_enabled:
            self._retention_timer = self.ctx.timers.after(
                FIRST_RETENTION_S, self.actor_ref, RunRetention()
            )
            self._cleanup_timer = self.ctx.timers.after(
                FIRST_RETENTION_S, self.actor_ref, RunLargeFileCleanup()
            )

    def _cleanup(self) -> None:
        for timer in (
            getattr(self, "_timer", None),
            getattr(self, "_retention_timer", None),
            getattr(self, "_cleanup_timer", None),
        ):
            if timer is not None:
                timer()
        super()._cleanup()

    def on_receive(self, message: object) -> object:
        match message:
            case RefreshGauges():
                self.ctx.metrics.pending.set(self.ctx.store.messages.pending_count())
                if self.ctx.timers_enabled:
                    self._timer = self.ctx.timers.after(
                        REFRESH_INTERVAL_S, self.actor_ref, RefreshGauges()
                    )
            case RunRetention():
                self._retention()
                if not self.ctx.timers_enabled:  # test mode: admin run-now cleans up too
                    self._large_file_cleanup()
                if self.ctx.timers_enabled:
                    if self._retention_timer is not None:
                        self._retention_timer()
                    self._retention_timer = self.ctx.timers.after(
                        RETENTION_INTERVAL_S, self.actor_ref, RunRetention()
                    )
            case RunLargeFileCleanup():
                self._large_file_cleanup()
                if self.ctx.timers_enabled:
                    self._cleanup_timer = self.ctx.timers.after(
                        LARGE_FILE_CLEANUP_INTERVAL_S, self.actor_ref, RunLargeFileCleanup()
                    )
            case Flush():
                return True
            case _:
                logger.warning("reporter got unknown message %r", message)
        return None

    def _retention(self) -> None:
        """Remove terminal, fully reported messages older than the retention (idempotent)."""
        settings, store = self.ctx.settings, self.ctx.store
        now = int(self.ctx.clock.time())
        store.ratelimits.prune(now)
        retention_s = settings.delivery_report_retention_seconds
        if retention_s <= 0:
            return
        fallback = sync.GlobalSync(url=settings.client_sync_url)
        removed = 0
        for tenant in store.tenants.list():
            removed += store.messages.cleanup(
                tenant.id,
                cutoff_ts=now - retention_s,
                has_sync_target=sync.sync_target(tenant, fallback) is not None,
            )
        if removed:
            logger.info("retention removed %s messages", removed)

    def _large_file_cleanup(self) -> None:
        """Delete large files past their TTL or lifespan (idempotent; one instance at a time)."""
        now = int(self.ctx.clock.time())
        large.cleanup(self.ctx.store.large_files, now=now, holder=self.ctx.instance_id)
