"""The transactional outbox: what is to be delivered to each configured output, written with the posting.

For: the transactions that post a document (``posting.backflush`` for a confirmation, a
reversal, an adjustment, a manual stock posting) call ``enqueue`` on their own
``LedgerTx``, so a delivery row exists exactly when the document does — a crash between
posting and delivering loses nothing, and a rolled-back posting leaves no delivery behind.
The delivery workers (``gateway.outputs.worker``) read and mark rows here on connections of
their own; the CLI and HTTP API list, retry, park and skip them (``gateway.app.outbox``).

Routing: the running gateway writes its mapping's ``outputs:`` as (target, machine) rows in
``outbox_routes`` (``set_routes``); every posting transaction reads them, so a command-line
reversal is routed like the service's confirmations. A document of no machine (a manual
stock posting) goes to the targets routed to every machine (``*``); one of an order without
a machine (an adjustment) also to the targets of the machines that confirmed on the order.

A row's ``key`` ("<document>:<what>:<target>") is unique: the target sees it, and a second
insert of the same delivery would fail the posting rather than deliver twice.

Must never: decide what a posting is (it copies what the transaction wrote), send anything
over a network, or update a row outside the transitions below
(pending/unknown → delivered | parked | pending/unknown again; parked → pending | skipped).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import (Connection, Engine, String, and_, bindparam, cast, delete, exists, func, insert, literal, or_,
                        select, update)

from gateway.clock import utcnow
from gateway.ledger import schema
from gateway.ledger.audit import Action, manual
from gateway.ledger.claims import claim
from gateway.ledger.tx import LedgerTx

_O = schema.outbox.c
EVERY_MACHINE = "*"
OPEN = ("pending", "unknown")  # a worker delivers these
STATUSES = ("pending", "unknown", "delivered", "parked", "skipped")
PAYLOAD_VERSION = 1


class OutboxRefused(ValueError):
    """A manual outbox action that cannot be done (unknown id, wrong state); the message says why."""


def _scalar(value: Any) -> Any:
    """What orjson cannot write by itself: a Decimal as a string (exact), an enum without a str or int
    mix-in as its value (times, dates and str/int enums it writes itself, in ISO 8601 and by value)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if hasattr(value, "value"):
        return value.value
    raise TypeError(f"{type(value).__name__} is not a payload value")


def payload_json(body: dict[str, Any]) -> str:
    """The stored payload, keys sorted. The writer encodes one per posted document inside its
    transaction: orjson (C) takes ~20 µs for a confirmation's body where ``json.dumps`` took ~85 µs,
    and calls back only for Decimals."""
    return orjson.dumps(body, default=_scalar, option=orjson.OPT_SORT_KEYS).decode()


def movements(ms) -> list[dict]:
    return [{"type": m.kind.value, "material": m.material, "location": m.location, "qty": m.qty, "uom": m.uom,
             "lot": m.lot, "bom_item": m.bom_item} for m in ms]


def activities(acts) -> list[dict]:
    return [{"operation": a.operation, "work_center": a.work_center, "activity": a.activity, "hours": a.hours,
             "cost": a.cost, "currency": a.currency} for a in acts]


# -- routing -----------------------------------------------------------------------------


def set_routes(engine: Engine, routes: dict[str, list[str] | None]) -> None:
    """Replace the routes of the targets named in ``routes`` (target → machines, None: every machine).

    Targets not named keep their rows: another gateway on the same ledger may route them.
    """
    rows = [{"target": name, "machine": m} for name, machines in sorted(routes.items())
            for m in (sorted(set(machines)) if machines is not None else [EVERY_MACHINE])]
    with engine.begin() as conn:
        if routes:
            conn.execute(delete(schema.outbox_routes).where(schema.outbox_routes.c.target.in_(sorted(routes))))
        if rows:
            conn.execute(insert(schema.outbox_routes), rows)


def drop_routes(engine: Engine, targets: Iterable[str]) -> None:
    """Targets removed from the mapping: nothing new is routed to them (their open rows stay)."""
    names = sorted(set(targets))
    if names:
        with engine.begin() as conn:
            conn.execute(delete(schema.outbox_routes).where(schema.outbox_routes.c.target.in_(names)))


