"""The option table (SPEC §15): each setting's file key, variables, flag, type, default, check.

``OPTIONS`` is the single source of truth: the loader in ``proxy.config``, the
example-file check and the docs (``reference_markdown``) are all made from it, so a
setting cannot exist in one and not the others. ``convert`` turns a file, environment
or flag value into the option's type and runs its check; a refusal is a
``BadValueError`` that never carries the value, so the caller decides whether to show it.

Pure: no file, environment, logging, database or network access.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["int", "float", "bool", "str", "int_list", "str_list"]
Check = Callable[[Any], Any]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
POSTGRES_SCHEMES = ("postgresql", "postgres")


class BadValueError(ValueError):
    """Why a value was refused, without the value: the caller decides whether to show it."""


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its file key, environment names (primary first), flag, type and default."""

    section: str
    key: str
    env: tuple[str, ...]
    kind: Kind
    default: Any
    help: str
    flag: str | None = None
    is_secret: bool = False
    check: Check | None = None

    @property
    def attr(self) -> str:
        """The ``Settings`` attribute: the primary variable without ``GMP_``, lower case."""
        return self.env[0].removeprefix("GMP_").lower()


def parse_bool(text: str) -> bool:
    """Read SPEC §15.1's spellings (1/true/yes/on, 0/false/no/off), any case."""
    word = text.strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise BadValueError("expected a boolean (true/false, yes/no, on/off, 1/0)")


def _between(low: float, high: float) -> Check:
    def check(value: float) -> float:
        if not low <= value <= high:
            raise BadValueError(f"must be between {low} and {high}")
        return value

    return check


def _at_least(low: float) -> Check:
    def check(value: float) -> float:
        if value < low:
            raise BadValueError(f"must be at least {low}")
        return value

    return check


def _positive(value: float) -> float:
    if value <= 0:
        raise BadValueError("must be greater than 0")
    return value


def _one_of(*names: str) -> Check:
    def check(value: str) -> str:
        for name in names:
            if name.lower() == value.strip().lower():
                return name
        raise BadValueError(f"must be one of {', '.join(names)}")

    return check


def _delays(value: tuple[int, ...]) -> tuple[int, ...]:
    if not value or min(value) < 0:
        raise BadValueError("must be a non-empty list of seconds >= 0")
    return value


def _networks(value: tuple[str, ...]) -> tuple[str, ...]:
    for item in value:
        try:
            ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise BadValueError(f"{item!r} is not a network such as 10.0.0.0/8") from None
    return value


def _database(value: str) -> str:
    scheme, sep, _ = value.partition("://")
    if sep and scheme not in (*POSTGRES_SCHEMES, "sqlite"):
        raise BadValueError("expected a SQLite path, ':memory:' or a postgresql:// URL")
    return value


_PORT = _between(1, 65535)
_LISTEN_PORT = _between(0, 65535)  # 0 = any free port (tests, side-by-side instances)
_ONE = _at_least(1)
# A day: slower polling defeats bounce detection, and the poller's timer needs a finite wait.
MAX_POLL_INTERVAL_S = 86_400
_ZERO = _at_least(0)


def _o(  # noqa: PLR0917 (positional on purpose: one table row per line)
    section: str, key: str, env: str, kind: Kind, default: Any, help_: str, **kw: Any
) -> Option:
    return Option(section, key, tuple(env.split()), kind, default, help_, **kw)


