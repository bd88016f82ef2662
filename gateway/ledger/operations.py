"""Operations a person starts from the CLI: receive stock, reprocess the error queue, trace lots.

Each write runs in one transaction of its own, next to the service's writer, and posts
through one ``LedgerTx`` (``buffered``) for the whole transaction, with the same
functions the writer uses: a posting made here looks exactly like one made by backflush,
and it takes the same locks (the order first, then its stock; see ``gateway.ledger.tx``),
so the writer and a command posting to the same order or stock take turns on PostgreSQL
as they do on SQLite.

Reprocessing is idempotent: an error item is resolved by what it issues, so running
it twice posts nothing twice.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Connection, Engine, insert, select, update

from gateway.domain.adjustments import give_back, returns_from_issues
from gateway.domain.backflush import StockLeft, issue_component, plan
from gateway.domain.confirming import parse_positions
from gateway.domain.records import (
    ActivityPosting,
    BackflushError,
    Confirmation,
    ErrorStatus,
    FlushingRule,
    GenealogyEdge,
    GoodsMovement,
    MovementKind,
    NotBackflushed,
    OperationProgress,
    StockView,
    Trigger,
)
from gateway.domain.reversal import Posted, Reversal, reverse
from gateway.domain.valuation import value
from gateway.ledger import outbox
from gateway.ledger import schema as t
from gateway.ledger.audit import Action, manual
from gateway.ledger.claims import claim
from gateway.ledger.failures import lost_to_transient, short_error
from gateway.ledger.masters import MasterCache, read_materials, read_order, read_work_centers
from gateway.ledger.sql import issued_to_order
from gateway.ledger.tx import LedgerTx, buffered
from gateway.ledger.posting import (
    backflush,
    cannot_plan,
    close_error,
    reissue,
    settle,
    write_activities,
    write_deferred,
    write_errors,
    write_genealogy,
)


REPROCESSED_BY_HAND = "errors reprocess"  # ``resolved_by`` of an item a person's reprocessing cleared


class OperationRefused(Exception):
    """The request contradicts the ledger; nothing was written. The message says why."""


# -- stock receipt --------------------------------------------------------------------


def stock_material(conn: Connection, material: str, qty: Decimal, lot: str, *, verb: str = "kept"):
    """The material row of a stock movement a person asks for, or why it cannot be booked:
    unknown material, a lot missing (lot-tracked) or given (not lot-tracked), more
    decimals than the material is ``verb`` in."""
    m = conn.execute(select(t.materials).where(t.materials.c.id == material)).first()
    if m is None:
        raise OperationRefused(f"unknown material {material!r}; load it with `gateway masterdata load`")
    if m.tracking == "serial" and not lot:
        raise OperationRefused(f"{material} is serial-tracked: give the serial with --lot")
    if m.tracking == "serial" and qty not in (0, 1):
        raise OperationRefused(f"{material} is serial-tracked: one serial is one unit, got {qty} (one command "
                               "per serial)")
    if m.lot_tracked and not lot:
        raise OperationRefused(f"{material} is lot-tracked: give the lot with --lot")
    if not m.lot_tracked and lot:
        raise OperationRefused(f"{material} is not lot-tracked: leave out --lot")
    if qty.as_tuple().exponent < -m.decimals:
        raise OperationRefused(f"{material} is {verb} in {m.decimals} decimal(s) of {m.uom}; got {qty}")
    return m


def receive_stock(engine: Engine, material: str, qty: Decimal, location: str, *, lot: str = "",
                  expires_on: date | None = None, now: datetime | None = None, audit: Action | None = None) -> None:
    """Goods receipt without an order (movement 501), e.g. line-side replenishment."""
    now = now or t.utcnow()
    if qty <= 0:
        raise OperationRefused(f"quantity must be positive, got {qty}")
    with manual(engine, audit) as record, buffered(record.conn) as tx:
        conn = record.conn
        m = stock_material(conn, material, qty, lot)
        record.before = {"stock": tx.stock_qty(material, location, lot)}
        tx.register_lot(material, lot, now, expires_on=expires_on)
        kind = MovementKind.OTHER_RECEIPT
        tx.move(None, None, [GoodsMovement(kind, material, location, qty, m.uom, lot=lot)], now)
        movements = movement_ids(tx, kind, material, location, lot, now)
        for movement in movements:
            claim("stock_received", f"movement:{movement}", movement_id=movement, material=material, qty=str(qty),
                  uom=m.uom, location=location, lot=lot)
            outbox.enqueue(tx, "stock", f"movement:{movement}", order=None, machine=None, now=now, body={
                "posted_at": now, "movements": outbox.movements(
                    [GoodsMovement(kind, material, location, qty, m.uom, lot=lot)])})
        settle(tx, MasterCache(), now, by=f"movement:{movements[-1]}")


def movement_ids(tx: LedgerTx, kind: MovementKind, material: str, location: str, lot: str,
                 now: datetime) -> list[int]:
    """The ids of the goods movements without a document this transaction just made (a receipt, a count):
    they are what its audit row and log line name."""
    tx.flush()
    gm = t.goods_movements.c
    return list(tx.conn.execute(select(gm.id).where(
        gm.confirmation_id.is_(None), gm.kind == kind.value, gm.material == material, gm.location == location,
        gm.lot == lot, gm.posted_at == now).order_by(gm.id)).scalars())


# -- error queue ----------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorItem:
    id: int
    created_at: datetime
    order: str
    confirmation_id: str
    material: str
    location: str
    missing_qty: Decimal
    uom: str
    reason: str
    status: str
    attempts: int
    resolved_by: str | None = None  # the posting that cleared it (``error_queue.resolved_by``)
    missing_value: Decimal = Decimal(0)  # at the material's standard price (0: a whole confirmation)
    currency: str = "EUR"


def list_errors(engine: Engine, *, include_closed: bool = False) -> list[ErrorItem]:
    q = select(t.error_queue).order_by(t.error_queue.c.id)
    if not include_closed:
        q = q.where(t.error_queue.c.status == ErrorStatus.OPEN)
    with engine.connect() as conn:
        prices = {m.id: (m.standard_price, m.currency) for m in read_materials(conn).values()}
        return [ErrorItem(r.id, r.created_at, r.order_no, r.confirmation_id, r.material, r.location,
                          r.missing_qty, r.uom, r.reason, r.status, r.attempts, r.resolved_by,
                          value(r.missing_qty, prices.get(r.material, (Decimal(0), ""))[0]),
                          prices.get(r.material, (Decimal(0), "EUR"))[1])
                for r in conn.execute(q)]


@dataclass
class ReprocessResult:
    resolved: list[int]
    still_open: list[tuple[int, str]]  # id, why


def reprocess_errors(engine: Engine, ids: list[int] | None = None, *, now: datetime | None = None,
                     audit: Action | None = None) -> ReprocessResult:
    """Retry open error items (all, or the given ids) against today's stock and master data."""
    now = now or t.utcnow()
    result = ReprocessResult([], [])
    with manual(engine, audit) as record, buffered(record.conn) as tx:
        conn = record.conn
        q = select(t.error_queue).where(t.error_queue.c.status == ErrorStatus.OPEN).order_by(t.error_queue.c.id)
        if ids:
            q = q.where(t.error_queue.c.id.in_(ids))
            found = {r.id for r in conn.execute(q)}
            unknown = sorted(set(ids) - found)
            if unknown:
                raise OperationRefused(f"no open error item with id {', '.join(map(str, unknown))} "
                                       "(see `gateway errors list --all`)")
        masters = MasterCache()
        # Locked: a second `errors reprocess` at the same time waits, then finds them resolved.
        rows = conn.execute(q.with_for_update()).all()
        tx.lock_orders(r.order_no for r in rows)  # all of them first, in one order (deadlocks)
        record.before = {"open": {row.id: row.missing_qty for row in rows}}
        record.subject = " ".join(str(row.id) for row in rows)
        for row in rows:
            left, why = _reprocess_one(tx, row, masters, now)
            if left == 0:
                result.resolved.append(row.id)
            else:
                result.still_open.append((row.id, why))
            close_error(conn, row, left, why, now, REPROCESSED_BY_HAND)
        # What it issued took stock; a whole confirmation posted now may have received some.
        settle(tx, masters, now)
        record.changed = {"resolved": result.resolved, "still_open": [i for i, _ in result.still_open]}
    return result