@dataclass
class _Routing:
    """The routes as one transaction sees them (read once, kept on its LedgerTx): the targets of every
    machine, the machines of each other target, and the answers already given per machine."""

    everyone: tuple[str, ...]
    some: dict[str, set[str]]
    by_machine: dict[str, tuple[str, ...]]

    def of(self, machines: set[str]) -> tuple[str, ...]:
        if not self.some:
            return self.everyone
        return tuple(sorted([*self.everyone, *(name for name, ms in self.some.items() if ms & machines)]))


def _routing(tx: LedgerTx) -> _Routing:
    routing = getattr(tx, "_outbox_routing", None)
    if routing is None:
        routes: dict[str, set[str]] = {}
        for target, machine in tx.conn.execute(select(schema.outbox_routes.c.target, schema.outbox_routes.c.machine)):
            routes.setdefault(target, set()).add(machine)
        routing = tx._outbox_routing = _Routing(
            tuple(sorted(name for name, ms in routes.items() if EVERY_MACHINE in ms)),
            {name: ms for name, ms in routes.items() if EVERY_MACHINE not in ms}, {})
    return routing


def _targets(tx: LedgerTx, machine: str | None, order: str | None) -> tuple[str, ...]:
    """The targets of a machine's documents; of an order's when there is no machine (its machines so far);
    of every machine's when neither."""
    routing = _routing(tx)
    if machine is not None:
        found = routing.by_machine.get(machine)
        if found is None:
            found = routing.by_machine[machine] = routing.of({machine})
        return found
    if order is not None and routing.some:
        c = schema.confirmations.c
        return routing.of(set(tx.conn.execute(select(c.machine).where(c.order_no == order).distinct()).scalars()))
    return routing.everyone


def enqueue(tx: LedgerTx, what: str, document: str, *, order: str | None, machine: str | None,
            body: dict[str, Any] | Callable[[], dict[str, Any]], now: datetime) -> int:
    """One delivery row per target this document is routed to, buffered in ``tx``; how many.

    ``body`` may be a function that builds it: with no target routed (no ``outputs:``) it is not built."""
    targets = _targets(tx, machine, order)
    if not targets:
        return 0
    if callable(body):
        body = body()
    payload = payload_json({"version": PAYLOAD_VERSION, "what": what, "document": document,
                            "order": order, "machine": machine, **body})
    tx.insert(schema.outbox, [{
        "key": f"{document}:{what}:{target}", "target": target, "what": what, "document": document,
        "order_no": order, "machine": machine, "payload": payload, "status": "pending", "attempts": 0,
        "created_at": now, "next_at": now, "updated_at": now, "delivered_at": None, "last_error": ""}
        for target in targets])
    return len(targets)


def only_machine(conn: Connection, order: str) -> str | None:
    """The machine of an order's confirmations when there is exactly one (an adjustment's machine)."""
    c = schema.confirmations.c
    found = list(conn.execute(select(c.machine).where(c.order_no == order).distinct().limit(2)).scalars())
    return found[0] if len(found) == 1 else None


# -- the workers' side -------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: int
    key: str
    target: str
    what: str
    document: str
    order: str | None
    machine: str | None
    payload: str
    status: str
    attempts: int
    created_at: datetime
    next_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    last_error: str


def _row(r) -> Row:
    return Row(r.id, r.key, r.target, r.what, r.document, r.order_no, r.machine, r.payload, r.status, r.attempts,
               r.created_at, r.next_at, r.updated_at, r.delivered_at, r.last_error)


def undelivered(engine: Engine, target: str, limit: int, *, machines: set[str] | None = None,
                delivered: Iterable[int] = ()) -> list[Row]:
    """The oldest rows of ``target`` not yet delivered or skipped (parked ones too: they hold their order
    back), oldest first. With ``machines``: only theirs and those of no machine (the ownership rule).
    ``delivered``: ids the caller knows were delivered, their marks not yet written — left out, not read
    (a worker's last round's: read once to be sent, reading them again doubled the relay's reads; left out,
    the relay took 44–48 % of a core instead of 49–54 % at ~2 000 deliveries/s, ``bench/RESULTS.md``).

    A read of its own (on SQLite a deferred BEGIN): it never takes or waits for the write lock."""
    q = select(schema.outbox).where(_O.target == target, _O.status.in_(("pending", "unknown", "parked")))
    if machines is not None:
        q = q.where(or_(_O.machine.is_(None), _O.machine.in_(sorted(machines))))
    delivered = sorted(delivered)
    if delivered:
        q = q.where(_O.id.not_in(delivered))
    with engine.connect().execution_options(read_only=True) as conn:
        return [_row(r) for r in conn.execute(q.order_by(_O.id).limit(limit))]


