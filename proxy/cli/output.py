"""Human output: aligned ``rich`` tables, or the raw JSON answer with ``--json``.

Commands hand ``show`` the answer and a function that renders it; nothing else
prints. Values are formatted once, here: ``*_ts`` and ``*_until`` epochs as UTC
ISO times, booleans as yes/no, lists joined, absent values as blanks. Without a
terminal the table width is fixed and wide, so piped output is not cut at 80
columns.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from proxy.cli.client import Globals
from proxy.clock import iso_utc

PIPE_WIDTH = 200


def _print(renderable: Table) -> None:
    """Print on the current stdout (click's test runner swaps it); no trailing blanks in pipes."""
    stream = sys.stdout
    if stream.isatty():
        Console(file=stream, highlight=False).print(renderable)
        return
    plain = Console(width=PIPE_WIDTH, highlight=False, no_color=True, color_system=None)
    with plain.capture() as captured:
        plain.print(renderable)
    for line in captured.get().splitlines():
        click.echo(line.rstrip())


def show(data: Any, render: Callable[[Any], None]) -> None:
    """Print ``data`` as JSON with ``--json``, else through ``render``."""
    options = click.get_current_context().find_object(Globals)
    if options is not None and options.as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        render(data)


def cell(name: str, value: Any) -> str:
    """One value as text; ``name`` decides whether an integer is a time."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and (name.endswith(("_ts", "_until", "expires_at"))):
        return iso_utc(value) or ""
    if isinstance(value, list | tuple):
        return ", ".join(cell(name, v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def table(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str | tuple[str, str | Callable[[Mapping[str, Any]], Any]]],
    *,
    title: str | None = None,
    empty: str = "(none)",
) -> None:
    """A table with one row per record; a column is a key, or (header, key or function)."""
    rows = list(rows)
    if not rows:
        click.echo(empty)
        return
    grid = Table(
        box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False, show_edge=False
    )
    specs = [(c, c) if isinstance(c, str) else c for c in columns]
    for header, _ in specs:
        grid.add_column(header.upper().replace("_", " "), overflow="fold")
    for row in rows:
        values = []
        for header, source in specs:
            value = source(row) if callable(source) else row.get(source)
            values.append(cell(source if isinstance(source, str) else header, value))
        grid.add_row(*values)
    _print(grid)


def fields(record: Mapping[str, Any], *, skip: Iterable[str] = ("ok",)) -> None:
    """A two-column table of one record's fields, in the answer's order."""
    hidden = set(skip)
    grid = Table(box=None, show_header=False, pad_edge=False)
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for name, value in record.items():
        if name not in hidden:
            grid.add_row(name, cell(name, value))
    _print(grid)


def done(text: str) -> None:
    """A one-line confirmation of a command that changed something."""
    click.echo(text)
