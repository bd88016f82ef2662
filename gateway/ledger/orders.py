"""Production orders in the ledger: what they consumed, manual issues, completion.

Every posting carries the document that made it, and the document's prefix says what
kind it is, so variance can be told apart without another column:

============  ==========================================================
``C-…``       a machine confirmation (backflush)
``R-C-…``     the reversal of a confirmation
``O-<order>`` order completion: the accrued ``order_completion`` components
``M-…``       a manual goods issue to the order (``gateway stock issue``)
``A-…``       an adjustment (scrap, rework, substitution, over/under consumption)
``R-A-…``     the reversal of a scrap adjustment (it is a confirmation): adjusted
============  ==========================================================

A material issued for a BOM item whose material it is not (a substitute) is listed
among the extra lines under that item, never added into the item's own quantities:
the two may not even share a unit of measure.

Completing an order issues its accrued WIP components from stock (shortages go to the
error queue like any backflush), closes it, and reports per component: planned,
backflushed, manually issued and adjusted. Completion and manual issues post through one
``LedgerTx`` for their transaction and hold the order's lock from the start
(``gateway.ledger.tx``), so a confirmation of the order is posted before the completion
or refused after it, never planned against a released order that is being closed. The
order view only reads (``progress_of``, ``carry_of``: no locks). Counting on a completed order is held as an
anomaly by the service; nothing is posted to it.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, Engine, select, update

from gateway.domain.backflush import StockLeft, issue_component
from gateway.domain.valuation import value
from gateway.domain.records import (
    ErrorStatus,
    FlushingRule,
    GenealogyEdge,
    GoodsMovement,
    MovementKind,
    NotBackflushed,
    ProductionOrder,
)
from gateway.ledger import outbox
from gateway.ledger import schema as t
from gateway.ledger.masters import read_materials, read_order
from gateway.ledger.operations import OperationRefused, stock_material
from gateway.ledger.posting import write_deferred, write_errors, write_genealogy
from gateway.ledger.tx import buffered
from gateway.ledger.audit import Action, manual
from gateway.ledger.claims import claim


def document_kind(document: str | None) -> str:
    """backflushed | manual | adjusted | stock, from the document prefix (module table)."""
    if not document:
        return "stock"
    if document.startswith("R-"):  # a reversal counts where what it reverses counted
        return "adjusted" if document.startswith("R-A-") else "backflushed"
    return {"C": "backflushed", "O": "backflushed", "M": "manual", "A": "adjusted"}.get(document[0], "stock")


@dataclass
class ComponentLine:
    item: str
    material: str
    uom: str
    rule: str
    rule_source: str
    operation: str
    basis: str = "total"  # what the planned quantity is of: yield + scrap, or yield only
    basis_source: str = ""
    price: Decimal = Decimal(0)  # the material's standard price, per unit of measure
    currency: str = "EUR"
    planned: Decimal = Decimal(0)  # for the quantity confirmed so far
    backflushed: Decimal = Decimal(0)
    manual: Decimal = Decimal(0)
    adjusted: Decimal = Decimal(0)
    wip: Decimal = Decimal(0)  # accrued, waiting for completion
    open_errors: Decimal = Decimal(0)

    @property
    def issued(self) -> Decimal:
        return self.backflushed + self.manual + self.adjusted

    @property
    def variance(self) -> Decimal:
        """Issued minus planned: positive is over-consumption."""
        return self.issued - self.planned

    @property
    def variance_value(self) -> Decimal:
        """The variance at the material's standard price."""
        return value(self.variance, self.price)

    @property
    def wip_value(self) -> Decimal:
        return value(self.wip, self.price)


@dataclass
class OrderView:
    order: ProductionOrder
    progress: dict[str, tuple[Decimal, Decimal]]  # operation → (yield, scrap)
    received: Decimal
    components: list[ComponentLine] = field(default_factory=list)
    extra: list[ComponentLine] = field(default_factory=list)  # issued materials not in the BOM


def order_view(engine: Engine, number: str) -> OrderView:
    with engine.connect() as conn:
        return _view(conn, _order(conn, number))


def _order(conn: Connection, number: str) -> ProductionOrder:
    order = read_order(conn, number)
    if order is None:
        raise OperationRefused(f"no order {number}; load it with `gateway masterdata load`")
    return order


