"""Stock a person moves by hand: receive without an order (501), issue to an order (261), count (701/702).

Every reference is checked before anything is posted: the material, the location (a
typo must not open a new one), the lot (given exactly for lot-tracked materials; issued
and counted lots must exist), the order, and the quantity in the material's decimals.

Never here: printing; the postings themselves (``gateway.ledger.operations``,
``gateway.ledger.orders``, ``gateway.ledger.inventory`` make them).
"""

from __future__ import annotations

from gateway.app import checks
from gateway.app.errors import AppError
from gateway.app.ledger import on_ledger
from gateway.ledger import schema
from gateway.ledger.audit import Action, Actor
from gateway.app.models import (CountRecorded, CountStock, IssueStock, ReceiveStock, StockIssued, StockReceived,
                                StockRow)
from gateway.ledger.inventory import record_count
from gateway.ledger.operations import OperationRefused, receive_stock
from gateway.ledger.orders import issue_manually
from gateway.ledger.tx import SerialConflict


@on_ledger
def receive(engine, request: ReceiveStock, *, actor: Actor) -> StockReceived:
    """Goods receipt without an order (movement 501), e.g. line-side replenishment."""
    with engine.connect() as conn:
        m = checks.material(conn, request.material)
        checks.location(conn, request.location)
        checks.lot(conn, m, request.lot, must_exist=False)
        checks.positive(checks.in_decimals(m, request.qty))
    try:
        receive_stock(engine, request.material, request.qty, request.location, lot=request.lot,
                      expires_on=request.expires_on, audit=Action(actor, "stock.receive", subject=request.material,
                                                       detail={"asked": request.model_dump(mode="json")}))
    except (OperationRefused, SerialConflict) as exc:
        raise AppError("conflict", str(exc)) from None
    return StockReceived(material=m.id, qty=request.qty, uom=m.uom, location=request.location, lot=request.lot,
                         expires_on=request.expires_on)


@on_ledger
def issue(engine, request: IssueStock, *, actor: Actor) -> StockIssued:
    """A component issued to a released order by hand (e.g. one with flushing rule ``manual``)."""
    with engine.connect() as conn:
        order = checks.order(conn, request.order)
        m = checks.material(conn, request.material)
        checks.location(conn, request.location)
        checks.lot(conn, m, request.lot, must_exist=True)
        checks.positive(checks.in_decimals(m, request.qty))
    if order.status != "released":
        raise AppError("conflict", f"order {request.order} is {order.status}; no more issues to it")
    try:
        doc = issue_manually(engine, request.material, request.qty, request.order, request.location, lot=request.lot,
                             audit=Action(actor, "stock.issue", order=request.order, subject=request.material,
                                          detail={"asked": request.model_dump(mode="json")}))
    except (OperationRefused, SerialConflict) as exc:
        raise AppError("conflict", str(exc)) from None
    return StockIssued(document=doc, material=m.id, qty=request.qty, uom=m.uom, order=request.order,
                       location=request.location, lot=request.lot)


@on_ledger
def count(engine, request: CountStock, *, actor: Actor) -> CountRecorded:
    """A physical count; the difference to the book is posted (701 gain / 702 loss)."""
    with engine.connect() as conn:
        m = checks.material(conn, request.material)
        checks.location(conn, request.location)
        checks.lot(conn, m, request.lot, must_exist=True)
        checks.in_decimals(m, request.counted, verb="counted")
    if request.counted < 0:
        raise AppError("invalid", f"a counted quantity is a number of zero or more, got {request.counted}")
    try:
        r = record_count(engine, request.material, request.counted, request.location, lot=request.lot,
                         audit=Action(actor, "stock.count", subject=request.material,
                                      detail={"asked": request.model_dump(mode="json")}))
    except (OperationRefused, SerialConflict) as exc:
        raise AppError("conflict", str(exc)) from None
    return CountRecorded(id=r.id, material=r.material, location=r.location, lot=r.lot, uom=r.uom, book_qty=r.book_qty,
                         counted_qty=r.counted_qty, difference=r.difference,
                         movement=r.movement.value if r.movement else None, counted_at=r.counted_at)


@on_ledger
def on_hand(engine, *, material: str | None = None, location: str | None = None) -> list[StockRow]:
    """Stock per material, location and lot, optionally of one material and/or location; a
    material or location the ledger does not know is refused (a typo is not "no stock")."""
    from sqlalchemy import select

    st, mat = schema.stock.c, schema.materials.c
    with engine.connect() as conn:
        if material:
            checks.material(conn, material)
        if location:
            checks.location(conn, location)
        query = select(st.material, st.location, st.lot, mat.uom, st.qty).join(
            schema.materials, mat.id == st.material).order_by(st.material, st.location, st.lot)
        if material:
            query = query.where(st.material == material)
        if location:
            query = query.where(st.location == location)
        return [StockRow(material=r.material, location=r.location, lot=r.lot, uom=r.uom, qty=r.qty)
                for r in conn.execute(query)]
