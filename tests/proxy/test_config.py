"""Settings loading: precedence, types, ``${VAR}`` expansion and one-line errors (SPEC §15)."""

from __future__ import annotations

import dataclasses
import re
import socket
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy import bootstrap, config
from proxy.api._auth import digest
from proxy.bootstrap import check_entries
from proxy.config import (
    ACCOUNT_KEYS,
    MASK,
    OPTIONS,
    TENANT_KEYS,
    ConfigError,
    Settings,
    describe,
    load_settings,
    options,
    parse_bool,
)
from proxy.crypto import cipher_from_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "mail-proxy.example.toml"

# SPEC §15.2, minus GMP_CONFIG and the CLI client's GMP_URL/GMP_TENANT; GMP_DEBUG is a switch.
_SPEC_TEXT = """
GMP_DB_PATH GMP_DATABASE_URL GMP_DB_POOL_SIZE GMP_POOL_SIZE GMP_HOST GMP_PORT GMP_API_TOKEN
GMP_INSTANCE_ID GMP_START_ACTIVE GMP_SCHEDULER_ACTIVE GMP_TEST_MODE GMP_LOG_LEVEL GMP_LOG_FORMAT
GMP_LOG_DELIVERY_ACTIVITY GMP_MAX_REQUEST_MB GMP_PUBLIC_URL GMP_SEND_LOOP_INTERVAL
GMP_DEFAULT_PRIORITY GMP_BATCH_SIZE_PER_ACCOUNT GMP_CLAIM_LEASE_SECONDS GMP_SHUTDOWN_TIMEOUT
GMP_ACCOUNT_IDLE_STOP GMP_METRICS_PUBLIC GMP_SMTP_CONNECT_TIMEOUT GMP_SMTP_SEND_TIMEOUT
GMP_SMTP_HELO_NAME GMP_MAX_RETRIES GMP_RETRY_DELAYS GMP_DELIVERY_REPORT_RETENTION_SECONDS
GMP_CLIENT_SYNC_URL GMP_CLIENT_SYNC_TOKEN GMP_CLIENT_SYNC_USER GMP_CLIENT_SYNC_PASSWORD
GMP_SYNC_INTERVAL GMP_SYNC_TIMEOUT GMP_REPORT_BATCH_SIZE GMP_ATTACHMENT_BASE_URL
GMP_ATTACHMENT_TIMEOUT GMP_ATTACHMENT_MAX_MB GMP_ATTACHMENT_CONCURRENCY
GMP_ATTACHMENT_MEMORY_BUDGET_MB GMP_ATTACHMENT_ALLOWED_DIRS GMP_HTTP_ALLOW_PRIVATE_NETWORKS
GMP_HTTP_ALLOWED_NETWORKS GMP_CACHE_MEMORY_MAX_MB GMP_CACHE_MEMORY_TTL_SECONDS GMP_CACHE_DISK_DIR
GMP_CACHE_DISK_MAX_MB GMP_CACHE_DISK_TTL_SECONDS GMP_CACHE_DISK_THRESHOLD_KB GMP_DOWNLOAD_SECRET
GMP_BOUNCE_ENABLED GMP_BOUNCE_PROCESSED_FOLDER GMP_BOUNCE_IMAP_HOST GMP_BOUNCE_IMAP_PORT
GMP_BOUNCE_IMAP_USER GMP_BOUNCE_IMAP_PASSWORD GMP_BOUNCE_IMAP_SSL GMP_BOUNCE_IMAP_FOLDER
GMP_BOUNCE_POLL_INTERVAL GMP_BOUNCE_RETURN_PATH GMP_PEC_ACCEPTANCE_TIMEOUT GMP_ENCRYPTION_KEY
MAIL_PROXY_ENCRYPTION_KEY GMP_ENCRYPTION_KEY_FILE GMP_ENCRYPTION_PREVIOUS_KEYS
"""
SPEC_VARIABLES = frozenset(_SPEC_TEXT.split())
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (the spec's default bind address)


def write(tmp_path: Path, text: str, name: str = "mp.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def error_of(*args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(*args, **kwargs)
    return info.value


# -- the table ----------------------------------------------------------------


def test_settings_has_one_attribute_per_option_with_matching_type():
    annotations = {f.name: f.type for f in dataclasses.fields(Settings)}
    extras = {"config_path", "tenants", "accounts", "sources"}
    assert set(annotations) - extras == {o.attr for o in OPTIONS}
    base = {"int": "int", "float": "float", "bool": "bool", "str": "str"}
    for o in OPTIONS:
        if o.kind.endswith("_list"):
            expected = f"tuple[{o.kind.removesuffix('_list')}, ...]"
        elif o.default is None and o.attr != "bounce_imap_port":
            expected = f"{base[o.kind]} | None"
        else:
            expected = base[o.kind]
        assert annotations[o.attr] == expected, o.attr


def test_table_covers_every_spec_variable_once():
    names = [name for o in OPTIONS for name in o.env]
    assert len(names) == len(set(names))
    assert set(SPEC_VARIABLES) <= set(names)
    assert set(names) - set(SPEC_VARIABLES) == {o.env[0] for o in OPTIONS if o.section == "demo"}
    assert options() is OPTIONS


def test_attribute_names_follow_the_variable_names():
    by_attr = {o.attr: o for o in OPTIONS}
    assert by_attr["port"].env == ("GMP_PORT",)
    assert by_attr["client_sync_url"].key == "url"
    assert by_attr["demo_capture_port"].env == ("GMP_DEMO_CAPTURE_PORT",)
    for attr in ("port", "db_path", "sync_timeout", "send_loop_interval"):
        assert attr in by_attr
    assert all(o.attr == o.env[0].removeprefix("GMP_").lower() for o in OPTIONS)


@pytest.mark.parametrize(
    ("section", "key", "variable"),
    [
        ("security", "filesystem_allowed_dirs", "GMP_ATTACHMENT_ALLOWED_DIRS"),
        ("security", "previous_keys", "GMP_ENCRYPTION_PREVIOUS_KEYS"),
        ("client_sync", "timeout", "GMP_SYNC_TIMEOUT"),
        ("cache", "memory_max_mb", "GMP_CACHE_MEMORY_MAX_MB"),
        ("delivery", "report_retention_seconds", "GMP_DELIVERY_REPORT_RETENTION_SECONDS"),
        ("server", "account_idle_stop", "GMP_ACCOUNT_IDLE_STOP"),
        ("bounce", "processed_folder", "GMP_BOUNCE_PROCESSED_FOLDER"),
    ],
)
def test_file_keys_follow_spec_section_names(section, key, variable):
    (option,) = [o for o in OPTIONS if o.section == section and o.key == key]
    assert option.env[0] == variable


def test_secrets_are_marked():
    secret = {o.attr for o in OPTIONS if o.is_secret}
    assert secret == {
        "api_token",
        "encryption_key",
        "encryption_previous_keys",
        "download_secret",
        "client_sync_token",
        "client_sync_password",
        "bounce_imap_password",
    }


def test_reference_markdown_names_every_variable():
    text = config.reference_markdown()
    for o in OPTIONS:
        assert f"`[{o.section}] {o.key}`" in text
        assert all(f"`{name}`" in text for name in o.env)


# -- defaults and derived values ------------------------------------------------


def test_defaults_match_the_spec():
    s = load_settings(env={})
    assert (s.host, s.port, s.db_path, s.db_pool_size) == (
        ALL_INTERFACES,
        8000,
        "./mail_service.db",
        10,
    )
    assert (s.send_loop_interval, s.default_priority, s.batch_size_per_account) == (0.5, 2, 50)
    assert (s.claim_lease_seconds, s.shutdown_timeout, s.account_idle_stop) == (300, 10.0, 600)
    assert (s.smtp_connect_timeout, s.smtp_send_timeout, s.max_retries) == (10.0, 30.0, 5)
    assert s.retry_delays == (60, 300, 900, 3600, 7200)
    assert s.delivery_report_retention_seconds == 604800
    assert (s.sync_interval, s.sync_timeout, s.report_batch_size) == (300, 30.0, 1000)
    assert (s.log_level, s.log_format, s.max_request_mb) == ("INFO", "text", 50)
    assert (s.start_active, s.test_mode, s.metrics_public) == (True, False, False)
    assert (s.attachment_timeout, s.attachment_max_mb, s.attachment_concurrency) == (30.0, 50, 3)
    assert s.attachment_memory_budget_mb == 256
    assert (s.cache_memory_max_mb, s.cache_disk_dir, s.cache_disk_threshold_kb) == (50, None, 100)
    assert (s.bounce_enabled, s.bounce_imap_ssl, s.bounce_imap_folder) == (False, True, "INBOX")
    assert (s.bounce_imap_port, s.bounce_poll_interval, s.pec_acceptance_timeout) == (993, 60, 1800)
    assert s.api_token is None
    assert s.encryption_previous_keys == ()
    assert s.attachment_allowed_dirs == ()
    assert (s.demo_capture_enabled, s.demo_capture_host, s.demo_capture_port) == (
        False,
        "127.0.0.1",
        2525,
    )
    assert (s.demo_capture_dir, s.demo_sink_enabled, s.demo_sink_port) == (
        "./captured-mail",
        False,
        8025,
    )
    assert (s.config_path, s.tenants, s.accounts) == (None, (), ())


def test_bounce_port_follows_ssl_unless_given():
    assert load_settings(env={"GMP_BOUNCE_IMAP_SSL": "off"}).bounce_imap_port == 143
    env = {"GMP_BOUNCE_IMAP_SSL": "off", "GMP_BOUNCE_IMAP_PORT": "1143"}
    assert load_settings(env=env).bounce_imap_port == 1143


def test_settings_are_frozen():
    s = load_settings(env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]
    assert dataclasses.replace(s, port=9000).port == 9000


@pytest.mark.parametrize(
    ("db_path", "db_url", "is_sqlite"),
    [
        ("./mail_service.db", "./mail_service.db", True),
        ("sqlite:./x.db", "./x.db", True),
        ("sqlite:///var/lib/mp.db", "/var/lib/mp.db", True),
        (":memory:", ":memory:", True),
        ("sqlite::memory:", ":memory:", True),
        ("postgresql://mp:pw@db:5432/mp", "postgresql://mp:pw@db:5432/mp", False),
        ("postgres://db/mp", "postgres://db/mp", False),
    ],
)
def test_db_url_is_normalized(db_path, db_url, is_sqlite):
    s = load_settings(env={"GMP_DB_PATH": db_path})
    assert (s.db_url, s.is_sqlite) == (db_url, is_sqlite)


def test_instance_id_defaults_to_host_and_port():
    s = load_settings(env={"GMP_PORT": "8123"})
    assert s.effective_instance_id == f"{socket.gethostname()}:8123"
    s = load_settings(env={"GMP_INSTANCE_ID": "mail-1"})
    assert s.effective_instance_id == "mail-1"


def test_helo_name_defaults_to_fqdn():
    assert load_settings(env={}).helo_name == socket.getfqdn()
    assert load_settings(env={"GMP_SMTP_HELO_NAME": "mx.example"}).helo_name == "mx.example"


# -- precedence -----------------------------------------------------------------

PRECEDENCE = [
    # attr, file line (section, text), env (name, text), flag value, expected file/env/flag
    ("port", ("server", "port = 8001"), ("GMP_PORT", "8002"), 8003, (8001, 8002, 8003)),
    ("host", ("server", 'host = "h1"'), ("GMP_HOST", "h2"), "h3", ("h1", "h2", "h3")),
    (
        "send_loop_interval",
        ("delivery", "send_loop_interval = 1"),
        ("GMP_SEND_LOOP_INTERVAL", "0.25"),
        "0.1",
        (1.0, 0.25, 0.1),
    ),
    (
        "test_mode",
        ("delivery", "test_mode = true"),
        ("GMP_TEST_MODE", "no"),
        True,
        (True, False, True),
    ),
    (
        "retry_delays",
        ("retry", "retry_delays = [1, 2]"),
        ("GMP_RETRY_DELAYS", "3, 4"),
        (5,),
        ((1, 2), (3, 4), (5,)),
    ),
    (
        "attachment_allowed_dirs",
        ("security", 'filesystem_allowed_dirs = ["/a"]'),
        ("GMP_ATTACHMENT_ALLOWED_DIRS", "/b,/c"),
        ["/d"],
        (("/a",), ("/b", "/c"), ("/d",)),
    ),
]


@pytest.mark.parametrize("case", PRECEDENCE, ids=[case[0] for case in PRECEDENCE])
def test_default_then_file_then_env_then_flag(tmp_path, case):
    attr, file, env, flag, expected = case
    option = next(o for o in OPTIONS if o.attr == attr)
    path = write(tmp_path, f"[{file[0]}]\n{file[1]}\n")
    assert getattr(load_settings(env={}), attr) == option.default
    assert getattr(load_settings(path, env={}), attr) == expected[0]
    assert getattr(load_settings(path, env=dict([env])), attr) == expected[1]
    assert getattr(load_settings(path, env=dict([env]), flags={attr: flag}), attr) == expected[2]


def test_none_flags_and_empty_env_values_are_ignored(tmp_path):
    path = write(tmp_path, "[server]\nport = 8001\n")
    s = load_settings(path, env={"GMP_PORT": "  "}, flags={"port": None, "host": None})
    assert (s.port, s.host) == (8001, ALL_INTERFACES)


def test_config_file_comes_from_gmp_config_unless_given(tmp_path):
    first = write(tmp_path, "[server]\nport = 8001\n", "a.toml")
    second = write(tmp_path, "[server]\nport = 8002\n", "b.toml")
    assert load_settings(env={"GMP_CONFIG": first}).port == 8001
    assert load_settings(env={"GMP_CONFIG": first}).config_path == first
    assert load_settings(second, env={"GMP_CONFIG": first}).port == 8002


def test_env_none_reads_os_environ(monkeypatch):
    monkeypatch.setenv("GMP_PORT", "8765")
    monkeypatch.delenv("GMP_CONFIG", raising=False)
    assert load_settings().port == 8765


# -- aliases ----------------------------------------------------------------------


def test_database_url_is_an_alias_and_db_path_wins():
    assert load_settings(env={"GMP_DATABASE_URL": "x.db"}).db_path == "x.db"
    both = {"GMP_DATABASE_URL": "x.db", "GMP_DB_PATH": "y.db"}
    assert load_settings(env=both).db_path == "y.db"


def test_env_alias_overrides_the_file(tmp_path):
    path = write(tmp_path, '[server]\ndb_path = "file.db"\n')
    assert load_settings(path, env={"GMP_DATABASE_URL": "env.db"}).db_path == "env.db"


@pytest.mark.parametrize(
    ("alias", "value", "attr", "expected"),
    [
        ("GMP_POOL_SIZE", "3", "db_pool_size", 3),
        ("GMP_SCHEDULER_ACTIVE", "false", "start_active", False),
        ("MAIL_PROXY_ENCRYPTION_KEY", "a2V5", "encryption_key", "a2V5"),
    ],
)
def test_aliases(alias, value, attr, expected):
    assert getattr(load_settings(env={alias: value}), attr) == expected


def test_primary_name_beats_alias():
    env = {"GMP_POOL_SIZE": "3", "GMP_DB_POOL_SIZE": "4"}
    assert load_settings(env=env).db_pool_size == 4


def test_two_different_encryption_keys_are_refused_without_showing_them():
    env = {"GMP_ENCRYPTION_KEY": "secret-one", "MAIL_PROXY_ENCRYPTION_KEY": "secret-two"}
    message = str(error_of(env=env))
    assert "GMP_ENCRYPTION_KEY and MAIL_PROXY_ENCRYPTION_KEY" in message
    assert "secret" not in message
    same = {"GMP_ENCRYPTION_KEY": "k", "MAIL_PROXY_ENCRYPTION_KEY": "k"}
    assert load_settings(env=same).encryption_key == "k"


@pytest.mark.parametrize(
    ("env", "flags", "level"),
    [
        ({"GMP_DEBUG": "1"}, {}, "DEBUG"),
        ({"GMP_DEBUG": "1", "GMP_LOG_LEVEL": "WARNING"}, {}, "DEBUG"),
        ({"GMP_DEBUG": "0", "GMP_LOG_LEVEL": "warning"}, {}, "WARNING"),
        ({"GMP_DEBUG": "yes"}, {"log_level": "error"}, "ERROR"),
    ],
)
def test_gmp_debug_means_debug(env, flags, level):
    assert load_settings(env=env, flags=flags).log_level == level


def test_bad_gmp_debug_is_an_error():
    assert str(error_of(env={"GMP_DEBUG": "loud"})).startswith(
        "invalid value for GMP_DEBUG (environment): expected a boolean"
    )


# -- types --------------------------------------------------------------------------

SPELLINGS = {"1": True, "true": True, "yes": True, "on": True}
SPELLINGS |= {"0": False, "false": False, "no": False, "off": False}


@given(
    word=st.sampled_from(sorted(SPELLINGS)),
    upper=st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_bool_spellings_in_any_case(word, upper):
    text = "".join(c.upper() if u else c for c, u in zip(word, upper, strict=False))
    assert parse_bool(text) is SPELLINGS[word]
    assert load_settings(env={"GMP_TEST_MODE": text}).test_mode is SPELLINGS[word]


@given(st.text(max_size=8).filter(lambda t: t.strip().lower() not in SPELLINGS and t.strip()))
def test_other_words_are_not_booleans(text):
    with pytest.raises(
        ConfigError, match=r"GMP_METRICS_PUBLIC \(environment\): expected a boolean"
    ):
        load_settings(env={"GMP_METRICS_PUBLIC": text})


@given(st.integers(min_value=0, max_value=65535))
def test_ports_round_trip_through_env_and_flags(port):
    assert load_settings(env={"GMP_PORT": str(port)}).port == port
    assert load_settings(env={}, flags={"port": str(port)}).port == port


@given(st.integers().filter(lambda n: not 0 <= n <= 65535))
def test_ports_outside_the_range_are_refused(port):
    error = error_of(env={"GMP_PORT": str(port)})
    assert str(error) == (
        f"invalid value for GMP_PORT (environment): must be between 0 and 65535, got {str(port)!r}"
    )


@pytest.mark.parametrize(
    ("text", "ok"),
    [("1", True), ("86400", True), ("0", False), ("86401", False), ("99999999999", False)],
)
def test_bounce_poll_interval_is_bounded_like_the_api(text, ok):
    """The API caps it at a day (PUT /instance); the file and environment do too."""
    if ok:
        assert load_settings(env={"GMP_BOUNCE_POLL_INTERVAL": text}).bounce_poll_interval == int(
            text
        )
    else:
        assert str(error_of(env={"GMP_BOUNCE_POLL_INTERVAL": text})) == (
            "invalid value for GMP_BOUNCE_POLL_INTERVAL (environment): "
            f"must be between 1 and 86400, got {text!r}"
        )


def test_file_strings_are_parsed_like_env_text(tmp_path):
    path = write(
        tmp_path,
        '[server]\nport = "${PORT}"\nstart_active = "off"\n'
        '[retry]\nretry_delays = "5, 10"\n[security]\nhttp_allowed_networks = "10.0.0.0/8"\n',
    )
    s = load_settings(path, env={"PORT": "9000"})
    assert (s.port, s.start_active, s.retry_delays) == (9000, False, (5, 10))
    assert s.http_allowed_networks == ("10.0.0.0/8",)


def test_lists_from_env_drop_blanks_and_spaces():
    env = {"GMP_ATTACHMENT_ALLOWED_DIRS": " /a , ,/b,", "GMP_RETRY_DELAYS": "1,2 ,3"}
    s = load_settings(env=env)
    assert (s.attachment_allowed_dirs, s.retry_delays) == (("/a", "/b"), (1, 2, 3))


def test_empty_optional_string_in_file_means_unset(tmp_path):
    path = write(tmp_path, '[server]\npublic_url = ""\n')
    assert load_settings(path, env={}).public_url is None


def test_names_are_normalized(tmp_path):
    path = write(tmp_path, '[server]\nlog_level = "warning"\nlog_format = "JSON"\n')
    s = load_settings(path, env={})
    assert (s.log_level, s.log_format) == ("WARNING", "json")


# -- ${VAR} expansion ---------------------------------------------------------------------

TENANTS = """
[security]
api_token = "${ADMIN}"

[[tenants]]
id = "acme"
client_auth = { method = "bearer", token = "${ACME_TOKEN}" }
large_file_config = { storage_options = { key = "${S3_KEY}", regions = ["${REGION}", "x"] } }
rate_limits = { hourly = 10 }
api_key = "literal $${NOT_A_VAR} and ${KEY}"

[[tenants]]
id = "beta"

[[accounts]]
tenant_id = "acme"
id = "main"
port = 587
password = "${SMTP_PW}"
"""
TENANT_ENV = {
    "ADMIN": "adm",
    "ACME_TOKEN": "tok",
    "S3_KEY": "s3",
    "REGION": "eu",
    "KEY": "k" * 32,
    "SMTP_PW": "pw",
}


def test_variables_are_expanded_everywhere(tmp_path):
    s = load_settings(write(tmp_path, TENANTS), env=TENANT_ENV)
    assert s.api_token == "adm"
    acme, beta = s.tenants
    assert acme["client_auth"] == {"method": "bearer", "token": "tok"}
    assert acme["large_file_config"]["storage_options"]["key"] == "s3"
    assert acme["large_file_config"]["storage_options"]["regions"] == ("eu", "x")
    assert acme["rate_limits"]["hourly"] == 10
    assert acme["api_key"] == "literal ${NOT_A_VAR} and " + "k" * 32
    assert beta == {"id": "beta"}
    (account,) = s.accounts
    assert (account["password"], account["port"]) == ("pw", 587)


def test_entries_are_read_only(tmp_path):
    s = load_settings(write(tmp_path, TENANTS), env=TENANT_ENV)
    acme = s.tenants[0]
    assert isinstance(acme, MappingProxyType)
    assert isinstance(acme["client_auth"], MappingProxyType)
    with pytest.raises(TypeError):
        acme["id"] = "other"  # type: ignore[index]
    with pytest.raises(TypeError):
        acme["client_auth"]["token"] = "x"  # type: ignore[index]


def test_unset_variable_names_it_and_where(tmp_path):
    path = write(tmp_path, TENANTS)
    error = error_of(path, env={k: v for k, v in TENANT_ENV.items() if k != "ACME_TOKEN"})
    assert str(error) == (
        "environment variable 'ACME_TOKEN' is not set "
        f"(used in [[tenants]] #1 client_auth.token of {path})"
    )


def test_unset_variable_in_a_list_and_a_section(tmp_path):
    path = write(tmp_path, TENANTS)
    error = error_of(
        path, env={k: v for k, v in TENANT_ENV.items() if k not in ("REGION", "ADMIN")}
    )
    assert error.problems == (
        f"environment variable 'ADMIN' is not set (used in [security] api_token of {path})",
        "environment variable 'REGION' is not set (used in [[tenants]] #1 "
        f"large_file_config.storage_options.regions[0] of {path})",
    )


def test_escape_and_empty_variable(tmp_path):
    path = write(tmp_path, '[server]\npublic_url = "$${X}/${EMPTY}"\n')
    assert load_settings(path, env={"EMPTY": ""}).public_url == "${X}/"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("${no-dash}", "invalid variable reference '${no-dash}' in [server] public_url"),
        ("abc ${OPEN", "unterminated '${' in [server] public_url"),
    ],
)
def test_malformed_references(tmp_path, value, problem):
    path = write(tmp_path, f'[server]\npublic_url = "{value}"\n')
    assert problem in str(error_of(path, env={"OPEN": "x"}))


# -- errors ---------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.toml")
    assert str(error_of(path, env={})) == (
        f"cannot read config file {path}: No such file or directory"
    )


def test_unreadable_file(tmp_path):
    assert str(error_of(str(tmp_path), env={})).startswith(f"cannot read config file {tmp_path}:")
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe")
    assert str(error_of(str(binary), env={})) == (
        f"cannot read config file {binary}: not UTF-8 text"
    )


def test_invalid_toml_names_the_line(tmp_path):
    path = write(tmp_path, "[server]\nport = 8000\nhost = \n")
    message = str(error_of(path, env={}))
    assert message.startswith(f"invalid TOML in {path}: ")
    assert "line 3" in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[sever]\nport = 1\n", "unknown section [sever] in {path} (did you mean 'server'?)"),
        ("[extra]\n", "unknown section [extra] in {path}"),
        ("port = 1\n", "unknown key 'port' at the top level of {path}"),
        ("[server]\nprot = 1\n", "unknown key 'prot' in [server] of {path} (did you mean 'port'?)"),
        ("[server]\nzzz = 1\n", "unknown key 'zzz' in [server] of {path}"),
        (
            "[server]\ntest_mode = true\n",
            "unknown key 'test_mode' in [server] of {path} (it belongs in [delivery])",
        ),
        (
            "[server]\nport = 'abc'\n",
            "invalid value for [server] port in {path}: expected an integer, got 'abc'",
        ),
        (
            "[server]\nport = true\n",
            "invalid value for [server] port in {path}: expected an integer, got True",
        ),
        (
            "[server]\nport = 70000\n",
            "invalid value for [server] port in {path}: must be between 0 and 65535, got 70000",
        ),
        (
            "[server]\nhost = 5\n",
            "invalid value for [server] host in {path}: expected a string, got 5",
        ),
        (
            "[server]\nhost = ''\n",
            "invalid value for [server] host in {path}: must not be empty, got ''",
        ),
        (
            "[delivery]\ndefault_priority = 4\n",
            "invalid value for [delivery] default_priority in {path}: "
            "must be between 0 and 3, got 4",
        ),
        (
            "[delivery]\nsend_loop_interval = 0.01\n",
            "invalid value for [delivery] send_loop_interval in {path}: must be at least 0.05, "
            "got 0.01",
        ),
        (
            "[delivery]\nsmtp_send_timeout = 0\n",
            "invalid value for [delivery] smtp_send_timeout in {path}: "
            "must be greater than 0, got 0",
        ),
        (
            "[server]\nlog_level = 'TRACE'\n",
            "invalid value for [server] log_level in {path}: "
            "must be one of DEBUG, INFO, WARNING, ERROR, got 'TRACE'",
        ),
        (
            "[server]\nlog_format = 'xml'\n",
            "invalid value for [server] log_format in {path}: must be one of text, json, got 'xml'",
        ),
        (
            "[retry]\nretry_delays = [60, 'x']\n",
            "invalid value for [retry] retry_delays in {path}: expected a list of integers, "
            "got [60, 'x']",
        ),
        (
            "[retry]\nretry_delays = []\n",
            "invalid value for [retry] retry_delays in {path}: "
            "must be a non-empty list of seconds >= 0, got []",
        ),
        (
            "[security]\nhttp_allowed_networks = ['10.0.0.0/33']\n",
            "invalid value for [security] http_allowed_networks in {path}: "
            "'10.0.0.0/33' is not a network such as 10.0.0.0/8, got ['10.0.0.0/33']",
        ),
        (
            "[server]\nport = nan\n",
            "invalid value for [server] port in {path}: expected an integer",
        ),
        ("server = 1\n", "unknown key 'server' at the top level of {path}"),
        ("[tenants]\nid = 'a'\n", "'tenants' in {path} must be an array of tables ([[tenants]])"),
        (
            "[[tenants]]\nid = 'a'\n[[tenants]]\nid = 'b'\nsecret_sauce = 1\n",
            "unknown key 'secret_sauce' in [[tenants]] #2 of {path}",
        ),
        (
            "[[accounts]]\nid = 'a'\nsmtp_host = 'x'\n",
            "unknown key 'smtp_host' in [[accounts]] #1 of {path}",
        ),
        (
            "[[accounts]]\nid = 'a'\nlimit_per_minuet = 5\n",
            "unknown key 'limit_per_minuet' in [[accounts]] #1 of {path} "
            "(did you mean 'limit_per_minute'?)",
        ),
    ],
)
def test_file_errors_name_key_and_file(tmp_path, text, problem):
    path = write(tmp_path, text)
    error = error_of(path, env={})
    assert problem.format(path=path) in error.problems[0]
    assert "\n" not in str(error)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"GMP_PORT": "abc"},
            "invalid value for GMP_PORT (environment): expected an integer, got 'abc'",
        ),
        (
            {"GMP_SEND_LOOP_INTERVAL": "fast"},
            "invalid value for GMP_SEND_LOOP_INTERVAL (environment): expected a number, got 'fast'",
        ),
        (
            {"GMP_SYNC_TIMEOUT": "-1"},
            "invalid value for GMP_SYNC_TIMEOUT (environment): must be greater than 0, got '-1'",
        ),
        (
            {"GMP_LOG_LEVEL": "loud"},
            "invalid value for GMP_LOG_LEVEL (environment): "
            "must be one of DEBUG, INFO, WARNING, ERROR, got 'loud'",
        ),
        (
            {"GMP_DATABASE_URL": "mysql://u:hunter2@db/x"},
            "invalid value for GMP_DATABASE_URL (environment): expected a SQLite path, ':memory:' "
            "or a postgresql:// URL, got 'mysql://u:********@db/x'",
        ),
        (
            {"GMP_RETRY_DELAYS": "60,soon"},
            "invalid value for GMP_RETRY_DELAYS (environment): expected a list of integers, "
            "got '60,soon'",
        ),
    ],
)
def test_env_errors_name_the_variable(env, message):
    assert str(error_of(env=env)) == message