def _reprocess_one(tx: LedgerTx, row, masters: MasterCache, now: datetime) -> tuple[Decimal, str]:
    if not row.material:  # a whole confirmation could not be planned or posted: post it now, if it can be
        confirmation = read_confirmation(tx.conn, row.confirmation_id)
        try:
            with tx.savepoint():
                refusal = cannot_plan(tx, confirmation, masters)
                if not refusal:
                    backflush(tx, confirmation, masters, now)
        except Exception as exc:
            if lost_to_transient(exc):
                raise
            refusal = f"not posted: {short_error(exc)}; fix the cause, then `gateway errors reprocess`"
        return (row.missing_qty, refusal) if refusal else (Decimal(0), "")
    return reissue(tx, row, masters, now)


def read_confirmation(conn: Connection, confirmation_id: str) -> Confirmation:
    r = conn.execute(select(t.confirmations).where(t.confirmations.c.id == confirmation_id)).one()
    return Confirmation(r.id, r.machine, r.order_no, r.operation, r.yield_qty, r.scrap_qty, r.uom,
                        parse_positions(r.start_pos), parse_positions(r.end_pos), r.first_source_time,
                        r.last_source_time, r.trigger, tuple(r.serials.split("\n") if r.serials else ()))


# -- genealogy ------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceLine:
    depth: int
    material: str
    lot: str
    qty: Decimal
    uom: str
    serial: bool = False  # ``lot`` is a serial (a serial-tracked material's lot of one unit)


