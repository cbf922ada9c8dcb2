"""What every resource is built with: settings, store, engine, metrics and the clock."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.clock import SYSTEM_CLOCK, Clock
from proxy.config import Settings
from proxy.engine import Engine
from proxy.metrics import Metrics
from proxy.store import Database


@dataclass(frozen=True)
class Deps:
    settings: Settings
    store: Database
    engine: Engine
    metrics: Metrics
    clock: Clock = SYSTEM_CLOCK

    def now(self) -> int:
        return int(self.clock.time())
