"""What the gateway resumes from and keeps in view while it runs: the committed counter states,
pending units, machine states and units counted (``resume_state``), and the directory of orders and
cost collectors the machines check their order values against (``order_directory``).

Read-only. Never here: reports for people (``gateway.ledger.reports``), writes.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import Engine, select

from gateway.domain.confirming import Pending, parse_positions
from gateway.domain.records import CounterState, Position
from gateway.ledger import schema
from gateway.ledger.collectors import Directory, read_directory


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
        for r in conn.execute(of(schema.counter_states)):
            state.counter_states[(r.machine, r.counter)] = CounterState(
                r.machine, r.counter, Position(r.epoch, r.raw), r.source_time)
        for r in conn.execute(of(schema.pending_units)):
            p = Pending(r.machine, r.order_no, r.operation, r.yield_qty, r.scrap_qty,
                        parse_positions(r.start_pos), parse_positions(r.end_pos),
                        r.first_source_time, r.last_source_time, r.opened_at,
                        tuple(r.serials.split("\n") if r.serials else ()))
            state.pendings[p.key] = p
        for r in conn.execute(of(schema.machine_states)):
            state.machine_orders[r.machine] = r.order_no
            if r.job_reset_pending:
                state.job_resets[r.machine] = (frozenset(r.job_reset_pending.split()),
                                               frozenset(r.job_change_unseen.split()))
        for r in conn.execute(of(schema.counted_units)):
            state.counted[r.machine] = Decimal(r.units)
    return state


@dataclass(frozen=True)
class OrderDirectory:
    """What the service needs to know of the orders, refreshed every few seconds.

    Cost collectors (repetitive production) are orders here too: an open one whose version
    is known is in ``uoms`` even before its standing order is written (the writer writes it
    with the collector's first confirmation), a closed one in ``closed``."""

    uoms: dict[str, str] = field(default_factory=dict)  # open orders → unit of measure of the product
    closed: set[str] = field(default_factory=set)
    work_centers: dict[tuple[str, str], str] = field(default_factory=dict)  # (order, operation) → work center
    repetitive: Directory = field(default_factory=Directory)
    product_uoms: dict[str, str] = field(default_factory=dict)  # material → unit of measure


def order_directory(engine: Engine) -> OrderDirectory:
    po, m, oo = schema.production_orders, schema.materials, schema.order_operations
    with engine.connect() as conn:
        rows = conn.execute(select(po.c.number, po.c.status, m.c.uom).join(m, m.c.id == po.c.material)).all()
        ops = conn.execute(select(oo.c.order_no, oo.c.operation, oo.c.work_center)).all()
        repetitive = read_directory(conn)
        product_uoms = dict(conn.execute(select(m.c.id, m.c.uom).where(m.c.id.in_(list(repetitive.versions)))).all())
    uoms = {r.number: r.uom for r in rows if r.status == "released"}
    closed = {r.number for r in rows if r.status != "released"} | repetitive.closed
    for number, key in repetitive.collectors.items():
        if number not in closed and key.version in repetitive.versions.get(key.product, {}):
            uoms.setdefault(number, product_uoms.get(key.product, ""))
    return OrderDirectory(uoms, closed, {(o.order_no, o.operation): o.work_center for o in ops}, repetitive,
                          product_uoms)
