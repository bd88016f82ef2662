"""Fault 5: the database is gone for a while; the gateway keeps reading and retries.

PostgreSQL: the ``TcpProxy`` between gateway and server resets every connection and
refuses new ones for 10 s. SQLite: another process holds the write lock (``BEGIN
EXCLUSIVE``). The machines keep counting; the writer keeps what is queued, retries with
backoff, logs ``ledger_commit_failed`` (its health: retries, failing since, queued
confirmations) and ``ledger_recovered``; the totals are exact afterwards.

On SQLite a commit waits at most the ledger's short busy timeout (3 s) for the lock;
after that it is a failed commit, retried with backoff and reported like any outage.
"""

from __future__ import annotations

import sqlite3
import time

import pytest
from sqlalchemy.engine import make_url

from tests.faults.harness import FaultLine

pytestmark = pytest.mark.slow


def test_postgres_connection_cut(pg_url, tmp_path, soak, soak_round):
    outage_s = 30.0 if soak else 10.0
    with FaultLine(pg_url, tmp_path, scenario="database gone", db_proxy=True) as line:
        line.sims.command("resume")
        time.sleep(1.5)
        line.db_proxy.set_mode("reset")
        line.faults += 1
        time.sleep(outage_s)
        assert line.gateway.poll() is None, "the gateway must ride out the outage"
        line.db_proxy.set_mode("pass")
        time.sleep(2.0)
        figures = line.finish()
        log = line.log_text()
    assert "ledger_commit_failed" in log and "ledger_recovered" in log
    assert figures.lost == 0


def test_sqlite_locked_by_another_writer(sqlite_url, tmp_path, soak, soak_round):
    lock_s = 40.0 if soak else 10.0
    with FaultLine(sqlite_url, tmp_path, scenario="database gone") as line:
        line.sims.command("resume")
        time.sleep(1.5)
        other = sqlite3.connect(make_url(sqlite_url).database, timeout=30, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            line.faults += 1
            time.sleep(lock_s)
            assert line.gateway.poll() is None, "the gateway must ride out the lock"
        finally:
            other.execute("ROLLBACK")
            other.close()
        time.sleep(2.0)
        figures = line.finish()
        log = line.log_text()
    assert "ledger_commit_failed" in log and "ledger_recovered" in log
    assert figures.lost == 0
