"""SQLite only: the write-ahead log copied into the database file by a thread of its own, not by the writer.

In WAL mode a commit appends the transaction's pages to the ``-wal`` file; a *checkpoint*
copies them into the database file (and syncs it) so that the log can start over. By
default SQLite runs one inside whichever COMMIT finds the log longer than 1 000 pages —
and with the ledger's random-keyed indexes (confirmation ids are hashes) a transaction of
500 confirmations dirties more pages than that, so nearly every commit of the ledger
writer paid for one, in time every change of the transaction waits for and in the writer
thread's CPU: ``python bench/writer_tx.py --confirmations 500 --transactions 100 --ids hashed
--checkpoints commit|thread`` measured COMMIT at 20–22 ms against 8 ms and the whole
transaction at 108 ms against 85 ms (with two outputs: 30–33 against 12 ms, 122–132 against
110 ms).

So the writer's connections do not checkpoint (``wal_autocheckpoint=0``, set by the writer
on the connection of each transaction; the setting stays with the pooled connection, which
is fine: whatever else commits on it in this process is small) and a ``Checkpointer``
thread does, after the writer's commits, at most once per ``interval_s``, on a connection
from the engine's pool: a PASSIVE checkpoint copies what no reader still needs and waits
for nobody; the writer appends to the log meanwhile. Python's sqlite3 module releases the
GIL while SQLite works, so the copy runs beside the writer, not in its time.

Nothing about durability changes: a committed transaction is in the log (synced,
``synchronous=FULL``) whether or not it was copied yet; after a crash the next connection
reads the log. Other processes on the ledger (the outbox relay, the CLI) keep SQLite's
own checkpoints at their commits.

Must never: run a checkpoint that waits for readers or writers (RESTART, TRUNCATE), or
let a failed checkpoint reach the writer — the next one copies what this one did not.
"""

from __future__ import annotations

import threading

import structlog
from sqlalchemy import Engine

from gateway.ledger.failures import short_error

log = structlog.get_logger("gateway.ledger")

CHECKPOINT_INTERVAL_S = 1.0
NO_AUTOCHECKPOINT = "PRAGMA wal_autocheckpoint=0"


def applies(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


class Checkpointer:
    """A thread that runs a PASSIVE checkpoint after ``due()`` was called, at most once per ``interval_s``."""

    def __init__(self, engine: Engine, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        self._engine = engine
        self._interval_s = interval_s
        self._due = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger-checkpoint", daemon=True)
        self.checkpoints = 0  # run since start: for tests and health
        self.last_result: tuple[int, int, int] | None = None  # (busy, frames in the log, frames copied)

    def start(self) -> None:
        self._thread.start()

    def due(self) -> None:
        """Something was committed: copy it over soon (called by the writer after a commit; cheap)."""
        self._due.set()

    def stop(self, timeout: float | None = None) -> None:
        """A last checkpoint of what was committed, then end."""
        self._stop.set()
        self._due.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._due.wait()
            self._due.clear()
            self.checkpoint()
            self._stop.wait(self._interval_s)  # at most one per interval; a stop ends the wait
        self.checkpoint()  # what the last commits wrote

    def checkpoint(self) -> None:
        """One PASSIVE checkpoint on a pooled connection (autocommit: no BEGIN around the pragma)."""
        try:
            conn = self._engine.raw_connection()
        except Exception as exc:  # noqa: BLE001 — the writer reports the database; the next one tries again
            _failed(exc)
            return
        try:
            cursor = conn.cursor()
            try:
                row = cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                cursor.close()
            self.checkpoints += 1
            self.last_result = tuple(row) if row is not None else None
        except Exception as exc:  # noqa: BLE001 — never the writer's problem (module docstring)
            _failed(exc)
        finally:
            conn.close()


def _failed(exc: Exception) -> None:
    log.warning("ledger_checkpoint_failed", error=short_error(exc),
                hint="the log grows until a checkpoint succeeds; nothing committed is lost")
