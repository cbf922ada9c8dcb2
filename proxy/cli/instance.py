"""``mail-proxy instance``: show and change the instance settings (SPEC §3.12, admin token).

``set`` takes ``KEY=VALUE`` pairs; keys are checked here against the settings the
API accepts (the API would silently ignore an unknown one), and values are typed
by key: integers, booleans, or text.
"""

from __future__ import annotations

from typing import Any

import click

from proxy.cli import output
from proxy.cli.client import Client, remote

INT_KEYS = frozenset({"bounce_imap_port", "bounce_poll_interval"})
BOOL_KEYS = frozenset({"bounce_enabled", "bounce_imap_ssl"})
TEXT_KEYS = frozenset(
    {"name", "api_token", "bounce_imap_host", "bounce_imap_user", "bounce_imap_password"}
    | {"bounce_imap_folder", "bounce_return_path", "bounce_processed_folder"}
)
KEYS = INT_KEYS | BOOL_KEYS | TEXT_KEYS
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_assignments(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs to a typed ``PUT /instance`` body; a bad pair is a usage error."""
    body: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep:
            raise click.BadParameter(f"'{pair}' is not KEY=VALUE", param_hint="KEY=VALUE")
        if key not in KEYS:
            raise click.BadParameter(
                f"unknown key '{key}' (one of: {', '.join(sorted(KEYS))})", param_hint="KEY=VALUE"
            )
        body[key] = _typed(key, text)
    return body


def _typed(key: str, text: str) -> Any:
    if key in INT_KEYS:
        try:
            return int(text)
        except ValueError:
            raise click.BadParameter(f"{key} must be an integer", param_hint="KEY=VALUE") from None
    if key in BOOL_KEYS:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise click.BadParameter(f"{key} must be true or false", param_hint="KEY=VALUE")
    return text


@click.group()
def instance() -> None:
    """Show or change instance settings.

    Name, admin token and bounce mailbox (admin token).
    """


@instance.command("show")
@remote
def show_instance(client: Client) -> None:
    """Show the instance settings (secrets only as *_set flags)."""
    output.show(client.get("/instance"), output.fields)


@instance.command("set")
@click.argument("pairs", metavar="KEY=VALUE...", nargs=-1, required=True)
@remote
def set_instance(client: Client, pairs: tuple[str, ...]) -> None:
    """Change settings, e.g. `bounce_enabled=true bounce_imap_host=imap.example.net`."""
    body = parse_assignments(pairs)
    data = client.put("/instance", body)
    output.show(data, lambda _: output.done(f"ok: {', '.join(body)} updated"))


@instance.command("reload-bounce")
@remote
def reload_bounce(client: Client) -> None:
    """Restart the bounce poller with the stored settings."""
    data = client.post("/instance/reload-bounce")
    output.show(data, lambda _: output.done("ok: bounce poller reloaded"))
