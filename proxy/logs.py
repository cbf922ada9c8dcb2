"""Logging set-up: one stderr handler on the root logger, text or JSON lines (SPEC §15.2).

Modules log with ``logger = logging.getLogger(__name__)`` and put context in
``extra={"tenant_id": …, "account_id": …, "pk": …}``; the formatters here are the one
place that renders it. JSON lines come from ``python-json-logger`` with SPEC's keys
(``ts``, ``level``, ``logger``, ``msg``, then the context and any other extra); text
lines are ``<ts> <LEVEL> <logger>: <msg> [<context>]``. While a request is handled,
``bind_request_id`` makes every line logged on that thread carry its ``request_id``.

Nothing here decides what is logged, and secrets must never reach a log call in the
first place (STYLE §6, SPEC §16 rule 7); libraries that print credentials or raw
SQL at DEBUG are pinned at WARNING even when the operator asks for DEBUG.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter

from proxy.clock import iso_utc

CONTEXT_KEYS = ("tenant_id", "account_id", "pk", "request_id", "instance_id")
# Chatty at INFO: kept at WARNING unless the operator asked for DEBUG.
NOISY_LOGGERS = ("waitress.queue",)
# Can print credentials, signed URLs or SQL parameters at DEBUG: always WARNING.
PINNED_LOGGERS = (
    "botocore",
    "aiobotocore",
    "s3fs",
    "urllib3",
    "imaplib",
    "aiosmtplib",
    "mail.log",
    "peewee",
)
_HANDLER_MARK = "_mail_proxy_handler"
_request_id: ContextVar[str | None] = ContextVar("gmp_request_id", default=None)


def bind_request_id(request_id: str | None) -> None:
    """Tag the lines logged from now on in this thread (context) with ``request_id``."""
    _request_id.set(request_id)


def current_request_id() -> str | None:
    return _request_id.get()


class ContextFilter(logging.Filter):
    """Adds the bound ``request_id`` to records that do not carry one already."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Never drops a record; only adds context."""
        if getattr(record, "request_id", None) is None:
            request_id = _request_id.get()
            if request_id is not None:
                record.request_id = request_id
        return True


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: getattr(record, key) for key in CONTEXT_KEYS if getattr(record, key, None) is not None
    }


class TextFormatter(logging.Formatter):
    """``2026-11-24T18:00:00Z INFO proxy.x: msg [tenant_id=acme account_id=main]``."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one line; a traceback, if any, follows on the next lines."""
        line = f"{iso_utc(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        context = _context(record)
        if context:
            line += " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(_LibraryJsonFormatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, context, ``exc``.

    Every ``extra`` a call passes becomes a key; None values are left out, and a
    value JSON cannot encode is written as its ``str()``.
    """

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message"],
            rename_fields={
                "levelname": "level",
                "name": "logger",
                "message": "msg",
                "exc_info": "exc",
                "stack_info": "stack",
            },
            reserved_attrs=[*RESERVED_ATTRS, "taskName", "color_message"],
            json_default=str,
            json_ensure_ascii=False,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        """``ts`` first, as UTC ISO-8601 seconds like the rest of the API."""
        log_data["ts"] = iso_utc(record.created)
        super().add_fields(log_data, record, message_dict)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        """Drop keys whose value is None (context that does not apply)."""
        return {key: value for key, value in log_data.items() if value is not None}


def make_formatter(fmt: str) -> logging.Formatter:
    """Return the formatter for ``text`` or ``json``; anything else is a programming error."""
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return TextFormatter()
    raise ValueError(f"unknown log format {fmt!r}")


def setup_logging(level: str, fmt: str) -> None:
    """Route the root logger to stderr at ``level`` in ``fmt``; safe to call again.

    A second call replaces the handler this function installed (so level and format
    can change) and leaves other handlers, such as pytest's, alone.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    handler.addFilter(ContextFilter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    level = level.upper()
    root.setLevel(level)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if level == "DEBUG" else logging.WARNING)
    for name in PINNED_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
