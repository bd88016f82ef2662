"""What every CLI module shares: the ``--db`` option, one-line failures, opening a ledger.

Kept apart from ``gateway.cli`` because that module runs as ``__main__`` under
``python -m gateway.cli`` and must not be imported a second time by its sub-commands.
Never prints a traceback for bad input: every failure here is one line and exit 1.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import NoReturn, TypeVar

import typer
from sqlalchemy import Engine

DEFAULT_DB = "sqlite:///gateway-ledger.sqlite"
DbOption = typer.Option(DEFAULT_DB, "--db", help="SQLAlchemy URL of the ledger (SQLite file or postgresql+psycopg://…).")

T = TypeVar("T")


def fail(lines: str | list[str]) -> NoReturn:
    for line in [lines] if isinstance(lines, str) else lines:
        typer.echo(str(line), err=True)
    raise typer.Exit(1)


def with_ledger(db: str, use: Callable[[Engine], T]) -> T:
    """Run ``use`` on an existing ledger; a missing or foreign database is one line, not a traceback."""
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.ledger.schema import normalise_url, open_engine

    url = make_url(normalise_url(db))
    # Opening a SQLite file that is not there would create an empty one: a reader must not.
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        fail(f"no ledger at {url.database} (give it with --db)")
    try:
        engine = open_engine(db, create=False)
        if not inspect(engine).has_table("confirmations"):
            fail(f"{db} holds no ledger yet; load master data (`gateway masterdata load`) or run the gateway first")
        return use(engine)
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        fail(f"cannot use the ledger at {db}: {str(cause).splitlines()[0] if str(cause) else type(cause).__name__}")


def age_text(age: timedelta) -> str:
    return f"{age.days}d {age.seconds // 3600}h {age.seconds // 60 % 60}m"
