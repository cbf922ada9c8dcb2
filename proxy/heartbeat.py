"""The instance heartbeat: one small thread refreshing this instance's row (SPEC §18.2).

It runs on every instance, API-only and test-mode ones included: liveness is
not work, and ``GET /status`` lists every live instance. A failed write is
logged and retried at the next beat; the row ages out 30 s after the last one.
"""

from __future__ import annotations

import logging
import secrets
import threading

import peewee

from proxy.clock import now_ts
from proxy.store.instances import HEARTBEAT_INTERVAL_S, InstanceStore

logger = logging.getLogger(__name__)


class Heartbeat:
    """``start()`` registers this boot (a fresh nonce); ``stop()`` ends the beat and leaves."""

    def __init__(
        self,
        instances: InstanceStore,
        instance_id: str,
        *,
        active: bool,
        interval_s: float = HEARTBEAT_INTERVAL_S,
    ) -> None:
        self._instances = instances
        self.instance_id = instance_id
        self.nonce = secrets.token_hex(16)
        self._active = active
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._instances.register(self.instance_id, self.nonce, now=now_ts(), active=self._active)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(5)
        try:
            self._instances.leave(self.instance_id, self.nonce)
        except peewee.PeeweeException:
            logger.exception("could not remove the heartbeat of %s", self.instance_id)

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            try:
                if not self._instances.beat(self.instance_id, self.nonce, now=now_ts()):
                    logger.error(
                        "the heartbeat row of %s belongs to another boot now: two processes "
                        "may be running with this GMP_INSTANCE_ID",
                        self.instance_id,
                    )
            except peewee.PeeweeException:
                logger.exception("heartbeat of %s failed; retrying", self.instance_id)
        self._instances.release_thread_connection()
