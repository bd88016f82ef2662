"""Machine leases on real SQLite and PostgreSQL: who may post, fencing tokens, takeover rules."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import select, update

from gateway.ledger import leases
from gateway.ledger import schema
from gateway.ledger.leases import LEDGER, Fence, Me
from gateway.ledger.schema import open_engine

A = Me("line-a", "host-1", 111, scope="boot-1/pid:[1]")
B = Me("line-b", "host-2", 222, scope="boot-2/pid:[1]")
MACHINES = ["PRESS-01", "LATHE-04"]


@pytest.fixture
def engine(ledger_url):
    engine = open_engine(ledger_url)
    yield engine
    engine.dispose()


def take(engine, me: Me, machines=MACHINES, ttl: float = 30.0, *, all_or_nothing: bool = True):
    with engine.begin() as conn:
        return leases.acquire(conn, me, machines, ttl, all_or_nothing=all_or_nothing)


def expire(engine, machines=MACHINES) -> None:
    with engine.begin() as conn:
        conn.execute(update(schema.machine_leases).where(schema.machine_leases.c.machine.in_(machines)).values(expires_at=0.0))


def fenced(engine, me: Me, tokens: dict[str, int]) -> set[str]:
    with engine.begin() as conn:
        return Fence(me, 30.0)(conn, tokens)


def test_first_owner_takes_every_machine_and_a_second_is_refused_naming_the_owner(engine):
    taken, holders = take(engine, A)
    assert taken == {"LATHE-04": 1, "PRESS-01": 1} and holders == []
    taken, holders = take(engine, B)
    assert taken == {}
    assert {(h.machine, h.instance, h.host, h.pid) for h in holders} == {
        ("PRESS-01", "line-a", "host-1", 111), ("LATHE-04", "line-a", "host-1", 111)}
    assert all(25 < h.expires_in_s <= 30 for h in holders)


def test_a_standby_takes_only_what_is_free(engine):
    take(engine, A, ["PRESS-01"])
    taken, holders = take(engine, B, all_or_nothing=False)
    assert taken == {"LATHE-04": 1} and [h.machine for h in holders] == ["PRESS-01"]


def test_an_expired_lease_moves_with_a_new_token_and_the_old_owners_changes_are_fenced_off(engine):
    tokens, _ = take(engine, A)
    assert fenced(engine, A, tokens) == set()
    expire(engine, ["PRESS-01"])
    taken, _ = take(engine, B, ["PRESS-01"])
    assert taken == {"PRESS-01": 2}
    assert fenced(engine, A, tokens) == {"PRESS-01"}
    assert fenced(engine, B, taken) == set()
    with engine.begin() as conn:
        assert leases.renew(conn, A, tokens, 30.0) == {"PRESS-01"}


def test_a_lapsed_lease_nobody_took_is_still_the_owners_and_the_fence_extends_it(engine):
    tokens, _ = take(engine, A)
    expire(engine)
    assert fenced(engine, A, tokens) == set()
    taken, holders = take(engine, B)  # extended by the fence: B must wait
    assert taken == {} and len(holders) == 2


def test_the_same_instance_restarted_on_the_same_host_takes_its_leases_at_once_when_the_old_process_is_gone(engine):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    old = Me("line-a", "host-1", int(dead.stdout), scope="boot-1/pid:[1]")
    first, _ = take(engine, old)
    taken, holders = take(engine, Me("line-a", "host-1", 999_999_999, scope="boot-1/pid:[1]"))
    assert holders == [] and taken == {m: tok + 1 for m, tok in first.items()}


def test_the_same_instance_name_is_refused_while_its_first_process_lives(engine):
    alive = Me("line-a", "host-1", 1, scope="boot-1/pid:[1]")  # pid 1 always runs
    take(engine, alive)
    taken, holders = take(engine, Me("line-a", "host-1", 424242, scope="boot-1/pid:[1]"))
    assert taken == {} and len(holders) == 2


def test_two_containers_with_one_host_name_and_pid_1_are_two_owners(engine):
    first = Me("gateway", "edge", 1, scope="boot-1/pid:[10]")
    take(engine, first)
    taken, holders = take(engine, Me("gateway", "edge", 1, scope="boot-1/pid:[20]"))
    assert taken == {} and len(holders) == 2


def test_a_pid_of_another_pid_namespace_is_never_taken_for_dead(engine):
    take(engine, Me("gateway", "edge", 999_999_999, scope="boot-1/pid:[10]"))
    taken, holders = take(engine, Me("gateway", "edge", 7, scope="boot-1/pid:[20]"))
    assert taken == {} and len(holders) == 2


def test_taking_a_lease_again_always_gives_a_new_token(engine):
    first, _ = take(engine, A)
    again, _ = take(engine, A)  # e.g. after this process forgot it: what it queued before is fenced off
    assert again == {m: tok + 1 for m, tok in first.items()}
    assert fenced(engine, A, first) == set(MACHINES)


def test_sqlite_an_instance_that_lost_the_ledger_writes_for_none_of_its_machines(sqlite_url):
    engine = open_engine(sqlite_url)
    tokens, _ = take(engine, A, leases.lease_names(engine, ["PRESS-01"]))
    expire(engine, [LEDGER])
    take(engine, B, [LEDGER])
    assert fenced(engine, A, tokens) == {LEDGER, "PRESS-01"}


def test_released_leases_are_free_at_once_for_another_instance(engine):
    take(engine, A)
    with engine.begin() as conn:
        leases.register(conn, A, standby=False, ttl_s=30.0, machines=2)
        assert leases.release(conn, A) == 2
    taken, holders = take(engine, B)
    assert holders == [] and taken == {"LATHE-04": 2, "PRESS-01": 2}


def test_status_lists_instances_with_their_machines(engine):
    take(engine, A)
    with engine.begin() as conn:
        leases.register(conn, A, standby=False, ttl_s=30.0, machines=2)
        leases.register(conn, B, standby=True, ttl_s=30.0, machines=2)
        leases.heartbeat(conn, A, leases.db_now(conn) - 3)
    with engine.connect() as conn:
        status = {i.name: i for i in leases.status(conn)}
    assert [m for m, _, _ in status["line-a"].machines] == ["LATHE-04", "PRESS-01"]
    assert status["line-a"].running and status["line-b"].running and status["line-b"].machines == []
    assert 2.5 < status["line-a"].last_commit_ago_s < 10


def test_sqlite_has_one_instance_per_ledger(sqlite_url):
    engine = open_engine(sqlite_url)
    assert leases.lease_names(engine, ["B", "A"]) == [LEDGER, "A", "B"]
    take(engine, A, leases.lease_names(engine, ["PRESS-01"]))
    _, holders = take(engine, B, leases.lease_names(engine, ["LATHE-04"]))  # other machines, same ledger
    assert [h.machine for h in holders] == [LEDGER]


@pytest.mark.postgres
def test_postgres_a_takeover_waits_for_the_owners_open_transaction_and_then_sees_it(pg_url):
    """The fence's row locks hold a takeover back until the owner's transaction has ended."""
    engine = open_engine(pg_url)
    tokens, _ = take(engine, A, ttl=0.5)
    time.sleep(0.6)  # expired: a standby may take it ...
    in_tx, took_at = threading.Event(), []

    def owner() -> None:
        with engine.begin() as conn:
            assert Fence(A, 0.5)(conn, tokens) == set()  # ... but the owner's fence came first
            in_tx.set()
            time.sleep(1.0)

    worker = threading.Thread(target=owner)
    worker.start()
    in_tx.wait(5)
    began = time.monotonic()
    taken, holders = take(engine, B, ttl=30.0)
    took_at.append(time.monotonic() - began)
    worker.join()
    assert took_at[0] > 0.5, "the takeover did not wait for the owner's transaction"
    # The owner's fence extended the lease by 0.5 s inside its transaction, which lasted 1 s:
    # when the takeover could read the row, that extension had run out too.
    assert holders == [] and taken == {m: tok + 1 for m, tok in tokens.items()}
    with engine.connect() as conn:
        assert {r.owner for r in conn.execute(select(schema.machine_leases))} == {"line-b"}
    engine.dispose()


@pytest.mark.postgres
def test_postgres_ends_a_session_idle_in_a_transaction_so_a_stalled_owner_cannot_hold_a_takeover_back(pg_url):
    owner_engine = open_engine(pg_url, idle_in_transaction_s=1.0)
    engine = open_engine(pg_url)
    tokens, _ = take(engine, A, ttl=0.5)
    conn = owner_engine.connect()
    tx = conn.begin()
    assert Fence(A, 0.5)(conn, tokens) == set()  # rows locked, lease extended by 0.5 s
    began = time.monotonic()
    taken, _ = take(engine, B)  # waits until the server ends the owner's idle session (1 s)
    assert 0.8 < time.monotonic() - began < 5 and taken == {m: tok + 1 for m, tok in tokens.items()}
    with pytest.raises(Exception):  # noqa: B017 — the owner's session is gone: its transaction cannot commit
        Fence(A, 0.5)(conn, tokens)
        tx.commit()
    conn.close()
    owner_engine.dispose()
    engine.dispose()


@pytest.mark.postgres
def test_postgres_a_renewal_does_not_wait_for_its_own_writers_fenced_transaction(pg_url):
    engine = open_engine(pg_url)
    tokens, _ = take(engine, A)
    with engine.connect() as writer:
        tx = writer.begin()
        assert Fence(A, 30.0)(writer, tokens) == set()  # a long posting transaction holds the rows
        began = time.monotonic()
        with engine.begin() as conn:
            assert leases.renew(conn, A, tokens, 30.0) == set()
        assert time.monotonic() - began < 0.5
        tx.commit()
    engine.dispose()


@pytest.mark.postgres
def test_postgres_a_takeover_ends_the_sessions_of_an_expired_owner_that_holds_its_rows(pg_url):
    """A process stopped in the middle of a statement group is not idle in a transaction for the
    server, so nothing times its locks out: the standby ends the expired owner's sessions."""
    from gateway.ownership import LeaseKeeper, LeaseOptions

    owner = Me("line-a", "host-1", 111, scope="boot-1/pid:[1]")
    owner_engine = open_engine(pg_url, session_name=leases.session_name(owner.process))  # no idle timeout
    tokens, _ = take(owner_engine, owner, ttl=0.5)
    stalled = owner_engine.connect()
    stalled.begin()
    assert Fence(owner, 0.5)(stalled, tokens) == set()  # its rows locked, then it stops
    time.sleep(0.6)
    standby = LeaseKeeper(open_engine(pg_url), MACHINES, LeaseOptions("line-b", 30.0, standby=True))
    began = time.monotonic()
    taken = standby._take_free()
    assert taken == {m: tok + 1 for m, tok in tokens.items()}
    assert time.monotonic() - began < 5
    with pytest.raises(Exception):  # noqa: B017 — its session is gone: nothing it queued can commit
        Fence(owner, 0.5)(stalled, tokens)
    stalled.close()
    owner_engine.dispose()


