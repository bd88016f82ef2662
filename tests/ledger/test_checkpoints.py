"""SQLite's log copied into the database file by the checkpoint thread, not inside the writer's COMMIT."""

from __future__ import annotations

import os
import time

import pytest
from sqlalchemy import insert
from structlog.testing import capture_logs

from gateway.clock import utcnow
from gateway.ledger import schema
from gateway.ledger.changes import ChangeSet
from gateway.ledger.checkpoints import NO_AUTOCHECKPOINT, Checkpointer
from gateway.ledger.schema import open_engine
from gateway.ledger.writer import LedgerWriter
from tests.ledger.test_writer import _confirmation, _engine

ROWS = 3000  # dead letters of 2 KB: ~1 500 pages, more than SQLite's automatic checkpoint waits for (1 000)


def _write_pages(engine, *, autocheckpoint: bool) -> None:
    with engine.begin() as conn:
        if not autocheckpoint:
            conn.exec_driver_sql(NO_AUTOCHECKPOINT)
        conn.execute(insert(schema.dead_letters), [{"created_at": utcnow(), "error": "x", "content": "y" * 2000}
                                                   for _ in range(ROWS)])


def _db_size(url: str) -> int:
    return os.path.getsize(url.removeprefix("sqlite:///"))


@pytest.mark.parametrize("autocheckpoint", [True, False])
def test_only_a_commit_without_the_writers_setting_copies_the_log(sqlite_url, autocheckpoint):
    engine = open_engine(sqlite_url)
    before = _db_size(sqlite_url)
    _write_pages(engine, autocheckpoint=autocheckpoint)
    grown = _db_size(sqlite_url) - before
    if autocheckpoint:
        assert grown > ROWS * 2000, "SQLite's own checkpoint ran in COMMIT and copied the pages"
    else:
        assert grown == 0, "the pages stay in the log: COMMIT did not checkpoint"
        checkpointer = Checkpointer(engine)
        checkpointer.checkpoint()
        busy, in_log, copied = checkpointer.last_result
        assert (busy, copied) == (0, in_log) and in_log > ROWS // 2
        assert _db_size(sqlite_url) - before > ROWS * 2000


def test_the_writer_commits_and_its_thread_checkpoints(sqlite_url):
    engine = _engine(sqlite_url)
    writer = LedgerWriter(engine)
    assert writer.checkpointer is not None
    writer.start()
    for k in range(5):
        writer.submit(ChangeSet(confirmations=[_confirmation(100 * k, 100 * k + 100)[1]]))
        writer.barrier().result(10)
    deadline = time.monotonic() + 5
    while writer.checkpointer.checkpoints == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writer.checkpointer.checkpoints >= 1
    assert writer.stop(10)
    busy, in_log, copied = writer.checkpointer.last_result  # the last one, at the stop: nothing left behind
    assert busy == 0 and copied == in_log > 0
    assert writer.health.confirmations == 5


def test_a_failing_checkpoint_is_reported_and_never_raises(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    engine = open_engine(url)
    engine.dispose()
    (tmp_path / "ledger.sqlite").unlink()
    (tmp_path / "ledger.sqlite").mkdir()  # no database can be opened there now
    checkpointer = Checkpointer(engine)
    with capture_logs() as logs:
        checkpointer.checkpoint()
    assert checkpointer.checkpoints == 0
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["ledger_checkpoint_failed"]


@pytest.mark.postgres
def test_postgresql_has_no_checkpoint_thread(pg_url):
    assert LedgerWriter(open_engine(pg_url)).checkpointer is None