def trace(engine: Engine, lot: str, *, material: str | None = None, direction: str = "back") -> list[TraceLine]:
    """Where-from (``back``: the component lots in a lot) or where-used (``forward``), all levels.

    Serials are lots of one unit, so a trace mixes them freely: a serial back to its order's
    lot and that lot's components, a component lot forward to the serials made from it."""
    edges: dict[tuple[str, str], dict[tuple[str, str], tuple[Decimal, str]]] = defaultdict(dict)
    with engine.connect() as conn:
        serial = set(conn.execute(select(t.materials.c.id).where(t.materials.c.tracking == "serial")).scalars())
        order_lots: set[tuple[str, str]] = set()
        for e in conn.execute(select(t.genealogy)):
            src, dst = ((e.product, e.product_lot), (e.component, e.component_lot)) if direction == "back" \
                else ((e.component, e.component_lot), (e.product, e.product_lot))
            qty, _ = edges[src].get(dst, (Decimal(0), e.uom))
            edges[src][dst] = (qty + e.qty, e.uom)
            if e.component == e.product:  # a serial received from its order's lot (receive_serials)
                order_lots.add((e.component, e.component_lot))

    def is_serial(node: tuple[str, str]) -> bool:
        return node[0] in serial and node not in order_lots

    starts = [key for key in edges if key[1] == lot and (material is None or key[0] == material)]
    lines: list[TraceLine] = []

    def walk(node: tuple[str, str], depth: int, seen: frozenset) -> None:
        for (m, l), (qty, uom) in sorted(edges.get(node, {}).items()):
            if qty == 0 or (m, l) in seen:  # fully reversed, or a cycle in bad data
                continue
            lines.append(TraceLine(depth, m, l, qty, uom, is_serial((m, l))))
            walk((m, l), depth + 1, seen | {(m, l)})

    for start in starts:
        lines.append(TraceLine(0, start[0], start[1], Decimal(0), "", is_serial(start)))
        walk(start, 1, frozenset({start}))
    return lines


# -- reversal ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReversalResult:
    reversal_id: str
    movements: int
    forced: bool


