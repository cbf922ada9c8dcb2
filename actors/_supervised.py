"""Base class for the Supervisor's children: failures are reported, not swallowed.

A told message that raises makes pykka call ``on_failure`` and stop the actor;
here that becomes a ``ChildFailed`` to the Supervisor, which restarts the child
with backoff. Leases in the store make sure the work it held is picked up again.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import ClassVar

import pykka

from actors._context import ActorContext
from actors.messages import ChildFailed

logger = logging.getLogger(__name__)


class Supervised(pykka.ThreadingActor):
    kind: ClassVar[str] = "child"
    use_daemon_thread = True  # a send past the shutdown deadline must not block exit

    def __init__(self, ctx: ActorContext, supervisor: pykka.ActorRef) -> None:
        super().__init__()
        self.ctx = ctx
        self.supervisor = supervisor

    @property
    def key(self) -> tuple[str, ...]:
        return ()

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        logger.error(
            "%s actor %s crashed: %r",
            self.kind,
            "/".join(self.key),
            exception_value,
            exc_info=(exception_type, exception_value, traceback)
            if exception_type is not None and exception_value is not None
            else None,
        )
        self._cleanup()
        self.tell_supervisor(ChildFailed(self.kind, self.key, repr(exception_value)))

    def tell_supervisor(self, message: object) -> None:
        """Tell the Supervisor, unless it already stopped (shutdown stops it first).

        Nothing is lost then: what it would have been told (reports pending, a
        failure, idleness) is found again in the store at the next start.
        """
        try:
            self.supervisor.tell(message)
        except pykka.ActorDeadError:
            logger.debug("supervisor gone; %r from %s %s dropped", message, self.kind, self.key)

    def on_stop(self) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        """Release what the actor's thread holds; subclasses extend, then call super()."""
        self.ctx.store.release_thread_connection()