def test_flag_errors_name_the_flag():
    assert str(error_of(env={}, flags={"port": "abc"})) == (
        "invalid value for --port (command line): expected an integer, got 'abc'"
    )
    assert str(error_of(env={}, flags={"db_pool_size": 0})) == (
        "invalid value for --db-pool-size (command line): must be at least 1, got 0"
    )
    assert str(error_of(env={}, flags={"nonsense": 1})) == (
        "unknown setting 'nonsense' (command line)"
    )


def test_every_problem_is_collected_on_one_line(tmp_path):
    path = write(tmp_path, "[server]\nport = 'x'\nprot = 1\n[nope]\n")
    error = error_of(path, env={"GMP_HOST": "h", "GMP_MAX_RETRIES": "many"})
    assert len(error.problems) == 4
    assert error.problems[-1].startswith("invalid value for GMP_MAX_RETRIES (environment)")
    assert str(error) == "; ".join(error.problems)
    assert "\n" not in str(error)


def test_config_error_flattens_newlines():
    assert ConfigError("a\nb", "c").problems == ("a b", "c")
    assert str(ConfigError("lock held: /x.db.lock")) == "lock held: /x.db.lock"


# -- secrets ---------------------------------------------------------------------------------

SECRET = "s3cr3t-VALUE-1234"


