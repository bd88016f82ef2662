"""Master data in the ledger: storing a loaded master-data file, reading it back as records.

``store_masterdata`` writes materials, work centers, order snapshots (BOM + routing
copied into the order, as ERPs do at release), production versions (the snapshot a cost
collector copies, ``gateway.ledger.collectors``) and opening stock in ONE transaction:
bad master data is refused whole before anything is written. Loading the same file
again changes nothing: opening stock is posted once per material/location/lot, and an
order that has confirmations keeps its snapshot (a changed one is refused). The orders
in the file are locked first and opening stock moves through a ``LedgerTx``, like every
posting (``gateway.ledger.tx``), so a load can run while the gateway posts.

``MasterCache`` gives the writer domain records; it reloads an order it has not seen,
so orders loaded while the service runs are found.
"""

from __future__ import annotations

from time import monotonic
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time
from decimal import Decimal

from sqlalchemy import Connection, Engine, delete, insert, select

from gateway.clock import utcnow
from gateway.domain.records import (
    ConsumptionBasis,
    FlushingRule,
    GoodsMovement,
    Material,
    MovementKind,
    OrderComponent,
    OrderOperation,
    ProductionOrder,
    WorkCenter,
)
from gateway.ledger import schema
from gateway.ledger.sql import insert_absent, upsert
from gateway.ledger.tx import LedgerTx, buffered
from gateway.ledger.audit import Action, manual
from gateway.ledger.claims import claim


class MasterDataConflict(Exception):
    """The master data contradicts what the ledger already holds."""


@dataclass
class StoreReport:
    materials: int = 0
    work_centers: int = 0
    materials_new: int = 0
    materials_updated: int = 0
    work_centers_new: int = 0
    work_centers_updated: int = 0
    orders_new: int = 0
    orders_unchanged: int = 0
    orders_updated: int = 0
    stock_posted: int = 0
    versions: int = 0  # production versions (repetitive production)
    notes: list[str] = field(default_factory=list)


class MasterCache:
    """Domain records read from the ledger, cached for the writer thread.

    Forgotten every ``ttl_s`` seconds, so master data loaded while the service runs
    (new rates, a changed material) is used from then on.
    """

    def __init__(self, ttl_s: float = 10.0) -> None:
        self._ttl_s = ttl_s
        self._loaded_at = monotonic()
        self._orders: dict[str, ProductionOrder] = {}
        self._materials: dict[str, Material] | None = None
        self._work_centers: dict[str, WorkCenter] | None = None

    def _expire(self) -> None:
        if monotonic() - self._loaded_at > self._ttl_s:
            self._orders, self._materials, self._work_centers = {}, None, None
            self._loaded_at = monotonic()

    def order(self, conn: Connection, number: str) -> ProductionOrder | None:
        self._expire()
        if number not in self._orders:
            found = read_order(conn, number)
            if found is None:
                return None
            self._orders[number] = found
            self._materials = self._work_centers = None  # new order, maybe new materials
        return self._orders[number]

    def materials(self, conn: Connection) -> dict[str, Material]:
        if self._materials is None:
            self._materials = read_materials(conn)
        return self._materials

    def work_centers(self, conn: Connection) -> dict[str, WorkCenter]:
        if self._work_centers is None:
            self._work_centers = read_work_centers(conn)
        return self._work_centers


def read_materials(conn: Connection) -> dict[str, Material]:
    return {
        r.id: Material(r.id, r.description, r.uom, r.decimals, r.lot_tracked, r.negative_stock_allowed,
                       r.lot_selection, r.tracking == "serial", r.serial_pattern, r.standard_price, r.currency,
                       r.auto_reprocess)
        for r in conn.execute(select(schema.materials))
    }


def read_work_centers(conn: Connection) -> dict[str, WorkCenter]:
    return {
        r.id: WorkCenter(r.id, r.description, r.labor_rate, r.machine_rate, r.overhead_pct_of_labor,
                         r.currency, r.supply_location)
        for r in conn.execute(select(schema.work_centers))
    }