# One line per option would be unreadable when formatted, so the table keeps its own layout.
# fmt: off
OPTIONS: tuple[Option, ...] = (
    _o("server", "host", "GMP_HOST", "str", "0.0.0.0", "bind address", flag="--host"),  # noqa: S104
    _o("server", "port", "GMP_PORT", "int", 8000, "bind port (0 = any free port)",
       flag="--port", check=_LISTEN_PORT),
    _o("server", "db_path", "GMP_DB_PATH GMP_DATABASE_URL", "str", "./mail_service.db",
       "SQLite path (optionally 'sqlite:'), ':memory:', or postgresql://user:pass@host:5432/db",
       flag="--db", check=_database),
    _o("server", "db_pool_size", "GMP_DB_POOL_SIZE GMP_POOL_SIZE", "int", 10,
       "PostgreSQL connections per instance", check=_ONE),
    _o("server", "instance_id", "GMP_INSTANCE_ID", "str", None,
       "stable instance id; default <hostname>:<port>"),
    _o("server", "start_active", "GMP_START_ACTIVE GMP_SCHEDULER_ACTIVE", "bool", True,
       "false = API-only instance (no sending, no syncing)"),
    _o("server", "log_level", "GMP_LOG_LEVEL", "str", "INFO",
       "DEBUG, INFO, WARNING or ERROR (GMP_DEBUG=1 means DEBUG)", flag="--log-level",
       check=_one_of(*LOG_LEVELS)),
    _o("server", "log_format", "GMP_LOG_FORMAT", "str", "text",
       "text, or json (one object per line)", check=_one_of(*LOG_FORMATS)),
    _o("server", "max_request_mb", "GMP_MAX_REQUEST_MB", "int", 50,
       "request body limit (413 above)", check=_ONE),
    _o("server", "public_url", "GMP_PUBLIC_URL", "str", None,
       "external base URL of the proxy (download links)"),
    _o("server", "shutdown_timeout", "GMP_SHUTDOWN_TIMEOUT", "float", 10.0,
       "seconds in-flight sends get at shutdown", check=_positive),
    _o("server", "metrics_public", "GMP_METRICS_PUBLIC", "bool", False,
       "serve /metrics without a token"),
    _o("server", "account_idle_stop", "GMP_ACCOUNT_IDLE_STOP", "int", 600,
       "seconds before an idle account's worker stops (respawned on demand)", check=_ONE),
    _o("delivery", "send_loop_interval", "GMP_SEND_LOOP_INTERVAL", "float", 0.5,
       "seconds between idle checks for due messages (min 0.05)", check=_at_least(0.05)),
    _o("delivery", "test_mode", "GMP_TEST_MODE", "bool", False,
       "no background timers: send and sync only on run-now (SPEC 6.6)", flag="--test-mode"),
    _o("delivery", "default_priority", "GMP_DEFAULT_PRIORITY", "int", 2,
       "instance default priority, 0 (immediate) to 3 (low)", check=_between(0, 3)),
    _o("delivery", "batch_size_per_account", "GMP_BATCH_SIZE_PER_ACCOUNT", "int", 50,
       "messages claimed per account per round", check=_ONE),
    _o("delivery", "claim_lease_seconds", "GMP_CLAIM_LEASE_SECONDS", "int", 300,
       "claim lease (SPEC 18.3)", check=_ONE),
    _o("delivery", "smtp_connect_timeout", "GMP_SMTP_CONNECT_TIMEOUT", "float", 10.0,
       "seconds", check=_positive),
    _o("delivery", "smtp_send_timeout", "GMP_SMTP_SEND_TIMEOUT", "float", 30.0,
       "seconds", check=_positive),
    _o("delivery", "smtp_helo_name", "GMP_SMTP_HELO_NAME", "str", None,
       "EHLO name; default this host's FQDN"),
    _o("delivery", "report_retention_seconds", "GMP_DELIVERY_REPORT_RETENTION_SECONDS", "int",
       604800, "keep reported messages this long (SPEC 14)", check=_ZERO),
    _o("delivery", "log_delivery_activity", "GMP_LOG_DELIVERY_ACTIVITY", "bool", False,
       "log every attempt and sync call at INFO"),
    _o("delivery", "pec_acceptance_timeout", "GMP_PEC_ACCEPTANCE_TIMEOUT", "int", 1800,
       "seconds to wait for a PEC acceptance receipt (SPEC 12)", check=_positive),
    _o("retry", "max_retries", "GMP_MAX_RETRIES", "int", 5,
       "retries after the first attempt", check=_ZERO),
    _o("retry", "retry_delays", "GMP_RETRY_DELAYS", "int_list", (60, 300, 900, 3600, 7200),
       "seconds before each retry (last one repeats)", check=_delays),
    _o("client_sync", "url", "GMP_CLIENT_SYNC_URL", "str", None, "global sync target"),
    _o("client_sync", "token", "GMP_CLIENT_SYNC_TOKEN", "str", None, "bearer token",
       is_secret=True),
    _o("client_sync", "user", "GMP_CLIENT_SYNC_USER", "str", None, "basic-auth user"),
    _o("client_sync", "password", "GMP_CLIENT_SYNC_PASSWORD", "str", None,
       "basic-auth password", is_secret=True),
    _o("client_sync", "sync_interval", "GMP_SYNC_INTERVAL", "int", 300,
       "heartbeat interval (s)", check=_ONE),
    _o("client_sync", "timeout", "GMP_SYNC_TIMEOUT", "float", 30.0,
       "sync read timeout (s)", check=_positive),
    _o("client_sync", "report_batch_size", "GMP_REPORT_BATCH_SIZE", "int", 1000,
       "items per sync call", check=_ONE),
    _o("attachments", "base_url", "GMP_ATTACHMENT_BASE_URL", "str", None,
       "attachment endpoint for tenants without client_base_url"),
    _o("attachments", "timeout", "GMP_ATTACHMENT_TIMEOUT", "float", 30.0,
       "seconds per fetch", check=_positive),
    _o("attachments", "max_mb", "GMP_ATTACHMENT_MAX_MB", "int", 50,
       "largest attachment", check=_ONE),
    _o("attachments", "concurrency", "GMP_ATTACHMENT_CONCURRENCY", "int", 3,
       "parallel fetches", check=_ONE),
    _o("attachments", "memory_budget_mb", "GMP_ATTACHMENT_MEMORY_BUDGET_MB", "int", 256,
       "attachment bytes held in memory at once", check=_ONE),
    _o("cache", "memory_max_mb", "GMP_CACHE_MEMORY_MAX_MB", "int", 50, "in-memory cache size",
       check=_ZERO),
    _o("cache", "memory_ttl_seconds", "GMP_CACHE_MEMORY_TTL_SECONDS", "int", 300,
       "in-memory entry lifetime", check=_ZERO),
    _o("cache", "disk_dir", "GMP_CACHE_DISK_DIR", "str", None,
       "disk cache directory (no disk cache if unset)"),
    _o("cache", "disk_max_mb", "GMP_CACHE_DISK_MAX_MB", "int", 500, "disk cache size",
       check=_ZERO),
    _o("cache", "disk_ttl_seconds", "GMP_CACHE_DISK_TTL_SECONDS", "int", 3600,
       "disk entry lifetime", check=_ZERO),
    _o("cache", "disk_threshold_kb", "GMP_CACHE_DISK_THRESHOLD_KB", "int", 100,
       "attachments above this go to disk", check=_ZERO),
    _o("bounce", "enabled", "GMP_BOUNCE_ENABLED", "bool", False, "poll a bounce mailbox"),
    _o("bounce", "imap_host", "GMP_BOUNCE_IMAP_HOST", "str", None, "IMAP server"),
    _o("bounce", "imap_port", "GMP_BOUNCE_IMAP_PORT", "int", None, "default 993 with SSL, else 143",
       check=_PORT),
    _o("bounce", "imap_user", "GMP_BOUNCE_IMAP_USER", "str", None, "IMAP user"),
    _o("bounce", "imap_password", "GMP_BOUNCE_IMAP_PASSWORD", "str", None, "IMAP password",
       is_secret=True),
    _o("bounce", "imap_ssl", "GMP_BOUNCE_IMAP_SSL", "bool", True, "IMAP over TLS"),
    _o("bounce", "imap_folder", "GMP_BOUNCE_IMAP_FOLDER", "str", "INBOX", "folder to read"),
    _o("bounce", "poll_interval", "GMP_BOUNCE_POLL_INTERVAL", "int", 60, "seconds between polls",
       check=_between(1, MAX_POLL_INTERVAL_S)),
    _o("bounce", "return_path", "GMP_BOUNCE_RETURN_PATH", "str", None,
       "envelope sender (Return-Path) that routes bounces to this mailbox"),
    _o("bounce", "processed_folder", "GMP_BOUNCE_PROCESSED_FOLDER", "str", None,
       "move handled bounces here"),
    _o("security", "api_token", "GMP_API_TOKEN", "str", None, "admin token", flag="--api-token",
       is_secret=True),
    _o("security", "encryption_key", "GMP_ENCRYPTION_KEY MAIL_PROXY_ENCRYPTION_KEY", "str", None,
       "base64 of 32 bytes (SPEC 16)", is_secret=True),
    _o("security", "encryption_key_file", "GMP_ENCRYPTION_KEY_FILE", "str", None,
       "file holding the key"),
    _o("security", "previous_keys", "GMP_ENCRYPTION_PREVIOUS_KEYS", "str_list", (),
       "old keys still accepted for decryption", is_secret=True),
    _o("security", "download_secret", "GMP_DOWNLOAD_SECRET", "str", None,
       "download link signing key; generated and stored if unset", is_secret=True),
    _o("security", "filesystem_allowed_dirs", "GMP_ATTACHMENT_ALLOWED_DIRS", "str_list", (),
       "directories filesystem attachments may come from"),
    _o("security", "http_allow_private_networks", "GMP_HTTP_ALLOW_PRIVATE_NETWORKS", "bool",
       False, "let attachment URLs reach private addresses"),
    _o("security", "http_allowed_networks", "GMP_HTTP_ALLOWED_NETWORKS", "str_list", (),
       "private networks attachment URLs may reach", check=_networks),
    _o("demo", "capture_enabled", "GMP_DEMO_CAPTURE_ENABLED", "bool", False,
       "run the built-in capture SMTP server"),
    _o("demo", "capture_host", "GMP_DEMO_CAPTURE_HOST", "str", "127.0.0.1", "its address"),
    _o("demo", "capture_port", "GMP_DEMO_CAPTURE_PORT", "int", 2525, "its port", check=_PORT),
    _o("demo", "capture_dir", "GMP_DEMO_CAPTURE_DIR", "str", "./captured-mail",
       "where captured .eml files go"),
    _o("demo", "sink_enabled", "GMP_DEMO_SINK_ENABLED", "bool", False,
       "run the built-in report sink (a fake tenant)"),
    _o("demo", "sink_host", "GMP_DEMO_SINK_HOST", "str", "127.0.0.1", "its address"),
    _o("demo", "sink_port", "GMP_DEMO_SINK_PORT", "int", 8025, "its port", check=_PORT),
)
# fmt: on
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(o.section for o in OPTIONS))
BY_KEY = {(o.section, o.key): o for o in OPTIONS}
BY_ATTR = {o.attr: o for o in OPTIONS}