def test_sqlite_reads_the_fenced_rows_with_one_json_parameter_as_the_portable_statement_does(sqlite_url, monkeypatch):
    """The fence's SQLite statement (json_each) and the portable one (expanding IN) see the same
    rows: held, taken by another, lapsed, and a machine without a lease row."""
    engine = open_engine(sqlite_url)
    machines = [f"M{i:03d}" for i in range(120)]
    with engine.begin() as conn:
        leases.acquire(conn, A, machines[:100], 30.0, all_or_nothing=True)
    expire(engine, machines[:10])
    with engine.begin() as conn:
        conn.execute(update(schema.machine_leases).where(schema.machine_leases.c.machine.in_(machines[10:20]))
                     .values(process="another", token=7))
    asked = sorted(machines[5:]) + ["M'); DROP TABLE machine_leases; --"]
    seen = []
    for json_each in (True, False):
        monkeypatch.setattr(leases, "_json_each", [json_each])
        with engine.begin() as conn:
            seen.append(leases._lease_rows(conn, asked))
    assert seen[0] == seen[1]
    assert len(seen[0]) == 95 and sum(lapsed for _, _, lapsed in seen[0].values()) == 5
    assert {m for m, (token, process, _) in seen[0].items() if process == "another"} == set(machines[10:20])
    engine.dispose()
