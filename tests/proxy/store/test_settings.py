"""Instance settings: typed values, one-time seeding, and the cached admin token digest."""

from __future__ import annotations

from types import SimpleNamespace

from proxy.store import Database
from proxy.store.settings import API_TOKEN_SHA256, BOUNCE_SEEDED, decode, encode


def test_typed_values_round_trip_as_text(store: Database) -> None:
    store.settings.write_typed(
        {"bounce_enabled": True, "bounce_imap_port": 993, "bounce_imap_host": "imap.example"}
    )
    assert store.settings.get("bounce_enabled") == "true"
    assert store.settings.typed(["bounce_enabled", "bounce_imap_port", "bounce_imap_host"]) == {
        "bounce_enabled": True,
        "bounce_imap_port": 993,
        "bounce_imap_host": "imap.example",
    }
    store.settings.write_typed({"bounce_imap_host": None})
    assert store.settings.get("bounce_imap_host") is None
    assert (encode(False), decode(bool, "false"), decode(int, "x"), decode(str, None)) == (
        "false",
        False,
        None,
        None,
    )


def test_bounce_settings_are_seeded_once(store: Database) -> None:
    config = SimpleNamespace(bounce_enabled=True, bounce_imap_host="imap.a", bounce_imap_port=993)
    store.settings.seed_bounce(config)
    assert store.settings.get(BOUNCE_SEEDED) is not None
    store.settings.write_typed({"bounce_imap_host": None, "bounce_imap_port": 143})
    store.settings.seed_bounce(SimpleNamespace(bounce_imap_host="imap.b", bounce_imap_port=1))
    assert store.settings.typed(["bounce_enabled", "bounce_imap_host", "bounce_imap_port"]) == {
        "bounce_enabled": True,
        "bounce_imap_host": None,  # cleared by the operator: not seeded again
        "bounce_imap_port": 143,
    }


def test_seed_never_overwrites_a_stored_value(store: Database) -> None:
    store.settings.set("bounce_imap_host", "mine")
    store.settings.seed_bounce(SimpleNamespace(bounce_imap_host="config"))
    assert store.settings.get("bounce_imap_host") == "mine"


def test_cached_value_is_dropped_when_this_store_writes_it(store: Database) -> None:
    assert store.settings.cached(API_TOKEN_SHA256) is None
    store.settings.set_many({API_TOKEN_SHA256: "d" * 64})
    assert store.settings.cached(API_TOKEN_SHA256) == "d" * 64
    store.settings.set(API_TOKEN_SHA256, "e" * 64)
    assert store.settings.cached(API_TOKEN_SHA256) == "e" * 64
    # A write by another instance (not through this object) shows after the cache age.
    other = type(store.settings)(store.db)
    other.set(API_TOKEN_SHA256, "f" * 64)
    assert store.settings.cached(API_TOKEN_SHA256) == "e" * 64
    assert store.settings.cached(API_TOKEN_SHA256, max_age_s=0) == "f" * 64