@dataclass(frozen=True)
class Mark:
    """What became of one attempt: the row's new status, attempts, next try and the target's message."""

    id: int
    status: str
    attempts: int
    next_at: datetime
    error: str = ""


def mark(engine: Engine, marks: list[Mark], now: datetime | None = None, *, in_flight: Iterable[int] = ()) -> None:
    """Write the attempts' outcomes, and mark ``in_flight`` rows (pending ones about to be sent)
    unknown, in a short transaction of the caller's own (a delivery worker's: never the ledger
    writer's, whose transactions it would lengthen). Delivered is a fact and always written; any
    other outcome only onto a row still open (a person may have parked or skipped it meanwhile).

    UPDATEs by primary key and nothing else, delivered rows and rows in flight by lists of ids (no
    per-row parameters to bind): a round of a thousand rows holds SQLite's write lock a few
    milliseconds, which a ledger writer wanting it meanwhile waits for (committing the marks itself
    took the writer ~35 µs of CPU per confirmation and two outputs)."""
    in_flight = sorted(in_flight)
    if not marks and not in_flight:
        return
    now = now or utcnow()
    delivered: dict[int, list[int]] = {}  # attempts → ids
    for m in marks:
        if m.status == "delivered":
            delivered.setdefault(m.attempts, []).append(m.id)
    other = [{"b_id": m.id, "b_status": m.status, "b_attempts": m.attempts, "b_next": m.next_at, "b_err": m.error[:2000],
              "b_now": now} for m in marks if m.status != "delivered"]
    with engine.begin() as conn:
        for attempts, ids in sorted(delivered.items()):
            for chunk in _chunks(ids):
                conn.execute(_DELIVERED, {"ids": chunk, "attempts": attempts, "now": now})
        if other:
            # (no IN (…) with executemany: PostgreSQL's driver cannot expand it per row)
            conn.execute(_OTHER, other)
        for chunk in _chunks(in_flight):
            conn.execute(_IN_FLIGHT, {"ids": chunk, "now": now})


# Built once (SQLAlchemy caches their compiled form): a round's marks are a few statements, not a
# few statements' worth of expression building per chunk.
_DELIVERED = update(schema.outbox).where(_O.id.in_(bindparam("ids", expanding=True))).values(
    status="delivered", attempts=bindparam("attempts"), delivered_at=bindparam("now"), updated_at=bindparam("now"),
    last_error="")
_OTHER = update(schema.outbox).where(and_(_O.id == bindparam("b_id"), or_(_O.status == "pending",
                                                                      _O.status == "unknown"))).values(
    status=bindparam("b_status"), attempts=bindparam("b_attempts"), next_at=bindparam("b_next"),
    updated_at=bindparam("b_now"), last_error=bindparam("b_err"))
_IN_FLIGHT = update(schema.outbox).where(_O.id.in_(bindparam("ids", expanding=True)), _O.status == "pending").values(
    status="unknown", updated_at=bindparam("now"))


def _chunks(ids: list[int], size: int = 2000) -> Iterable[list[int]]:
    return (ids[i:i + size] for i in range(0, len(ids), size))


@dataclass(frozen=True)
class TargetStats:
    target: str
    pending: int  # pending + unknown
    oldest_seconds: float  # age of the oldest of them; 0 when none
    parked: int


def stats(engine: Engine, now: datetime | None = None) -> list[TargetStats]:
    """Per target (routed or with rows): what waits, how old the oldest is, what is parked."""
    now = now or utcnow()
    with engine.connect().execution_options(read_only=True) as conn:
        waiting = {r.target: (r.n, r.oldest) for r in conn.execute(
            select(_O.target, func.count().label("n"), func.min(_O.created_at).label("oldest"))
            .where(_O.status.in_(OPEN)).group_by(_O.target))}
        parked = dict(conn.execute(select(_O.target, func.count()).where(_O.status == "parked").group_by(_O.target)).all())
        routed = set(conn.execute(select(schema.outbox_routes.c.target).distinct()).scalars())
    out = []
    for target in sorted(routed | set(waiting) | set(parked)):
        n, oldest = waiting.get(target, (0, None))
        oldest = schema.UtcDateTime().process_result_value(oldest, engine.dialect) if isinstance(oldest, str) else oldest
        age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
        out.append(TargetStats(target, n, age, parked.get(target, 0)))
    return out


# -- manual actions (``gateway outbox …``) -------------------------------------------------


