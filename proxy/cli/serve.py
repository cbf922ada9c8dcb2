"""Local commands that read the configuration: ``serve`` and ``config check``.

Flags of ``serve`` come from the option table in ``proxy.config``, so a new flag is a
new table row. Configuration problems end the process with exit code 2 and one line
on stderr (SPEC §15.1, §17); nothing here prints a traceback for them. The server
module is imported only after the configuration (settings, encryption keys and the
``[[tenants]]``/``[[accounts]]`` entries) has been checked, so a bad config fails fast
and without touching the database or the network.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from proxy.cli.client import PROG
from proxy.config import ConfigError, Settings, load_settings, options
from proxy.logs import setup_logging

EXIT_CONFIG = 2


def _fail(error: ConfigError, *, each_line: bool = False) -> NoReturn:
    """Print the error as one line (or one per problem) and exit 2."""
    for line in error.problems if each_line else (str(error),):
        click.echo(f"{PROG}: {line}", err=True)
    sys.exit(EXIT_CONFIG)


def _setting_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add one click option per table row that names a flag; values arrive as text or None."""
    for option in reversed(options()):
        if option.flag is None:
            continue
        if option.kind == "bool":
            decorate = click.option(
                option.flag, option.attr, is_flag=True, default=None, help=option.help
            )
        else:
            metavar = option.flag.removeprefix("--").upper()
            decorate = click.option(option.flag, option.attr, metavar=metavar, help=option.help)
        command = decorate(command)
    return command


@click.command()
@click.option("--config", "config_path", metavar="FILE", help="TOML config file (or GMP_CONFIG).")
@_setting_flags
def serve(config_path: str | None, **flags: Any) -> None:
    """Start the proxy (SIGTERM/SIGINT stop it gracefully).

    Settings come from defaults < config file < GMP_* environment < these flags.
    """
    try:
        settings = load_settings(config_path, os.environ, flags)
        # Accounts naming a tenant that only the database holds are checked at start.
        _check_offline(settings, tenant_exists=lambda _tenant_id: True)
    except ConfigError as error:
        _fail(error)
    setup_logging(settings.log_level, settings.log_format)
    from proxy.server import serve as run_server  # noqa: PLC0415 (only after a good config)

    try:
        code = run_server(settings)
    except ConfigError as error:
        _fail(error)
    sys.exit(code)


@click.group()
def config() -> None:
    """Work with configuration files (local; no server needed)."""


@config.command("check")
@click.argument("file", metavar="FILE")
def config_check(file: str) -> None:
    """Validate FILE with the current environment: exit 0, or 2 with one line per problem.

    Checks what serve checks before it opens the database: every setting, the
    encryption keys, and each [[tenants]]/[[accounts]] entry as POST /tenant and
    POST /account would. An account's tenant_id must name one of the file's own
    [[tenants]]: the database is not read, so tenants created over the API are not seen.
    """
    problems: list[str] = []
    try:
        settings = load_settings(file, os.environ)
    except ConfigError as error:
        if error.settings is None:  # the file itself could not be read
            _fail(error, each_line=True)
        settings, problems = error.settings, list(error.problems)
    try:  # the entries too, even after a bad setting: every problem in one run
        _check_offline(settings, tenant_exists=None)
    except ConfigError as error:
        problems += error.problems
    if problems:
        _fail(ConfigError(*problems), each_line=True)
    click.echo(f"ok: {file}")


def _check_offline(settings: Settings, tenant_exists: Callable[[str], bool] | None) -> None:
    """Check what needs no database: the encryption keys and every entry, all problems at once."""
    from proxy.bootstrap import check_entries  # noqa: PLC0415 (the API models load slowly)
    from proxy.crypto import cipher_from_settings  # noqa: PLC0415

    problems: list[str] = []
    for check in (cipher_from_settings, lambda s: check_entries(s, tenant_exists)):
        try:
            check(settings)
        except ConfigError as error:
            problems += error.problems
    if problems:
        raise ConfigError(*problems)
