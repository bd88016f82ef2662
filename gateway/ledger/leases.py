"""Machine ownership: one instance posts for a machine at a time, fenced in the transaction.

Data model. ``machine_leases`` has one row per machine: the owning instance (name, host,
pid), a fencing ``token`` and ``expires_at``. ``gateway_instances`` has one row per
instance name, for ``gateway status``. Every time here is read from the DATABASE's clock
(``db_now``), so instances on hosts whose clocks disagree still agree on who owns what.

The rules:

* An owner is a process: ``Me.process`` is drawn at random when it starts, so two
  containers with one host name and pid 1 are two owners.
* A lease is *free* when it has expired, or when its owner is this instance on this host
  and the process that took it is gone, checked in the same boot and pid namespace (a
  service manager's restart after kill -9 does not wait for the TTL). A live lease of
  anyone else is not free.
* Taking a lease sets this process as owner and adds one to ``token``, always. Renewing
  keeps the token. Releasing (a clean stop) lets the lease expire now.
* Every posting transaction begins with ``fence``: the lease rows of the machines it
  touches are locked (``FOR KEY SHARE`` on PostgreSQL, which a takeover's ``FOR UPDATE``
  waits for and this instance's renewal does not; SQLite's ``BEGIN IMMEDIATE`` holds the
  whole database) and a machine whose row no longer carries the token its changes
  were made under is *lost*: none of its changes are written. Because the rows stay
  locked until the commit, no other instance can take a machine over between the check
  and the commit; a takeover waits for it and then sees the committed position.
* A lease that expired while nobody took it over (a database outage longer than the
  TTL) still carries this instance's token: ``fence`` and ``renew`` extend it, because no
  one else can have posted for the machine in between.
* On SQLite one instance owns the whole ledger: a lease on ``LEDGER`` is taken beside
  the machines' and fenced with them, so a second instance is refused whatever its
  mapping names, and an instance that lost the ledger writes nothing.

Rows are locked in machine order everywhere, so two transactions never wait on each
other in a cycle. This module never decides a quantity and never commits: the caller's
transaction does.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, bindparam, func, literal_column, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gateway.ledger import schema

LEDGER = "*ledger*"  # the pseudo-machine whose lease is the whole ledger (SQLite)
DEFAULT_TTL_S = 10.0
# How long (at most; a sixth of the TTL if less) a takeover waits for an expired owner's
# open transaction before it ends that owner's sessions (PostgreSQL): a process stopped in the middle of a statement group is
# not "idle in transaction" for the server, so its locks would hold the takeover forever.
TAKEOVER_LOCK_WAIT_S = 1.0


def session_name(process: str) -> str:
    """The ``application_name`` of an owner's database sessions (PostgreSQL)."""
    return f"backflush-gateway:{process}"

_L = schema.machine_leases.c
_now_sql_sqlite = "((julianday('now') - 2440587.5) * 86400.0)"  # the database's clock, in Unix seconds
_ROWS = (select(schema.machine_leases).where(_L.machine.in_(bindparam("machines", expanding=True)))
         .order_by(_L.machine).with_for_update())
# The fence's lock: it holds back a takeover (``_ROWS``, FOR UPDATE) until the posting
# commits, but not this instance's own renewal, which changes only ``expires_at`` (a
# FOR NO KEY UPDATE lock on PostgreSQL, which FOR KEY SHARE does not conflict with).
_FENCED_ROWS: dict[str, object] = {}  # per dialect: the rows, and whether each has expired by the database clock


def _fenced_rows(conn: Connection):
    stmt = _FENCED_ROWS.get(conn.dialect.name)
    if stmt is None:
        lapsed = (_L.expires_at <= literal_column(_now_sql(conn))).label("lapsed")
        stmt = _FENCED_ROWS[conn.dialect.name] = (
            select(_L.machine, _L.token, _L.process, lapsed).where(_L.machine.in_(bindparam("machines", expanding=True)))
            .order_by(_L.machine).with_for_update(of=schema.machine_leases, read=True, key_share=True))
    return stmt


# The same on SQLite, as one statement with one parameter (the machines as a JSON list): it
# begins every posting transaction, and SQLAlchemy's expanding IN rendered and bound a
# parameter per machine each time, 0.7 of a transaction's ms at 100 machines against 0.3
# (the write lock BEGIN IMMEDIATE took stands for FOR UPDATE there).
_SQLITE_FENCED_ROWS = ("SELECT machine, token, process, expires_at <= " + _now_sql_sqlite + " FROM machine_leases "
                       "WHERE machine IN (SELECT value FROM json_each(?))")