@pytest.mark.parametrize(
    "text",
    [
        f"[security]\napi_token = 1234\ndownload_secret = ['{SECRET}']\n",
        f"[security]\nprevious_keys = '{SECRET}'\napi_token = false\n",
        f"[client_sync]\npassword = ['{SECRET}']\ntoken = ['{SECRET}']\n",
        f"[bounce]\nimap_password = {{ value = '{SECRET}' }}\n",
        f"[[accounts]]\npassword = '{SECRET}'\npasword = '{SECRET}'\n",
        f"[server]\ndb_path = 'oracle://u:{SECRET}@db/x'\n",
    ],
)
def test_secret_values_never_appear_in_errors(tmp_path, text):
    message = str(error_of(write(tmp_path, text), env={}))
    assert SECRET not in message
    assert "1234" not in message


def test_describe_masks_secrets_and_url_passwords(tmp_path):
    env = {
        "GMP_API_TOKEN": SECRET,
        "GMP_ENCRYPTION_KEY": SECRET,
        "GMP_ENCRYPTION_PREVIOUS_KEYS": SECRET,
        "GMP_CLIENT_SYNC_PASSWORD": SECRET,
        "GMP_CLIENT_SYNC_TOKEN": SECRET,
        "GMP_BOUNCE_IMAP_PASSWORD": SECRET,
        "GMP_DOWNLOAD_SECRET": SECRET,
        "GMP_DB_PATH": f"postgresql://mp:{SECRET}@db:5432/mp",
        "GMP_CLIENT_SYNC_URL": f"https://u:{SECRET}@app.example/sync",
    } | TENANT_ENV
    settings = load_settings(write(tmp_path, TENANTS), env=env)
    described = describe(settings)
    assert SECRET not in repr(described)
    assert "tok" not in repr(described["tenants"])
    assert described["api_token"] == MASK
    assert described["encryption_previous_keys"] == MASK
    assert described["db_path"] == f"postgresql://mp:{MASK}@db:5432/mp"
    assert described["client_sync_url"] == f"https://u:{MASK}@app.example/sync"
    assert described["tenants"] == ["acme", "beta"]
    assert described["accounts"] == ["acme/main"]
    assert described["port"] == 8000
    assert set(described) >= {o.attr for o in OPTIONS}


