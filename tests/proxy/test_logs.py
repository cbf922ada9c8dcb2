"""Log rendering (text and JSON lines), the idempotent root set-up and the access log."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from falcon import testing

from proxy.api.access_log import REDACTED, redacted_path
from proxy.app import create_app
from proxy.logs import (
    NOISY_LOGGERS,
    PINNED_LOGGERS,
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    bind_request_id,
    current_request_id,
    make_formatter,
    setup_logging,
)
from tests.fixtures.engine import FakeEngine
from tests.fixtures.stores import make_settings

CREATED = 1795543200.25  # 2026-11-24T18:00:00Z


def _boom() -> None:
    raise ValueError("boom")


def record(msg: str = "sent %s", *args: object, exc: bool = False, **extra: object):
    exc_info = None
    if exc:
        try:
            _boom()
        except ValueError:
            exc_info = sys.exc_info()
    rec = logging.LogRecord("proxy.x", logging.INFO, __file__, 1, msg, args or ("m1",), exc_info)
    rec.created = CREATED
    rec.__dict__.update(extra)
    return rec


@pytest.fixture
def root_state():
    """Restore the root logger and the quietened loggers after a set-up test."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    noisy = {name: logging.getLogger(name).level for name in (*NOISY_LOGGERS, *PINNED_LOGGERS)}
    yield root
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in noisy.items():
        logging.getLogger(name).setLevel(level)


def test_text_line_without_context():
    assert TextFormatter().format(record()) == "2026-11-24T18:00:00Z INFO proxy.x: sent m1"


def test_text_line_with_context_in_fixed_order():
    line = TextFormatter().format(record(account_id="main", tenant_id="acme", pk=7, other="x"))
    assert line == (
        "2026-11-24T18:00:00Z INFO proxy.x: sent m1 [tenant_id=acme account_id=main pk=7]"
    )


def test_text_exception_follows_the_line():
    text = TextFormatter().format(record(exc=True, tenant_id="acme"))
    first, *rest = text.splitlines()
    assert first.endswith("sent m1 [tenant_id=acme]")
    assert rest[0].startswith("Traceback")
    assert rest[-1] == "ValueError: boom"


def test_json_is_one_object_per_line():
    line = JsonFormatter().format(record(tenant_id="acme", request_id="r1", instance_id=None))
    assert "\n" not in line
    assert json.loads(line) == {
        "ts": "2026-11-24T18:00:00Z",
        "level": "INFO",
        "logger": "proxy.x",
        "msg": "sent m1",
        "tenant_id": "acme",
        "request_id": "r1",
    }


def test_json_keeps_other_extras_and_drops_none():
    data = json.loads(JsonFormatter().format(record(other="x", pk=None, status=200)))
    assert data["other"] == "x"
    assert data["status"] == 200
    assert "pk" not in data
    assert list(data)[:4] == ["ts", "level", "logger", "msg"]


def test_json_carries_the_exception_and_odd_values():
    line = JsonFormatter().format(record("caf\u00e9 %s", {"a": 1}, exc=True, pk=object()))
    assert "\n" not in line
    data = json.loads(line)
    assert data["msg"] == "caf\u00e9 {'a': 1}"
    assert data["exc"].startswith("Traceback")
    assert data["exc"].endswith("ValueError: boom")
    assert data["pk"].startswith("<object")


def test_make_formatter_refuses_unknown_formats():
    assert isinstance(make_formatter("json"), JsonFormatter)
    assert isinstance(make_formatter("text"), TextFormatter)
    with pytest.raises(ValueError, match="xml"):
        make_formatter("xml")


def _ours(root: logging.Logger) -> list[logging.Handler]:
    return [h for h in root.handlers if getattr(h, "_mail_proxy_handler", False)]


def test_setup_is_idempotent_and_keeps_other_handlers(root_state):
    other = logging.NullHandler()
    root_state.addHandler(other)
    setup_logging("INFO", "text")
    setup_logging("warning", "json")
    (handler,) = _ours(root_state)
    assert other in root_state.handlers
    assert isinstance(handler.formatter, JsonFormatter)
    assert root_state.level == logging.WARNING
    assert handler.stream is sys.stderr


