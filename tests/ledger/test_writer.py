"""The ledger writer against real databases: atomic commits, replays, outages."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from sqlalchemy import func, select

from gateway.domain.confirming import accumulate, confirm
from gateway.domain.records import (
    CounterState,
    FlushingRule,
    Increment,
    Material,
    OrderComponent,
    OrderOperation,
    Position,
    ProductionOrder,
    WorkCenter,
)
from gateway.ledger import schema
from gateway.ledger.masters import store_masterdata
from gateway.ledger.reports import summary
from gateway.ledger.resume import resume_state
from gateway.ledger.schema import open_engine
from gateway.ledger.posting import apply
from gateway.ledger.changes import ChangeSet
from gateway.ledger.writer import Committed, LedgerWriter
from gateway.ledger.masters import MasterCache

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class _Master:
    materials = {
        "FG": Material("FG", "product", "PC", 0),
        "COIL": Material("COIL", "coil", "KG", 3),
    }
    work_centers = {"WC1": WorkCenter("WC1", "press", D("40"), D("80"), D("100"), "EUR", "LS1")}
    orders = {
        "1000123": ProductionOrder(
            "1000123", "FG", D(1000), D(100), "FG-01",
            components=(OrderComponent("0010", "COIL", D("12.5"), D("2"), FlushingRule.OPERATION, "0010", "LS1"),),
            operations=(OrderOperation("0010", "WC1", D("0.5"), D("0.2"), D("0.1"), final=True),),
        )
    }
    versions = {}


class _Stock:
    def __init__(self, material, location, quantity, lot=""):
        self.material, self.location, self.quantity, self.lot = material, location, quantity, lot
        self.received_on = self.expires_on = None


def _engine(url, stock=D(1000)):
    engine = open_engine(url)
    store_masterdata(engine, _Master, [_Stock("COIL", "LS1", stock)])
    return engine


def _confirmation(start, end, t_=T0):
    inc = Increment("M1", "good", end - start, Position(0, start), Position(0, end), t_)
    p = accumulate(None, inc, order="1000123", operation="0010", now=t_)
    return p, confirm(p, "every_units", "PC")


def test_confirmation_state_and_postings_commit_together(ledger_url):
    engine = _engine(ledger_url)
    pending, c = _confirmation(0, 200)
    state = CounterState("M1", "good", Position(0, 200), T0)
    with engine.begin() as conn:
        apply(conn, ChangeSet(counter_states=[state], confirmations=[c]), MasterCache())
    s = summary(engine)
    assert s.machines["M1"].confirmed_yield == 200
    assert s.issued[("COIL", "KG")] == D("25.5")  # 200 × 12.5/100 × 1.02
    assert s.received[("FG", "PC")] == 200
    assert s.stock[("COIL", "LS1", "", "KG")] == D("974.5")
    assert resume_state(engine).counter_states[("M1", "good")].position == Position(0, 200)


def test_a_replayed_confirmation_posts_nothing_twice(ledger_url):
    engine = _engine(ledger_url)
    _, c = _confirmation(0, 100)
    for _ in range(2):
        with engine.begin() as conn:
            apply(conn, ChangeSet(confirmations=[c]), MasterCache())
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.confirmations)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(schema.goods_movements)
                            .where(schema.goods_movements.c.kind == "261")).scalar() == 1


def test_failed_transaction_leaves_nothing_half_written(ledger_url):
    engine = _engine(ledger_url)
    _, c = _confirmation(0, 100)
    bad_state = CounterState("M1", "good", Position(0, 100), datetime(2026, 1, 1))  # naive: refused
    try:
        with engine.begin() as conn:
            apply(conn, ChangeSet(counter_states=[bad_state], confirmations=[c]), MasterCache())
    except Exception:
        pass
    s = summary(engine)
    assert "M1" not in s.machines and s.issued == {}
    assert resume_state(engine).counter_states == {}


def test_short_stock_goes_to_the_error_queue_and_the_confirmation_stands(ledger_url):
    engine = _engine(ledger_url, stock=D("10"))
    _, c = _confirmation(0, 200)
    with engine.begin() as conn:
        apply(conn, ChangeSet(confirmations=[c]), MasterCache())
    s = summary(engine)
    assert s.machines["M1"].confirmed_yield == 200
    assert s.issued[("COIL", "KG")] == D("10")
    assert s.open_errors == 1
    with engine.connect() as conn:
        err = conn.execute(select(schema.error_queue)).one()
    assert err.missing_qty == D("15.5") and err.reason.endswith(
        "receive stock (`gateway stock receive`): the receipt issues it")


def test_unknown_order_confirmation_is_kept_with_an_error(ledger_url):
    engine = _engine(ledger_url)
    _, c = _confirmation(0, 5)
    from dataclasses import replace
    c = replace(c, order="999")
    with engine.begin() as conn:
        apply(conn, ChangeSet(confirmations=[c]), MasterCache())
    assert summary(engine).open_errors == 1


def _locked_sqlite(folder):
    """A SQLite ledger, a raw connection holding its write lock, and an engine that waits 50 ms for it."""
    from sqlalchemy import event

    url = f"sqlite:///{folder / 'l.sqlite'}"
    engine = _engine(url)
    locker = open_engine(url).raw_connection()
    locker.execute("BEGIN IMMEDIATE")
    slow = open_engine(url, create=False)

    @event.listens_for(slow, "connect")
    def _short_timeout(dbapi_conn, _):
        dbapi_conn.execute("PRAGMA busy_timeout=50")

    return engine, locker, slow


def test_writer_retries_while_the_database_is_locked_then_commits_everything(tmp_path):
    """Another writer holds SQLite's lock: commits wait and retry, nothing is lost."""
    engine, locker, slow = _locked_sqlite(tmp_path)
    writer = LedgerWriter(slow, retry_min_s=0.05, retry_max_s=0.2)
    writer.start()
    for i in range(5):
        _, c = _confirmation(i * 10, i * 10 + 10)
        writer.submit(ChangeSet(confirmations=[c], counter_states=[
            CounterState("M1", "good", Position(0, i * 10 + 10), T0)]))
    import time
    deadline = time.monotonic() + 5
    while writer.health.retries < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer.health.retries >= 2 and writer.health.last_error
    locker.rollback()
    locker.close()
    writer.barrier().result(timeout=10)
    assert writer.stop(timeout=10)
    s = summary(engine)
    assert s.machines["M1"].confirmations == 5 and s.machines["M1"].confirmed_yield == 50
    assert resume_state(engine).counter_states[("M1", "good")].position == Position(0, 50)