def test_describe_leaves_unset_secrets_unset():
    described = describe(load_settings(env={}))
    assert described["api_token"] is None
    assert described["encryption_previous_keys"] == ()


# -- entry keys ------------------------------------------------------------------------------


def test_entry_key_sets_match_the_spec():
    assert {"id", "client_auth", "rate_limits", "api_key", "api_key_expires_at"} <= TENANT_KEYS
    assert len(TENANT_KEYS) == 11
    assert {"tenant_id", "limit_behavior", "is_pec_account", "imap_folder"} <= ACCOUNT_KEYS
    assert len(ACCOUNT_KEYS) == 22


# -- the example file ---------------------------------------------------------------------

_SECTION = re.compile(r"^\[\[?(\w+)\]\]?\s*$", re.MULTILINE)


def _example_env(text: str) -> dict[str, str]:
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))
    return {name: f"value-of-{name}-" + "x" * 32 for name in names}


def _keys_by_section(text: str) -> dict[str, list[str]]:
    """Keys written as ``key = `` or ``# key = `` under each [section] (entries excluded)."""
    found: dict[str, list[str]] = {}
    parts = _SECTION.split(text)
    for section, body in zip(parts[1::2], parts[2::2], strict=True):
        if section not in ("tenants", "accounts"):
            found[section] = re.findall(r"^#? ?(\w+) = ", body, re.MULTILINE)
    return found