def read_order(conn: Connection, number: str) -> ProductionOrder | None:
    head = conn.execute(select(schema.production_orders).where(schema.production_orders.c.number == number)).first()
    if head is None:
        return None
    comps = conn.execute(select(schema.order_components).where(schema.order_components.c.order_no == number)
                         .order_by(schema.order_components.c.item)).all()
    ops = conn.execute(select(schema.order_operations).where(schema.order_operations.c.order_no == number)
                       .order_by(schema.order_operations.c.operation)).all()
    return ProductionOrder(
        number=head.number, material=head.material, quantity=head.quantity, base_qty=head.base_qty,
        receipt_location=head.receipt_location, status=head.status, produced_lot=head.produced_lot,
        components=tuple(
            OrderComponent(c.item, c.material, c.qty_per_base, c.scrap_pct, FlushingRule(c.flushing),
                           c.operation, c.supply_location, c.flushing_source, c.rework, c.selection,
                           ConsumptionBasis(c.basis), c.basis_source) for c in comps),
        operations=tuple(
            OrderOperation(o.operation, o.work_center, o.setup_hours, o.machine_hours_per_base,
                           o.labor_hours_per_base, o.final) for o in ops),
    )


def store_masterdata(engine: Engine, domain, stock_rows, *, audit: Action | None = None) -> StoreReport:
    """Write master data (``gateway.masterdata.load.to_domain`` output) atomically, with its audit row."""
    report = StoreReport()
    now = utcnow()
    with manual(engine, audit) as record:
        conn = record.conn
        materials = [
            {"id": m.id, "description": m.description, "uom": m.uom, "decimals": m.decimals,
             "lot_tracked": m.lot_tracked, "negative_stock_allowed": m.negative_stock_allowed,
             "lot_selection": m.lot_selection,
             "tracking": "serial" if m.serial_tracked else "lot" if m.lot_tracked else "none",
             "serial_pattern": m.serial_pattern, "standard_price": m.standard_price, "currency": m.currency,
             "auto_reprocess": m.auto_reprocess}
            for m in domain.materials.values()]
        report.materials_new, report.materials_updated = _changes(conn, schema.materials, materials)
        upsert(conn, schema.materials, materials, ["id"])
        report.materials = len(domain.materials)
        work_centers = [
            {"id": w.id, "description": w.description, "labor_rate": w.labor_rate, "machine_rate": w.machine_rate,
             "overhead_pct_of_labor": w.overhead_pct_of_labor, "currency": w.currency,
             "supply_location": w.supply_location}
            for w in domain.work_centers.values()]
        report.work_centers_new, report.work_centers_updated = _changes(conn, schema.work_centers, work_centers)
        upsert(conn, schema.work_centers, work_centers, ["id"])
        report.work_centers = len(domain.work_centers)
        with buffered(conn) as tx:
            # Locked, sorted, before any stock (gateway.ledger.tx): a posting to one of these
            # orders finishes before its snapshot is compared or replaced.
            tx.lock_orders(domain.orders)
            for order in domain.orders.values():
                _store_order(conn, order, report)
            for s in stock_rows:
                _post_opening_stock(tx, s, domain.materials[s.material], report, now)
            from gateway.ledger.collectors import store_versions  # collectors build on this module

            report.versions = store_versions(conn, domain.versions, now)
            from gateway.ledger.posting import settle  # posting reads master data through this module

            settle(tx, MasterCache(), now, by="masterdata")  # opening stock may clear errors waiting for it
        record.changed = {k: v for k, v in vars(report).items() if k != "notes"}
        claim("masterdata_loaded", "", **record.changed, **(audit.detail if audit else {}))
    return report


def _changes(conn: Connection, table, rows: list[dict]) -> tuple[int, int]:
    """How many of ``rows`` are new to ``table``, and how many change a stored row (by ``id``)."""
    stored = {r["id"]: r for r in (row._asdict() for row in conn.execute(select(table)))}
    new = sum(1 for r in rows if r["id"] not in stored)
    changed = sum(1 for r in rows if r["id"] in stored and any(stored[r["id"]][k] != v for k, v in r.items()))
    return new, changed


