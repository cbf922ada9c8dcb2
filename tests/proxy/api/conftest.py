"""Shared setup for the API tests: a fixed clock, the recording engine, a client factory.

Each module seeds its own tenants, accounts and keys, then builds its client with
``make_client(**settings_overrides)``: a Falcon ``TestClient`` over the real
``store`` fixture, told what the API told the ``engine`` fixture, timed by the
``clock`` fixture (a module that needs the wall clock overrides ``clock``).
Plain names (``NOW``, ``ADMIN``, ``attempt``) are imported from here.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from falcon import testing

from proxy.app import create_app
from proxy.clock import Clock
from proxy.metrics import Metrics
from proxy.smtp.errors import Outcome
from proxy.store import Database
from tests.fixtures.engine import FakeEngine
from tests.fixtures.stores import make_settings

NOW = 1_767_225_600
ADMIN_TOKEN = "admin-token"
ADMIN = {"X-API-Token": ADMIN_TOKEN}

MakeClient = Callable[..., testing.TestClient]


class FixedClock:
    """A clock that stands still until a test sets ``now``."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def make_client(store: Database, engine: FakeEngine, metrics: Metrics, clock: Clock) -> MakeClient:
    """Build a client; settings are the defaults with ``api_token`` set, then the overrides."""

    def make(**settings_overrides: Any) -> testing.TestClient:
        settings = make_settings(**({"api_token": ADMIN_TOKEN} | settings_overrides))
        return testing.TestClient(create_app(settings, store, engine, metrics=metrics, clock=clock))

    return make


def attempt(
    store: Database, message_id: str, outcome: Outcome, at: int, tenant: str = "acme"
) -> str:
    """Claim, begin and record one attempt of a pending message at ``at``; its pk."""
    row = store.messages.get(tenant, message_id)
    store.messages.claim_due(
        store.tenants.get(tenant), "main", me="x", now=at, lease_s=30, limit=99
    )
    sending = store.messages.begin_attempt(
        row.pk, store.tenants.get(tenant), me="x", now=at, lease_s=30
    )
    store.messages.release_claims("x")
    recorded = store.messages.record_outcome(
        sending,
        outcome,
        me="x",
        now=at,
        message_id=None,
        max_retries=3,
        retry_delays=(60,),
        rng=random.Random(1),
    )
    assert recorded is not None
    return row.pk
