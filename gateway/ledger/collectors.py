"""Cost collectors in the ledger: production versions, collectors created on first use, period close.

A machine in repetitive mode confirms against a standing cost collector per product,
production version, line and period (``gateway.domain.repetitive``). In the ledger a
collector is a row of ``cost_collectors`` and, under the same number, a standing order in
``production_orders`` with the version's BOM + routing snapshot. Everything that works on an
order — backflush planning, the error queue, reversals, adjustments, ``orders show``, the
journal, ``report wip`` — therefore works on a collector unchanged; this module only adds
what is particular to collectors:

* ``store_versions``: the production versions of loaded master data, each with its snapshot
  as JSON (``encode_snapshot``), upserted (a changed BOM applies from the next collector on);
* ``ensure_collectors``: the writer calls it in its transaction, before the confirmations are
  posted: a collector a change-set uses is created if it is not there yet (insert-if-missing,
  so two gateways creating the same one at once both succeed), and its standing order is
  written from the version's snapshot as soon as the version is known;
* ``close_period``: per open collector of the period, the accrued ``order_completion``
  components are issued (as completing an order does, ``orders.finish``), the balance is
  computed — components issued and activities (actual) against the yield received at the
  product's standard price (target) — and stored with the collector, which is closed, its
  standing order too, in one transaction with its audit row. Refused whole while a machine
  has units on one of them not yet confirmed, or an error item of one is open, or the
  period has not ended;
* reads for the CLI, the HTTP API and the service (``read_directory``).

Must never: post a movement of its own (completion's issues go through ``orders.finish``),
decide a quantity, or change a collector's key or snapshot once written.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, select, update

from gateway.clock import utcnow
from gateway.domain.records import (
    ConsumptionBasis,
    ErrorStatus,
    FlushingRule,
    OrderComponent,
    OrderOperation,
    ProductionOrder,
)
from gateway.domain.repetitive import CollectorCosts, CollectorKey, ProductionVersion, parse_period
from gateway.ledger import schema
from gateway.ledger.audit import Action, manual
from gateway.ledger.claims import claim
from gateway.ledger.masters import insert_order, read_order
from gateway.ledger.sql import insert_absent, upsert
from gateway.ledger.tx import buffered

OPEN, CLOSED = "open", "closed"
CLOSED_ORDER = "closed"  # the standing order's status once its period is closed


# -- production versions ----------------------------------------------------------------------


def encode_snapshot(order: ProductionOrder) -> str:
    """A version's BOM + routing template as JSON (quantities as exact decimal text)."""
    return json.dumps({
        "material": order.material, "base_qty": str(order.base_qty), "receipt_location": order.receipt_location,
        "components": [{
            "item": c.item, "material": c.material, "qty_per_base": str(c.qty_per_base), "scrap_pct": str(c.scrap_pct),
            "flushing": c.flushing.value, "flushing_source": c.flushing_source, "operation": c.operation,
            "supply_location": c.supply_location, "rework": c.rework, "selection": c.selection,
            "basis": c.basis.value, "basis_source": c.basis_source} for c in order.components],
        "operations": [{
            "operation": o.operation, "work_center": o.work_center, "setup_hours": str(o.setup_hours),
            "machine_hours_per_base": str(o.machine_hours_per_base),
            "labor_hours_per_base": str(o.labor_hours_per_base), "final": o.final} for o in order.operations],
    }, sort_keys=True)


def decode_snapshot(text: str) -> ProductionOrder:
    d = json.loads(text)
    return ProductionOrder(
        number="", material=d["material"], quantity=Decimal(0), base_qty=Decimal(d["base_qty"]),
        receipt_location=d["receipt_location"],
        components=tuple(OrderComponent(
            c["item"], c["material"], Decimal(c["qty_per_base"]), Decimal(c["scrap_pct"]),
            FlushingRule(c["flushing"]), c["operation"], c["supply_location"], c["flushing_source"], c["rework"],
            c["selection"], ConsumptionBasis(c["basis"]), c["basis_source"]) for c in d["components"]),
        operations=tuple(OrderOperation(
            o["operation"], o["work_center"], Decimal(o["setup_hours"]), Decimal(o["machine_hours_per_base"]),
            Decimal(o["labor_hours_per_base"]), o["final"]) for o in d["operations"]),
    )


