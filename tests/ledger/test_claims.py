"""Log lines that claim a posting come after the commit, once per posting; failures name their real cause.

The writer runs for real on SQLite and PostgreSQL. A full disk is a SQLite ledger whose
``max_page_count`` stops it growing; another writer is a second PostgreSQL session that
commits the same confirmation first; a read-only ledger is ``PRAGMA query_only``.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from sqlalchemy import event, func, select, text
from structlog.testing import capture_logs

from gateway.app import AppError, stock
from gateway.app.ledger import open_ledger
from gateway.app.models import ReceiveStock
from gateway.domain.confirming import accumulate, confirm
from gateway.domain.records import Increment, Position
from gateway.ledger import claims
from gateway.ledger import schema as t
from gateway.ledger.audit import Actor
from gateway.ledger.posting import _confirmation_row
from gateway.ledger.changes import ChangeSet
from gateway.ledger.writer import LedgerWriter
from tests.ledger.test_writer import _engine
from tests.support import free_port

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ANNA = Actor(name="anna", kind="cli", host="line-pc-3", via="gateway stock receive")
DISK_FULL = "no space left on the ledger's disk: free space; nothing is lost, the PLC counters keep the units"


def _confirmations(n: int, *, machine: str = "M1", size: int = 10):
    out = []
    for i in range(n):
        start, end = i * size, (i + 1) * size
        inc = Increment(machine, "good", size, Position(0, start), Position(0, end), T0)
        out.append(confirm(accumulate(None, inc, order="1000123", operation="0010", now=T0),
                           "every_units", "PC"))
    return out


def _in_ledger(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(t.confirmations.c.id)).scalars())


def _wait(cond, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


_started: list[LedgerWriter] = []


@pytest.fixture(autouse=True)
def _stop_writers():
    """A writer a failed test left retrying would log into the next test's captured lines."""
    yield
    while _started:
        _started.pop().stop(2)


def _writer(engine) -> LedgerWriter:
    writer = LedgerWriter(engine, retry_min_s=0.05, retry_max_s=0.2)
    writer.start()
    _started.append(writer)
    return writer


def test_confirmation_posted_is_logged_once_per_posting_after_the_commit_with_its_time(ledger_url):
    engine = _engine(ledger_url)
    writer = _writer(engine)
    first = _confirmations(5)
    with capture_logs() as logs:
        writer.submit(ChangeSet(confirmations=first))
        writer.submit(ChangeSet(confirmations=first[:2]))  # a replay: in the ledger already, not claimed again
        writer.barrier().result(20)
    assert writer.stop(20)
    posted = [e for e in logs if e["event"] == "confirmation_posted"]
    assert [e["confirmation_id"] for e in posted] == [c.id for c in first]
    assert {e["confirmation_id"] for e in posted} <= _in_ledger(engine)
    with engine.connect() as conn:
        stored = dict(conn.execute(select(t.confirmations.c.id, t.confirmations.c.posted_at)).all())
    for e in posted:  # the commit came after the rows were written
        assert datetime.fromisoformat(e["committed_at"]) >= stored[e["confirmation_id"]]
    assert [e["event"] for e in logs].count("confirmation_replay_skipped") == 2
    engine.dispose()


def test_a_savepoint_that_rolls_back_takes_its_claims_with_it(sqlite_url):
    engine = _engine(sqlite_url)
    with claims.collecting() as claimed:
        claims.claim("kept", "C-1")
        with pytest.raises(RuntimeError), claims.tentative():
            claims.claim("confirmation_posted", "C-2")
            raise RuntimeError("the savepoint rolls back")
    assert [c.posting for c in claimed.items] == ["C-1"]
    engine.dispose()


def _full_disk(engine, pages: dict) -> None:
    """Every transaction may use at most ``pages['max']`` pages: a disk that is full at that size."""

    @event.listens_for(engine, "begin", insert=True)  # before BEGIN IMMEDIATE
    def _limit(conn):
        conn.exec_driver_sql(f"PRAGMA max_page_count = {pages['max']}")


