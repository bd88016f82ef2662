"""Adjustments in the ledger: scrap, rework, substitution and over/under consumption of an order.

For posting the exceptions a person reports (``gateway adjust …``). Each adjustment is
one transaction and one document ``A-<12 hex>``: every goods movement, activity,
genealogy edge, WIP line and error item it makes carries that id as its
``confirmation_id``, and one ``adjustments`` row links it to the order, with the kind,
the reason code and the note. ``adjustments.material`` / ``qty`` say what was reported:

==============  =================================  ==========================================
kind            material, qty                      postings
==============  =================================  ==========================================
scrap           the product, units scrapped         a confirmation of scrap only (machine
                                                    ``(manual)``): components and activities
                                                    of the operation, no receipt; progress and
                                                    carry move as for any confirmation, so
                                                    ``gateway confirmations reverse A-…`` undoes it
rework          the product, units reworked         the operation's ``rework`` BOM items (261,
                                                    shortages queued) and the rework labor; no
                                                    receipt, progress unchanged
substitution    the substitute B, quantity of B     A back to its lots (262), B issued (261) for
                                                    the same BOM item
consumption     the item's material, signed delta   261 for more, 262 to the latest lots for less
==============  =================================  ==========================================

Each adjustment posts through one ``LedgerTx`` for its whole transaction, which holds the
order's lock from the start (``gateway.ledger.tx``): one adjustment or posting of an order
at a time, so two returns cannot both give back the same issued quantity.

Must never: edit or delete a posting (a correction is a new document), move stock other
than through ``LedgerTx.move``, or post to an order that is not released.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, Engine, insert, select

from gateway.domain import adjustments as adj
from gateway.domain.adjustments import AdjustmentPlan, Refused
from gateway.domain.records import (
    Confirmation,
    Material,
    ProductionOrder,
    StockView,
    Trigger,
)
from gateway.ledger import outbox
from gateway.ledger import schema as t
from gateway.ledger.audit import Action, manual
from gateway.ledger.claims import claim
from gateway.ledger.masters import (
    MasterCache,
    read_materials,
    read_order,
    read_work_centers,
)
from gateway.ledger.operations import OperationRefused, read_posted
from gateway.ledger.sql import issued_to_order
from gateway.ledger.tx import LedgerTx, buffered
from gateway.ledger.posting import (
    post_confirmation,
    settle,
    write_activities,
    write_deferred,
    write_errors,
    write_genealogy,
)

MANUAL_MACHINE = "(manual)"  # the machine of a confirmation a person reported


@dataclass(frozen=True)
class AdjustmentResult:
    document: str
    kind: str
    order: str
    material: str
    qty: Decimal
    uom: str
    movements: int
    queued: int  # shortages put on the error queue (rework only; the others refuse)


def scrap(engine: Engine, order_no: str, operation: str, qty: Decimal, reason_code: str, note: str = "", *,
          now: datetime | None = None, audit: Action | None = None) -> AdjustmentResult:
    """Scrap reported by hand: a confirmation of ``qty`` scrap, backflushed like a machine's."""
    now = now or t.utcnow()
    with _adjustment(engine, order_no, reason_code, audit) as (tx, order, doc):
        product = _operation_and_product(tx.conn, order, operation)
        adj.check_quantity(qty, product)
        post_confirmation(tx, Confirmation(
            doc, MANUAL_MACHINE, order.number, operation, Decimal(0), qty, product.uom, (), (), now, now,
            Trigger.ADJUSTMENT_SCRAP), MasterCache(), now)
        tx.flush()  # read back below
        posted = read_posted(tx.conn, doc)
        queued = tx.conn.execute(select(t.error_queue.c.id).where(t.error_queue.c.confirmation_id == doc)).all()
        return _record(tx.conn, doc, order, "scrap", operation, reason_code, note, product, qty,
                       len(posted.movements), len(queued), now)


def rework(engine: Engine, order_no: str, operation: str, qty: Decimal, reason_code: str, note: str = "", *,
           now: datetime | None = None, audit: Action | None = None) -> AdjustmentResult:
    """Rework of ``qty`` units at ``operation``: its rework items and labor, no receipt, no progress."""
    now = now or t.utcnow()
    with _adjustment(engine, order_no, reason_code, audit) as (tx, order, doc):
        product = _operation_and_product(tx.conn, order, operation)
        materials = read_materials(tx.conn)
        locations = {(c.material, c.supply_location) for c in order.components
                     if c.rework and c.operation == operation}
        work_center = read_work_centers(tx.conn)[order.operation(operation).work_center]
        plan = adj.rework(order, operation, qty, materials, work_center, tx.stock(locations), now.date())
        return _write(tx, doc, order, "rework", operation, reason_code, note, product, qty, plan, now)