def store_versions(conn: Connection, versions: dict[tuple[str, str], ProductionVersion], now: datetime) -> int:
    """Write (or replace) the production versions of loaded master data; how many."""
    upsert(conn, schema.production_versions, [
        {"product": v.product, "version": v.version, "period": v.period, "time_zone": v.time_zone,
         "snapshot": encode_snapshot(v.template), "updated_at": now}
        for v in versions.values()], ["product", "version"])
    return len(versions)


def read_versions(conn: Connection) -> dict[tuple[str, str], ProductionVersion]:
    return {(r.product, r.version): ProductionVersion(r.product, r.version, decode_snapshot(r.snapshot), r.period,
                                                      r.time_zone)
            for r in conn.execute(select(schema.production_versions))}


# -- collectors created on first use ----------------------------------------------------------


def ensure_collectors(conn: Connection, keys: dict[str, CollectorKey], now: datetime) -> None:
    """Create the collectors of ``keys`` that are not there yet, with their standing order once
    their version is known (in the caller's transaction: the writer's, before its postings).

    A collector whose version is not loaded yet gets its standing order with the first
    change-set that uses it after the version is loaded; a confirmation before that waits
    in the error queue like one of an order not in the master data."""
    wanted = sorted(keys)
    if not wanted:
        return
    cc, po, pv = schema.cost_collectors.c, schema.production_orders.c, schema.production_versions.c
    insert_absent(conn, schema.cost_collectors, [
        {"number": n, "product": keys[n].product, "version": keys[n].version, "line": keys[n].line,
         "period": keys[n].period, "status": OPEN, "created_at": now} for n in wanted], ["number"])
    done = set(conn.execute(select(po.number).where(po.number.in_(wanted))).scalars())
    done |= set(conn.execute(select(cc.number).where(cc.number.in_(wanted), cc.status == CLOSED)).scalars())
    for number in wanted:
        if number in done:
            continue
        key = keys[number]
        row = conn.execute(select(pv.snapshot).where(pv.product == key.product, pv.version == key.version)).first()
        if row is None:
            continue
        insert_order(conn, ProductionVersion(key.product, key.version, decode_snapshot(row.snapshot))
                     .collector(number), if_absent=True)
        claim("collector_created", number, collector=number, product=key.product, version=key.version,
              line=key.line, period=key.period)


@dataclass(frozen=True)
class Directory:
    """What the service needs to know of repetitive production, refreshed with its orders."""

    versions: dict[str, dict[str, ProductionVersion]] = field(default_factory=dict)  # product → version → it
    collectors: dict[str, CollectorKey] = field(default_factory=dict)  # number → key, every one in the ledger
    closed: set[str] = field(default_factory=set)  # numbers of closed collectors


def read_directory(conn: Connection) -> Directory:
    versions: dict[str, dict[str, ProductionVersion]] = defaultdict(dict)
    for (product, version), v in read_versions(conn).items():
        versions[product][version] = v
    collectors, closed = {}, set()
    for r in conn.execute(select(schema.cost_collectors)):
        collectors[r.number] = CollectorKey(r.product, r.version, r.line, r.period)
        if r.status == CLOSED:
            closed.add(r.number)
    return Directory(dict(versions), collectors, closed)


# -- reading collectors -----------------------------------------------------------------------


@dataclass(frozen=True)
class CollectorRow:
    number: str
    key: CollectorKey
    status: str
    created_at: datetime
    closed_at: datetime | None
    yield_qty: Decimal  # confirmed at the final operation, less reversals
    scrap_qty: Decimal
    received: Decimal  # goods receipts less their reversals
    uom: str
    costs: dict[str, CollectorCosts]  # per currency: as settled at close, else as it stands now
    has_order: bool  # its standing order is written (its version was loaded by its first use)


