"""Reports on what the ledger has posted: every machine's balance of units (``summary``) and an
order's journal (``journal``). The application layer (``gateway.app.reports``) turns them into its
typed answers; the face prints them (``gateway.cli.reports``, ``gateway.cli.tables``).

Read-only; sums are done in Python over Decimals because SQLite keeps quantities as
text (see ``schema.Dec``). Never here: the state the gateway resumes from
(``gateway.ledger.resume``), writes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Engine, select

from gateway.domain.records import AnomalyStatus, ErrorStatus
from gateway.ledger import schema


@dataclass
class MachineTotals:
    """One machine's units: what its counters showed, and where each unit is now.

    ``counted`` is written with the counter state, independently of the rest: every unit
    counted is confirmed (yield or scrap), pending, held by an open anomaly, or written
    off by a rejected one. A held jump is counted when it is seen; accepting it posts a
    confirmation (confirmed), rejecting it writes it off (``written_off``). A reversal
    does not uncount: the confirmation stays, its postings are taken back by a document
    of its own. A confirmation whose postings failed stands (confirmed) with an open
    error-queue entry. Confirmations a person reported (adjustments, machine
    ``(manual)``) were never counted: ``counted`` is None there and nothing is checked.
    """

    confirmed_yield: Decimal = Decimal(0)
    confirmed_scrap: Decimal = Decimal(0)
    confirmations: int = 0
    pending: Decimal = Decimal(0)
    held: Decimal = Decimal(0)
    written_off: Decimal = Decimal(0)  # held by an anomaly a person rejected
    counted: Decimal | None = None

    @property
    def accounted(self) -> Decimal:
        """Every unit counted lands in exactly one of these."""
        return self.confirmed_yield + self.confirmed_scrap + self.pending + self.held + self.written_off

    @property
    def balanced(self) -> bool:
        """counted = confirmed + pending + held + written off (true where nothing was counted by a machine)."""
        return self.counted is None or self.counted == self.accounted


@dataclass
class LedgerSummary:
    machines: dict[str, MachineTotals]
    issued: dict[tuple[str, str], Decimal]  # (material, uom) → quantity issued
    received: dict[tuple[str, str], Decimal]
    activities: dict[tuple[str, str], tuple[Decimal, Decimal, str]]  # (wc, activity) → hours, cost, currency
    stock: dict[tuple[str, str, str, str], Decimal]  # (material, location, lot, uom) → qty
    not_backflushed: dict[tuple[str, str, str], Decimal]  # (material, rule, uom) → planned qty
    open_errors: int
    open_anomalies: int
    duplicate_confirmation_ids: int

    @property
    def unbalanced(self) -> list[str]:
        """Machines whose units counted differ from confirmed + pending + held + written off."""
        return sorted(m for m, totals in self.machines.items() if not totals.balanced)


def summary(engine: Engine) -> LedgerSummary:
    machines: dict[str, MachineTotals] = defaultdict(MachineTotals)
    issued: dict = defaultdict(Decimal)
    received: dict = defaultdict(Decimal)
    activities: dict = {}
    with engine.connect() as conn:
        ids = []
        for r in conn.execute(select(schema.confirmations)):
            m = machines[r.machine]
            m.confirmed_yield += r.yield_qty
            m.confirmed_scrap += r.scrap_qty
            m.confirmations += 1
            ids.append(r.id)
        for r in conn.execute(select(schema.pending_units)):
            machines[r.machine].pending += r.yield_qty + r.scrap_qty
        for r in conn.execute(select(schema.anomalies)):
            if r.status == AnomalyStatus.OPEN:
                machines[r.machine].held += r.units_held
            elif r.status == AnomalyStatus.REJECTED:
                machines[r.machine].written_off += r.units_held
        for (machine,) in conn.execute(select(schema.counter_states.c.machine).distinct()):
            machines[machine].counted = Decimal(0)  # counted by a PLC: checked even before its first unit
        for r in conn.execute(select(schema.counted_units)):
            machines[r.machine].counted = Decimal(r.units)
        for r in conn.execute(select(schema.goods_movements).where(schema.goods_movements.c.confirmation_id.is_not(None))):
            if r.kind in ("261", "262"):  # a reversal (262) nets its issue
                issued[(r.material, r.uom)] -= r.qty
            elif r.kind in ("101", "102"):
                received[(r.material, r.uom)] += r.qty
        for r in conn.execute(select(schema.activity_postings)):
            hours, cost, _ = activities.get((r.work_center, r.activity), (Decimal(0), Decimal(0), r.currency))
            activities[(r.work_center, r.activity)] = (hours + r.hours, cost + r.cost, r.currency)
        deferred: dict = defaultdict(Decimal)
        for r in conn.execute(select(schema.deferred_components)):
            deferred[(r.material, r.rule, r.uom)] += r.qty
        uoms = dict(conn.execute(select(schema.materials.c.id, schema.materials.c.uom)).all())
        stock = {(r.material, r.location, r.lot, uoms.get(r.material, "")): r.qty
                 for r in conn.execute(select(schema.stock))}
        serial = set(conn.execute(select(schema.materials.c.id).where(schema.materials.c.tracking == "serial")).scalars())
        if serial:
            stock = _serials_counted(stock, serial)
        open_errors = len(conn.execute(select(schema.error_queue.c.id).where(schema.error_queue.c.status == ErrorStatus.OPEN)).all())
        open_anomalies = len(conn.execute(select(schema.anomalies.c.id).where(schema.anomalies.c.status == AnomalyStatus.OPEN)).all())
    return LedgerSummary(dict(machines), dict(issued), dict(received), activities, stock, dict(deferred),
                         open_errors, open_anomalies, len(ids) - len(set(ids)))


def journal(engine: Engine, order: str) -> dict[str, list[dict]]:
    """Every ledger line of one order, by table, in posting order: for audits and the docs."""
    out: dict[str, list[dict]] = {}
    with engine.connect() as conn:
        c = schema.confirmations.c
        out["confirmations"] = [
            {"id": r.id, "machine": r.machine, "operation": r.operation, "yield": r.yield_qty,
             "scrap": r.scrap_qty, "uom": r.uom, "trigger": r.trigger}
            for r in conn.execute(select(schema.confirmations).where(c.order_no == order).order_by(c.posted_at, c.id))]
        ids = [r["id"] for r in out["confirmations"]]
        m = schema.goods_movements.c
        out["goods movements"] = [
            {"document": r.confirmation_id, "kind": r.kind, "item": r.bom_item, "material": r.material,
             "location": r.location, "lot": r.lot, "qty": r.qty, "uom": r.uom}
            for r in conn.execute(select(schema.goods_movements).where(m.order_no == order).order_by(m.id))]
        a = schema.activity_postings.c
        out["activities"] = [
            {"document": r.confirmation_id, "operation": r.operation, "work center": r.work_center,
             "activity": r.activity, "hours": r.hours, "cost": r.cost, "currency": r.currency}
            for r in conn.execute(select(schema.activity_postings).where(a.order_no == order).order_by(a.id))]
        g = schema.genealogy.c
        out["genealogy"] = [
            {"document": r.confirmation_id, "component": r.component, "lot": r.component_lot, "qty": r.qty,
             "uom": r.uom, "into": f"{r.product} lot {r.product_lot}"}
            for r in conn.execute(select(schema.genealogy).where(g.order_no == order).order_by(g.id))]
        e = schema.error_queue.c
        out["error queue"] = [
            {"id": r.id, "document": r.confirmation_id, "material": r.material, "location": r.location,
             "missing": r.missing_qty, "uom": r.uom, "status": r.status, "attempts": r.attempts}
            for r in conn.execute(select(schema.error_queue).where(e.order_no == order).order_by(e.id))]
        rv = schema.reversals.c
        out["reversals"] = [
            {"id": r.id, "confirmation": r.confirmation_id, "reason": r.reason, "forced": r.forced}
            for r in conn.execute(select(schema.reversals).where(rv.confirmation_id.in_(ids)).order_by(rv.created_at))]
        ad = schema.adjustments.c
        out["adjustments"] = [
            {"id": r.id, "kind": r.kind, "reason": r.reason_code, "material": r.material, "qty": r.qty,
             "uom": r.uom, "note": r.note}
            for r in conn.execute(select(schema.adjustments).where(ad.order_no == order).order_by(ad.created_at))]
    return out


def _serials_counted(stock: dict, serial: set[str]) -> dict:
    """Stock of serial-tracked materials as one row per material and location ("3 serials"),
    not one per unit: a summary of a thousand shafts is not a thousand lines."""
    out = {k: q for k, q in stock.items() if k[0] not in serial}
    counted: dict = defaultdict(Decimal)
    for (material, location, _, uom), qty in stock.items():
        if material in serial and qty:
            counted[(material, location, uom)] += qty
    for (material, location, uom), qty in counted.items():
        out[(material, location, f"{qty} serial{'s' if qty != 1 else ''}", uom)] = qty
    return out
