"""The REST client behind every remote command: one request, one answer or one error line.

This is the one module that sees ``requests``' exceptions: a refused connection,
a timeout or an error status becomes a ``Failure`` (exit 1) whose message is one
line, and a malformed ``--url`` a usage error (exit 2). Commands get a ``Client``
through ``@remote``, which also accepts the global options after the command name.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import click
import requests

PROG = "mail-proxy"
DEFAULT_URL = "http://127.0.0.1:8000"
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
TOKEN_HEADER = "X-API-Token"  # noqa: S105 (a header name, not a secret)
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


class Failure(click.ClickException):
    """A command that ran but failed (exit 1), shown as one line on stderr."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"{PROG}: {' '.join(self.message.split())}", err=True)


@dataclass
class Globals:
    """The global options, from flags (before or after the command) or ``GMP_*``."""

    url: str = DEFAULT_URL
    token: str | None = None
    tenant: str | None = None
    as_json: bool = False


class Client:
    """Calls the proxy's REST API; every answer is the parsed JSON body."""

    def __init__(self, options: Globals, session: requests.Session | None = None) -> None:
        url = options.url.strip().rstrip("/")
        if not re.match(r"^https?://[^\s/]+", url):
            raise click.UsageError(f"invalid --url '{options.url}': expected http(s)://host[:port]")
        self.url = url
        self.options = options
        self._session = session or requests.Session()

    @property
    def tenant(self) -> str | None:
        return self.options.tenant

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.call("POST", path, params=params, body=body)

    def put(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.call("PUT", path, params=params, body=body)

    def delete(self, path: str, **params: Any) -> Any:
        return self.call("DELETE", path, params=params)

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """One request; a 2xx JSON answer is returned, anything else raises ``Failure``."""
        headers = {TOKEN_HEADER: self.options.token} if self.options.token else {}
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        try:
            response = self._session.request(
                method,
                self.url + path,
                params=query,
                json=body,
                headers=headers,
                timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
            )
        except requests.Timeout:
            raise Failure(
                f"the proxy at {self.url} did not answer within {READ_TIMEOUT_S:g} s"
            ) from None
        except requests.ConnectionError as error:
            raise Failure(
                f"cannot reach the proxy at {self.url} ({_reason(error)}); is it running? "
                "(set --url or GMP_URL)"
            ) from None
        except requests.RequestException as error:
            raise Failure(f"request to {self.url} failed: {type(error).__name__}") from None
        return self._answer(response)

    def _answer(self, response: requests.Response) -> Any:
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.ok and data is not None:
            return data
        if self.options.as_json and data is not None:
            click.echo(_json_text(data))
        raise Failure(error_line(response.status_code, response.reason, data))


def error_line(status: int, reason: str | None, data: Any) -> str:
    """``HTTP 404: Tenant 'x' not found``, with a hint where one helps; pure."""
    text = reason or "error"
    if isinstance(data, dict) and data.get("error"):
        text = str(data["error"])
        detail = data.get("detail")
        if isinstance(detail, list) and len(detail) > 1:
            text = "; ".join(_problem(p) for p in detail)
        rejected = data.get("rejected")
        if rejected:
            text += ": " + "; ".join(_rejection(r) for r in rejected)
    hint = ""
    if status == 401:
        hint = " (check --token or GMP_API_TOKEN)"
    elif status == 422 and "tenant_id" in text:
        hint = " (give --tenant or GMP_TENANT)"
    return " ".join(f"HTTP {status}: {text}{hint}".split())


def _problem(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(part) for part in item.get("loc", ()))
    return f"{where}: {item.get('msg', '')}"


def _rejection(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    return f"{item.get('id')} ({item.get('field')}): {item.get('reason')}"


def _reason(error: Exception) -> str:
    found = _ERRNO_TEXT.search(str(error))
    return found.group(1).strip().lower() if found else "connection failed"


def _query_value(value: Any) -> Any:
    return ("true" if value else "false") if isinstance(value, bool) else value


def _json_text(data: Any) -> str:
    import json  # noqa: PLC0415 (only for --json)

    return json.dumps(data, indent=2, ensure_ascii=False)


def _override(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Apply a global option given after the command name (None/False = not given)."""
    if value:
        setattr(ctx.ensure_object(Globals), param.name or "", value)


def remote(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command a ``Client`` as first argument; accept the global options after it too."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        return command(Client(ctx.ensure_object(Globals)), *args, **kwargs)

    wrapper = click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=_override,
        help="Print the raw JSON response.",
    )(wrapper)
    for flag, name, text in (
        ("--tenant", "tenant", "Tenant to act on (or GMP_TENANT)."),
        ("--token", "token", "API token (or GMP_API_TOKEN)."),
        ("--url", "url", "Base URL of the proxy (or GMP_URL)."),
    ):
        wrapper = click.option(
            flag, name, metavar=name.upper(), expose_value=False, callback=_override, help=text
        )(wrapper)
    return wrapper