def list_collectors(engine: Engine, *, period: str | None = None, status: str | None = None,
                    product: str | None = None) -> list[CollectorRow]:
    cc = schema.cost_collectors.c
    q = select(schema.cost_collectors).order_by(cc.period, cc.product, cc.version, cc.line)
    if period is not None:
        q = q.where(cc.period == period)
    if status is not None:
        q = q.where(cc.status == status)
    if product is not None:
        q = q.where(cc.product == product)
    with engine.connect() as conn:
        return [_row(conn, r) for r in conn.execute(q).all()]


def read_collector(conn: Connection, number: str) -> CollectorRow | None:
    r = conn.execute(select(schema.cost_collectors).where(schema.cost_collectors.c.number == number)).first()
    return None if r is None else _row(conn, r)


def _row(conn: Connection, r) -> CollectorRow:
    key = CollectorKey(r.product, r.version, r.line, r.period)
    product = conn.execute(select(schema.materials.c.uom, schema.materials.c.currency).where(schema.materials.c.id == r.product)).first()
    uom, currency = (product.uom, product.currency) if product else ("", "EUR")
    op = schema.order_progress.c
    final = conn.execute(select(schema.order_operations.c.operation).where(
        schema.order_operations.c.order_no == r.number, schema.order_operations.c.final == True)).scalar()  # noqa: E712
    progress = conn.execute(select(op.yield_qty, op.scrap_qty).where(op.order_no == r.number,
                                                                      op.operation == final)).first()
    if r.status == CLOSED and r.currency is not None:
        costs = {r.currency: CollectorCosts(r.materials_value, r.activities_value, r.target_value)}
    else:
        costs = collector_costs(conn, r.number) or {currency: CollectorCosts(Decimal(0), Decimal(0), Decimal(0))}
    return CollectorRow(r.number, key, r.status, r.created_at, r.closed_at,
                        progress.yield_qty if progress else Decimal(0), progress.scrap_qty if progress else Decimal(0),
                        _received(conn, r.number), uom, costs, final is not None)


def _received(conn: Connection, number: str) -> Decimal:
    gm = schema.goods_movements.c
    return sum((q for q in conn.execute(select(gm.qty).where(gm.order_no == number, gm.kind.in_(["101", "102"])))
                .scalars()), Decimal(0))


def collector_costs(conn: Connection, number: str) -> dict[str, CollectorCosts]:
    """The collector's balance as posted so far, per currency (``CollectorCosts``).

    Every movement carries the value it was posted at (quantity × standard price then), so
    a price changed later does not rewrite what was consumed or received; a movement from
    before values (NULL) counts 0."""
    gm, ap = schema.goods_movements.c, schema.activity_postings.c
    currency = dict(conn.execute(select(schema.materials.c.id, schema.materials.c.currency)).all())
    materials: dict[str, Decimal] = defaultdict(Decimal)
    target: dict[str, Decimal] = defaultdict(Decimal)
    for r in conn.execute(select(gm.kind, gm.material, gm.value).where(gm.order_no == number)):
        value = r.value or Decimal(0)
        if r.kind in ("261", "262"):
            materials[currency.get(r.material, "EUR")] -= value  # an issue is a negative movement
        elif r.kind in ("101", "102"):
            target[currency.get(r.material, "EUR")] += value
    activities: dict[str, Decimal] = defaultdict(Decimal)
    for r in conn.execute(select(ap.cost, ap.currency).where(ap.order_no == number)):
        activities[r.currency] += r.cost
    return {c: CollectorCosts(materials[c], activities[c], target[c])
            for c in sorted(set(materials) | set(activities) | set(target))}


# -- period close -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PeriodClosed:
    period: str
    collectors: list[CollectorRow]