def test_a_full_disk_logs_attempts_with_the_real_cause_then_each_posting_once_when_freed(sqlite_url):
    engine = _engine(sqlite_url)
    with engine.connect() as conn:
        pages = {"max": conn.exec_driver_sql("PRAGMA page_count").scalar()}
    _full_disk(engine, pages)
    writer = _writer(engine)
    todo = _confirmations(60)
    with capture_logs() as logs:
        writer.submit(ChangeSet(confirmations=todo))
        _wait(lambda: writer.health.retries >= 3)
        assert _in_ledger(engine) == set()
        pages["max"] = 1_000_000  # space freed
        writer.barrier().result(30)
    assert writer.stop(20)
    failed = [e for e in logs if e["event"] == "ledger_commit_failed"]
    assert failed and all(e["transient"] for e in failed)
    assert failed[0]["hint"] == DISK_FULL + "; counting continues in memory and the writer retries"
    assert "database or disk is full" in failed[0]["error"]
    attempted = [e for e in logs if e["event"] == "confirmation_posted_attempted"]
    assert len(attempted) >= 3 * len(todo) and all("disk is full" in e["error"] for e in attempted)
    posted = [e["confirmation_id"] for e in logs if e["event"] == "confirmation_posted"]
    assert sorted(posted) == sorted(c.id for c in todo)  # once each, whatever the retries
    assert set(posted) == _in_ledger(engine)
    assert not [e for e in logs if e["event"] in ("ledger_machine_held", "ledger_commit_refused")]
    engine.dispose()


def test_a_manual_action_on_a_full_disk_says_so_and_writes_nothing(sqlite_url):
    _engine(sqlite_url).dispose()
    ledger = open_ledger(sqlite_url)
    with ledger.connect() as conn:
        pages = {"max": conn.exec_driver_sql("PRAGMA page_count").scalar()}
    _full_disk(ledger, pages)
    with capture_logs() as logs, pytest.raises(AppError) as refused:
        for _ in range(50):  # until the last free page is used
            stock.receive(ledger, ReceiveStock(material="COIL", qty=D(1), location="LS1"), actor=ANNA)
    assert refused.value.kind == "unavailable"
    assert refused.value.detail == (f"no space left on the ledger's disk at {sqlite_url} (database or disk is full): "
                                    "free space; nothing is lost, the PLC counters keep the units; "
                                    "nothing was written")
    assert logs[-1]["event"] == "stock_received_attempted" and "disk is full" in logs[-1]["error"]
    with ledger.connect() as conn:
        receipts = conn.execute(select(func.count()).select_from(t.goods_movements)
                                .where(t.goods_movements.c.kind == "501")).scalar_one()
        audited = conn.execute(select(func.count()).select_from(t.audit_log)).scalar_one()
    assert receipts == audited == len([e for e in logs if e["event"] == "stock_received"])
    ledger.dispose()


def test_a_read_only_ledger_is_retried_with_its_cause_not_set_aside(sqlite_url):
    engine = _engine(sqlite_url)
    read_only = {"on": True}

    @event.listens_for(engine, "connect")
    def _query_only(dbapi_conn, _record):
        dbapi_conn.execute(f"PRAGMA query_only = {1 if read_only['on'] else 0}")

    engine.dispose()  # every connection from now on is read-only

    writer = _writer(engine)
    todo = _confirmations(3)
    with capture_logs() as logs:
        writer.submit(ChangeSet(confirmations=todo))
        _wait(lambda: writer.health.retries >= 2)
        read_only["on"] = False  # fixed: the next connection may write
        engine.dispose()
        writer.barrier().result(30)
    assert writer.stop(20)
    failed = [e for e in logs if e["event"] == "ledger_commit_failed"]
    assert failed[0]["hint"].startswith("the ledger is read-only (file or folder permissions, a read-only mount, "
                                        "or a PostgreSQL standby): give the gateway write access")
    assert _in_ledger(engine) == {c.id for c in todo} and writer.health.held_machines == []
    engine.dispose()


def test_a_schema_that_does_not_match_names_the_upgrade(sqlite_url):
    engine = _engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE audit_log"))
    engine.dispose()
    ledger = open_ledger(sqlite_url)
    with pytest.raises(AppError) as refused:
        stock.receive(ledger, ReceiveStock(material="COIL", qty=D(1), location="LS1"), actor=ANNA)
    assert refused.value.kind == "conflict"
    assert refused.value.detail == (
        f"the ledger's tables are not those of this gateway's schema version at {sqlite_url} "
        f"(no such table: audit_log): run `gateway db upgrade --db {sqlite_url}` (back the ledger up first), "
        "or run the gateway version that wrote this ledger; nothing was written")
    ledger.dispose()


