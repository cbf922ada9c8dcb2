"""Store fixtures for these tests."""

from tests.fixtures.stores import store  # noqa: F401 (fixture)