def _store_order(conn: Connection, order: ProductionOrder, report: StoreReport) -> None:
    existing = read_order(conn, order.number)
    if existing is not None and _canonical(existing) == _canonical(order):
        report.orders_unchanged += 1
        return
    if existing is not None:
        started = conn.execute(select(schema.order_progress.c.order_no).where(
            schema.order_progress.c.order_no == order.number)).first()
        if started:
            raise MasterDataConflict(
                f"order {order.number} already has confirmations; its BOM/routing snapshot cannot change. "
                "Create a new order number for the changed BOM or routing.")
        for table in (schema.order_components, schema.order_operations):
            conn.execute(delete(table).where(table.c.order_no == order.number))
        conn.execute(delete(schema.production_orders).where(schema.production_orders.c.number == order.number))
        report.orders_updated += 1
    else:
        report.orders_new += 1
    insert_order(conn, order)


def insert_order(conn: Connection, order: ProductionOrder, *, if_absent: bool = False) -> None:
    """Write an order's snapshot: head, components, operations (``if_absent``: leave a stored one be)."""

    def put(table, rows: list[dict], keys: list[str]) -> None:
        if if_absent:
            insert_absent(conn, table, rows, keys)
        elif rows:
            conn.execute(insert(table), rows)

    put(schema.production_orders, [{
        "number": order.number, "material": order.material, "quantity": order.quantity,
        "base_qty": order.base_qty, "receipt_location": order.receipt_location, "status": order.status,
        "produced_lot": order.produced_lot}], ["number"])
    put(schema.order_components, [{
        "order_no": order.number, "item": c.item, "material": c.material, "qty_per_base": c.qty_per_base,
        "scrap_pct": c.scrap_pct, "flushing": c.flushing.value, "flushing_source": c.flushing_source,
        "operation": c.operation,
        "supply_location": c.supply_location, "rework": c.rework, "selection": c.selection,
        "basis": c.basis.value, "basis_source": c.basis_source} for c in order.components], ["order_no", "item"])
    put(schema.order_operations, [{
        "order_no": order.number, "operation": o.operation, "work_center": o.work_center,
        "setup_hours": o.setup_hours, "machine_hours_per_base": o.machine_hours_per_base,
        "labor_hours_per_base": o.labor_hours_per_base, "final": o.final} for o in order.operations],
        ["order_no", "operation"])


def _canonical(order: ProductionOrder) -> ProductionOrder:
    """The snapshot without the file's line order, which does not change what it means."""
    return replace(order, components=tuple(sorted(order.components, key=lambda c: c.item)),
                   operations=tuple(sorted(order.operations, key=lambda o: o.operation)))


def _post_opening_stock(tx: LedgerTx, s, material: Material, report: StoreReport, now) -> None:
    if material.serial_tracked:  # one unit per serial, each a lot of its own
        for serial in s.serials:
            _post_opening_lot(tx, s, serial, Decimal(1), material, report, now)
    else:
        _post_opening_lot(tx, s, s.lot or "", Decimal(s.quantity), material, report, now)


def _post_opening_lot(tx: LedgerTx, s, lot: str, qty: Decimal, material: Material, report: StoreReport,
                      now) -> None:
    gm = schema.goods_movements.c
    tx.flush()  # an opening stock row earlier in this file is "already posted" too
    already = tx.conn.execute(select(gm.id).where(
        gm.kind == MovementKind.OPENING_STOCK.value, gm.material == s.material,
        gm.location == s.location, gm.lot == lot)).first()
    if already:
        report.notes.append(f"opening stock of {s.material} at {s.location}"
                            + (f" serial {lot}" if material.serial_tracked else "") + " already posted; skipped")
        return
    received = datetime.combine(s.received_on, time(), UTC) if s.received_on else now
    tx.register_lot(s.material, lot, received, expires_on=s.expires_on)
    tx.move(None, None, [GoodsMovement(
        MovementKind.OPENING_STOCK, s.material, s.location, qty, material.uom, lot=lot)], now)
    report.stock_posted += 1
