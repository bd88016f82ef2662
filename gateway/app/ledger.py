"""Opening the ledger, the same guarded way for every command and request.

``open_ledger(url)`` either returns an engine on a ledger of this gateway's schema
version or raises one ``AppError`` that says what is wrong with the URL or the database
and what to do, with the password masked (``***``). A read never creates anything: a
missing SQLite file is "no ledger at …", an empty database is "holds no ledger yet". Only
``create=True`` (loading master data) makes a new ledger. An in-memory SQLite database
is refused: whatever a command wrote there would be gone when it ends.

``ledger_errors`` turns what the database says later, in the middle of an operation
(read-only file, server gone), into the same kind of one-sentence ``AppError``.

Never here: printing, retrying (``gateway run`` waits for its database itself, see
``gateway.service.open_ledger_when_reachable``), or any posting.
"""

from __future__ import annotations

from decimal import Decimal

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import ParamSpec, TypeVar

from sqlalchemy import Engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from gateway.app.errors import AppError
from gateway.ledger import failures

URL_HINT = "write sqlite:///FILE (a file; sqlite:////abs/path) or postgresql+psycopg://USER@HOST:5432/DATABASE"
# PostgreSQL: how long to wait for the server before saying it cannot be reached.
CONNECT_TIMEOUT_S = 5

P = ParamSpec("P")
T = TypeVar("T")


def masked(url: str | URL) -> str:
    """The URL as a person may see it: any password replaced by ``***``."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def check_url(url: str, *, create: bool = False) -> URL:
    """The parsed URL of a ledger, or an ``AppError`` if it cannot name one; no I/O beyond the file system.

    ``create``: the command may create the ledger, so a missing SQLite file is fine if its
    folder exists."""
    if "://" not in url:
        raise AppError("invalid", f"--db {url!r} is not a database URL: {URL_HINT}")
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise AppError("invalid", f"--db {masked(url)} is not a database URL: {URL_HINT}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            raise AppError("invalid", f"--db {masked(parsed)} is an in-memory database: what a command writes there "
                                      "is gone when it ends; give a file: sqlite:///FILE")
        path = Path(_sqlite_path(database, parsed))
        if not path.exists():
            if not create:
                raise AppError("not_found", f"no ledger at {path} (give it with --db)")
            if not path.parent.is_dir():
                raise AppError("not_found", f"cannot create a ledger at {path}: folder {path.parent} does not exist")
        elif path.is_dir():
            raise AppError("invalid", f"--db {masked(parsed)} names a folder, not a ledger file")
        elif not _writable(path):
            raise _read_only(path)
    elif backend != "postgresql":
        raise AppError("invalid", f"--db {masked(parsed)}: the ledger runs on SQLite or PostgreSQL, not {backend}; "
                                  f"{URL_HINT}")
    elif not parsed.database:
        raise AppError("invalid", f"--db {masked(parsed)} names no database: add /DATABASE after the host")
    return parsed


def open_ledger(url: str, *, create: bool = False) -> Engine:
    """An engine on the ledger at ``url``, checked: reachable, a ledger, of this schema version.

    ``create``: make the ledger's tables in an empty database (or a new SQLite file)."""
    from sqlalchemy import inspect

    from gateway.ledger.schema import LedgerVersionError, open_engine

    parsed = check_url(url, create=create)
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        parsed = parsed.update_query_dict({"connect_timeout": str(CONNECT_TIMEOUT_S)})
    target = parsed.render_as_string(hide_password=False)
    with ledger_errors(parsed):
        try:
            engine = open_engine(target, create=create)
        except LedgerVersionError as exc:
            raise AppError("conflict", str(exc), title="ledger of another schema version") from None
        if not create and not inspect(engine).has_table("confirmations"):
            engine.dispose()
            raise AppError("not_found", f"{masked(parsed)} holds no ledger yet; load master data "
                                        "(`gateway masterdata load`) or run the gateway first")
    return engine


