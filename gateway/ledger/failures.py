"""Which database errors go away by themselves, and which say something is wrong.

The writer retries a transient failure whole, with backoff, for as long as it lasts;
anything else is a refusal of what was written (a bug, a value the database will not
take, a schema that does not match) and is handled as such: retrying it would only
repeat it forever while counting goes on in memory.

Transient: the database is busy or locked, the connection was lost or refused, the
server is shutting down or restarting, a concurrent transaction won (serialization
failure, deadlock), or the ledger cannot take any write right now: its disk is full, it is
read-only (a file's mode, a read-only mount, a PostgreSQL standby after a failover), or the
user lacks the permission. A person fixes those, and then the same transaction goes in
whole; treating them as refusals would set every machine's changes aside for what is no
fault of theirs. Everything else, including SQLite's "no such table/column" and SQL syntax
errors (which are also ``OperationalError``), is not.

``cause`` names the real cause of a database failure for a person, with what to do next:
a full disk, a read-only ledger, a permission denied, tables of another schema version,
another writer on the same rows, a server that refuses connections, a failed login, a
database that does not exist. The writer's log lines and the application layer's messages
(``gateway.app.ledger.database_error``) both say it in these words.
"""

from __future__ import annotations

import errno
import re
import sqlite3
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# SQLite primary result codes: the file is busy or locked by another connection, or cannot
# be reached right now (I/O error, cannot open: a network file system gone, a disk pulled).
_SQLITE_TRANSIENT = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN,
                     sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM}
# PostgreSQL SQLSTATEs (and classes): serialization failure, deadlock, lock or statement
# timeout, disk full, too many connections, admin/crash shutdown, cannot connect now, read-only
# transaction (a standby), insufficient privilege.
_PG_TRANSIENT = {"40001", "40P01", "55P03", "57014", "53100", "53300", "57P01", "57P02", "57P03", "57P05", "25006",
                 "42501"}
_PG_TRANSIENT_CLASSES = {"08"}  # connection exception


def is_transient(exc: BaseException) -> bool:
    """True for errors that go away by themselves (see the module docstring)."""
    if isinstance(exc, DisconnectionError | PoolTimeout | TimeoutError | ConnectionError):
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        return _driver_error_is_transient(exc.orig)
    return _driver_error_is_transient(exc)


def lost_to_transient(exc: BaseException) -> bool:
    """True if ``exc`` is transient, or was raised while handling one (up its ``__context__`` chain).

    A savepoint whose work failed on a full disk or an I/O error cannot always be rolled back
    alone: SQLite then rolls back the whole transaction, and the savepoint's own rollback fails
    with "no such savepoint". What follows would run outside any transaction, so such a
    failure is the transaction's, retried whole, never a refusal of the savepoint's content."""
    return transient_root(exc) is not None


