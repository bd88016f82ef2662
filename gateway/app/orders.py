"""Production orders: show one, complete one.

Never here: printing; completion's postings (``gateway.ledger.orders.complete_order`` makes them).
"""

from __future__ import annotations

from gateway.app import checks
from gateway.app.errors import AppError
from gateway.app.ledger import on_ledger
from gateway.app.models import ComponentUse, OperationProgress, OrderView
from gateway.ledger import orders as ledger_orders
from gateway.ledger.audit import Action, Actor
from gateway.ledger.operations import OperationRefused


@on_ledger
def show_order(engine, number: str) -> OrderView:
    """An order's progress per operation and, per component, its effective flushing rule and consumption."""
    with engine.connect() as conn:
        checks.order(conn, number)
        uom = checks.material(conn, checks.order(conn, number).material).uom
    return _view(ledger_orders.order_view(engine, number), uom)


@on_ledger
def complete_order(engine, number: str, *, actor: Actor) -> OrderView:
    """Issue the accrued order-completion components, close the order; its view afterwards."""
    with engine.connect() as conn:
        row = checks.order(conn, number)
        uom = checks.material(conn, row.material).uom
    if row.status != "released":
        raise AppError("conflict", f"order {number} is {row.status} already")
    try:
        view = ledger_orders.complete_order(engine, number, audit=Action(actor, "orders.complete", order=number,
                                                                         subject=number))
    except OperationRefused as exc:
        raise AppError("conflict", str(exc)) from None
    return _view(view, uom)


def _view(view: ledger_orders.OrderView, uom: str) -> OrderView:
    o = view.order
    return OrderView(
        number=o.number, material=o.material, quantity=o.quantity, uom=uom, status=o.status,
        received=view.received, produced_lot=o.output_lot,
        operations=[OperationProgress(operation=op.operation, work_center=op.work_center, final=op.final,
                                      yield_qty=view.progress[op.operation][0], scrap_qty=view.progress[op.operation][1])
                    for op in o.operations],
        components=[ComponentUse(item=c.item, material=c.material, uom=c.uom, rule=c.rule, rule_source=c.rule_source,
                                 operation=c.operation, basis=c.basis, basis_source=c.basis_source,
                                 in_bom=c in view.components, planned=c.planned,
                                 backflushed=c.backflushed, manual=c.manual, adjusted=c.adjusted, variance=c.variance,
                                 wip=c.wip, open_errors=c.open_errors, currency=c.currency,
                                 variance_value=c.variance_value, wip_value=c.wip_value)
                    for c in view.components + view.extra])
