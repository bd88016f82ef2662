"""Confirmations: list the latest, reverse one.

Never here: printing; the reversal's postings (``gateway.ledger.operations.reverse_confirmation``).
"""

from __future__ import annotations

from sqlalchemy import select

from gateway.app.errors import AppError
from gateway.app.ledger import on_ledger
from gateway.app.models import ConfirmationRow, ReversalPosted, ReverseConfirmation
from gateway.ledger import schema
from gateway.ledger.audit import Action, Actor
from gateway.ledger.operations import OperationRefused, reverse_confirmation


@on_ledger
def list_confirmations(engine, *, order: str | None = None, last: int = 20) -> list[ConfirmationRow]:
    """The latest ``last`` confirmations (of one order, if given), newest first, with their reversal."""
    if last < 1:
        raise AppError("invalid", f"--last must be 1 or more, got {last}")
    c, r = schema.confirmations, schema.reversals
    q = (select(c, r.c.id.label("reversal")).outerjoin(r, r.c.confirmation_id == c.c.id)
         .order_by(c.c.posted_at.desc(), c.c.id.desc()).limit(last))
    if order:
        q = q.where(c.c.order_no == order)
    with engine.connect() as conn:
        if order and conn.execute(select(schema.production_orders.c.number)
                                  .where(schema.production_orders.c.number == order)).first() is None:
            raise AppError("not_found", f"no order {order}")
        return [ConfirmationRow(id=row.id, posted_at=row.posted_at, machine=row.machine, order=row.order_no,
                                operation=row.operation, yield_qty=row.yield_qty, scrap_qty=row.scrap_qty,
                                uom=row.uom, trigger=row.trigger, reversed_by=row.reversal)
                for row in conn.execute(q)]


@on_ledger
def reverse(engine, request: ReverseConfirmation, *, actor: Actor) -> ReversalPosted:
    """Post the exact inverse of a confirmation, linked to it."""
    if not request.reason.strip():
        raise AppError("invalid", "give a reason for the reversal (--reason)")
    with engine.connect() as conn:
        row = conn.execute(select(schema.confirmations.c.id, schema.reversals.c.id.label("reversal"))
                           .outerjoin(schema.reversals, schema.reversals.c.confirmation_id == schema.confirmations.c.id)
                           .where(schema.confirmations.c.id == request.confirmation_id)).first()
    if row is None:
        raise AppError("not_found", f"no confirmation {request.confirmation_id}")
    try:
        result = reverse_confirmation(engine, request.confirmation_id, request.reason,
                                      force_reason=request.force_reason,
                                      audit=Action(actor, "confirmations.reverse", reason=request.reason,
                                                   subject=request.confirmation_id,
                                                   detail={"force": request.force_reason} if request.force_reason
                                                   else {}))
    except OperationRefused as exc:
        raise AppError("conflict", str(exc)) from None
    return ReversalPosted(confirmation_id=request.confirmation_id, reversal_id=result.reversal_id,
                          movements=result.movements, forced=result.forced)