def test_noisy_libraries_are_quiet_unless_debug(root_state):
    setup_logging("INFO", "text")
    assert all(logging.getLogger(n).level == logging.WARNING for n in NOISY_LOGGERS)
    setup_logging("DEBUG", "text")
    assert all(logging.getLogger(n).level == logging.NOTSET for n in NOISY_LOGGERS)
    assert root_state.level == logging.DEBUG


def test_libraries_that_print_credentials_stay_at_warning_even_in_debug(root_state):
    setup_logging("DEBUG", "json")
    for name in ("botocore", "imaplib", "urllib3", "s3fs", "aiosmtplib", "mail.log", "peewee"):
        assert name in PINNED_LOGGERS
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
    assert not logging.getLogger("botocore.endpoint").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("proxy.x").isEnabledFor(logging.DEBUG)


def test_bound_request_id_reaches_records_without_one():
    rec, own = record(), record(request_id="mine")
    bind_request_id("r-42")
    try:
        assert ContextFilter().filter(rec)
        assert ContextFilter().filter(own)
    finally:
        bind_request_id(None)
    assert rec.request_id == "r-42"
    assert own.request_id == "mine"
    assert ContextFilter().filter(unbound := record())
    assert not hasattr(unbound, "request_id")


# -- access log (proxy/api/access_log.py) ------------------------------------------


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/tenants", "/tenants"),
        ("/download/abc-123-sig/report.pdf", f"/download/{REDACTED}/report.pdf"),
        ("/download/abc-123-sig", f"/download/{REDACTED}"),
        ("/tenant/a\nb\x1b", "/tenant/a\\x0ab\\x1b"),
    ],
)
def test_logged_paths_hide_download_tokens_and_control_characters(path, logged):
    assert redacted_path(path) == logged


@pytest.fixture
def access_client(store):
    settings = make_settings(api_token="admin-token")
    return testing.TestClient(create_app(settings, store, FakeEngine()))


def _access_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "proxy.access"]


def test_one_access_line_per_request_with_its_fields(access_client, caplog):
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        ok = access_client.simulate_get("/health")
        denied = access_client.simulate_get("/tenants", params={"api_token": "query-secret-1"})
    first, second = _access_lines(caplog)
    assert (first.method, first.path, first.status) == ("GET", "/health", 200)
    assert (second.path, second.status) == ("/tenants", 401)
    assert isinstance(first.duration_ms, float)
    assert first.duration_ms >= 0
    assert first.request_id == ok.headers["X-Request-ID"]
    assert second.request_id == denied.headers["X-Request-ID"] != first.request_id
    assert first.getMessage().startswith("GET /health 200 ")
    assert "query-secret-1" not in caplog.text
    assert all("query-secret-1" not in str(v) for v in vars(second).values())
    assert current_request_id() is None  # unbound once the request is answered


def test_access_log_redacts_download_tokens_and_keeps_a_sane_client_request_id(
    access_client, caplog
):
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        access_client.simulate_get(
            "/download/f1-1767225600-deadbeefsig/a.pdf", headers={"X-Request-ID": "lb-77"}
        )
        odd = access_client.simulate_get("/health", headers={"X-Request-ID": "bad id\n"})
    first, second = _access_lines(caplog)
    assert first.path == f"/download/{REDACTED}/a.pdf"
    assert first.request_id == "lb-77"
    assert "deadbeefsig" not in caplog.text
    assert second.request_id == odd.headers["X-Request-ID"] != "bad id\n"


def test_access_lines_render_in_both_formats(access_client, caplog):
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        access_client.simulate_get("/health")
    (line,) = _access_lines(caplog)
    data = json.loads(JsonFormatter().format(line))
    assert {"method", "path", "status", "duration_ms", "request_id"} <= set(data)
    assert data["msg"] == line.getMessage()
    assert f"[request_id={line.request_id}]" in TextFormatter().format(line)
