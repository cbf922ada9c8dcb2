"""The ``mail-proxy`` command: the server (``serve``), local tools and the REST client.

``main`` is the click group; each command group lives in its own module and is
registered here, so this file is the command list. Local commands (``serve``,
``config check``, ``keygen``) never touch the network; every other command talks
to a running proxy through ``client.Client``.

Exit codes (SPEC §17): 0 success, 1 failure (HTTP error, unreachable proxy, all
messages rejected), 2 usage or configuration error. Every error is one line on
stderr, usage errors included (``_OneLineGroup``); a traceback means a bug.

Shell completion comes from click: ``eval "$(_MAIL_PROXY_COMPLETE=bash_source mail-proxy)"``.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from proxy.cli import (
    accounts,
    command_log,
    instance,
    keygen,
    messages,
    send,
    serve,
    status,
    tenants,
    tokens,
)
from proxy.cli.client import DEFAULT_URL, PROG, Globals

__all__ = ["main"]


class _OneLineGroup(click.Group):
    """Commands listed in the order registered; errors, usage ones too, as one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as error:
            where = error.ctx.command_path.partition(" ")[2] if error.ctx else ""
            hint = f"{PROG} {where} --help".replace("  ", " ")
            click.echo(
                f"{PROG}: {_one_line(error.format_message()).rstrip('.')} (see '{hint}')", err=True
            )
            sys.exit(error.exit_code)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo(f"{PROG}: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _one_line(text: str) -> str:
    return " ".join(text.split())


@click.group(
    name=PROG,
    cls=_OneLineGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--url",
    envvar="GMP_URL",
    default=DEFAULT_URL,
    show_default=True,
    metavar="URL",
    help="Base URL of the proxy (or GMP_URL).",
)
@click.option(
    "--token",
    envvar="GMP_API_TOKEN",
    metavar="TOKEN",
    help="Admin or tenant API token (or GMP_API_TOKEN).",
)
@click.option(
    "--tenant",
    envvar="GMP_TENANT",
    metavar="ID",
    help="Tenant the command acts on (or GMP_TENANT).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON response.")
@click.version_option(package_name="mail-proxy", prog_name=PROG)
@click.pass_context
def main(
    ctx: click.Context, url: str, token: str | None, tenant: str | None, as_json: bool
) -> None:
    """Multi-tenant outbound mail proxy: REST in, SMTP out, reports back to each tenant.

    'serve' runs the proxy; 'config check' and 'keygen' work locally; every other
    command talks to a running proxy over its REST API. The global options may also
    follow the command: mail-proxy tenants list --json.

    Exit codes: 0 success, 1 failure (HTTP error, unreachable proxy, all messages
    rejected), 2 usage or configuration error.
    """
    ctx.obj = Globals(url=url, token=token or None, tenant=tenant or None, as_json=as_json)


for _command in (
    status.status,
    status.stats,
    status.run_now,
    status.suspend,
    status.activate,
    tenants.tenants,
    tokens.tokens,
    accounts.accounts,
    messages.messages,
    send.send,
    instance.instance,
    command_log.command_log,
    serve.serve,
    serve.config,
    keygen.keygen,
):
    main.add_command(_command)
