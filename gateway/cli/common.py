"""What every CLI module shares: the ``--db`` and ``--format`` options, one-line failures,
calling the application layer, and writing its answer as a table, JSON or CSV.

Never prints a traceback for bad input: every failure here is one line and exit 1.
Never decides anything about the ledger: the application layer (``gateway.app``) does.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, NoReturn, TypeVar

import typer
from sqlalchemy import Engine

DEFAULT_DB = "sqlite:///gateway-ledger.sqlite"
DbOption = typer.Option(DEFAULT_DB, "--db", envvar="GATEWAY_DB",
                        help="SQLAlchemy URL of the ledger (sqlite:///FILE or postgresql+psycopg://USER@HOST/DB); "
                             "also from the environment variable GATEWAY_DB, which keeps a password out of `ps`.")


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


FormatOption = typer.Option(Format.table, "--format", help="table (for people), json or csv (for programs).")

T = TypeVar("T")


def fail(lines: str | list[str]) -> NoReturn:
    for line in [lines] if isinstance(lines, str) else lines:
        typer.echo(str(line), err=True)
    raise typer.Exit(1)


def on_ledger(db: str, operation: Callable[..., T], *args: Any, create: bool = False, **kwargs: Any) -> T:
    """Open the ledger the guarded way, run one application-layer operation on it; an ``AppError`` is one line."""
    from gateway import logs
    from gateway.app import AppError
    from gateway.app.ledger import open_ledger

    # The command prints its answer; the ledger's log lines (each posting, after its commit) would
    # only repeat it, so just warnings go to stderr, and stdout stays the answer (JSON, CSV).
    logs.configure(level="warning")
    try:
        engine = open_ledger(db, create=create)
    except AppError as exc:
        fail(exc.detail)
    try:
        return operation(engine, *args, **kwargs)
    except AppError as exc:
        fail(exc.detail)
    finally:
        engine.dispose()


def with_ledger(db: str, use: Callable[[Engine], T]) -> T:
    """Run ``use`` on an existing ledger (see ``on_ledger``)."""
    return on_ledger(db, use)


def actor():
    """Who runs this command, for the audit trail: the OS user, this host, the command line without secrets."""
    from gateway.app.audit import cli_actor

    return cli_actor(sys.argv)


def parsed(parse: Callable[..., T], *args: Any) -> T:
    """A value typed on the command line, through the application layer's parser; a bad one is one line."""
    from gateway.app import AppError

    try:
        return parse(*args)
    except AppError as exc:
        fail(exc.detail)


def age_text(age: timedelta) -> str:
    return f"{age.days}d {age.seconds // 3600}h {age.seconds // 60 % 60}m"


# -- output -----------------------------------------------------------------------------


def emit(result: Any, fmt: Format, table: Callable[[Any], None], *, rows: type | None = None) -> None:
    """The answer of an operation as JSON (the models as they are), CSV, or ``table(result)`` for people.

    ``rows``: the model of a list's items, so that an empty list still has its CSV header."""
    if fmt is Format.json:
        import pydantic_core

        typer.echo(pydantic_core.to_json(result, indent=2).decode())
    elif fmt is Format.csv:
        write_csv(result, rows)
    else:
        table(result)


def write_csv(result: Any, rows: type | None = None) -> None:
    """Rows of a list; a report of several parts as sections, each after a ``# name`` line and a blank line
    between them (its single values first, as one row)."""
    from pydantic import BaseModel

    def is_rows(value: Any) -> bool:
        return isinstance(value, list) and bool(value) and isinstance(value[0], BaseModel | dict)

    sections: list[tuple[str, list]] = []
    if isinstance(result, list):
        sections.append(("", result))
    else:
        parts = {k for k, v in result if is_rows(v) or _list_of_rows(result, k) or isinstance(v, dict)}
        scalars = {k: v for k, v in result if k not in parts}
        if scalars:
            sections.append((type(result).__name__, [scalars]))
        for name, value in result:
            if isinstance(value, dict):
                sections.extend((key, part) for key, part in value.items() if isinstance(part, list))
            elif name in parts:
                sections.append((name, value))
    out = csv.writer(sys.stdout, lineterminator="\n")
    titled = len(sections) > 1
    for n, (name, items) in enumerate(sections):
        if titled:
            if n:
                out.writerow([])
            out.writerow([f"# {name}"])
        dicts = [row.model_dump() if isinstance(row, BaseModel) else row for row in items]
        if dicts:
            header = list(dicts[0])
        else:
            header = list(rows.model_fields) if rows and not name else _fields_of(result, name)
        out.writerow(header)
        for row in dicts:
            out.writerow([_cell(row.get(col)) for col in header])


def _list_of_rows(model: Any, field: str) -> bool:
    """Whether a model's field is a list of models (so an empty one is still a section)."""
    from typing import get_args

    from pydantic import BaseModel

    info = type(model).model_fields.get(field)
    args = get_args(info.annotation) if info else ()
    return bool(args) and isinstance(args[0], type) and issubclass(args[0], BaseModel)


def _fields_of(model: Any, field: str) -> list[str]:
    from typing import get_args

    info = type(model).model_fields.get(field) if not isinstance(model, list) else None
    args = get_args(info.annotation) if info else ()
    return list(args[0].model_fields) if args and hasattr(args[0], "model_fields") else []


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return ";".join(_cell(v) for v in value)
    return str(value)