def reverse_confirmation(engine: Engine, confirmation_id: str, reason: str, *, force_reason: str | None = None,
                         now: datetime | None = None, audit: Action | None = None) -> ReversalResult:
    """Post the exact inverse of a confirmation, linked to it; refused if it cannot be undone."""
    now = now or t.utcnow()
    if not reason.strip():
        raise OperationRefused("give a reason for the reversal (--reason)")
    with manual(engine, audit) as record, buffered(record.conn) as tx:
        conn = record.conn
        row = conn.execute(select(t.confirmations).where(t.confirmations.c.id == confirmation_id)).first()
        if row is None:
            raise OperationRefused(f"no confirmation {confirmation_id}")
        record.order = row.order_no
        record.before = {"confirmation": {"machine": row.machine, "operation": row.operation,
                                          "yield_qty": row.yield_qty, "scrap_qty": row.scrap_qty, "uom": row.uom}}
        tx.order_status(row.order_no)  # the order first, then its stock (gateway.ledger.tx)
        done = conn.execute(select(t.reversals).where(t.reversals.c.confirmation_id == confirmation_id)).first()
        if done is not None:
            raise OperationRefused(f"confirmation {confirmation_id} was already reversed by {done.id} "
                                   f"on {done.created_at:%Y-%m-%d %H:%M} ({done.reason})")
        doc = f"R-{confirmation_id}"
        eq = t.error_queue.c
        if conn.execute(select(eq.id).where(eq.confirmation_id == confirmation_id, eq.status == ErrorStatus.OPEN,
                                            eq.material == "")).first() is not None:
            # Never planned or posted (it waits whole in the error queue): nothing to undo, and it never
            # added to the order's progress. Its queue entry is cancelled; the reversal records why.
            conn.execute(update(t.error_queue).where(eq.confirmation_id == confirmation_id, eq.status == ErrorStatus.OPEN)
                         .values(status=ErrorStatus.CANCELLED, resolved_at=now))
            conn.execute(insert(t.reversals), [{"id": doc, "confirmation_id": confirmation_id, "reason": reason,
                                                "forced": False, "force_reason": None, "created_at": now}])
            claim("confirmation_reversed", doc, confirmation_id=confirmation_id, reversal_id=doc,
                  order=row.order_no, movements=0, forced=False, reason=reason)
            _enqueue_reversal(tx, doc, row, reason, [], [], now)
            return ReversalResult(doc, 0, False)
        posted = read_posted(conn, confirmation_id)
        result, returned = serials_still_issued(tx, row.order_no, reverse(posted))
        used = consumed_output(tx, posted) + returned
        if used and not force_reason:
            raise OperationRefused(f"{'; '.join(used)}: reversing would take back goods that are no longer "
                                   "there. Use --force WHY to reverse anyway; WHY is recorded")
        tx.move(doc, row.order_no, result.movements, now)
        write_activities(tx, doc, row.order_no, result.activities, now)
        write_genealogy(tx, doc, row.order_no, result.genealogy, now)
        write_deferred(tx, doc, row.order_no, result.deferred)
        conn.execute(update(t.error_queue).where(t.error_queue.c.confirmation_id == confirmation_id,
                                                 t.error_queue.c.status == ErrorStatus.OPEN)
                     .values(status=ErrorStatus.CANCELLED, resolved_at=now))
        tx.add_progress(row.order_no, row.operation, -row.yield_qty, -row.scrap_qty)
        tx.add_carry(row.order_no, result.carry)
        _true_up_rounding(tx, row.order_no, row.operation, doc, now)
        conn.execute(insert(t.reversals), [{"id": doc, "confirmation_id": confirmation_id, "reason": reason,
                                            "forced": bool(used), "force_reason": force_reason if used else None,
                                            "created_at": now}])
        settle(tx, MasterCache(), now, by=doc)  # what it gave back may clear other orders' errors
        claim("confirmation_reversed", doc, confirmation_id=confirmation_id, reversal_id=doc, order=row.order_no,
              movements=len(result.movements), forced=bool(used), reason=reason)
        _enqueue_reversal(tx, doc, row, reason, result.movements, result.activities, now)
    return ReversalResult(doc, len(result.movements), bool(used))


def _enqueue_reversal(tx: LedgerTx, doc: str, row, reason: str, moves, acts, now: datetime) -> None:
    outbox.enqueue(tx, "reversal", doc, order=row.order_no, machine=row.machine, now=now, body={
        "confirmation_id": row.id, "operation": row.operation, "yield_qty": -row.yield_qty,
        "scrap_qty": -row.scrap_qty, "uom": row.uom, "reason": reason, "posted_at": now,
        "movements": outbox.movements(moves), "activities": outbox.activities(acts)})


