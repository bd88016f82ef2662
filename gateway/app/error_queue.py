"""The backflush error queue: list it, reprocess it against today's stock.

Never here: printing; reprocessing's postings (``gateway.ledger.operations.reprocess_errors``).
"""

from __future__ import annotations

from gateway.app.errors import AppError
from gateway.app.ledger import on_ledger
from gateway.app.models import ErrorItem, Reprocessed, StillOpen
from gateway.ledger import operations
from gateway.ledger.audit import Action, Actor


@on_ledger
def list_errors(engine, *, include_closed: bool = False) -> list[ErrorItem]:
    """Open error items, oldest first (all of them with ``include_closed``)."""
    return [ErrorItem(id=e.id, created_at=e.created_at, order=e.order, confirmation_id=e.confirmation_id,
                      material=e.material, location=e.location, missing_qty=e.missing_qty, uom=e.uom, reason=e.reason,
                      status=e.status, attempts=e.attempts, resolved_by=e.resolved_by,
                      missing_value=e.missing_value, currency=e.currency)
            for e in operations.list_errors(engine, include_closed=include_closed)]


@on_ledger
def reprocess(engine, ids: list[int] | None = None, *, actor: Actor) -> Reprocessed:
    """Retry the open items (all, or these ids); an id that is not open is refused, nothing is retried."""
    try:
        result = operations.reprocess_errors(engine, ids or None, audit=Action(actor, "errors.reprocess"))
    except operations.OperationRefused as exc:
        raise AppError("not_found", str(exc)) from None
    return Reprocessed(resolved=result.resolved,
                       still_open=[StillOpen(id=i, reason=why) for i, why in result.still_open])
