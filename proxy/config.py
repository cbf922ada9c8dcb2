"""Settings: the option table loaded as defaults < TOML file < ``GMP_*`` env < flags.

The table itself, its checks and the value parsers live in ``proxy.options`` (SPEC
§15); ``Settings`` lists the same names with static types and a test keeps the two
in step. The ``[[tenants]]``/``[[accounts]]`` entries are read here only for their
keys and ``${VAR}`` references; their values are validated by the bootstrap.

This module reads the config file and the environment it is given, nothing else:
no logging set-up, no database, no network. It re-exports what callers used to
import from it (``OPTIONS``, ``options``, ``parse_bool``, ``reference_markdown`` …).
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from proxy.options import (
    BY_ATTR,
    BY_KEY,
    LOG_FORMATS,
    LOG_LEVELS,
    OPTIONS,
    POSTGRES_SCHEMES,
    SECTIONS,
    BadValueError,
    Check,
    Kind,
    Option,
    convert,
    options,
    parse_bool,
    reference_markdown,
)

__all__ = [
    "ACCOUNT_KEYS",
    "CONFIG_ENV",
    "DEBUG_ENV",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MASK",
    "OPTIONS",
    "SECTIONS",
    "TENANT_KEYS",
    "Check",
    "ConfigError",
    "Kind",
    "Option",
    "Settings",
    "describe",
    "load_settings",
    "options",
    "parse_bool",
    "reference_markdown",
]

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
_URL_PASSWORD = re.compile(r"(://[^/@:\s]*):[^/@\s]*@")


class ConfigError(Exception):
    """A configuration problem, one line each, naming the key and its source.

    The CLI prints it and exits 2. ``problems`` keeps every line so ``config check``
    can list them all; ``str()`` joins them into the one line ``serve`` prints.
    """

    def __init__(self, *problems: str, settings: Settings | None = None) -> None:
        self.problems = tuple(" ".join(p.splitlines()) for p in problems) or ("invalid config",)
        # What could be read, bad values left at their defaults: ``config check`` goes on
        # to check the file's entries with it, so one run lists every problem.
        self.settings = settings
        super().__init__("; ".join(self.problems))


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
    # Where each value not left at its default came from, as errors name it:
    # "[section] key in FILE", "GMP_X (environment)" or "--flag (command line)".
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def db_url(self) -> str:
        """``db_path`` without its optional ``sqlite:`` (or ``sqlite://``) prefix."""
        if self.db_path.startswith("sqlite:"):
            return self.db_path.removeprefix("sqlite:").removeprefix("//")
        return self.db_path

    @property
    def is_sqlite(self) -> bool:
        """Anything that is not a PostgreSQL URL is a SQLite path or ``:memory:``."""
        return self.db_url.partition("://")[0] not in POSTGRES_SCHEMES

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
    sources: dict[str, str] = {}
    if path is not None:
        values.update(_from_file(_read_toml(path), env, path, problems, entries, sources=sources))
    values.update(_from_env(env, problems, sources))
    values.update(_from_flags(flags or {}, problems, sources))
    if values["bounce_imap_port"] is None:
        values["bounce_imap_port"] = 993 if values["bounce_imap_ssl"] else 143
    settings = Settings(**values, config_path=path, sources=MappingProxyType(sources), **entries)
    if problems:
        raise ConfigError(*problems, settings=settings)
    return settings


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
    *,
    sources: dict[str, str],
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
                option = BY_KEY.get((section, key))
                if option is None:
                    problems.append(f"unknown key '{key}' in [{section}] of {path}{_key_hint(key)}")
                    continue
                where = f"[{section}] {key}"
                before = len(problems)
                expanded = _expand(raw, env, where, path, problems)
                if len(problems) == before:
                    origin = f"{where} in {path}"
                    _apply(option, expanded, origin, values, problems, sources=sources)
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


def _from_env(
    env: Mapping[str, str], problems: list[str], sources: dict[str, str]
) -> dict[str, Any]:
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
        _apply(option, raw, f"{name} (environment)", values, problems, sources=sources)
    debug = env.get(DEBUG_ENV, "").strip()
    if debug:
        try:
            if parse_bool(debug):
                values["log_level"] = "DEBUG"
        except BadValueError as exc:
            problems.append(f"invalid value for {DEBUG_ENV} (environment): {exc}, got {debug!r}")
    return values


def _from_flags(
    flags: Mapping[str, Any], problems: list[str], sources: dict[str, str]
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for attr, raw in flags.items():
        if raw is None:
            continue
        option = BY_ATTR.get(attr)
        if option is None:
            problems.append(f"unknown setting '{attr}' (command line)")
            continue
        flag = option.flag or "--" + attr.replace("_", "-")
        _apply(option, raw, f"{flag} (command line)", values, problems, sources=sources)
    return values


def _apply(
    option: Option,
    raw: Any,
    where: str,
    values: dict[str, Any],
    problems: list[str],
    *,
    sources: dict[str, str],
) -> None:
    try:
        values[option.attr] = convert(option, raw)
    except BadValueError as exc:
        got = "" if option.is_secret else f", got {_show(raw)}"
        problems.append(f"invalid value for {where}: {exc}{got}")
    else:
        sources[option.attr] = where


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