def test_a_change_that_cannot_be_stored_holds_its_machine_and_the_units_stay_accounted(ledger_url):
    """One bad value must not stop every machine, nor move its machine past the refused units.

    M2's change cannot be stored at all (a naive time): it goes to dead_letters and M2 is held,
    so the timer confirmation of its pending units that follows is not written either (it
    would confirm units whose counter position was never stored: counted twice after a
    restart). M1 commits on; after a restart M2 resumes from its last stored position.
    """
    engine = _engine(ledger_url)
    writer = LedgerWriter(engine, retry_min_s=0.01, retry_max_s=0.05)
    _, first = _confirmation(0, 10)
    _, last = _confirmation(10, 20)
    ok = CounterState("M2", "good", Position(0, 5), T0)
    bad = CounterState("M2", "good", Position(0, 25), datetime(2026, 1, 1))  # naive time: refused
    inc = Increment("M2", "good", 20, Position(0, 5), Position(0, 25), T0)
    pending = accumulate(None, inc, order="1000123", operation="0010", now=T0)
    timer = confirm(pending, "every_seconds", "PC")
    writer.submit(ChangeSet(confirmations=[first], counter_states=[ok]))
    writer.submit(ChangeSet(counter_states=[bad], pendings={pending.key: pending},
                         counted={"M2": D(20)}))
    writer.submit(ChangeSet(confirmations=[timer], pendings={pending.key: None}))  # the timer's commit
    writer.submit(ChangeSet(confirmations=[last]))
    writer.start()
    writer.barrier().result(timeout=20)
    assert writer.stop(timeout=10)
    s = summary(engine)
    assert s.machines["M1"].confirmations == 2
    assert s.machines["M2"].confirmations == 0
    assert s.machines["M2"].pending == 0 and s.machines["M2"].counted == 0 and s.machines["M2"].balanced
    assert writer.health.dead_letters == 1 and writer.health.held_machines == ["M2"]
    assert resume_state(engine).counter_states[("M2", "good")].position == Position(0, 5)  # held
    with engine.connect() as conn:
        [row] = conn.execute(select(schema.dead_letters)).all()
    assert "counter M2/good at 0:25" in row.content and "naive" in row.error
    assert "units counted on M2: 20" in row.content