_json_each: list[bool] = []  # whether this SQLite has json_each (JSON1; built in since 3.38), once asked


def _lease_rows(conn: Connection, machines: list[str]) -> dict[str, tuple[int, str, bool]]:
    """Machine → (token, process, lapsed by the database clock) of the lease rows of ``machines``."""
    if conn.dialect.name == "sqlite":
        if not _json_each:
            try:
                conn.exec_driver_sql("SELECT value FROM json_each('[]')").all()
                _json_each.append(True)
            except Exception:  # noqa: BLE001 — an SQLite without JSON1: the portable statement
                _json_each.append(False)
        if _json_each[0]:
            return {m: (token, process, bool(lapsed)) for m, token, process, lapsed
                    in conn.exec_driver_sql(_SQLITE_FENCED_ROWS, (json.dumps(machines),))}
    return {r.machine: (r.token, r.process, bool(r.lapsed))
            for r in conn.execute(_fenced_rows(conn), {"machines": machines})}


@dataclass(frozen=True)
class Me:
    """This process as an owner.

    ``process`` is drawn at random for every owner (one per gateway process): two
    containers with the same host name and pid 1 are still two owners. ``scope`` says where ``pid`` can be checked for
    life (this boot and pid namespace); a pid from another scope is never taken for dead.
    """

    instance: str
    host: str
    pid: int
    process: str = field(default_factory=lambda: uuid.uuid4().hex)
    scope: str = ""

    @staticmethod
    def here(instance: str | None = None) -> Me:
        host = socket.gethostname()
        return Me(instance or host, host, os.getpid(), scope=_pid_scope())


def _pid_scope() -> str:
    """This boot and pid namespace ('' where /proc does not tell: then no pid is taken for dead)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


@dataclass(frozen=True)
class Holder:
    """A live lease of someone else: what a refused start names."""

    machine: str
    instance: str
    host: str
    pid: int
    since: float  # db clock
    expires_in_s: float


class MachinesOwned(Exception):
    """Machines this instance needs are owned by another live instance."""

    def __init__(self, holders: list[Holder]) -> None:
        self.holders = holders
        super().__init__(f"{len(holders)} machine(s) owned by another instance")


def _now_sql(conn: Connection) -> str:
    if conn.dialect.name == "postgresql":
        return "extract(epoch from clock_timestamp())::float8"
    return _now_sql_sqlite


def db_now(conn: Connection) -> float:
    """Seconds since the epoch by the database's clock."""
    return float(conn.execute(select(literal_column(_now_sql(conn)))).scalar_one())


def lease_names(engine_or_conn: Engine | Connection, machines: Iterable[str]) -> list[str]:
    """The leases an instance of these machines needs (on SQLite: the whole ledger too)."""
    names = sorted(set(machines))
    return [LEDGER, *names] if engine_or_conn.dialect.name == "sqlite" else names


