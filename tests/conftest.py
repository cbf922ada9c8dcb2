"""Shared fixtures. Keep each group together; server fixtures live in tests/fixtures/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest
import trustme

from tests.fixtures.postgres import PostgresCluster, PostgresMissing
from tests.fixtures.smtp import SINK_PASSWORD, SINK_USER, SmtpSink, start_sink

# -- database backends ---------------------------------------------------------------

# The store, API and end-to-end tests run on every backend (SPEC §18); the rest on SQLite.
BOTH_BACKENDS_DIRS = ("proxy/store", "proxy/api", "e2e")
TESTS_ROOT = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        default="sqlite,postgresql",
        help="backends for the store, API and end-to-end tests (comma-separated)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: runs on SQLite only (single-instance behaviour, SPEC §18.1)"
    )
    config.addinivalue_line(
        "markers", "postgresql_only: runs on PostgreSQL only (several instances, SPEC §18.2)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_backend" not in metafunc.fixturenames:
        return
    chosen = [b.strip() for b in metafunc.config.getoption("--db").split(",") if b.strip()]
    unknown = set(chosen) - set(BACKENDS)
    if unknown:
        raise pytest.UsageError(f"--db: unknown backend(s) {sorted(unknown)}; use {BACKENDS}")
    where = metafunc.definition.path.relative_to(TESTS_ROOT).as_posix()
    both = where.startswith(BOTH_BACKENDS_DIRS) and not metafunc.definition.get_closest_marker(
        "sqlite_only"
    )
    backends = chosen if both else ["sqlite"]
    if metafunc.definition.get_closest_marker("postgresql_only"):
        backends = [b for b in chosen if b == "postgresql"]
    metafunc.parametrize("db_backend", backends, ids=backends)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throw-away PostgreSQL cluster on a loopback port for the whole session."""
    try:
        cluster = PostgresCluster().start()
    except PostgresMissing as exc:
        pytest.fail(str(exc))
    yield cluster
    cluster.stop()


# -- actors ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _stop_all_actors() -> Iterator[None]:
    """Every test ends with no actor alive (STYLE §7); a survivor fails the test."""
    yield
    pykka.ActorRegistry.stop_all()
    survivors = pykka.ActorRegistry.get_all()
    assert not survivors, f"actors still running after stop_all(): {survivors}"


# -- SMTP ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A throw-away CA; sinks given it present certificates for localhost/127.0.0.1."""
    return trustme.CA()


@pytest.fixture
def trusted_tls_ca(
    tls_ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> trustme.CA:
    """Make ``ssl.create_default_context()`` trust only ``tls_ca`` (via SSL_CERT_FILE)."""
    cafile = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(cafile))
    monkeypatch.setenv("SSL_CERT_FILE", str(cafile))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return tls_ca


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A plain SMTP server (SMTPUTF8 advertised, no TLS, no AUTH)."""
    with start_sink() as sink:
        yield sink


@pytest.fixture
def smtp_sink_starttls(tls_ca: trustme.CA) -> Iterator[SmtpSink]:
    """A server offering STARTTLS with a certificate from ``tls_ca``."""
    with start_sink(tls="starttls", ca=tls_ca) as sink:
        yield sink


@pytest.fixture
def smtp_sink_tls(tls_ca: trustme.CA) -> Iterator[SmtpSink]:
    """An implicit-TLS server (TLS from the first byte) with a ``tls_ca`` certificate."""
    with start_sink(tls="implicit", ca=tls_ca) as sink:
        yield sink


@pytest.fixture
def smtp_sink_auth() -> Iterator[SmtpSink]:
    """A plain server accepting AUTH PLAIN/LOGIN for SINK_USER/SINK_PASSWORD without TLS."""
    with start_sink(auth=(SINK_USER, SINK_PASSWORD), auth_require_tls=False) as sink:
        yield sink


# -- store and tenant application --------------------------------------------------

from tests.fixtures.stores import (  # noqa: E402, F401 (fixture re-exports)
    BACKENDS,
    db_backend,
    db_url,
    store,
)
from tests.fixtures.tenant_http import TenantApp, start_tenant_app  # noqa: E402


@pytest.fixture
def tenant_app() -> Iterator[TenantApp]:
    """A real HTTP server playing the tenant application; records every sync call."""
    app = start_tenant_app()
    yield app
    app.stop()


# -- IMAP (Dovecot) ------------------------------------------------------------------

from tests.fixtures.imap import Dovecot, DovecotMissing, MailUser  # noqa: E402


@pytest.fixture(scope="session")
def dovecot(tls_ca: trustme.CA) -> Iterator[Dovecot]:
    """A real Dovecot (plain IMAP and IMAPS, ``tls_ca`` certificate) for the whole session."""
    try:
        server = Dovecot(tls_ca).start()
    except DovecotMissing as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture
def imap_user(dovecot: Dovecot) -> MailUser:
    """A fresh mailbox user on the session's Dovecot: tests never see each other's mail."""
    return dovecot.add_user()