def test_the_writer_survives_a_dead_letter_it_cannot_write_and_stop_tells_the_truth(sqlite_url):
    """The dead-letter insert fails too (its table is gone): the writer goes on, M1 commits."""
    engine = _engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(schema.dead_letters.delete())
    schema.dead_letters.drop(engine)
    writer = LedgerWriter(engine, retry_min_s=0.01, retry_max_s=0.05)
    bad = CounterState("M2", "good", Position(0, 5), datetime(2026, 1, 1))
    writer.submit(ChangeSet(counter_states=[bad]))
    _, c = _confirmation(0, 10)
    writer.submit(ChangeSet(confirmations=[c]))
    writer.start()
    writer.barrier().result(timeout=20)
    assert writer.alive
    assert writer.health.held_machines == ["M2"] and writer.health.dead_letters == 0
    assert writer.stop(timeout=10)
    assert summary(engine).machines["M1"].confirmations == 1


def test_stop_says_false_when_the_queue_was_not_written(tmp_path):
    """The database stays locked: stop() gives up after its timeout and says so."""
    engine, locker, slow = _locked_sqlite(tmp_path)
    writer = LedgerWriter(slow, retry_min_s=0.05, retry_max_s=0.1)
    writer.start()
    _, c = _confirmation(0, 10)
    writer.submit(ChangeSet(confirmations=[c]))
    assert writer.stop(timeout=1) is False
    locker.rollback()
    locker.close()
    assert writer.stop(timeout=10) is True  # the lock is gone: it commits and ends
    assert summary(engine).machines["M1"].confirmations == 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_stop_says_false_when_the_thread_died(sqlite_url, monkeypatch):
    import gateway.ledger.writer as w

    def dies(*_a, **_k):
        raise SystemExit("the thread ends")  # not an Exception: nothing in the thread catches it

    engine = _engine(sqlite_url)
    monkeypatch.setattr(w, "apply", dies)
    writer = LedgerWriter(engine, retry_min_s=0.01, retry_max_s=0.05)
    writer.start()
    _, c = _confirmation(0, 10)
    writer.submit(ChangeSet(confirmations=[c]))
    writer._thread.join(10)
    assert not writer.alive
    assert writer.stop(timeout=1) is False


def test_an_error_of_the_writer_itself_is_retried_not_fatal(sqlite_url, monkeypatch):
    """A bug while setting a change aside (``describe`` raises twice): logged, retried with
    backoff; the thread lives on and the change is set aside on the third attempt."""
    real, calls = ChangeSet.describe, []

    def flaky(changes):
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("bug in describe")
        return real(changes)

    engine = _engine(sqlite_url)
    monkeypatch.setattr(ChangeSet, "describe", flaky)
    writer = LedgerWriter(engine, retry_min_s=0.01, retry_max_s=0.05)
    writer.start()
    _, c = _confirmation(0, 10)
    bad = CounterState("M2", "good", Position(0, 5), datetime(2026, 1, 1))
    writer.submit(ChangeSet(confirmations=[c], counter_states=[bad]))
    writer.barrier().result(timeout=20)
    assert writer.alive and len(calls) == 3
    assert writer.stop(timeout=10)
    assert summary(engine).machines["M1"].confirmations == 1
    assert writer.health.dead_letters == 1 and writer.health.held_machines == ["M2"]


def test_a_change_set_written_twice_counts_its_units_once(ledger_url):
    """A transaction retried after an unknown outcome (the connection dropped during COMMIT)."""
    engine = open_engine(ledger_url)
    for _ in range(2):
        with engine.begin() as conn:
            apply(conn, ChangeSet(counted={"M1": D(20)}), MasterCache())
    with engine.connect() as conn:
        assert conn.execute(select(schema.counted_units.c.units).where(schema.counted_units.c.machine == "M1")).scalar() == 20


def test_a_backlog_is_written_in_transactions_of_bounded_size(ledger_url):
    """A backlog (a database that was down) is committed in transactions of at most the cap, never
    one transaction of everything: on PostgreSQL a huge one outlived idle_in_transaction_session_timeout
    and was retried forever. A change-set is never split; every confirmation lands once."""
    engine = _engine(ledger_url, stock=D(100000))
    writer = LedgerWriter(engine, most_confirmations=250)
    sizes: list[int] = []
    writer.after_commit.append(lambda done: sizes.append(len(done.changes.confirmations)))
    position = 0
    for _ in range(10):  # queued before the writer starts: one drain finds them all
        confirmations = []
        for _ in range(100):
            confirmations.append(_confirmation(position, position + 1)[1])
            position += 1
        writer.submit(ChangeSet(counter_states=[CounterState("M1", "good", Position(0, position), T0)],
                                confirmations=confirmations))
    writer.submit(ChangeSet(confirmations=[_confirmation(p, p + 1)[1] for p in range(position, position + 300)]))
    writer.start()
    assert writer.stop(60)
    assert sizes == [200, 200, 200, 200, 200, 300]  # 250 at most, unless one change-set alone is larger
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.confirmations)).scalar() == 1300
    assert summary(engine).machines["M1"].confirmed_yield == 1300
    engine.dispose()


