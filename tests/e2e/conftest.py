"""End-to-end tests run once per database backend (root conftest, ``--db``)."""

from __future__ import annotations

import pytest

from tests.fixtures.proxy import DATABASE_URL_ENV


@pytest.fixture(autouse=True)
def _database_backend(db_backend: str, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point ``fast_settings`` at this test's database when it is not the SQLite default."""
    if db_backend != "sqlite":
        monkeypatch.setenv(DATABASE_URL_ENV, db_url)
