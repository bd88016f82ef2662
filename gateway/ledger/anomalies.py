"""Deciding open anomalies: list them, accept (post the held units) or reject them.

An IMPLAUSIBLE anomaly holds the units of a counter jump the gateway would not believe
(more than ``plausibility.max_units_per_reading`` in one reading). A person decides:

* accept: the held units are posted as ONE confirmation (with its backflush) of the
  order operation that was running when they were counted, in the same transaction
  that marks the anomaly decided. Its id is derived from the held counter range, which
  no other confirmation covers, so even a replay cannot post it twice.
* reject: the units are written off as not produced; nothing is posted.

The order is not stored on the anomaly (the writer records it without one); it is the
order of the confirmation or pending units adjacent to the held range on the same
counter: the one that ends where the jump starts, else the one that starts where the
jump ends, else the machine's current order.

An UNKNOWN_ORDER anomaly records that a machine counted while its order was empty or not
in the master data; its units are kept pending under that order number (``pending_units``).
While they are, the anomaly is listed with them (quantity, and age since the first one was
counted), and a person can assign them:

* assign: every pending unit of that machine under that order number is posted to a
  released order as one confirmation per operation (the operation the machine ran, or
  the one given), its id derived from the counter range as ever, in the transaction that
  deletes the pending rows and records the decision: once. A completed or unknown order is
  refused, saying why. So is a machine a live gateway holds the lease of: that gateway
  keeps the same units in memory and would write them again; it confirms them itself
  when the machine's order becomes known.

This module must never change an anomaly that is not open (or, for an assignment, held
under an unknown order), decide one twice, or post anything outside the decision's
transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, Engine, delete, insert, select, update

from gateway.domain.confirming import Pending, accumulate, confirm, parse_positions
from gateway.domain.records import AnomalyStatus, Increment, Position, Trigger
from gateway.ledger import schema as t
from gateway.ledger.masters import MasterCache
from gateway.ledger.tx import buffered
from gateway.ledger.audit import Action, manual
from gateway.ledger.claims import claim
from gateway.ledger.leases import db_now
from gateway.ledger.posting import post_confirmation

DECIDABLE = ("implausible", "not_producing")


class DecisionRefused(Exception):
    """The decision cannot be taken; the message says why, in one line."""


@dataclass(frozen=True)
class AnomalyView:
    id: int
    machine: str
    counter: str | None
    kind: str
    status: str
    units_held: Decimal
    source_time: datetime
    detail: str
    decision: str | None = None
    confirmation_id: str | None = None
    order: str | None = None  # unknown_order: the order number its units are pending under
    held_since: datetime | None = None  # unknown_order: when the first unit still pending was counted


def list_anomalies(engine: Engine, *, include_decided: bool = False) -> list[AnomalyView]:
    """Open anomalies, and the unknown-order ones whose units are still pending (the latest per
    machine and order: it names them all); everything with ``include_decided``."""
    a, d = t.anomalies, t.anomaly_decisions
    query = select(a, d.c.decision, d.c.confirmation_id).outerjoin(d, d.c.anomaly_id == a.c.id).order_by(a.c.id)
    with engine.connect() as conn:
        held = _held(conn)
        rows = conn.execute(query).all()
    latest = {(r.machine, r.order_no): r.id for r in rows
              if r.kind == UNKNOWN_ORDER and r.status == AnomalyStatus.RECORDED and r.order_no is not None}
    views = []
    for r in rows:
        units, since = r.units_held, None
        if latest.get((r.machine, r.order_no)) == r.id and (r.machine, r.order_no) in held:
            units, since = held[(r.machine, r.order_no)]
        if not include_decided and r.status != AnomalyStatus.OPEN and since is None:
            continue
        views.append(AnomalyView(r.id, r.machine, r.counter, r.kind, r.status, units, r.source_time, r.detail,
                                 r.decision, r.confirmation_id, r.order_no, since))
    return views


UNKNOWN_ORDER = "unknown_order"


def _held(conn: Connection, machine: str | None = None) -> dict[tuple[str, str], tuple[Decimal, datetime]]:
    """(machine, order) → units pending and the oldest ``opened_at``, for orders not released
    (empty, not in the master data, or completed)."""
    pu, po = t.pending_units, t.production_orders
    released = select(po.c.number).where(po.c.status == "released")
    q = select(pu).where(pu.c.order_no.not_in(released))
    if machine is not None:
        q = q.where(pu.c.machine == machine)
    out: dict[tuple[str, str], tuple[Decimal, datetime]] = {}
    for p in conn.execute(q):
        units, since = out.get((p.machine, p.order_no), (Decimal(0), p.opened_at))
        out[(p.machine, p.order_no)] = (units + p.yield_qty + p.scrap_qty, min(since, p.opened_at))
    return out


def _open_anomaly(conn: Connection, anomaly_id: int):
    row = conn.execute(select(t.anomalies).where(t.anomalies.c.id == anomaly_id)).first()
    if row is None:
        raise DecisionRefused(f"no anomaly {anomaly_id} (see `gateway anomalies list --all`)")
    decided = conn.execute(select(t.anomaly_decisions).where(t.anomaly_decisions.c.anomaly_id == anomaly_id)).first()
    if decided is not None:
        raise DecisionRefused(f"anomaly {anomaly_id} was already {decided.decision} at "
                              f"{decided.decided_at:%Y-%m-%d %H:%M:%S} UTC; a decision is final")
    if row.status != AnomalyStatus.OPEN:
        raise DecisionRefused(f"anomaly {anomaly_id} ({row.kind}) is information only; there is nothing to decide")
    if row.kind not in DECIDABLE:
        raise DecisionRefused(f"anomaly {anomaly_id} is of kind {row.kind}; only {', '.join(DECIDABLE)} can be decided")
    return row


def _position(text: str | None) -> Position | None:
    if not text:
        return None
    epoch, raw = text.split(":")
    return Position(int(epoch), int(raw))


def _running_order(conn: Connection, row, start: Position, end: Position) -> tuple[str, str] | None:
    """(order, operation) the held units belong to: see the module docstring."""
    found = []
    for table in (t.confirmations, t.pending_units):
        for r in conn.execute(select(table).where(table.c.machine == row.machine)):
            starts, ends = dict(parse_positions(r.start_pos)), dict(parse_positions(r.end_pos))
            if ends.get(row.counter) == start:
                found.append((0, r.order_no, r.operation))
            elif starts.get(row.counter) == end:
                found.append((1, r.order_no, r.operation))
    if found:
        _, order, operation = min(found)
        return order, operation
    return None


def _uom(conn: Connection, order: str) -> str | None:
    po, m = t.production_orders, t.materials
    r = conn.execute(select(m.c.uom).join(po, po.c.material == m.c.id).where(po.c.number == order)).first()
    return None if r is None else r.uom


def accept(engine: Engine, anomaly_id: int, *, reason: str = "", order: str | None = None,
           operation: str | None = None, audit: Action | None = None) -> tuple[str, str, Decimal]:
    """Post the held units; returns (confirmation id, order, units). One transaction."""
    now = t.utcnow()
    with manual(engine, audit) as record:
        conn = record.conn
        row = _open_anomaly(conn, anomaly_id)
        record.before = {"status": row.status, "units_held": row.units_held, "machine": row.machine}
        start, end = _position(row.start_pos), _position(row.end_pos)
        if start is None or end is None or not row.counter:
            raise DecisionRefused(f"anomaly {anomaly_id} has no counter range to post")
        if order is None:
            running = _running_order(conn, row, start, end)
            if running is None:
                raise DecisionRefused(f"anomaly {anomaly_id}: no confirmation of {row.machine} next to the held "
                                      "range tells which order was running; give it with --order and --operation")
            order, operation = running[0], operation or running[1]
        if not operation:
            raise DecisionRefused("give the operation with --operation")
        uom = _uom(conn, order)
        if uom is None:
            raise DecisionRefused(f"order {order!r} is not in the master data; load it first")
        # The units per count the counts were held at (none for scrap that is part of a total).
        per_count = int(row.units_held) // row.counts_held if row.counts_held else 1
        increment = Increment(row.machine, row.counter, row.counts_held, start, end, row.source_time, per_count)
        pending = accumulate(None, increment, order=order, operation=operation, now=now)
        confirmation = confirm(pending, Trigger.ANOMALY_ACCEPTED, uom)
        with buffered(conn) as tx:
            posted = post_confirmation(tx, confirmation, MasterCache(), now)
        if not posted:
            raise DecisionRefused(f"confirmation {confirmation.id} of anomaly {anomaly_id} is already posted")
        _decide(conn, anomaly_id, AnomalyStatus.ACCEPTED, reason, now, confirmation.id, order, operation)
        record.order, record.changed = order, {"status": AnomalyStatus.ACCEPTED}
        claim("anomaly_accepted", confirmation.id, anomaly_id=anomaly_id, confirmation_id=confirmation.id,
              order=order, operation=operation, units=str(row.units_held), reason=reason)
    return confirmation.id, order, row.units_held


def assign(engine: Engine, anomaly_id: int, order: str, *, operation: str | None = None, reason: str = "",
           audit: Action | None = None) -> tuple[list[str], Decimal]:
    """Post the units pending under an unknown order to ``order`` (module docstring): the
    confirmation ids and the units. One transaction."""
    now = t.utcnow()
    with manual(engine, audit) as record:
        conn = record.conn
        row = conn.execute(select(t.anomalies).where(t.anomalies.c.id == anomaly_id)).first()
        if row is None:
            raise DecisionRefused(f"no anomaly {anomaly_id} (see `gateway anomalies list --all`)")
        decided = conn.execute(select(t.anomaly_decisions).where(
            t.anomaly_decisions.c.anomaly_id == anomaly_id)).first()
        if decided is not None:
            raise DecisionRefused(f"anomaly {anomaly_id} was already {decided.decision} at "
                                  f"{decided.decided_at:%Y-%m-%d %H:%M:%S} UTC; a decision is final")
        if row.kind != UNKNOWN_ORDER or row.order_no is None:
            raise DecisionRefused(f"anomaly {anomaly_id} is of kind {row.kind}; only units held under an unknown "
                                  "order are assigned (accept or reject the others)")
        with buffered(conn) as tx:
            status = tx.order_status(order)  # the order's lock first (gateway.ledger.tx)
            if status is None:
                raise DecisionRefused(f"order {order!r} is not in the master data; load it first")
            if status != "released":
                raise DecisionRefused(f"order {order} is {status}: held units are posted to a released order only")
            _not_counted_now(conn, row.machine)
            pu = t.pending_units
            pendings = conn.execute(select(pu).where(pu.c.machine == row.machine, pu.c.order_no == row.order_no)
                                    .order_by(pu.c.operation).with_for_update()).all()
            if not pendings:
                raise DecisionRefused(f"anomaly {anomaly_id}: no units of {row.machine} are pending under order "
                                      f"{row.order_no!r} any more (confirmed once the order became known, or "
                                      "assigned through another anomaly)")
            uom = _uom(conn, order)
            record.before = {"machine": row.machine, "held_under": row.order_no,
                             "units": {p.operation: p.yield_qty + p.scrap_qty for p in pendings}}
            posted, units = [], Decimal(0)
            masters = MasterCache()
            for p in pendings:
                target = operation or p.operation
                held = Pending(p.machine, order, target, p.yield_qty, p.scrap_qty, parse_positions(p.start_pos),
                               parse_positions(p.end_pos), p.first_source_time, p.last_source_time, p.opened_at)
                confirmation = confirm(held, Trigger.ASSIGNED, uom)
                if not post_confirmation(tx, confirmation, masters, now):
                    raise DecisionRefused(f"confirmation {confirmation.id} of these units is already posted")
                posted.append(confirmation.id)
                units += p.yield_qty + p.scrap_qty
                conn.execute(delete(pu).where(pu.c.machine == p.machine, pu.c.order_no == p.order_no,
                                              pu.c.operation == p.operation))
        conn.execute(insert(t.anomaly_decisions), [{
            "anomaly_id": anomaly_id, "decision": AnomalyStatus.ASSIGNED, "reason": reason, "confirmation_id": posted[0],
            "order_no": order, "operation": operation or pendings[0].operation, "decided_at": now}])
        conn.execute(update(t.anomalies).where(t.anomalies.c.id == anomaly_id).values(status=AnomalyStatus.ASSIGNED))
        record.order, record.changed = order, {"status": AnomalyStatus.ASSIGNED, "confirmations": posted}
        claim("anomaly_assigned", posted[0], anomaly_id=anomaly_id, machine=row.machine, held_under=row.order_no,
              order=order, confirmations=" ".join(posted), units=str(units), reason=reason)
    return posted, units


def _not_counted_now(conn: Connection, machine: str) -> None:
    """Refused while a live gateway holds the machine's lease: it keeps the pending units in memory too."""
    ml = t.machine_leases
    lease = conn.execute(select(ml).where(ml.c.machine == machine)).first()
    if lease is not None and lease.expires_at > db_now(conn):
        raise DecisionRefused(f"{machine} is counted by gateway {lease.owner} on {lease.host} (pid {lease.pid}), "
                              "which holds the same units in memory: put the machine on the order at the PLC "
                              "(they are confirmed then), or stop that gateway and assign them")