def listed(engine: Engine, *, status: str | None = None, target: str | None = None, order: str | None = None,
           limit: int = 500) -> list[Row]:
    """Rows newest first; by default those not delivered (pending, unknown, parked). ``order``: the
    order's deliveries, and the goods issues posted for its error items (``_reissued_for``)."""
    q = select(schema.outbox)
    if status == "all":
        pass
    elif status is not None:
        if status not in STATUSES:
            raise OutboxRefused(f"unknown status {status!r}: one of {', '.join(STATUSES)} or all")
        q = q.where(_O.status == status)
    else:
        q = q.where(_O.status.in_(("pending", "unknown", "parked")))
    if target is not None:
        q = q.where(_O.target == target)
    if order is not None:
        q = q.where(or_(_O.order_no == order, _reissued_for(order)))
    with engine.connect() as conn:
        return [_row(r) for r in conn.execute(q.order_by(_O.id.desc()).limit(limit))]


_REISSUE = "error:"  # the prefix of a reissued goods issue's document name


def reissue_document(error_id: int, attempt: int) -> str:
    """The document name of a goods issue that reprocessing an error item posted (``posting.reissue``)."""
    return f"{_REISSUE}{error_id}:{attempt}"


def _reissued_for(order: str):
    """The goods issues that reprocessing an error item of ``order`` posted (``reissue_document``): their
    rows name no order (they are not chained behind the order's deliveries); an operator listing an
    order's deliveries expects them there too."""
    eq = schema.error_queue.c
    return and_(_O.what == "stock", _O.order_no.is_(None), _O.document.like(f"{_REISSUE}%"),
                exists().where(eq.order_no == order,
                               _O.document.like(literal(_REISSUE) + cast(eq.id, String) + literal(":%"))))


_MOVES = {  # action → (from these statuses, to this one)
    "retry": (("parked", "pending", "unknown"), "pending"),
    "park": (("pending", "unknown"), "parked"),
    "skip": (("parked", "pending", "unknown"), "skipped"),
}


def act(engine: Engine, verb: str, ids: list[int], reason: str = "", *, audit: Action | None = None,
        now: datetime | None = None) -> list[Row]:
    """``retry`` (send again now, attempts from 0; an unknown one is asked about first), ``park`` (a person
    holds it) or ``skip`` (never deliver it: the target got it another way). All or nothing; the audit row
    in the same transaction. Refused for an unknown id or one in a state the action does not apply to."""
    if verb not in _MOVES:
        raise OutboxRefused(f"unknown outbox action {verb!r}")
    if not ids:
        raise OutboxRefused("name the deliveries (ids from `gateway outbox list`)")
    if verb in ("park", "skip") and not reason.strip():
        raise OutboxRefused(f"give a reason to {verb} a delivery (--reason)")
    frm, to = _MOVES[verb]
    now = now or utcnow()
    with manual(engine, audit) as record:
        conn = record.conn
        rows = {r.id: _row(r) for r in conn.execute(
            select(schema.outbox).where(_O.id.in_(sorted(set(ids)))).with_for_update())}
        for i in ids:
            if i not in rows:
                raise OutboxRefused(f"no delivery {i} in the outbox")
            if rows[i].status not in frm:
                raise OutboxRefused(f"delivery {i} ({rows[i].key}) is {rows[i].status}; "
                                    f"{verb} applies to {' or '.join(frm)} deliveries")
        record.before = {"outbox": {str(i): r.status for i, r in sorted(rows.items())}}
        orders = {r.order for r in rows.values() if r.order}
        record.order = orders.pop() if len(orders) == 1 else None
        record.subject = " ".join(f"outbox:{i}" for i in sorted(rows))
        values: dict[str, Any] = {"status": to, "updated_at": now}
        if verb == "retry":
            values |= {"attempts": 0, "next_at": now}
        else:
            values |= {"last_error": f"{verb} by hand: {reason}"}
        for i, r in sorted(rows.items()):
            # retry of an unknown row keeps it unknown: the worker asks the target before sending again
            v = dict(values, status="unknown") if verb == "retry" and r.status == "unknown" else values
            conn.execute(update(schema.outbox).where(_O.id == i).values(**v))
            claim(f"outbox_{verb}", f"outbox:{i}", delivery=i, key=r.key, target=r.target, reason=reason)
        return [_row(r) for r in conn.execute(select(schema.outbox).where(_O.id.in_(sorted(rows))).order_by(_O.id))]


def backoff_until(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)