def options() -> tuple[Option, ...]:
    """Return the option table, for docs and the example-file check."""
    return OPTIONS


def convert(option: Option, raw: Any) -> Any:
    """Coerce a file, environment or flag value; strings are parsed as the environment's are."""
    if option.kind in ("int_list", "str_list"):
        items = [i.strip() for i in raw.split(",") if i.strip()] if isinstance(raw, str) else raw
        if not isinstance(items, list | tuple):
            raise BadValueError(f"expected {_EXPECTED[option.kind]}")
        try:
            value: Any = tuple(_SCALARS[option.kind.removesuffix("_list")](i) for i in items)
        except BadValueError:
            raise BadValueError(f"expected {_EXPECTED[option.kind]}") from None
    else:
        value = _SCALARS[option.kind](raw)
        if value == "" and option.kind == "str":
            if option.default is not None:
                raise BadValueError("must not be empty")
            value = None
    return option.check(value) if option.check and value is not None else value


def _to_int(raw: Any) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        with suppress(ValueError):
            return int(raw.strip())
    raise BadValueError(f"expected {_EXPECTED['int']}")


def _to_float(raw: Any) -> float:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            raise BadValueError(f"expected {_EXPECTED['float']}") from None
    else:
        raise BadValueError(f"expected {_EXPECTED['float']}")
    if not math.isfinite(value):
        raise BadValueError(f"expected {_EXPECTED['float']}")
    return value


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        return parse_bool(raw)
    raise BadValueError(f"expected {_EXPECTED['bool']}")


def _to_str(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    raise BadValueError(f"expected {_EXPECTED['str']}")


_SCALARS: dict[str, Callable[[Any], Any]] = {
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "str": _to_str,
}
_EXPECTED = {
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean (true/false, yes/no, on/off, 1/0)",
    "str": "a string",
    "int_list": "a list of integers",
    "str_list": "a list of strings",
}


def reference_markdown() -> str:
    """Render the option table as Markdown for the docs: file key, variables, flag, default."""
    rows = ["| file key | environment | flag | default | meaning |", "|---|---|---|---|---|"]
    for o in OPTIONS:
        names = " / ".join(f"`{n}`" for n in o.env)
        default = "-" if o.default in (None, ()) else f"`{_toml_value(o.default)}`"
        flag = f"`{o.flag}`" if o.flag else "-"
        rows.append(f"| `[{o.section}] {o.key}` | {names} | {flag} | {default} | {o.help} |")
    return "\n".join(rows) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)
