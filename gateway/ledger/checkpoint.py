"""SQLite only: copy the write-ahead log into the database file beside the writer, not in it.

SQLite's automatic checkpoint runs inside the commit that fills the WAL past 1 000 pages,
so every few seconds at thousands of changes/s one transaction also rewrites and, with
``synchronous=FULL``, fsyncs the database file — a 250–400 ms stall that every counter
change queued behind it waits out (``bench/e2e.py`` at 5 000 machines). Here the writer's
connection switches the automatic checkpoint off (``no_auto_checkpoint``) and a thread
runs a PASSIVE checkpoint once a second: it copies what no reader still needs and never
blocks the writer, who keeps appending to the log meanwhile.

Durability does not depend on it: a commit is durable once its WAL frames are synced.
If checkpoints fail, the log only grows; that is reported, and SQLite checkpoints again
when the last connection closes. Never used for PostgreSQL.
"""

from __future__ import annotations

import threading

import structlog
from sqlalchemy import Connection, Engine

log = structlog.get_logger("gateway.ledger")

INTERVAL_S = 1.0


def no_auto_checkpoint(conn: Connection) -> None:
    """For the writer's connection, inside its transaction (a per-connection setting)."""
    conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")


class Checkpointer:
    def __init__(self, engine: Engine, interval_s: float = INTERVAL_S) -> None:
        self._engine = engine
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger-checkpoint", daemon=True)
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                raw = self._engine.raw_connection()
                try:
                    # Outside any transaction: the DBAPI connection is in autocommit mode.
                    raw.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                finally:
                    raw.close()
                if self._failing:
                    log.info("wal_checkpoint_recovered")
                self._failing = False
            except Exception as exc:  # noqa: BLE001 — the log grows meanwhile; nothing is lost
                if not self._failing:
                    log.warning("wal_checkpoint_failed", error=str(exc),
                                hint="the SQLite write-ahead log grows until a checkpoint succeeds; "
                                     "check disk space and permissions of the ledger's folder")
                self._failing = True
