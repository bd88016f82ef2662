"""Reports on what the ledger holds: the summary with every machine's balance, an order's journal,
inventory accuracy, error metrics, lot genealogy, and the gateways that run on the ledger.

All reads. Never here: printing, writing.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from gateway.app.errors import AppError
from gateway.app.ledger import on_ledger
from gateway.app.models import (
    AccuracyRow,
    ActivityTotal,
    ErrorMetrics,
    ErrorsOfAge,
    GatewayInstance,
    Journal,
    Lease,
    LedgerSummary,
    MachineBalance,
    MaterialErrors,
    MaterialFlow,
    NotBackflushed,
    StockRow,
    Trace,
    TraceLine,
    WipRow,
)
from gateway.ledger import inventory, reports
from gateway.ledger.leases import LEDGER


@on_ledger
def summary(engine) -> LedgerSummary:
    """Per machine: units counted against confirmed + pending + held + written off; goods, activities, stock."""
    return from_ledger(reports.summary(engine))


def from_ledger(s: reports.LedgerSummary) -> LedgerSummary:
    """The ledger's summary as the model every front end shows."""
    zero = Decimal(0)
    return LedgerSummary(
        machines=[MachineBalance(machine=name, confirmations=m.confirmations, confirmed_yield=m.confirmed_yield,
                                 confirmed_scrap=m.confirmed_scrap, pending=m.pending, held=m.held,
                                 written_off=m.written_off, counted=m.counted, accounted=m.accounted,
                                 balanced=m.balanced)
                  for name, m in sorted(s.machines.items())],
        goods=[MaterialFlow(material=material, uom=uom, issued=s.issued.get((material, uom), zero),
                            received=s.received.get((material, uom), zero))
               for material, uom in sorted(set(s.issued) | set(s.received))],
        not_backflushed=[NotBackflushed(material=material, rule=rule, uom=uom, planned=qty)
                         for (material, rule, uom), qty in sorted(s.not_backflushed.items())],
        activities=[ActivityTotal(work_center=wc, activity=activity, hours=hours, cost=cost, currency=currency)
                    for (wc, activity), (hours, cost, currency) in sorted(s.activities.items())],
        stock=[StockRow(material=material, location=location, lot=lot, uom=uom, qty=qty)
               for (material, location, lot, uom), qty in sorted(s.stock.items())],
        open_errors=s.open_errors, open_anomalies=s.open_anomalies,
        duplicate_confirmation_ids=s.duplicate_confirmation_ids, unbalanced=s.unbalanced)


@on_ledger
def journal(engine, order: str) -> Journal:
    """Every ledger line of one order, by table, in posting order."""
    from gateway.app import checks

    with engine.connect() as conn:
        checks.order(conn, order)
    return Journal(order=order, sections=reports.journal(engine, order))


@on_ledger
def accuracy(engine) -> list[AccuracyRow]:
    """The last count per material / location / lot against the book, and what happened since the count before."""
    return [AccuracyRow(material=r.material, location=r.location, lot=r.lot, uom=r.uom, counts=r.counts,
                        counted_at=r.counted_at, book_qty=r.book_qty, counted_qty=r.counted_qty,
                        difference=r.difference, accuracy_pct=r.accuracy_pct, since=r.since, errors=r.errors,
                        error_qty=r.error_qty, adjustments=r.adjustments, adjustment_qty=r.adjustment_qty,
                        anomalies=r.anomalies, anomaly_machines=list(r.anomaly_machines), currency=r.currency,
                        book_value=r.book_value, difference_value=r.difference_value, error_value=r.error_value)
            for r in inventory.accuracy(engine)]


@on_ledger
def error_metrics(engine) -> ErrorMetrics:
    """Open backflush errors by age and material; error items per 1 000 confirmations."""
    m = inventory.error_metrics(engine)
    return ErrorMetrics(
        now=m.now, open_items=m.open_items, by_age=[ErrorsOfAge(age=k, items=n) for k, n in m.by_age.items()],
        by_material=[MaterialErrors(material=e.material, uom=e.uom, open_items=e.open_items,
                                    missing_qty=e.missing_qty, oldest_age_s=e.oldest_age.total_seconds(),
                                    missing_value=e.missing_value, currency=e.currency)
                     for e in m.by_material],
        errors_created=m.errors_created, confirmations=m.confirmations, rate_per_1000=m.rate_per_1000,
        errors_created_24h=m.errors_created_24h, confirmations_24h=m.confirmations_24h,
        rate_per_1000_24h=m.rate_per_1000_24h, open_values=m.open_values)


@on_ledger
def wip(engine) -> list[WipRow]:
    """Order-completion components accrued and not issued yet, per order and work center, with value."""
    from gateway.ledger.orders import wip as ledger_wip

    return [WipRow(order=w.order, work_center=w.work_center, operation=w.operation, item=w.item,
                   material=w.material, qty=w.qty, uom=w.uom, value=w.value, currency=w.currency)
            for w in ledger_wip(engine)]


@on_ledger
def trace(engine, lot: str, *, material: str | None = None,
          direction: Literal["back", "forward"] = "back") -> Trace:
    """Genealogy of a lot or serial across all levels, lots and serials mixed. A lot the ledger knows but that is used nowhere (or made
    from nothing) is an empty trace, not an error; a lot it does not know at all is not_found."""
    from sqlalchemy import or_, select

    from gateway.ledger import schema
    from gateway.ledger.operations import trace as trace_lot

    lines = trace_lot(engine, lot, material=material, direction=direction)
    if not lines:
        with engine.connect() as conn:
            lots, g = schema.lots.c, schema.genealogy.c
            known = conn.execute(select(lots.material).where(lots.lot == lot, *(
                [lots.material == material] if material else []))).first() or conn.execute(
                select(g.id).where(or_(g.component_lot == lot, g.product_lot == lot))).first()
        if known is None:
            raise AppError("not_found", f"no lot {lot}" + (f" of {material}" if material else "") + " in the ledger")
    return Trace(lot=lot, material=material, direction=direction,
                 lines=[TraceLine(depth=x.depth, material=x.material, lot=x.lot,
                                  qty=x.qty if x.depth else None, uom=x.uom, serial=x.serial) for x in lines])


@on_ledger
def status(engine) -> list[GatewayInstance]:
    """The gateways on this ledger: running or not, the machines each owns, lease age, last commit."""
    from gateway.ledger.leases import status as read_status

    with engine.connect() as conn:
        instances = read_status(conn)
    return [GatewayInstance(name=i.name, host=i.host, pid=i.pid, standby=i.standby, running=i.running,
                            seen_ago_s=i.seen_ago_s, last_commit_ago_s=i.last_commit_ago_s,
                            leases=[Lease(machine=m, age_s=age, expires_in_s=exp)
                                    for m, age, exp in i.machines if m != LEDGER])
            for i in instances]
