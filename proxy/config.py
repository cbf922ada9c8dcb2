"""Settings: one table of options, loaded as defaults < TOML file < ``GMP_*`` env < flags.

``OPTIONS`` is the single source of truth (SPEC §15): the loader, the example-file
check and the docs are all made from it, so a setting cannot exist in one and not
the others. ``Settings`` lists the same names with static types; a test keeps the
two in step. The ``[[tenants]]``/``[[accounts]]`` entries are read here only for
their keys and ``${VAR}`` references; their values are validated by the bootstrap.

This module reads the config file and the environment it is given, nothing else:
no logging set-up, no database, no network.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import math
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

Kind = Literal["int", "float", "bool", "str", "int_list", "str_list"]
Check = Callable[[Any], Any]

MASK = "********"
CONFIG_ENV = "GMP_CONFIG"
DEBUG_ENV = "GMP_DEBUG"
TENANT_KEYS = frozenset(
    {"id", "name", "client_base_url", "client_sync_path", "client_attachment_path"}
    | {"client_auth", "rate_limits", "large_file_config", "active", "api_key_expires_at"}
    | {"api_key"}
)
ACCOUNT_KEYS = frozenset(
    {"id", "tenant_id", "host", "port", "user", "password", "use_tls", "use_ssl", "tls_verify"}
    | {"ttl", "limit_per_minute", "limit_per_hour", "limit_per_day", "limit_behavior"}
    | {"batch_size", "is_pec_account", "imap_host", "imap_port", "imap_user", "imap_password"}
    | {"imap_ssl", "imap_folder"}
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_POSTGRES_SCHEMES = ("postgresql", "postgres")
_URL_PASSWORD = re.compile(r"(://[^/@:\s]*):[^/@\s]*@")


class ConfigError(Exception):
    """A configuration problem, one line each, naming the key and its source.

    The CLI prints it and exits 2. ``problems`` keeps every line so ``config check``
    can list them all; ``str()`` joins them into the one line ``serve`` prints.
    """

    def __init__(self, *problems: str) -> None:
        self.problems = tuple(" ".join(p.splitlines()) for p in problems) or ("invalid config",)
        super().__init__("; ".join(self.problems))


class _BadValueError(ValueError):
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
    raise _BadValueError("expected a boolean (true/false, yes/no, on/off, 1/0)")


def _between(low: float, high: float) -> Check:
    def check(value: float) -> float:
        if not low <= value <= high:
            raise _BadValueError(f"must be between {low} and {high}")
        return value

    return check


def _at_least(low: float) -> Check:
    def check(value: float) -> float:
        if value < low:
            raise _BadValueError(f"must be at least {low}")
        return value

    return check


def _positive(value: float) -> float:
    if value <= 0:
        raise _BadValueError("must be greater than 0")
    return value


def _one_of(*names: str) -> Check:
    def check(value: str) -> str:
        for name in names:
            if name.lower() == value.strip().lower():
                return name
        raise _BadValueError(f"must be one of {', '.join(names)}")

    return check


def _delays(value: tuple[int, ...]) -> tuple[int, ...]:
    if not value or min(value) < 0:
        raise _BadValueError("must be a non-empty list of seconds >= 0")
    return value


def _networks(value: tuple[str, ...]) -> tuple[str, ...]:
    for item in value:
        try:
            ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise _BadValueError(f"{item!r} is not a network such as 10.0.0.0/8") from None
    return value


def _database(value: str) -> str:
    scheme, sep, _ = value.partition("://")
    if sep and scheme not in (*_POSTGRES_SCHEMES, "sqlite"):
        raise _BadValueError("expected a SQLite path, ':memory:' or a postgresql:// URL")
    return value


_PORT = _between(1, 65535)
_LISTEN_PORT = _between(0, 65535)  # 0 = any free port (tests, side-by-side instances)
_ONE = _at_least(1)
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
       check=_ONE),
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
_BY_KEY = {(o.section, o.key): o for o in OPTIONS}
_BY_ATTR = {o.attr: o for o in OPTIONS}


def options() -> tuple[Option, ...]:
    """Return the option table, for docs and the example-file check."""
    return OPTIONS


@functools.cache
def _fqdn() -> str:
    """Look the host's FQDN up once: ``getfqdn`` may wait on DNS."""
    return socket.getfqdn()


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Effective configuration; one attribute per ``OPTIONS`` entry (see ``Option.attr``).

    Build it with ``load_settings``; in tests ``dataclasses.replace(load_settings(env={}), …)``.
    """

    host: str
    port: int
    db_path: str
    db_pool_size: int
    instance_id: str | None
    start_active: bool
    log_level: str
    log_format: str
    max_request_mb: int
    public_url: str | None
    shutdown_timeout: float
    metrics_public: bool
    account_idle_stop: int
    send_loop_interval: float
    test_mode: bool
    default_priority: int
    batch_size_per_account: int
    claim_lease_seconds: int
    smtp_connect_timeout: float
    smtp_send_timeout: float
    smtp_helo_name: str | None
    delivery_report_retention_seconds: int
    log_delivery_activity: bool
    pec_acceptance_timeout: int
    max_retries: int
    retry_delays: tuple[int, ...]
    client_sync_url: str | None
    client_sync_token: str | None
    client_sync_user: str | None
    client_sync_password: str | None
    sync_interval: int
    sync_timeout: float
    report_batch_size: int
    attachment_base_url: str | None
    attachment_timeout: float
    attachment_max_mb: int
    attachment_concurrency: int
    attachment_memory_budget_mb: int
    cache_memory_max_mb: int
    cache_memory_ttl_seconds: int
    cache_disk_dir: str | None
    cache_disk_max_mb: int
    cache_disk_ttl_seconds: int
    cache_disk_threshold_kb: int
    bounce_enabled: bool
    bounce_imap_host: str | None
    bounce_imap_port: int  # resolved at load: 993 with SSL, else 143
    bounce_imap_user: str | None
    bounce_imap_password: str | None
    bounce_imap_ssl: bool
    bounce_imap_folder: str
    bounce_poll_interval: int
    bounce_return_path: str | None
    bounce_processed_folder: str | None
    api_token: str | None
    encryption_key: str | None
    encryption_key_file: str | None
    encryption_previous_keys: tuple[str, ...]
    download_secret: str | None
    attachment_allowed_dirs: tuple[str, ...]
    http_allow_private_networks: bool
    http_allowed_networks: tuple[str, ...]
    demo_capture_enabled: bool
    demo_capture_host: str
    demo_capture_port: int
    demo_capture_dir: str
    demo_sink_enabled: bool
    demo_sink_host: str
    demo_sink_port: int
    config_path: str | None = None
    tenants: tuple[Mapping[str, Any], ...] = ()
    accounts: tuple[Mapping[str, Any], ...] = ()

    @property
    def db_url(self) -> str:
        """``db_path`` without its optional ``sqlite:`` (or ``sqlite://``) prefix."""
        if self.db_path.startswith("sqlite:"):
            return self.db_path.removeprefix("sqlite:").removeprefix("//")
        return self.db_path

    @property
    def is_sqlite(self) -> bool:
        """Anything that is not a PostgreSQL URL is a SQLite path or ``:memory:``."""
        return self.db_url.partition("://")[0] not in _POSTGRES_SCHEMES

    @property
    def effective_instance_id(self) -> str:
        """``instance_id``, else ``<hostname>:<port>`` (SPEC §15.2)."""
        return self.instance_id or f"{socket.gethostname()}:{self.port}"

    @property
    def helo_name(self) -> str:
        """EHLO name: ``smtp_helo_name``, else this host's FQDN."""
        return self.smtp_helo_name or _fqdn()


def load_settings(
    config_path: str | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge defaults < TOML file < environment < flags; raise ``ConfigError`` on any problem.

    ``env=None`` reads ``os.environ``; the file is ``config_path``, else ``$GMP_CONFIG``.
    ``flags`` is keyed by attribute name and its ``None`` values mean "not given".
    Every bad key is collected before raising, so ``config check`` can list them all.
    """
    env = os.environ if env is None else env
    path = config_path or env.get(CONFIG_ENV) or None
    problems: list[str] = []
    values: dict[str, Any] = {o.attr: o.default for o in OPTIONS}
    entries: dict[str, tuple[Mapping[str, Any], ...]] = {"tenants": (), "accounts": ()}
    if path is not None:
        values.update(_from_file(_read_toml(path), env, path, problems, entries))
    values.update(_from_env(env, problems))
    values.update(_from_flags(flags or {}, problems))
    if problems:
        raise ConfigError(*problems)
    if values["bounce_imap_port"] is None:
        values["bounce_imap_port"] = 993 if values["bounce_imap_ssl"] else 143
    return Settings(**values, config_path=path, **entries)


def _read_toml(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read config file {path}: not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path}: {exc}") from None


def _from_file(
    document: dict[str, Any],
    env: Mapping[str, str],
    path: str,
    problems: list[str],
    entries: dict[str, tuple[Mapping[str, Any], ...]],
) -> dict[str, Any]:
    """Return the file's option values; fill ``entries`` with its tenants and accounts."""
    values: dict[str, Any] = {}
    for section, body in document.items():
        if section in entries:
            allowed = TENANT_KEYS if section == "tenants" else ACCOUNT_KEYS
            entries[section] = _entries(
                body, section, allowed, env=env, path=path, problems=problems
            )
        elif not isinstance(body, dict):
            problems.append(f"unknown key '{section}' at the top level of {path}")
        elif section not in SECTIONS:
            hint = _hint(section, SECTIONS)
            problems.append(f"unknown section [{section}] in {path}{hint}")
        else:
            for key, raw in body.items():
                option = _BY_KEY.get((section, key))
                if option is None:
                    problems.append(f"unknown key '{key}' in [{section}] of {path}{_key_hint(key)}")
                    continue
                where = f"[{section}] {key}"
                before = len(problems)
                expanded = _expand(raw, env, where, path, problems)
                if len(problems) == before:
                    _apply(option, expanded, f"{where} in {path}", values, problems)
    return values


def _entries(
    raw: Any,
    name: str,
    allowed: frozenset[str],
    *,
    env: Mapping[str, str],
    path: str,
    problems: list[str],
) -> tuple[Mapping[str, Any], ...]:
    """Check an array of tables' keys and expand its ``${VAR}``s; values are checked later."""
    if not isinstance(raw, list) or not all(isinstance(entry, dict) for entry in raw):
        problems.append(f"'{name}' in {path} must be an array of tables ([[{name}]])")
        return ()
    entries = []
    for number, entry in enumerate(raw, start=1):
        label = f"[[{name}]] #{number}"
        for key in sorted(entry.keys() - allowed):
            hint = _hint(key, sorted(allowed))
            problems.append(f"unknown key '{key}' in {label} of {path}{hint}")
        expanded = {k: _expand(v, env, f"{label} {k}", path, problems) for k, v in entry.items()}
        entries.append(_freeze(expanded))
    return tuple(entries)


_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _expand(value: Any, env: Mapping[str, str], where: str, path: str, problems: list[str]) -> Any:
    """Replace ``${VAR}`` in every string inside ``value``; ``$${`` stands for a literal ``${``."""
    if isinstance(value, dict):
        return {k: _expand(v, env, f"{where}.{k}", path, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, env, f"{where}[{i}]", path, problems) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        text, name = match.group(0), match.group(1)
        if text == "$${":
            return "${"
        if name is None:
            problems.append(f"unterminated '${{' in {where} of {path} (write $${{ for a literal)")
        elif not _VAR_NAME.fullmatch(name):
            problems.append(f"invalid variable reference '{text}' in {where} of {path}")
        elif name not in env:
            problems.append(f"environment variable '{name}' is not set (used in {where} of {path})")
        else:
            return env[name]
        return ""

    return _REFERENCE.sub(substitute, value)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _from_env(env: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for option in OPTIONS:
        # An empty variable counts as unset: compose files often pass ``X=${X}`` through.
        found = [(name, env[name]) for name in option.env if env.get(name, "").strip()]
        if not found:
            continue
        if option.is_secret and len({value for _, value in found}) > 1:
            names = " and ".join(name for name, _ in found)
            problems.append(f"{names} (environment) are both set, to different values")
            continue
        name, raw = found[0]
        _apply(option, raw, f"{name} (environment)", values, problems)
    debug = env.get(DEBUG_ENV, "").strip()
    if debug:
        try:
            if parse_bool(debug):
                values["log_level"] = "DEBUG"
        except _BadValueError as exc:
            problems.append(f"invalid value for {DEBUG_ENV} (environment): {exc}, got {debug!r}")
    return values


def _from_flags(flags: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for attr, raw in flags.items():
        if raw is None:
            continue
        option = _BY_ATTR.get(attr)
        if option is None:
            problems.append(f"unknown setting '{attr}' (command line)")
            continue
        flag = option.flag or "--" + attr.replace("_", "-")
        _apply(option, raw, f"{flag} (command line)", values, problems)
    return values


def _apply(
    option: Option, raw: Any, where: str, values: dict[str, Any], problems: list[str]
) -> None:
    try:
        values[option.attr] = _convert(option, raw)
    except _BadValueError as exc:
        got = "" if option.is_secret else f", got {_show(raw)}"
        problems.append(f"invalid value for {where}: {exc}{got}")


def _convert(option: Option, raw: Any) -> Any:
    """Coerce a file, environment or flag value; strings are parsed as the environment's are."""
    if option.kind in ("int_list", "str_list"):
        items = [i.strip() for i in raw.split(",") if i.strip()] if isinstance(raw, str) else raw
        if not isinstance(items, list | tuple):
            raise _BadValueError(f"expected {_EXPECTED[option.kind]}")
        try:
            value: Any = tuple(_SCALARS[option.kind.removesuffix("_list")](i) for i in items)
        except _BadValueError:
            raise _BadValueError(f"expected {_EXPECTED[option.kind]}") from None
    else:
        value = _SCALARS[option.kind](raw)
        if value == "" and option.kind == "str":
            if option.default is not None:
                raise _BadValueError("must not be empty")
            value = None
    return option.check(value) if option.check and value is not None else value


def _to_int(raw: Any) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        with suppress(ValueError):
            return int(raw.strip())
    raise _BadValueError(f"expected {_EXPECTED['int']}")


def _to_float(raw: Any) -> float:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            raise _BadValueError(f"expected {_EXPECTED['float']}") from None
    else:
        raise _BadValueError(f"expected {_EXPECTED['float']}")
    if not math.isfinite(value):
        raise _BadValueError(f"expected {_EXPECTED['float']}")
    return value


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        return parse_bool(raw)
    raise _BadValueError(f"expected {_EXPECTED['bool']}")


def _to_str(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    raise _BadValueError(f"expected {_EXPECTED['str']}")


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


def _show(raw: Any) -> str:
    """Render a refused value short and on one line, with URL passwords masked."""
    text = _mask_url(repr(raw))
    return text if len(text) <= 80 else text[:77] + "..."


def _mask_url(text: str) -> str:
    return _URL_PASSWORD.sub(rf"\1:{MASK}@", text)


def _hint(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _key_hint(key: str) -> str:
    homes = [o.section for o in OPTIONS if o.key == key]
    if homes:
        return f" (it belongs in [{homes[0]}])"
    return _hint(key, sorted({o.key for o in OPTIONS}))


def describe(settings: Settings) -> dict[str, Any]:
    """Return the effective settings for a start-up log line, secrets as ``********``.

    Tenants and accounts appear as their ids only: their entries hold credentials.
    """
    described: dict[str, Any] = {}
    for option in OPTIONS:
        value = getattr(settings, option.attr)
        if option.is_secret and value:
            value = MASK
        elif isinstance(value, str):
            value = _mask_url(value)
        described[option.attr] = value
    described["config_path"] = settings.config_path
    described["effective_instance_id"] = settings.effective_instance_id
    described["tenants"] = [t.get("id") for t in settings.tenants]
    described["accounts"] = [f"{a.get('tenant_id')}/{a.get('id')}" for a in settings.accounts]
    return described


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