def test_example_file_loads():
    text = EXAMPLE.read_text(encoding="utf-8")
    s = load_settings(str(EXAMPLE), env=_example_env(text))
    assert s.log_format == "json"
    assert s.api_token == "value-of-ADMIN_TOKEN-" + "x" * 32
    assert s.attachment_allowed_dirs == ("/srv/mail-attachments",)
    assert [t["id"] for t in s.tenants] == ["acme"]
    assert s.tenants[0]["client_auth"]["token"].startswith("value-of-ACME_SYNC_TOKEN")
    assert [(a["tenant_id"], a["id"]) for a in s.accounts] == [("acme", "main")]


def test_example_file_lists_every_option_once_in_its_section():
    keys = _keys_by_section(EXAMPLE.read_text(encoding="utf-8"))
    for o in OPTIONS:
        assert keys.get(o.section, []).count(o.key) == 1, f"[{o.section}] {o.key}"
    for section, found in keys.items():
        known = {o.key for o in OPTIONS if o.section == section}
        assert set(found) <= known, f"[{section}] documents unknown keys {set(found) - known}"


def test_example_file_commented_values_are_valid_and_show_defaults(tmp_path):
    text = EXAMPLE.read_text(encoding="utf-8")
    uncommented = re.sub(r"^# (\w+ = )", r"\1", text, flags=re.MULTILINE)
    s = load_settings(write(tmp_path, uncommented), env=_example_env(text))
    assert s.cache_disk_dir == "/var/cache/mail-proxy"
    assert s.http_allowed_networks == ("10.20.0.0/16",)
    parts = _SECTION.split(text)
    for section, body in zip(parts[1::2], parts[2::2], strict=True):
        for line in re.findall(r"^# (\w+ = .*)$", body, re.MULTILINE):
            key = line.split(" ", 1)[0]
            option = next(o for o in OPTIONS if (o.section, o.key) == (section, key))
            if option.default not in (None, ()):
                assert getattr(s, option.attr) == option.default, line


