"""Reads of the ledger: the state the gateway resumes from, and what it has posted.

Read-only; sums are done in Python over Decimals because SQLite keeps quantities as
text (see ``schema.Dec``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import Engine, select

from gateway.domain.confirming import Pending, parse_positions
from gateway.domain.records import AnomalyStatus, CounterState, ErrorStatus, Position
from gateway.ledger import schema as t


@dataclass
class ResumeState:
    counter_states: dict[tuple[str, str], CounterState] = field(default_factory=dict)
    pendings: dict[tuple[str, str, str], Pending] = field(default_factory=dict)
    machine_orders: dict[str, str] = field(default_factory=dict)
    # machine → (counters whose next value is a job reset, those of them after an unseen job change)
    job_resets: dict[str, tuple[frozenset[str], frozenset[str]]] = field(default_factory=dict)
    counted: dict[str, Decimal] = field(default_factory=dict)  # machine → units counted ever


def resume_state(engine: Engine, machines: Collection[str] | None = None) -> ResumeState:
    """What the gateway resumes from: of every machine, or of ``machines`` (taken over)."""

    def of(table):
        q = select(table)
        return q if machines is None else q.where(table.c.machine.in_(list(machines)))

    state = ResumeState()
    with engine.connect() as conn:
        for r in conn.execute(of(t.counter_states)):
            state.counter_states[(r.machine, r.counter)] = CounterState(
                r.machine, r.counter, Position(r.epoch, r.raw), r.source_time)
        for r in conn.execute(of(t.pending_units)):
            p = Pending(r.machine, r.order_no, r.operation, r.yield_qty, r.scrap_qty,
                        parse_positions(r.start_pos), parse_positions(r.end_pos),
                        r.first_source_time, r.last_source_time, r.opened_at,
                        tuple(r.serials.split("\n") if r.serials else ()))
            state.pendings[p.key] = p
        for r in conn.execute(of(t.machine_states)):
            state.machine_orders[r.machine] = r.order_no
            if r.job_reset_pending:
                state.job_resets[r.machine] = (frozenset(r.job_reset_pending.split()),
                                               frozenset(r.job_change_unseen.split()))
        for r in conn.execute(of(t.counted_units)):
            state.counted[r.machine] = Decimal(r.units)
    return state


@dataclass(frozen=True)
class OrderDirectory:
    """What the service needs to know of the orders, refreshed every few seconds."""

    uoms: dict[str, str] = field(default_factory=dict)  # open orders → unit of measure of the product
    closed: set[str] = field(default_factory=set)
    work_centers: dict[tuple[str, str], str] = field(default_factory=dict)  # (order, operation) → work center


def order_directory(engine: Engine) -> OrderDirectory:
    po, m, oo = t.production_orders, t.materials, t.order_operations
    with engine.connect() as conn:
        rows = conn.execute(select(po.c.number, po.c.status, m.c.uom).join(m, m.c.id == po.c.material)).all()
        ops = conn.execute(select(oo.c.order_no, oo.c.operation, oo.c.work_center)).all()
    return OrderDirectory({r.number: r.uom for r in rows if r.status == "released"},
                          {r.number for r in rows if r.status != "released"},
                          {(o.order_no, o.operation): o.work_center for o in ops})


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
        for r in conn.execute(select(t.confirmations)):
            m = machines[r.machine]
            m.confirmed_yield += r.yield_qty
            m.confirmed_scrap += r.scrap_qty
            m.confirmations += 1
            ids.append(r.id)
        for r in conn.execute(select(t.pending_units)):
            machines[r.machine].pending += r.yield_qty + r.scrap_qty
        for r in conn.execute(select(t.anomalies)):
            if r.status == AnomalyStatus.OPEN:
                machines[r.machine].held += r.units_held
            elif r.status == AnomalyStatus.REJECTED:
                machines[r.machine].written_off += r.units_held
        for (machine,) in conn.execute(select(t.counter_states.c.machine).distinct()):
            machines[machine].counted = Decimal(0)  # counted by a PLC: checked even before its first unit
        for r in conn.execute(select(t.counted_units)):
            machines[r.machine].counted = Decimal(r.units)
        for r in conn.execute(select(t.goods_movements).where(t.goods_movements.c.confirmation_id.is_not(None))):
            if r.kind in ("261", "262"):  # a reversal (262) nets its issue
                issued[(r.material, r.uom)] -= r.qty
            elif r.kind in ("101", "102"):
                received[(r.material, r.uom)] += r.qty
        for r in conn.execute(select(t.activity_postings)):
            hours, cost, _ = activities.get((r.work_center, r.activity), (Decimal(0), Decimal(0), r.currency))
            activities[(r.work_center, r.activity)] = (hours + r.hours, cost + r.cost, r.currency)
        deferred: dict = defaultdict(Decimal)
        for r in conn.execute(select(t.deferred_components)):
            deferred[(r.material, r.rule, r.uom)] += r.qty
        uoms = dict(conn.execute(select(t.materials.c.id, t.materials.c.uom)).all())
        stock = {(r.material, r.location, r.lot, uoms.get(r.material, "")): r.qty
                 for r in conn.execute(select(t.stock))}
        serial = set(conn.execute(select(t.materials.c.id).where(t.materials.c.tracking == "serial")).scalars())
        if serial:
            stock = _serials_counted(stock, serial)
        open_errors = len(conn.execute(select(t.error_queue.c.id).where(t.error_queue.c.status == ErrorStatus.OPEN)).all())
        open_anomalies = len(conn.execute(select(t.anomalies.c.id).where(t.anomalies.c.status == AnomalyStatus.OPEN)).all())
    return LedgerSummary(dict(machines), dict(issued), dict(received), activities, stock, dict(deferred),
                         open_errors, open_anomalies, len(ids) - len(set(ids)))


def journal(engine: Engine, order: str) -> dict[str, list[dict]]:
    """Every ledger line of one order, by table, in posting order: for audits and the docs."""
    out: dict[str, list[dict]] = {}
    with engine.connect() as conn:
        c = t.confirmations.c
        out["confirmations"] = [
            {"id": r.id, "machine": r.machine, "operation": r.operation, "yield": r.yield_qty,
             "scrap": r.scrap_qty, "uom": r.uom, "trigger": r.trigger}
            for r in conn.execute(select(t.confirmations).where(c.order_no == order).order_by(c.posted_at, c.id))]
        ids = [r["id"] for r in out["confirmations"]]
        m = t.goods_movements.c
        out["goods movements"] = [
            {"document": r.confirmation_id, "kind": r.kind, "item": r.bom_item, "material": r.material,
             "location": r.location, "lot": r.lot, "qty": r.qty, "uom": r.uom}
            for r in conn.execute(select(t.goods_movements).where(m.order_no == order).order_by(m.id))]
        a = t.activity_postings.c
        out["activities"] = [
            {"document": r.confirmation_id, "operation": r.operation, "work center": r.work_center,
             "activity": r.activity, "hours": r.hours, "cost": r.cost, "currency": r.currency}
            for r in conn.execute(select(t.activity_postings).where(a.order_no == order).order_by(a.id))]
        g = t.genealogy.c
        out["genealogy"] = [
            {"document": r.confirmation_id, "component": r.component, "lot": r.component_lot, "qty": r.qty,
             "uom": r.uom, "into": f"{r.product} lot {r.product_lot}"}
            for r in conn.execute(select(t.genealogy).where(g.order_no == order).order_by(g.id))]
        e = t.error_queue.c
        out["error queue"] = [
            {"id": r.id, "document": r.confirmation_id, "material": r.material, "location": r.location,
             "missing": r.missing_qty, "uom": r.uom, "status": r.status, "attempts": r.attempts}
            for r in conn.execute(select(t.error_queue).where(e.order_no == order).order_by(e.id))]
        rv = t.reversals.c
        out["reversals"] = [
            {"id": r.id, "confirmation": r.confirmation_id, "reason": r.reason, "forced": r.forced}
            for r in conn.execute(select(t.reversals).where(rv.confirmation_id.in_(ids)).order_by(rv.created_at))]
        ad = t.adjustments.c
        out["adjustments"] = [
            {"id": r.id, "kind": r.kind, "reason": r.reason_code, "material": r.material, "qty": r.qty,
             "uom": r.uom, "note": r.note}
            for r in conn.execute(select(t.adjustments).where(ad.order_no == order).order_by(ad.created_at))]
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
