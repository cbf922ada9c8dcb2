"""Log rendering (text and JSON lines) and the idempotent root set-up."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from proxy.logs import (
    NOISY_LOGGERS,
    JsonFormatter,
    TextFormatter,
    make_formatter,
    setup_logging,
)

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
    noisy = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
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