def _true_up_rounding(tx: LedgerTx, order_no: str, operation: str, doc: str, now: datetime) -> None:
    """Bring the order's totals back to the rounded plan for what stays confirmed.

    Rounding carries part of a confirmation's share into later ones (three confirmations
    of ⅓ kg at whole kilograms post 0, 0, 1). Taking one back exactly can therefore leave
    the order a rounding unit over or under the plan for the quantity that remains. The
    difference is posted here, in the reversal's own document, as an extra issue or a
    return to the lots most recently issued; when nothing was carried it is zero.
    """
    order = read_order(tx.conn, order_no)
    materials, work_centers = read_materials(tx.conn), read_work_centers(tx.conn)
    progress = tx.progress(order_no, operation)
    carry = tx.carry(order_no)
    whole = Confirmation("true-up", "", order_no, operation, progress.yield_qty, progress.scrap_qty, "",
                         (), (), now, now, Trigger.TRUE_UP)
    target = dict(plan(whole, order, OperationProgress(order_no, operation), materials, work_centers,
                       StockView(), carry={}, serials=None).planned)
    keys = set(target) | {k for k in carry if k.startswith(f"{operation}:")} | {
        f"item:{c.item}" for c in order.components if c.operation == operation and not c.rework}
    deltas = {k: target.get(k, Decimal(0)) - carry.get(k, Decimal(0)) for k in keys}
    deltas = {k: d for k, d in deltas.items() if d}
    for component in order.components:
        delta = deltas.get(f"item:{component.item}")
        if delta:
            _true_up_component(tx, order, component, materials[component.material], delta, doc, now)
    activities = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for key, delta in deltas.items():
        if not key.startswith("item:"):
            _, activity, measure = key.split(":")
            activities[activity][0 if measure == "hours" else 1] += delta
    wc = work_centers[order.operation(operation).work_center]
    write_activities(tx, doc, order_no, [ActivityPosting(operation, wc.id, a, h, c, wc.currency)
                                         for a, (h, c) in sorted(activities.items())], now)
    tx.add_carry(order_no, sorted(deltas.items()))


def _true_up_component(tx: LedgerTx, order, component, material, delta: Decimal, doc: str, now: datetime) -> None:
    if component.flushing is not FlushingRule.OPERATION:
        write_deferred(tx, doc, order.number, [NotBackflushed(material.id, delta, material.uom, component.flushing,
                                                              component.item)])
    elif delta > 0:
        issued = issue_component(delta, material, component.supply_location, component.item, order,
                                 StockLeft(tx.stock({(material.id, component.supply_location)})), now.date())
        tx.move(doc, order.number, issued.movements, now)
        write_genealogy(tx, doc, order.number, issued.genealogy, now)
        write_errors(tx, doc, order.number, issued.errors, now)
    else:
        tx.flush()  # what follows reads the error queue and the order's issues, the reversal's own included
        excess = _unqueue(tx.conn, order.number, component.item, -delta, now)  # not issued yet: just plan less
        if excess:
            back = give_back(order, material, component.item, returns_from_issues(
                excess, issued_to_order(tx.conn, order.number, component.item, material.id)))
            tx.move(doc, order.number, back.movements, now)
            write_genealogy(tx, doc, order.number, back.genealogy, now)


def _unqueue(conn: Connection, order_no: str, item: str, qty: Decimal, now: datetime) -> Decimal:
    """Lower the open error items of an order component by up to ``qty``; what is left over."""
    eq = t.error_queue.c
    for row in conn.execute(select(t.error_queue).where(eq.order_no == order_no, eq.bom_item == item,
                                                        eq.status == ErrorStatus.OPEN).order_by(eq.id.desc())).all():
        if qty == 0:
            break
        take = min(qty, row.missing_qty)
        left = row.missing_qty - take
        conn.execute(update(t.error_queue).where(eq.id == row.id).values(
            missing_qty=left, status=ErrorStatus.OPEN if left else ErrorStatus.CANCELLED, resolved_at=None if left else now))
        qty -= take
    return qty


def read_posted(conn: Connection, document: str) -> Posted:
    """Everything one document posted, as domain records."""
    gm, ap, ge, dc, eq = t.goods_movements.c, t.activity_postings.c, t.genealogy.c, t.deferred_components.c, t.error_queue.c
    return Posted(
        movements=tuple(GoodsMovement(MovementKind(r.kind), r.material, r.location, r.qty, r.uom, r.lot, r.bom_item)
                        for r in conn.execute(select(t.goods_movements).where(gm.confirmation_id == document)
                                              .order_by(gm.id))),
        activities=tuple(ActivityPosting(r.operation, r.work_center, r.activity, r.hours, r.cost, r.currency)
                         for r in conn.execute(select(t.activity_postings).where(ap.confirmation_id == document)
                                               .order_by(ap.id))),
        genealogy=tuple(GenealogyEdge(r.component, r.component_lot, r.qty, r.uom, r.product, r.product_lot)
                        for r in conn.execute(select(t.genealogy).where(ge.confirmation_id == document)
                                              .order_by(ge.id))),
        deferred=tuple(NotBackflushed(r.material, r.qty, r.uom, FlushingRule(r.rule), r.bom_item)
                       for r in conn.execute(select(t.deferred_components).where(dc.confirmation_id == document)
                                             .order_by(dc.id))),
        open_errors=tuple(BackflushError(r.material, r.location, r.missing_qty, r.uom, r.reason, r.bom_item)
                          for r in conn.execute(select(t.error_queue).where(eq.confirmation_id == document,
                                                                           eq.status == ErrorStatus.OPEN))
                          if r.material),
    )