def close_period(engine: Engine, period: str, *, now: datetime | None = None,
                 audit: Action | None = None) -> PeriodClosed:
    """Close every open collector of ``period`` (module docstring); all or nothing."""
    # Imported here: both import gateway.ledger.posting, which imports this module for the writer.
    from gateway.ledger.operations import OperationRefused
    from gateway.ledger.orders import finish

    now = now or utcnow()
    cc = schema.cost_collectors.c
    with manual(engine, audit) as record, buffered(record.conn) as tx:
        conn = record.conn
        rows = conn.execute(select(schema.cost_collectors).where(cc.period == period, cc.status == OPEN)
                            .order_by(cc.number).with_for_update()).all()
        if not rows:
            closed = conn.execute(select(cc.number).where(cc.period == period)).first()
            raise OperationRefused(f"period {period} is closed already" if closed else
                                   f"no cost collector of period {period} (`gateway collectors list` shows them)")
        # Their standing orders' locks first, sorted (gateway.ledger.tx): a confirmation being
        # posted to one finishes before, or sees it closed after.
        tx.lock_orders(r.number for r in rows)
        _refuse_unfinished(conn, period, rows, now)
        record.before = {"collectors": {r.number: r.status for r in rows}}
        for r in rows:
            order = read_order(conn, r.number)
            if order is not None:  # None: its version was never loaded, nothing was posted to it
                finish(tx, order, f"O-{r.number}", CLOSED_ORDER, now)
        tx.flush()  # the balances read what was just posted
        closed = {}
        for r in rows:
            costs = collector_costs(conn, r.number)
            if len(costs) > 1:
                raise OperationRefused(f"collector {r.number} has values in {', '.join(costs)}: a collector's "
                                       "balance is in one currency; give its materials and work centers one")
            currency, balance = next(iter(costs.items()), ("EUR", CollectorCosts(Decimal(0), Decimal(0), Decimal(0))))
            conn.execute(update(schema.cost_collectors).where(cc.number == r.number).values(
                status=CLOSED, closed_at=now, materials_value=balance.materials, activities_value=balance.activities,
                target_value=balance.target, variance=balance.variance, currency=currency))
            claim("collector_closed", r.number, collector=r.number, period=period, actual=str(balance.actual),
                  target=str(balance.target), variance=str(balance.variance), currency=currency)
            closed[r.number] = {"variance": str(balance.variance), "currency": currency}
        record.changed = {"closed": closed}
        return PeriodClosed(period, [read_collector(conn, n) for n in closed])


def _refuse_unfinished(conn: Connection, period: str, rows, now: datetime) -> None:
    """A period is closed once it has ended and nothing of it waits: no unconfirmed units, no open error."""
    from gateway.ledger.operations import OperationRefused

    versions = {(v.product, v.version): v for v in read_versions(conn).values()}
    for r in rows:
        v = versions.get((r.product, r.version))
        tz = ZoneInfo(v.time_zone) if v else ZoneInfo("UTC")
        bounds = parse_period(period, tz)
        if now < bounds.end:
            raise OperationRefused(
                f"period {period} ends {bounds.end.astimezone(tz):%Y-%m-%d %H:%M} {tz.key}: units counted until "
                "then belong to it; close it after that")
    numbers = [r.number for r in rows]
    pu, eq = schema.pending_units.c, schema.error_queue.c
    waiting = [f"{p.machine} on {p.order_no} ({p.yield_qty + p.scrap_qty} units)" for p in conn.execute(
        select(pu.machine, pu.order_no, pu.yield_qty, pu.scrap_qty).where(pu.order_no.in_(numbers)))
        if p.yield_qty or p.scrap_qty]
    if waiting:
        raise OperationRefused(f"period {period}: units counted but not yet confirmed on {', '.join(waiting)}; the "
                               "gateway confirms them at its next period change (start it if it is not running), "
                               "then close the period")
    errors = conn.execute(select(eq.id, eq.order_no).where(eq.order_no.in_(numbers), eq.status == ErrorStatus.OPEN)
                          .order_by(eq.id)).all()
    if errors:
        ids = ", ".join(str(e.id) for e in errors[:10])
        raise OperationRefused(f"period {period}: {len(errors)} backflush error(s) of its collectors are open "
                               f"(ids {ids}); clear them (receive the stock, `gateway errors reprocess`, or reverse "
                               "the confirmation) so that the balance is complete, then close the period")
