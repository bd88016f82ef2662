"""Which database errors go away by themselves, and which say something is wrong.

The writer retries a transient failure whole, with backoff, for as long as it lasts;
anything else is a refusal of what was written (a bug, a value the database will not
take, a schema that does not match) and is handled as such: retrying it would only
repeat it forever while counting goes on in memory.

Transient: the database is busy or locked, the connection was lost or refused, the
server is shutting down or restarting, or a concurrent transaction won (serialization
failure, deadlock). Everything else, including SQLite's "no such table/column" and SQL
syntax errors (which are also ``OperationalError``), is not.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# SQLite primary result codes: the file is busy or locked by another connection, or cannot
# be reached right now (I/O error, cannot open: a network file system gone, a disk pulled).
_SQLITE_TRANSIENT = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN}
# PostgreSQL SQLSTATEs (and classes): serialization failure, deadlock, lock or statement
# timeout, too many connections, admin/crash shutdown, cannot connect now.
_PG_TRANSIENT = {"40001", "40P01", "55P03", "57014", "53300", "57P01", "57P02", "57P03", "57P05"}
_PG_TRANSIENT_CLASSES = {"08"}  # connection exception


def is_transient(exc: BaseException) -> bool:
    """True for errors that go away by themselves (see the module docstring)."""
    if isinstance(exc, DisconnectionError | PoolTimeout | TimeoutError | ConnectionError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        return _driver_error_is_transient(exc.orig)
    return _driver_error_is_transient(exc)


def _driver_error_is_transient(err: BaseException | None) -> bool:
    if isinstance(err, sqlite3.Error):
        code = getattr(err, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _SQLITE_TRANSIENT
    try:
        import psycopg
    except ImportError:  # pragma: no cover — psycopg is a dependency
        return False
    if isinstance(err, psycopg.Error):
        state = err.sqlstate
        if state is None:
            # No SQLSTATE: the client library's own error, i.e. the connection failed or
            # broke (refused, reset, closed); a programming error has its own class.
            return isinstance(err, psycopg.OperationalError) or (
                isinstance(err, psycopg.InterfaceError) and "closed" in str(err))
        return state in _PG_TRANSIENT or state[:2] in _PG_TRANSIENT_CLASSES
    return False


def short_error(exc: BaseException) -> str:
    """``Type: first line of the message``, at most 500 characters: for logs, dead letters, error reasons."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:500]