def test_several_instances_example_loads_with_its_variables():
    path = EXAMPLE.parent / "several-instances.toml"
    text = path.read_text(encoding="utf-8")
    s = load_settings(str(path), env=_example_env(text) | {"GMP_INSTANCE_ID": "mx-1"})
    assert s.db_url.startswith("postgresql://mailproxy:value-of-PG_PASSWORD")
    assert (s.effective_instance_id, s.db_pool_size, s.claim_lease_seconds) == ("mx-1", 10, 120)
    assert [(a["tenant_id"], a["id"], a["limit_per_minute"]) for a in s.accounts] == [
        ("acme", "main", 100)
    ]


def test_example_files_entries_pass_the_bootstrap_checks():
    for path in (EXAMPLE, EXAMPLE.parent / "several-instances.toml"):
        text = path.read_text(encoding="utf-8")
        entries = check_entries(load_settings(str(path), env=_example_env(text)))
        assert [t.payload.id for t in entries.tenants] == ["acme"]


# -- where each value came from (named by the errors found after loading) -----------------


def test_sources_name_the_layer_each_value_came_from(tmp_path):
    path = write(tmp_path, "[server]\nport = 8001\nhost = '127.0.0.1'\n")
    s = load_settings(path, env={"GMP_PORT": "8002"}, flags={"db_path": ":memory:"})
    assert dict(s.sources) == {
        "host": f"[server] host in {path}",
        "port": "GMP_PORT (environment)",
        "db_path": "--db (command line)",
    }
    assert s == dataclasses.replace(s, sources={})  # where a value came from is not the value
    assert load_settings(env={}).sources == {}