@contextmanager
def ledger_errors(url: str | URL) -> Iterator[None]:
    """What the database says, as one ``AppError`` naming the (masked) ledger URL."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise database_error(url, exc) from None


def on_ledger(fn: Callable[P, T]) -> Callable[P, T]:
    """Decorate an operation whose first argument is the engine: database failures become ``AppError``."""

    @wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        engine = args[0] if args else kwargs["engine"]
        for value in (*args[1:], *kwargs.values()):
            storable(value)
        with ledger_errors(engine.url):  # type: ignore[union-attr]
            return fn(*args, **kwargs)

    return call


# The ledger's integer columns are signed 64-bit on every backend.
MAX_LEDGER_INT = 2**63 - 1
# Quantities are NUMERIC(38,12) on PostgreSQL (below 10^26) and are summed into stock; one
# posting of a quadrillion units (a million tonnes in grams) is beyond any plant and leaves
# room for sums of many of them.
MAX_QUANTITY = Decimal(10) ** 15


def storable(value: object) -> None:
    """Refuse what no ledger can hold before a query is built from it: whole numbers beyond
    64 bits (an id typed with too many digits), quantities that are not finite or beyond
    ``MAX_QUANTITY`` (``1e30`` kg), and text that is not Unicode (a lone
    surrogate, which a terminal or a JSON body can carry). Checked here, at the one door
    every operation passes, so that no front end meets a driver's traceback."""
    if isinstance(value, bool):
        return
    if isinstance(value, Decimal):
        if not value.is_finite() or abs(value) >= MAX_QUANTITY:
            raise AppError("invalid", f"{value} is out of range: a quantity or amount in the ledger is a finite "
                                      f"number below {MAX_QUANTITY:,} in its unit")
    elif isinstance(value, int):
        if abs(value) > MAX_LEDGER_INT:
            raise AppError("invalid", f"{value} is out of range: no id or number in the ledger is beyond "
                                      f"±{MAX_LEDGER_INT}")
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            shown = value.encode("utf-8", "backslashreplace").decode()
            raise AppError("invalid", f"'{shown}' is not valid text (it holds a lone surrogate, shown as \\u…); "
                                      "type it again") from None
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            storable(item)
    elif isinstance(value, dict):
        for item in value.values():
            storable(item)
    elif hasattr(value, "model_dump"):  # a pydantic input model
        storable(value.model_dump())


def database_error(url: str | URL, exc: SQLAlchemyError) -> AppError:
    """One sentence for a database failure: which ledger, what is wrong, what to do."""
    where = masked(url)
    parsed = url if isinstance(url, URL) else _parse(url)
    cause = getattr(exc, "orig", None) or exc
    text = " ".join(str(cause).split()) or type(cause).__name__
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    server = f"{parsed.host or 'localhost'}:{parsed.port or 5432}" if parsed is not None else where
    if "readonly database" in text or "read-only" in text:
        if parsed is not None and parsed.get_backend_name() == "sqlite":
            return _read_only(Path(_sqlite_path(parsed.database or "", parsed)))
        return AppError("unavailable", f"the ledger at {where} is read-only: {first}")
    if m := re.search(r'database "([^"]+)" does not exist', text):
        return AppError("not_found", f"no database {m.group(1)!r} on the PostgreSQL server at {server}: "
                                     f"create it (createdb {m.group(1)}) or fix the name in --db")
    if m := re.search(r'role "([^"]+)" does not exist', text):
        return AppError("unavailable", f"the PostgreSQL server at {server} has no user {m.group(1)!r}: "
                                       "fix the user in --db (or GATEWAY_DB)")
    if "password authentication failed" in text or "no password supplied" in text:
        return AppError("unavailable", f"the PostgreSQL server at {server} refused the login of {where}: "
                                       "password authentication failed; fix user and password in --db (or GATEWAY_DB)")
    if ("Connection refused" in text or "failed to resolve host" in text or "timeout expired" in text
            or "could not translate host name" in text or "No route to host" in text):
        return AppError("unavailable", f"cannot reach the PostgreSQL server at {server}: "
                                       f"{_reach_reason(text)}; start it or fix the host and port in --db")
    if "unable to open database file" in text:
        return AppError("unavailable", f"cannot open the ledger at {where}: unable to open database file "
                                       "(check the folder exists and is writable)")
    found = failures.cause(exc)
    if found is not None and found.name in _NAMED:
        # Nothing was written: the operation's transaction rolled back whole.
        todo = found.todo.replace("--db URL", f"--db {where}")
        return AppError(_NAMED[found.name], f"{found.what} at {where} ({first}): {todo}; nothing was written")
    return AppError("unavailable", f"cannot use the ledger at {where}: {first}")


# The causes ``database_error`` names in the words of ``gateway.ledger.failures.cause`` (the others
# above have their own sentences, naming the server and the user), and how a front end reports them.
_NAMED = {"disk_full": "unavailable", "permission_denied": "unavailable", "schema_mismatch": "conflict",
          "another_writer": "conflict", "locked": "unavailable"}


def _reach_reason(text: str) -> str:
    if "failed to resolve host" in text or "could not translate host name" in text:
        return "unknown host name"
    if "timeout expired" in text:
        return f"no answer within {CONNECT_TIMEOUT_S} s"
    return "connection refused"


def _read_only(path: Path) -> AppError:
    return AppError("unavailable", f"the ledger file {path} is read-only: SQLite needs write access to the file and "
                                   "its folder, also to read (WAL mode); fix the permissions or copy it elsewhere")


def _writable(path: Path) -> bool:
    return os.access(path, os.R_OK | os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)


def _sqlite_path(database: str, parsed: URL) -> str:
    """The file of a SQLite URL (``file:…?uri=true`` URLs name it after ``file:``)."""
    if parsed.query.get("uri") in ("true", "1") and database.startswith("file:"):
        return database[len("file:"):].split("?", 1)[0]
    return database


def _parse(url: str) -> URL | None:
    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        return None