def _view(conn: Connection, order: ProductionOrder) -> OrderView:
    materials = read_materials(conn)
    carry = carry_of(conn, order.number)
    lines = {c.item: ComponentLine(c.item, c.material, materials[c.material].uom, c.flushing.value,
                                   c.flushing_source, c.operation, c.basis.value, c.basis_source,
                                   materials[c.material].standard_price, materials[c.material].currency,
                                   planned=carry.get(f"item:{c.item}", Decimal(0)))
             for c in order.components}
    by_material = {c.material: c.item for c in order.components}
    extra: dict[tuple[str, str], ComponentLine] = {}
    received = Decimal(0)
    for m in conn.execute(select(t.goods_movements).where(t.goods_movements.c.order_no == order.number)):
        if m.kind in ("101", "102"):
            received += m.qty
            continue
        if m.kind not in ("261", "262"):
            continue
        item = m.bom_item or by_material.get(m.material)
        line = lines.get(item) if item else None
        if line is None or line.material != m.material:
            line = _extra_line(extra, line, m)
        kind = document_kind(m.confirmation_id)
        if kind != "stock":
            setattr(line, kind, getattr(line, kind) - m.qty)  # issues are negative movements
    for d in conn.execute(select(t.deferred_components).where(t.deferred_components.c.order_no == order.number)):
        if d.rule == FlushingRule.ORDER_COMPLETION.value and d.bom_item in lines:
            lines[d.bom_item].wip += d.qty
    for e in conn.execute(select(t.error_queue).where(t.error_queue.c.order_no == order.number,
                                                      t.error_queue.c.status == ErrorStatus.OPEN)):
        if e.bom_item in lines:
            lines[e.bom_item].open_errors += e.missing_qty
    stored = progress_of(conn, order.number)
    progress = {op.operation: stored.get(op.operation, (Decimal(0), Decimal(0))) for op in order.operations}
    return OrderView(order, progress, received, list(lines.values()), list(extra.values()))


def progress_of(conn: Connection, order_no: str) -> dict[str, tuple[Decimal, Decimal]]:
    """Operation → (yield, scrap) confirmed so far, as committed (a read, no lock)."""
    op = t.order_progress.c
    return {r.operation: (r.yield_qty, r.scrap_qty)
            for r in conn.execute(select(t.order_progress).where(op.order_no == order_no))}


def carry_of(conn: Connection, order_no: str) -> dict[str, Decimal]:
    """Plan key → quantity planned so far, as committed (a read, no lock)."""
    return {r.key: r.planned for r in conn.execute(select(t.order_carry).where(t.order_carry.c.order_no == order_no))}


def _extra_line(extra: dict[tuple[str, str], ComponentLine], item: ComponentLine | None, m) -> ComponentLine:
    """The line of a material that is not its BOM item's: a substitute for that item, or not in the BOM."""
    if item is None:
        return extra.setdefault(("", m.material), ComponentLine("", m.material, m.uom, "not in BOM", "", ""))
    return extra.setdefault((item.item, m.material), ComponentLine(
        item.item, m.material, m.uom, f"substitute for {item.material}", "", item.operation))


# -- work in process ---------------------------------------------------------------------


@dataclass(frozen=True)
class WipLine:
    order: str
    work_center: str  # of the operation that consumes the component
    operation: str
    item: str
    material: str
    qty: Decimal
    uom: str
    value: Decimal
    currency: str


def wip(engine: Engine) -> list[WipLine]:
    """Per order and work center: ``order_completion`` components accrued by confirmations and not
    issued yet (completion nets them to zero), at the standard price. A read, no locks."""
    accrued: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    dc = t.deferred_components.c
    with engine.connect() as conn:
        for d in conn.execute(select(t.deferred_components).where(dc.rule == FlushingRule.ORDER_COMPLETION.value)):
            accrued[(d.order_no, d.bom_item)] += d.qty
        materials = read_materials(conn)
        lines = []
        for number in sorted({o for (o, _), qty in accrued.items() if qty}):
            order = read_order(conn, number)
            for c in order.components:
                qty = accrued.get((number, c.item), Decimal(0))
                if not qty:
                    continue
                m = materials[c.material]
                op = order.operation(c.operation)
                lines.append(WipLine(number, op.work_center if op else "", c.operation, c.item, c.material, qty,
                                     m.uom, value(qty, m.standard_price), m.currency))
    return sorted(lines, key=lambda w: (w.order, w.work_center, w.item))


# -- completion -------------------------------------------------------------------------