@pytest.mark.parametrize(
    ("text", "env", "source"),
    [
        ("[security]\nencryption_key = 'abc'\n", {}, "[security] encryption_key in {path}: "),
        ("", {"GMP_ENCRYPTION_KEY": "abc"}, "GMP_ENCRYPTION_KEY (environment): "),
        (
            "[security]\nencryption_key_file = '{missing}'\n",
            {},
            "[security] encryption_key_file in {path}: cannot read {missing}",
        ),
        (
            "[security]\nprevious_keys = ['abc']\n",
            {"GMP_ENCRYPTION_KEY": "a" * 43},
            "[security] previous_keys in {path} item 1: ",
        ),
    ],
)
def test_a_bad_encryption_key_names_its_real_source(tmp_path, text, env, source):
    missing = str(tmp_path / "absent.key")
    path = write(tmp_path, text.format(missing=missing))
    with pytest.raises(ConfigError) as caught:
        cipher_from_settings(load_settings(path, env=env))
    assert str(caught.value).startswith(source.format(path=path, missing=missing))
    assert "abc" not in str(caught.value)


# -- [[tenants]] / [[accounts]]: the bootstrap's checks (SPEC §15.5) ----------------------

TENANT = '[[tenants]]\nid = "acme"\n'
ACCOUNT = '[[accounts]]\ntenant_id = "{tenant}"\nid = "main"\nhost = "127.0.0.1"\nport = 25\n'
GOOD_KEY = "k" * 32