def transient_root(exc: BaseException) -> BaseException | None:
    """The transient error ``exc`` is or was raised while handling (see ``lost_to_transient``), if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if is_transient(exc):
            return exc
        seen.add(id(exc))
        exc = exc.__context__
    return None


def root_error(exc: BaseException) -> str:
    """``short_error`` of what really failed: the transient error behind ``exc`` if there is one
    (a full disk rather than the "no such savepoint" it caused), else ``exc`` itself."""
    return short_error(transient_root(exc) or exc)


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


@dataclass(frozen=True)
class Cause:
    """What is really wrong with the ledger, in words a person acts on."""

    name: str  # disk_full, read_only, permission_denied, schema_mismatch, another_writer, locked,
    #            connection_refused, unknown_host, no_answer, authentication_failed, database_missing
    what: str  # what is wrong
    todo: str  # what to do next

    @property
    def hint(self) -> str:
        return f"{self.what}: {self.todo}"


DISK_FULL = Cause("disk_full", "no space left on the ledger's disk",
                  "free space; nothing is lost, the PLC counters keep the units")
READ_ONLY = Cause("read_only", "the ledger is read-only (file or folder permissions, a read-only mount, or a "
                               "PostgreSQL standby)",
                  "give the gateway write access to the file and its folder, or point --db at the primary server")
PERMISSION_DENIED = Cause("permission_denied", "permission denied on the ledger",
                          "grant the database user the rights on the ledger's tables (GRANT SELECT, INSERT, UPDATE, "
                          "DELETE ON ALL TABLES IN SCHEMA … TO …), or for a SQLite file fix its owner and mode")
SCHEMA_MISMATCH = Cause("schema_mismatch", "the ledger's tables are not those of this gateway's schema version",
                        "run `gateway db upgrade --db URL` (back the ledger up first), or run the gateway version "
                        "that wrote this ledger")
ANOTHER_WRITER = Cause("another_writer", "another writer stored the same change first: a second gateway (or one "
                                         "whose lease expired) is posting for these machines",
                       "see `gateway status`; only one gateway may own a machine — stop the other or run it with "
                       "--standby; what is already in the ledger is not posted twice")
LOCKED = Cause("locked", "another process holds the ledger's write lock (a running gateway or a long command)",
               "it is retried; if it lasts, see `gateway status` and what else opened the ledger")
CONNECTION_REFUSED = Cause("connection_refused", "the database server refuses connections",
                           "start it, or fix the host and port in --db (or GATEWAY_DB); nothing is lost, the PLC "
                           "counters keep the units")
UNKNOWN_HOST = Cause("unknown_host", "the database server's host name is unknown",
                     "fix the host in --db (or GATEWAY_DB)")
NO_ANSWER = Cause("no_answer", "the database server does not answer",
                  "check the network and the server; nothing is lost, the PLC counters keep the units")
AUTHENTICATION_FAILED = Cause("authentication_failed", "the database server refused the login",
                              "fix user and password in --db (or GATEWAY_DB), or the server's pg_hba.conf")
DATABASE_MISSING = Cause("database_missing", "the database named in --db does not exist",
                         "create it (createdb NAME) or fix the name in --db")

_SQLITE_CAUSES = {sqlite3.SQLITE_FULL: DISK_FULL, sqlite3.SQLITE_READONLY: READ_ONLY,
                  sqlite3.SQLITE_PERM: PERMISSION_DENIED, sqlite3.SQLITE_BUSY: LOCKED, sqlite3.SQLITE_LOCKED: LOCKED}
_PG_CAUSES = {"53100": DISK_FULL, "25006": READ_ONLY, "42501": PERMISSION_DENIED, "42P01": SCHEMA_MISMATCH,
              "42703": SCHEMA_MISMATCH, "23505": ANOTHER_WRITER, "28P01": AUTHENTICATION_FAILED,
              "28000": AUTHENTICATION_FAILED, "3D000": DATABASE_MISSING, "55P03": LOCKED}
# By the words of the message, for what has no code (a connection that failed before a session
# existed, an OSError): the driver's own wording, as PostgreSQL and SQLite print it.
_BY_TEXT = [
    (re.compile(r"database or disk is full|No space left on device|could not extend file", re.I), DISK_FULL),
    (re.compile(r"readonly database|read-only", re.I), READ_ONLY),
    (re.compile(r"permission denied", re.I), PERMISSION_DENIED),
    (re.compile(r"no such (table|column)|relation \S+ does not exist|column \S+ does not exist"), SCHEMA_MISMATCH),
    (re.compile(r"UNIQUE constraint failed: confirmations\.id|duplicate key value"), ANOTHER_WRITER),
    (re.compile(r"database is locked"), LOCKED),
    (re.compile(r"password authentication failed|no password supplied|role \S+ does not exist"), AUTHENTICATION_FAILED),
    (re.compile(r"database \S+ does not exist"), DATABASE_MISSING),
    (re.compile(r"Connection refused"), CONNECTION_REFUSED),
    (re.compile(r"failed to resolve host|could not translate host name"), UNKNOWN_HOST),
    (re.compile(r"timeout expired|No route to host"), NO_ANSWER),
]


def cause(exc: BaseException) -> Cause | None:
    """The real cause of a database failure, if it is one of those a person can act on (module docstring);
    looked for in ``exc`` and then in what it was raised while handling (see ``lost_to_transient``)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        found = _cause_of(exc)
        if found is not None:
            return found
        seen.add(id(exc))
        exc = exc.__context__
    return None


def _cause_of(exc: BaseException) -> Cause | None:
    from gateway.ledger.schema import LedgerVersionError

    if isinstance(exc, LedgerVersionError):
        return SCHEMA_MISMATCH
    err = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(err, OSError) and err.errno is not None:
        found = {errno.ENOSPC: DISK_FULL, errno.EROFS: READ_ONLY, errno.EACCES: PERMISSION_DENIED,
                 errno.EPERM: PERMISSION_DENIED, errno.ECONNREFUSED: CONNECTION_REFUSED}.get(err.errno)
        if found:
            return found
    if isinstance(err, sqlite3.Error):
        code = getattr(err, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _SQLITE_CAUSES:
            return _SQLITE_CAUSES[code & 0xFF]
    state = getattr(err, "sqlstate", None)
    if isinstance(state, str) and state in _PG_CAUSES:
        return _PG_CAUSES[state]
    text = " ".join(str(err).split())
    return next((c for pattern, c in _BY_TEXT if pattern.search(text)), None)