def complete_order(engine: Engine, number: str, *, now: datetime | None = None,
                   audit: Action | None = None) -> OrderView:
    """Issue the accrued order-completion components, close the order, return its variance."""
    now = now or t.utcnow()
    doc = f"O-{number}"
    with manual(engine, audit) as record, buffered(record.conn) as tx:
        conn = record.conn
        tx.order_status(number)  # the order's lock first: its postings wait, then see it completed
        order = _order(conn, number)
        if order.status != "released":
            raise OperationRefused(f"order {number} is {order.status} already")
        pu = t.pending_units.c
        waiting = [(r.machine, r.yield_qty + r.scrap_qty) for r in conn.execute(
            select(pu.machine, pu.yield_qty, pu.scrap_qty).where(pu.order_no == number)) if r.yield_qty or r.scrap_qty]
        if waiting:
            # Completed now, those units could no longer be posted to it: they would wait in the
            # error queue for a person. The machine confirms them at its next count or timer.
            machines = ", ".join(f"{m} ({q} units)" for m, q in waiting)
            raise OperationRefused(f"order {number} still has units counted but not yet confirmed on {machines}; "
                                   "complete it after the machine's next confirmation (or once the machine has "
                                   "moved to its next order)")
        record.before = {"status": order.status}
        record.changed = {"status": "completed"}
        movements = 0
        materials = read_materials(conn)
        wip: dict[str, Decimal] = defaultdict(Decimal)
        for d in conn.execute(select(t.deferred_components).where(
                t.deferred_components.c.order_no == number,
                t.deferred_components.c.rule == FlushingRule.ORDER_COMPLETION.value)):
            wip[d.bom_item] += d.qty
        for component in order.components:
            qty = wip.get(component.item, Decimal(0))
            if qty <= 0:
                continue
            material = materials[component.material]
            location = component.supply_location
            issued = issue_component(qty, material, location, component.item, order,
                                     StockLeft(tx.stock({(material.id, location)})), now.date())
            tx.move(doc, number, issued.movements, now)
            movements += len(issued.movements)
            write_genealogy(tx, doc, number, issued.genealogy, now)
            write_errors(tx, doc, number, issued.errors, now)
            # The accrual is used up, issued or queued: WIP nets to zero.
            write_deferred(tx, doc, number, [NotBackflushed(material.id, -qty, material.uom,
                                                              FlushingRule.ORDER_COMPLETION, component.item)])
        conn.execute(update(t.production_orders).where(t.production_orders.c.number == number)
                     .values(status="completed"))
        claim("order_completed", doc, document=doc, order=number, movements=movements)
        tx.flush()  # the view reads what was just posted
        return _view(conn, read_order(conn, number))


# -- manual issue -----------------------------------------------------------------------


def issue_manually(engine: Engine, material: str, qty: Decimal, order_no: str, location: str, *,
                   lot: str = "", now: datetime | None = None, audit: Action | None = None) -> str:
    """A person issues a component to an order (e.g. one with flushing rule ``manual``)."""
    now = now or t.utcnow()
    if qty <= 0:
        raise OperationRefused(f"quantity must be positive, got {qty}")
    doc = f"M-{uuid.uuid4().hex[:12]}"
    with manual(engine, audit) as record, buffered(record.conn) as tx:
        conn = record.conn
        tx.order_status(order_no)  # the order's lock first, then its stock (gateway.ledger.tx)
        order = _order(conn, order_no)
        if order.status != "released":
            raise OperationRefused(f"order {order_no} is {order.status}; no more issues to it")
        m = stock_material(conn, material, qty, lot)
        have = tx.stock_qty(material, location, lot)
        record.before = {"stock": have}
        if have < qty and not (m.negative_stock_allowed and not m.lot_tracked):
            raise OperationRefused(f"only {have} {m.uom} of {material}{' lot ' + lot if lot else ''} at {location}")
        item = next((c.item for c in order.components if c.material == material), "")
        tx.move(doc, order_no, [GoodsMovement(MovementKind.GOODS_ISSUE, material, location, -qty,
                                              m.uom, lot=lot, bom_item=item)], now)
        if lot:
            write_genealogy(tx, doc, order_no, [GenealogyEdge(material, lot, qty, m.uom, order.material,
                                                              order.output_lot)], now)
        outbox.enqueue(tx, "stock", doc, order=order_no, machine=outbox.only_machine(conn, order_no), now=now, body={
            "posted_at": now, "movements": outbox.movements([GoodsMovement(
                MovementKind.GOODS_ISSUE, material, location, -qty, m.uom, lot=lot, bom_item=item)])})
        claim("stock_issued", doc, document=doc, order=order_no, material=material, qty=str(qty), uom=m.uom,
              location=location, lot=lot)
    return doc