def serials_still_issued(tx: LedgerTx, order_no: str, result: Reversal) -> tuple[Reversal, list[str]]:
    """The reversal's returns of serials, each a serial the order still holds; why one could not be.

    A serial goes back to stock once. When one this confirmation issued came back since (a
    consumption adjustment gave it back; the error queue may have issued it again, under this
    confirmation too), the order's other serial of the same item, issued and not given back,
    is returned in its place with its genealogy edge (the order holds one unit fewer either
    way). When the order holds none, that return is left out and named (a forced reversal
    posts the rest): giving it back again would put it in stock twice.
    """
    serial = {m.id for m in read_materials(tx.conn).values() if m.serial_tracked}
    movements, edges, problems = list(result.movements), list(result.genealogy), []
    returning: dict[tuple[str, str], Decimal] = defaultdict(Decimal)  # (material, serial) → given back here

    def holds(material: str, lot: str, qty: Decimal) -> bool:
        return tx.serial_issued(material, lot).get(order_no, Decimal(0)) - returning[(material, lot)] >= qty

    orphans = []  # returns of serials the order no longer holds: the ones it does hold go first
    for i, m in enumerate(movements):
        if m.kind is not MovementKind.GOODS_ISSUE_REVERSAL or m.material not in serial:
            continue
        if holds(m.material, m.lot, m.qty):
            returning[(m.material, m.lot)] += m.qty
        else:
            orphans.append(i)
    for i in orphans:
        m = movements[i]
        held: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        for key, q in issued_to_order(tx.conn, order_no, m.bom_item, m.material):
            held[key] += q
        instead = next(((loc, lot) for (loc, lot), q in reversed(held.items())
                        if q > 0 and holds(m.material, lot, m.qty)), None)
        edge = next((j for j, g in enumerate(edges) if g is not None and (g.component, g.component_lot, g.qty) == (
            m.material, m.lot, -m.qty)), None)
        if instead is None:
            problems.append(f"serial {m.lot} of {m.material} was given back to stock since and order {order_no} "
                            f"holds no other serial of item {m.bom_item} to give back")
            movements[i] = None
            if edge is not None:
                edges[edge] = None
            continue
        returning[(m.material, instead[1])] += m.qty
        movements[i] = replace(m, location=instead[0], lot=instead[1])
        if edge is not None:
            edges[edge] = replace(edges[edge], component_lot=instead[1])
    return replace(result, movements=tuple(m for m in movements if m is not None),
                   genealogy=tuple(g for g in edges if g is not None)), problems


def consumed_output(tx: LedgerTx, posted: Posted) -> list[str]:
    """Why the goods this document received can no longer be taken back, if they cannot.

    The stock is read through ``tx`` (locked), so nothing issues it before the reversal commits.
    """
    problems = []
    for m in posted.movements:
        if m.kind is not MovementKind.GOODS_RECEIPT:
            continue
        on_hand = tx.stock_qty(m.material, m.location, m.lot)
        if on_hand < m.qty:
            problems.append(f"only {on_hand} of the {m.qty} {m.uom} {m.material} received "
                            f"{'in lot ' + m.lot + ' ' if m.lot else ''}are still at {m.location}")
        if m.lot:
            used = sum((r.qty for r in tx.conn.execute(select(t.genealogy.c.qty).where(
                t.genealogy.c.component == m.material, t.genealogy.c.component_lot == m.lot))), Decimal(0))
            if used > 0:
                problems.append(f"lot {m.lot} of {m.material} went into other lots ({used} {m.uom}; "
                                f"`gateway trace {m.lot} --forward`)")
    return problems