def process_gone(pid: int) -> bool:
    """True when no process ``pid`` runs on this host (an unreaped zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[-1].split()[0]
        return state in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _free(row, me: Me, now: float) -> bool:
    if row.expires_at <= now or row.process == me.process:
        return True
    # A previous process of this instance, here, that died (a restart after kill -9).
    return (row.owner == me.instance and row.host == me.host and bool(me.scope) and row.scope == me.scope
            and process_gone(row.pid))


def _insert_absent(conn: Connection, machines: list[str]) -> None:
    """Create the missing rows (expired, token 0) so that every row can be locked."""
    make = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = make(schema.machine_leases).on_conflict_do_nothing(index_elements=["machine"])
    conn.execute(stmt, [{"machine": m, "owner": "", "host": "", "pid": 0, "process": "", "scope": "", "token": 0,
                         "acquired_at": 0.0, "expires_at": 0.0} for m in machines])


def acquire(conn: Connection, me: Me, machines: list[str], ttl_s: float, *,
            all_or_nothing: bool, lock_wait_s: float | None = None) -> tuple[dict[str, int], list[Holder]]:
    """Take the free leases among ``machines``: (machine → token taken, live leases of others).

    With ``all_or_nothing`` nothing is taken when any lease is held by someone else. With
    ``lock_wait_s`` (PostgreSQL) a row lock held longer raises (SQLSTATE 55P03, see
    ``end_sessions_of_expired``) instead of waiting.
    """
    if not machines:
        return {}, []
    _insert_absent(conn, machines)
    if lock_wait_s and conn.dialect.name == "postgresql":
        conn.execute(select(func.set_config("lock_timeout", f"{int(lock_wait_s * 1000)}ms", True)))
    rows = conn.execute(_ROWS, {"machines": machines}).all()
    now = db_now(conn)  # after the lock: the wait for an owner's transaction may have been long
    free = [r for r in rows if _free(r, me, now)]
    holders = [Holder(r.machine, r.owner, r.host, r.pid, r.acquired_at, r.expires_at - now)
               for r in rows if not _free(r, me, now)]
    if holders and all_or_nothing:
        return {}, holders
    taken: dict[str, int] = {}
    for r in free:
        # Always a new token, even for a lease this process held: whatever it queued under the
        # old one is fenced off, and the machine starts again from what is committed.
        conn.execute(update(schema.machine_leases).where(_L.machine == r.machine).values(
            owner=me.instance, host=me.host, pid=me.pid, process=me.process, scope=me.scope, token=r.token + 1,
            acquired_at=now, expires_at=now + ttl_s))
        taken[r.machine] = r.token + 1
    return taken, holders


def end_sessions_of_expired(conn: Connection, me: Me, machines: list[str]) -> list[str]:
    """End the database sessions of the owners whose leases on ``machines`` have expired
    (PostgreSQL); the owners whose sessions were ended.

    An expired owner may not post any more, but a process stopped in the middle of a
    transaction keeps its lease rows locked and the takeover waiting. Ending its sessions
    rolls that transaction back; should the process wake up, its writer finds the machines
    taken over (the fence) and stands by.
    """
    if conn.dialect.name != "postgresql":
        return []
    now = db_now(conn)
    owners = sorted({r.process for r in conn.execute(select(schema.machine_leases).where(_L.machine.in_(machines)))
                     if r.expires_at <= now and r.process and r.process != me.process})
    if owners:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name = ANY(:names) AND pid <> pg_backend_pid()"),
                     {"names": [session_name(p) for p in owners]})
    return owners


def free_now(conn: Connection, me: Me, machines: list[str]) -> list[str]:
    """Which of ``machines`` could be taken now (a read without locks, for a standby's poll)."""
    now = db_now(conn)
    rows = conn.execute(select(schema.machine_leases).where(_L.machine.in_(machines))).all()
    present = {r.machine for r in rows}
    return sorted([r.machine for r in rows if _free(r, me, now)] + [m for m in machines if m not in present])


def renew(conn: Connection, me: Me, tokens: dict[str, int], ttl_s: float) -> set[str]:
    """Extend this process's leases; the machines of ``tokens`` it no longer holds."""
    if not tokens:
        return set()
    # One UPDATE, no SELECT … FOR UPDATE first: a posting of this instance that has the rows
    # fenced does not hold its renewal back (see ``_FENCED_ROWS``).
    extended = conn.execute(update(schema.machine_leases).where(_L.machine.in_(sorted(tokens)), _L.process == me.process)
        .values(expires_at=literal_column(_now_sql(conn)) + ttl_s)
        .returning(_L.machine, _L.token)).all()
    kept = {r.machine for r in extended if r.token == tokens[r.machine]}
    return set(tokens) - kept


class Fence:
    """The check that begins every posting transaction of this process (see the module doc)."""

    def __init__(self, me: Me, ttl_s: float) -> None:
        self.me, self.ttl_s = me, ttl_s

    def __call__(self, conn: Connection, tokens: dict[str, int]) -> set[str]:
        machines = sorted(tokens)
        rows = _lease_rows(conn, machines)
        process = self.me.process
        lost = {m for m in machines if (row := rows.get(m)) is None or row[0] != tokens[m] or row[1] != process}
        if LEDGER in lost:  # SQLite: another instance has the ledger, so nothing here is ours
            return set(machines)
        # The clock is read in the same statement: this runs at the start of every posting transaction.
        lapsed = [m for m in machines if m not in lost and rows[m][2]]
        if lapsed:  # expired, but nobody took it: still ours (see the module doc)
            conn.execute(update(schema.machine_leases).where(_L.machine.in_(lapsed))
                         .values(expires_at=literal_column(_now_sql(conn)) + self.ttl_s))
        return lost


def release(conn: Connection, me: Me, machines: Iterable[str] | None = None) -> int:
    """Let this process's leases expire now; how many there were.

    Without ``machines`` it is a clean stop: every lease, and the instance is marked stopped.
    With them (machines taken out of the mapping by a reload) only those leases."""
    now = db_now(conn)
    which = _L.process == me.process
    if machines is not None:
        which = which & _L.machine.in_(sorted(machines))
    result = conn.execute(update(schema.machine_leases).where(which).values(expires_at=now))
    if machines is None:
        conn.execute(update(schema.gateway_instances).where(
            schema.gateway_instances.c.process == me.process).values(stopped_at=now))
    return result.rowcount


def register(conn: Connection, me: Me, *, standby: bool, ttl_s: float, machines: int) -> None:
    """Record this instance for ``gateway status`` (a restart of the same name replaces the row)."""
    now = db_now(conn)
    make = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    row = {"name": me.instance, "host": me.host, "pid": me.pid, "process": me.process, "standby": standby,
           "ttl_s": ttl_s,
           "machines": machines, "started_at": now, "seen_at": now, "last_commit_at": None, "stopped_at": None}
    stmt = make(schema.gateway_instances)
    conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={k: stmt.excluded[k] for k in row
                                                                          if k != "name"}), [row])


