"""Logging set-up: one stderr handler on the root logger, text or JSON lines.

Modules log with ``logger = logging.getLogger(__name__)`` and put context in
``extra={"tenant_id": …, "account_id": …, "pk": …}``; the formatters here are the one
place that renders it. Nothing here decides what is logged, and secrets must never
reach a log call in the first place (STYLE §6).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from proxy.clock import iso_utc

CONTEXT_KEYS = ("tenant_id", "account_id", "pk", "instance_id", "request_id")
# Libraries that are chatty at INFO: kept at WARNING unless the operator asked for DEBUG.
NOISY_LOGGERS = ("waitress.queue", "mail.log")
_HANDLER_MARK = "_mail_proxy_handler"


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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, context, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one line of JSON; a traceback goes into ``exc``, never onto its own lines."""
        entry: dict[str, Any] = {
            "ts": iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


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
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    level = level.upper()
    root.setLevel(level)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if level == "DEBUG" else logging.WARNING)