def entry_problems(tmp_path, text: str, **check) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        check_entries(load_settings(path, env={}), **check)
    return [p.replace(path, "FILE") for p in caught.value.problems]


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        (
            '[[tenants]]\nid = "t1"\napi_key = "short"\n',
            [
                "[[tenants]] #1 (id='t1') in FILE: api_key: "
                "must be a string of at least 32 characters"
            ],
        ),
        (
            '[[tenants]]\nid = "bad id!"\nclient_base_url = "not a url"\n'
            "rate_limits = {hourly = -5, foo = 1}\n",
            [
                "[[tenants]] #1 (id='bad id!') in FILE: client_base_url: "
                "must be an http:// or https:// URL",
                "[[tenants]] #1 (id='bad id!') in FILE: rate_limits.hourly: "
                "Input should be greater than or equal to 0",
                "[[tenants]] #1 (id='bad id!') in FILE: rate_limits.foo: "
                "Extra inputs are not permitted",
                "[[tenants]] #1 (id='bad id!') in FILE: id: "
                "String should match pattern '^[A-Za-z0-9_-]{1,64}$'",
            ],
        ),
        (
            TENANT + 'large_file_config = {enabled = true, action = "rewrite"}\n',
            [
                "[[tenants]] #1 (id='acme') in FILE: large_file_config.storage_url: "
                "required for 'rewrite'"
            ],
        ),
        (
            TENANT + "large_file_config = "
            '{enabled = true, action = "rewrite", storage_url = "file:///srv/files"}\n',
            [
                "[[tenants]] #1 (id='acme') in FILE: large_file_config.public_base_url: "
                "required for 'rewrite' on a storage that cannot sign links "
                "(or set GMP_PUBLIC_URL)"
            ],
        ),
        (
            TENANT + ACCOUNT.format(tenant="acme") + 'limit_behavior = "explode"\n',
            [
                "[[accounts]] #1 (id='main') in FILE: limit_behavior: "
                "Input should be 'defer', 'reject' or 'error'"
            ],
        ),
        (
            '[[accounts]]\nid = "main"\nhost = "h"\nport = 25\n',
            ["[[accounts]] #1 (id='main') in FILE: tenant_id: field required"],
        ),
        (
            TENANT + ACCOUNT.format(tenant="ghost"),
            [
                "[[accounts]] #1 (id='main') in FILE: tenant_id: tenant 'ghost' is not one "
                "of the file's [[tenants]] (config check does not read the database)"
            ],
        ),
    ],
)
def test_every_bad_entry_is_listed_naming_entry_key_and_file(tmp_path, text, problems):
    assert entry_problems(tmp_path, text) == problems


def test_problems_of_several_entries_are_all_listed(tmp_path):
    text = '[[tenants]]\nid = "t1"\napi_key = "short"\n' + TENANT + ACCOUNT.format(tenant="x")
    problems = entry_problems(tmp_path, text)
    assert [p.split(": ", 1)[0] for p in problems] == [
        "[[tenants]] #1 (id='t1') in FILE",
        "[[accounts]] #1 (id='main') in FILE",
    ]


def test_an_account_may_name_a_tenant_the_database_holds(tmp_path):
    path = write(tmp_path, ACCOUNT.format(tenant="acme"))
    settings = load_settings(path, env={})
    entries = check_entries(settings, tenant_exists=lambda tenant_id: tenant_id == "acme")
    assert [(a.tenant_id, a.id) for a in entries.accounts] == [("acme", "main")]
    problems = entry_problems(
        tmp_path, ACCOUNT.format(tenant="ghost"), tenant_exists=lambda _tenant_id: False
    )
    assert problems == ["[[accounts]] #1 (id='main') in FILE: tenant_id: tenant 'ghost' not found"]


def test_rewrite_on_file_storage_passes_with_the_instance_url(tmp_path):
    text = (
        TENANT + "large_file_config = "
        '{enabled = true, action = "rewrite", storage_url = "file:///srv/files"}\n'
    )
    settings = load_settings(write(tmp_path, text), env={"GMP_PUBLIC_URL": "https://mx.example"})
    (tenant,) = check_entries(settings).tenants
    assert tenant.payload.large_file_config is not None


def test_bootstrap_writes_nothing_when_any_entry_is_bad(tmp_path, store):
    text = TENANT + f'api_key = "{GOOD_KEY}"\n' + '[[tenants]]\nid = "t2"\napi_key = "short"\n'
    settings = load_settings(write(tmp_path, text), env={})
    with pytest.raises(ConfigError, match=r"t2.*api_key: must be a string"):
        bootstrap.apply_config(settings, store, 1_000)
    assert store.tenants.list() == []


def test_bootstrap_refuses_rewrite_without_a_link_base(tmp_path, store):
    text = (
        TENANT + "large_file_config = "
        '{enabled = true, action = "rewrite", storage_url = "file:///srv/files"}\n'
    )
    settings = load_settings(write(tmp_path, text), env={})
    with pytest.raises(ConfigError) as caught:
        bootstrap.apply_config(settings, store, 1_000)
    assert len(caught.value.problems) == 1
    assert "large_file_config.public_base_url: required for 'rewrite'" in str(caught.value)
    assert store.tenants.list() == []


def test_bootstrap_accepts_accounts_of_file_and_database_tenants(tmp_path, store):
    store.tenants.upsert("old", {"name": "Made over the API"}, 500)
    text = (
        TENANT
        + f'api_key = "{GOOD_KEY}"\n'
        + ACCOUNT.format(tenant="acme")
        + ACCOUNT.format(tenant="old")
    )
    settings = load_settings(write(tmp_path, text), env={})
    assert bootstrap.apply_config(settings, store, 1_000) == (1, 2)
    assert bootstrap.apply_config(settings, store, 2_000) == (0, 0)  # idempotent
    assert store.tenants.has_api_key_hash("acme", digest(GOOD_KEY))
    assert sorted((a.tenant_id, a.id) for a in store.accounts.list()) == [
        ("acme", "main"),
        ("old", "main"),
    ]