def heartbeat(conn: Connection, me: Me, last_commit_at: float | None) -> None:
    values: dict = {"seen_at": db_now(conn)}
    if last_commit_at is not None:
        values["last_commit_at"] = last_commit_at
    conn.execute(update(schema.gateway_instances).where(
        schema.gateway_instances.c.process == me.process).values(**values))


@dataclass(frozen=True)
class InstanceStatus:
    name: str
    host: str
    pid: int
    standby: bool
    running: bool
    seen_ago_s: float
    last_commit_ago_s: float | None
    machines: list[tuple[str, float, float]]  # machine, lease age (s), expires in (s)


def status(conn: Connection) -> list[InstanceStatus]:
    """Every instance the ledger knows, with the leases it holds now."""
    now = db_now(conn)
    leases: dict[str, list] = {}
    for r in conn.execute(select(schema.machine_leases).where(_L.expires_at > now).order_by(_L.machine)):
        leases.setdefault(r.process, []).append((r.machine, now - r.acquired_at, r.expires_at - now))
    out = []
    for i in conn.execute(select(schema.gateway_instances).order_by(schema.gateway_instances.c.name)):
        running = i.stopped_at is None and now - i.seen_at < i.ttl_s
        out.append(InstanceStatus(i.name, i.host, i.pid, i.standby, running, now - i.seen_at,
                                  None if i.last_commit_at is None else now - i.last_commit_at,
                                  leases.get(i.process, [])))
    return out


# -- mapping reloads (``gateway reload``) ----------------------------------------------------
# The command asks a running instance by a row, then SIGHUP; the instance answers every open
# request of its process with the outcome of the reload that read the mapping after it.

_R = schema.mapping_reloads.c


def instance(conn: Connection, name: str):
    """The ``gateway_instances`` row of ``name`` with ``running`` (as ``status`` decides it), or None."""
    row = conn.execute(select(schema.gateway_instances).where(schema.gateway_instances.c.name == name)).first()
    if row is None:
        return None
    running = row.stopped_at is None and db_now(conn) - row.seen_at < row.ttl_s
    return row, running


def request_reload(conn: Connection, process: str, instance_name: str) -> int:
    """A request to the gateway process ``process`` to reload its mapping; its id."""
    return conn.execute(schema.mapping_reloads.insert().values(
        process=process, instance=instance_name, requested_by="command", requested_at=db_now(conn))
        .returning(_R.id)).scalar_one()


def open_reload_requests(conn: Connection, me: Me) -> list[int]:
    """The requests to this process not answered yet (taken before the mapping is read)."""
    return list(conn.execute(select(_R.id).where(_R.process == me.process, _R.outcome.is_(None))
                             .order_by(_R.id)).scalars())


def reload_done(conn: Connection, me: Me, requests: list[int], outcome: str, detail: str,
                requested_by: str = "signal") -> None:
    """Answer ``requests`` with the outcome; a reload nobody requested that way (a bare SIGHUP, the
    workbench's apply) gets a row, saying who asked."""
    now = db_now(conn)
    if requests:
        conn.execute(update(schema.mapping_reloads).where(_R.id.in_(requests), _R.outcome.is_(None))
                     .values(outcome=outcome, detail=detail, finished_at=now))
    else:
        conn.execute(schema.mapping_reloads.insert().values(
            process=me.process, instance=me.instance, requested_by=requested_by, requested_at=now, finished_at=now,
            outcome=outcome, detail=detail))


def reload_outcome(conn: Connection, request: int) -> tuple[str, str] | None:
    """(outcome, detail) of a request once the gateway answered it."""
    row = conn.execute(select(_R.outcome, _R.detail).where(_R.id == request)).first()
    return None if row is None or row.outcome is None else (row.outcome, row.detail or "")
