"""ReporterActor: keeps process-wide gauges read from the store up to date.

Receives:
  RefreshGauges   timer (every 5 s outside test mode): refresh ``gmp_pending_messages``
Sends:
  ChildFailed     (via ``Supervised.on_failure``) when a handler raises
"""

from __future__ import annotations

import logging

from actors._supervised import Supervised
from actors._timer import Cancel
from actors.messages import RefreshGauges

logger = logging.getLogger(__name__)

REFRESH_INTERVAL_S = 5.0


class ReporterActor(Supervised):
    kind = "reporter"

    def on_start(self) -> None:
        self._timer: Cancel | None = None
        self.actor_ref.tell(RefreshGauges())

    def _cleanup(self) -> None:
        if getattr(self, "_timer", None) is not None:
            self._timer()
        super()._cleanup()

    def on_receive(self, message: object) -> None:
        match message:
            case RefreshGauges():
                self.ctx.metrics.pending.set(self.ctx.store.messages.pending_count())
                if self.ctx.timers_enabled:
                    self._timer = self.ctx.timers.after(
                        REFRESH_INTERVAL_S, self.actor_ref, RefreshGauges()
                    )
            case _:
                logger.warning("reporter got unknown message %r", message)