def substitute(engine: Engine, order_no: str, item: str, with_material: str, qty: Decimal, reason_code: str,
               note: str = "", *, with_qty: Decimal | None = None, now: datetime | None = None,
               audit: Action | None = None) -> AdjustmentResult:
    """``with_qty`` (default ``qty``) of ``with_material`` issued for ``item`` instead of ``qty`` of its material."""
    now = now or t.utcnow()
    b_qty = qty if with_qty is None else with_qty
    with _adjustment(engine, order_no, reason_code, audit) as (tx, order, doc):
        component = adj.bom_item(order, item)
        materials = read_materials(tx.conn)
        b = materials.get(with_material)
        if b is None:
            raise Refused(f"unknown material {with_material!r}; load it with `gateway masterdata load`")
        stock = tx.stock({(b.id, component.supply_location)})
        issued = issued_to_order(tx.conn, order.number, item, component.material)
        plan = adj.substitution(order, item, qty, materials[component.material], issued, b, b_qty, stock, now.date())
        return _write(tx, doc, order, "substitution", component.operation, reason_code, note, b, b_qty, plan, now)


def consumption(engine: Engine, order_no: str, item: str, delta: Decimal, reason_code: str, note: str = "", *,
                now: datetime | None = None, audit: Action | None = None) -> AdjustmentResult:
    """Over-consumption (``delta > 0``: issue more) or under-consumption (``delta < 0``: give back)."""
    now = now or t.utcnow()
    with _adjustment(engine, order_no, reason_code, audit) as (tx, order, doc):
        component = adj.bom_item(order, item)
        material = read_materials(tx.conn)[component.material]
        stock = tx.stock({(material.id, component.supply_location)}) if delta > 0 else StockView()
        plan = adj.consumption(order, item, delta, material, issued_to_order(tx.conn, order.number, item, material.id),
                               stock, now.date())
        return _write(tx, doc, order, "consumption", component.operation, reason_code, note, material, delta,
                      plan, now)


# -- shared -----------------------------------------------------------------------------


@contextmanager
def _adjustment(engine: Engine, order_no: str, reason_code: str,
                audit: Action | None) -> Iterator[tuple[LedgerTx, ProductionOrder, str]]:
    """One transaction for one adjustment document (with its audit row); a refusal rolls all of it back."""
    try:
        adj.check_reason_code(reason_code)
        with manual(engine, audit) as record, buffered(record.conn) as tx:
            conn = record.conn
            tx.order_status(order_no)  # the order's lock, before anything is read (module docstring)
            order = read_order(conn, order_no)
            if order is None:
                raise Refused(f"no order {order_no}; load it with `gateway masterdata load`")
            if order.status != "released":
                raise Refused(f"order {order_no} is {order.status}; nothing is posted to it")
            yield tx, order, f"A-{uuid.uuid4().hex[:12]}"
    except Refused as exc:
        raise OperationRefused(str(exc)) from None


def _operation_and_product(conn: Connection, order: ProductionOrder, operation: str) -> Material:
    if order.operation(operation) is None:
        raise Refused(f"order {order.number} has no operation {operation!r} "
                      f"(its operations: {', '.join(o.operation for o in order.operations)})")
    return read_materials(conn)[order.material]


def _write(tx: LedgerTx, doc: str, order: ProductionOrder, kind: str, operation: str, reason_code: str,
           note: str, material: Material, qty: Decimal, plan: AdjustmentPlan, now: datetime) -> AdjustmentResult:
    tx.move(doc, order.number, plan.movements, now)
    write_genealogy(tx, doc, order.number, plan.genealogy, now)
    write_activities(tx, doc, order.number, plan.activities, now)
    write_deferred(tx, doc, order.number, plan.deferred)
    write_errors(tx, doc, order.number, plan.errors, now)
    outbox.enqueue(tx, "adjustment", doc, order=order.number, machine=outbox.only_machine(tx.conn, order.number),
                   now=now, body={"kind": kind, "operation": operation, "reason_code": reason_code, "note": note,
                                  "material": material.id, "qty": qty, "posted_at": now,
                                  "movements": outbox.movements(plan.movements),
                                  "activities": outbox.activities(plan.activities)})
    settle(tx, MasterCache(), now, by=doc)  # a return to stock may clear other orders' errors
    return _record(tx.conn, doc, order, kind, operation, reason_code, note, material, qty, len(plan.movements),
                   len(plan.errors), now)


def _record(conn: Connection, doc: str, order: ProductionOrder, kind: str, operation: str, reason_code: str,
            note: str, material: Material, qty: Decimal, movements: int, queued: int,
            now: datetime) -> AdjustmentResult:
    conn.execute(insert(t.adjustments), [{
        "id": doc, "order_no": order.number, "operation": operation, "kind": kind, "reason_code": reason_code,
        "note": note, "material": material.id, "qty": qty, "uom": material.uom, "created_at": now}])
    claim("adjustment_posted", doc, document=doc, kind=kind, order=order.number, operation=operation,
          material=material.id, qty=str(qty), uom=material.uom, reason_code=reason_code, movements=movements,
          queued=queued)
    return AdjustmentResult(doc, kind, order.number, material.id, qty, material.uom, movements, queued)
