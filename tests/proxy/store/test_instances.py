"""Instance heartbeats and identity (SPEC §18.2)."""

from __future__ import annotations

import logging

import pytest

from proxy.store import Database, models

NOW = 1_767_225_600


def test_live_instances_are_those_with_a_recent_heartbeat(store: Database) -> None:
    for name, beat in (("fresh", NOW - 29), ("stale", NOW - 30), ("now", NOW)):
        models.InstanceHeartbeat.insert(
            instance_id=name, nonce="n", started_ts=NOW - 100, last_heartbeat_ts=beat
        ).execute()
    assert [i.instance_id for i in store.instances.live(NOW)] == ["fresh", "now"]


def test_register_beat_and_leave(store: Database) -> None:
    assert store.instances.register("mx-1:8000", "boot-a", now=NOW, active=False) is False
    assert store.instances.beat("mx-1:8000", "boot-a", now=NOW + 10)
    [live] = store.instances.live(NOW + 10)
    assert (live.instance_id, live.started_ts, live.last_heartbeat_ts, live.active) == (
        "mx-1:8000",
        NOW,
        NOW + 10,
        False,
    )
    store.instances.leave("mx-1:8000", "boot-a")
    assert store.instances.live(NOW + 10) == []


def test_a_fresh_row_of_a_dead_run_is_taken_over_and_logged(
    store: Database, caplog: pytest.LogCaptureFixture
) -> None:
    store.instances.register("mx-1:8000", "boot-a", now=NOW, active=True)
    with caplog.at_level(logging.WARNING):
        assert store.instances.register("mx-1:8000", "boot-b", now=NOW + 5, active=True)
    assert "taking the id over" in caplog.text
    # The dead run's heartbeats no longer land; the new boot's do.
    assert not store.instances.beat("mx-1:8000", "boot-a", now=NOW + 6)
    assert store.instances.beat("mx-1:8000", "boot-b", now=NOW + 6)
    # A stale row is simply replaced, without a warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert not store.instances.register("mx-1:8000", "boot-c", now=NOW + 60, active=True)
    assert "taking" not in caplog.text