def test_the_write_lock_of_another_process_is_named(sqlite_url):
    engine = _engine(sqlite_url)
    holder = engine.connect()
    held = holder.begin()  # BEGIN IMMEDIATE: another process' write transaction
    writer = _writer(engine)
    with capture_logs() as logs:
        writer.submit(ChangeSet(confirmations=_confirmations(1)))
        _wait(lambda: writer.health.retries >= 1, timeout=30)
        held.rollback()
        writer.barrier().result(30)
    holder.close()
    assert writer.stop(20)
    failed = next(e for e in logs if e["event"] == "ledger_commit_failed")
    assert failed["hint"].startswith("another process holds the ledger's write lock (a running gateway or a long "
                                     "command): it is retried")
    engine.dispose()


def _commit_failure(url: str) -> tuple[str, bool]:
    """What the writer's ``ledger_commit_failed`` line says for the ledger at ``url``: (hint, transient).

    The real driver's error, from a real attempt to connect; no writer thread is left retrying
    (a writer that cannot reach its database never drains, so it could not be stopped)."""
    from gateway.ledger.failures import lost_to_transient
    from gateway.ledger.schema import open_engine
    from gateway.ledger.writer import commit_hint

    engine = open_engine(url, check_version=False)
    try:
        with pytest.raises(Exception) as failed:
            with engine.begin():
                pass
    finally:
        engine.dispose()
    transient = lost_to_transient(failed.value)
    return commit_hint(failed.value, transient), transient


def test_an_unreachable_server_is_named_as_refusing_connections():
    hint, transient = _commit_failure(f"postgresql+psycopg://127.0.0.1:{free_port()}/none")
    assert hint == ("the database server refuses connections: start it, or fix the host and port in --db (or "
                    "GATEWAY_DB); nothing is lost, the PLC counters keep the units; counting continues in memory "
                    "and the writer retries")
    assert transient


@pytest.mark.postgres
@pytest.mark.parametrize(("database", "hint"), [
    ("postgresql+psycopg://no_such_clerk@127.0.0.1:5432/test",
     "the database server refused the login: fix user and password in --db (or GATEWAY_DB), or the server's "
     "pg_hba.conf; counting continues in memory and the writer retries"),
    ("postgresql+psycopg://127.0.0.1:5432/no_such_ledger_db",
     "the database named in --db does not exist: create it (createdb NAME) or fix the name in --db; counting "
     "continues in memory and the writer retries"),
])
def test_a_failed_login_and_a_missing_database_are_told_apart(pg_available, database, hint):
    assert _commit_failure(database)[0] == hint


@pytest.mark.postgres
def test_a_second_writer_on_postgresql_is_named_as_another_writer_not_a_data_error(pg_url):
    engine = _engine(pg_url)
    [c] = _confirmations(1)
    other = engine.connect()
    other.begin()
    other.execute(t.confirmations.insert(), [_confirmation_row(c, T0)])  # the other gateway, not committed yet
    writer = _writer(engine)
    with capture_logs() as logs:
        writer.submit(ChangeSet(confirmations=[c]))
        # The writer's insert waits for the other session's row; that one commits first.
        threading.Timer(0.5, lambda: (other.commit(), other.close())).start()
        writer.barrier().result(30)
    assert writer.stop(20)
    refused = next(e for e in logs if e["event"] == "postings_refused")
    assert "UniqueViolation" in refused["error"] and refused["cause"] == "another_writer"
    assert refused["hint"].startswith("another writer stored the same change first: a second gateway (or one whose "
                                      "lease expired) is posting for these machines: see `gateway status`")
    assert [e["event"] for e in logs if e.get("confirmation_id") == c.id] == ["confirmation_replay_skipped"]
    engine.dispose()


@pytest.mark.postgres
def test_a_user_without_rights_is_told_permission_denied(pg_url):
    engine = _engine(pg_url)
    role = "bg_clerk_" + pg_url.rsplit("bg_", 1)[1][:12]
    with engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA {pg_url.rsplit('%3D', 1)[1]} TO {role}"))
        conn.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA {pg_url.rsplit('%3D', 1)[1]} TO {role}"))
    engine.dispose()
    as_clerk = pg_url.replace("postgresql+psycopg://", f"postgresql+psycopg://{role}@")
    ledger = open_ledger(as_clerk)
    try:
        with pytest.raises(AppError) as refused:
            stock.receive(ledger, ReceiveStock(material="COIL", qty=D(1), location="LS1"), actor=ANNA)
        assert refused.value.kind == "unavailable"
        assert refused.value.detail.startswith("permission denied on the ledger at ")
        assert "grant the database user the rights on the ledger's tables" in refused.value.detail
    finally:
        ledger.dispose()
        owner = _engine_of(pg_url)
        with owner.begin() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        owner.dispose()


def _engine_of(url: str):
    from sqlalchemy import create_engine

    return create_engine(url)