def reject(engine: Engine, anomaly_id: int, *, reason: str = "", audit: Action | None = None) -> Decimal:
    """Write the held units off; returns how many. Nothing is posted."""
    now = t.utcnow()
    with manual(engine, audit) as record:
        conn = record.conn
        row = _open_anomaly(conn, anomaly_id)
        record.before = {"status": row.status, "units_held": row.units_held, "machine": row.machine}
        _decide(conn, anomaly_id, AnomalyStatus.REJECTED, reason, now, None, None, None)
        record.changed = {"status": AnomalyStatus.REJECTED}
        claim("anomaly_rejected", "", anomaly_id=anomaly_id, machine=row.machine, units=str(row.units_held),
              reason=reason)
    return row.units_held


def _decide(conn: Connection, anomaly_id: int, decision: AnomalyStatus, reason: str, now: datetime,
            confirmation_id: str | None, order: str | None, operation: str | None) -> None:
    # The insert fails on the primary key if another decision won the race: the caller's
    # transaction then rolls back, posting included.
    conn.execute(insert(t.anomaly_decisions), [{
        "anomaly_id": anomaly_id, "decision": decision, "reason": reason, "confirmation_id": confirmation_id,
        "order_no": order, "operation": operation, "decided_at": now}])
    done = conn.execute(update(t.anomalies).where(t.anomalies.c.id == anomaly_id, t.anomalies.c.status == AnomalyStatus.OPEN)
                        .values(status=decision))
    if done.rowcount != 1:
        raise DecisionRefused(f"anomaly {anomaly_id} was decided meanwhile")
