"""What every actor is given: the store, settings, timers, clock and metrics.

One frozen object, built once by ``proxy.server`` (or a test), so an actor's
constructor takes its collaborators explicitly instead of reaching for globals.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

from actors._timer import TimerService
from proxy.clock import Clock
from proxy.config import Settings
from proxy.metrics import Metrics
from proxy.store import Database


@dataclass(frozen=True)
class ActorContext:
    store: Database
    settings: Settings
    timers: TimerService
    clock: Clock
    metrics: Metrics
    instance_id: str
    # Set at shutdown: accounts finish the send in flight and start no other.
    stopping: threading.Event = field(default_factory=threading.Event)
    rng: random.Random = field(default_factory=random.Random)

    @property
    def timers_enabled(self) -> bool:
        """Test mode runs no background timers (SPEC §6.6)."""
        return not self.settings.test_mode