def _counted(n: int) -> ChangeSet:
    return ChangeSet(counter_states=[CounterState("M1", "good", Position(0, n), T0)], counted={"M1": D(n)})


def test_changes_that_come_within_the_gather_time_go_in_one_transaction(sqlite_url):
    """Changes submitted while the writer gathers are written together, in order (the last
    counter state and count win); a writer without gathering writes each as it comes."""
    for gather_s, most in ((0.6, 2), (0.0, 12)):
        engine = open_engine(sqlite_url)
        writer = LedgerWriter(engine, gather_s=gather_s)
        done: list[Committed] = []
        writer.after_commit.append(done.append)
        writer.start()
        for n in range(1, 13):
            writer.submit(_counted(n))
            time.sleep(0.05)
        assert writer.stop(30)
        assert 1 <= len(done) <= most, (gather_s, len(done))
        assert [n for c in done for n in c.changes.counted.values()][-1] == 12
        with engine.connect() as conn:
            assert conn.execute(select(schema.counted_units.c.units)).scalar() == 12
            assert conn.execute(select(schema.counter_states.c.raw)).scalar() == 12
        engine.dispose()
        os.remove(sqlite_url.removeprefix("sqlite:///"))


def test_a_barrier_or_a_stop_ends_the_gathering_at_once(sqlite_url):
    engine = open_engine(sqlite_url)
    writer = LedgerWriter(engine, gather_s=5.0)
    writer.start()
    writer.submit(_counted(1))  # the first transaction: written at once
    writer.barrier().result(10)
    writer.submit(_counted(2))  # would wait up to 5 s for more
    began = time.monotonic()
    writer.barrier().result(10)
    assert time.monotonic() - began < 2.0
    with engine.connect() as conn:
        assert conn.execute(select(schema.counted_units.c.units)).scalar() == 2
    writer.submit(_counted(3))
    began = time.monotonic()
    assert writer.stop(10)
    assert time.monotonic() - began < 2.0
    with engine.connect() as conn:
        assert conn.execute(select(schema.counted_units.c.units)).scalar() == 3
    engine.dispose()


@pytest.mark.postgres
def test_a_session_the_server_ended_while_the_writer_was_quiet_costs_no_failed_transaction(pg_url, monkeypatch):
    """The writer keeps its connection between transactions, but not through a quiet spell: a
    session the server ended meanwhile (idle_session_timeout, a restart) is never used again."""
    import gateway.ledger.writer as writer_module
    from sqlalchemy import text

    monkeypatch.setattr(writer_module, "KEEP_CONNECTION_IDLE_S", 0.3)
    engine = open_engine(pg_url)
    writer = LedgerWriter(engine, retry_min_s=0.01, retry_max_s=0.05)
    failures: list[Exception] = []
    failed = writer._failed
    writer._failed = lambda exc, queued: (failures.append(exc), failed(exc, queued))
    writer.start()
    writer.submit(_counted(1))
    writer.barrier().result(10)
    writer.submit(_counted(2))  # within the quiet time: the same session
    writer.barrier().result(10)
    pid = writer._conn.connection.dbapi_connection.info.backend_pid
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    time.sleep(0.6)
    writer.submit(_counted(3))
    writer.barrier().result(10)
    assert writer.stop(10)
    assert failures == []
    with engine.connect() as conn:
        assert conn.execute(select(schema.counted_units.c.units)).scalar() == 3
    engine.dispose()


@pytest.mark.postgres
def test_a_session_ended_under_the_writer_is_retried_on_a_new_one(pg_url):
    from sqlalchemy import text

    engine = open_engine(pg_url)
    writer = LedgerWriter(engine, retry_min_s=0.01, retry_max_s=0.05)
    writer.start()
    writer.submit(_counted(1))
    writer.barrier().result(10)
    pid = writer._conn.connection.dbapi_connection.info.backend_pid
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    writer.submit(_counted(2))  # the kept session is gone: one failed attempt, then a new connection
    writer.barrier().result(10)
    assert writer.stop(10)
    with engine.connect() as conn:
        assert conn.execute(select(schema.counted_units.c.units)).scalar() == 2
    engine.dispose()
