"""Adjustments with a reason code: scrap, rework, substitution, over/under consumption of an order.

The order, the reason code and a substitute material are checked here; what each kind
posts, and whether the ledger allows it (issued quantities, stock), is decided by
``gateway.ledger.adjustments`` in its one transaction.

Never here: printing, posting.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from gateway.app import checks
from gateway.app.errors import AppError
from gateway.app.ledger import on_ledger
from gateway.app.models import AdjustAtOperation, AdjustConsumption, AdjustmentPosted, AdjustSubstitute
from gateway.domain import adjustments as rules
from gateway.ledger import adjustments as ledger_adjustments
from gateway.ledger.audit import Action, Actor
from gateway.ledger.operations import OperationRefused


@on_ledger
def scrap(engine, request: AdjustAtOperation, *, actor: Actor) -> AdjustmentPosted:
    """Scrap reported by hand: backflushed as a confirmation of scrap (reverse it like one)."""
    _check(engine, request.order, request.reason_code, request.qty)
    return _post(ledger_adjustments.scrap, engine, request.order, request.operation, request.qty,
                 request.reason_code, request.note, audit=_action(actor, "scrap", request))


@on_ledger
def rework(engine, request: AdjustAtOperation, *, actor: Actor) -> AdjustmentPosted:
    """Rework: the operation's rework BOM items and labor; no goods receipt."""
    _check(engine, request.order, request.reason_code, request.qty)
    return _post(ledger_adjustments.rework, engine, request.order, request.operation, request.qty,
                 request.reason_code, request.note, audit=_action(actor, "rework", request))


@on_ledger
def substitute(engine, request: AdjustSubstitute, *, actor: Actor) -> AdjustmentPosted:
    """The planned material goes back to its lots, the substitute is issued for the item."""
    _check(engine, request.order, request.reason_code, request.qty)
    with engine.connect() as conn:
        checks.material(conn, request.with_material)
    return _post(ledger_adjustments.substitute, engine, request.order, request.item, request.with_material,
                 request.qty, request.reason_code, request.note, with_qty=request.with_qty,
                 audit=_action(actor, "substitute", request))


@on_ledger
def consumption(engine, request: AdjustConsumption, *, actor: Actor) -> AdjustmentPosted:
    """Over- (``delta`` > 0) or under-consumption (``delta`` < 0) of one component."""
    _check(engine, request.order, request.reason_code, request.delta)
    return _post(ledger_adjustments.consumption, engine, request.order, request.item, request.delta,
                 request.reason_code, request.note, audit=_action(actor, "consumption", request))


def _action(actor: Actor, kind: str, request) -> Action:
    """The audit record of an adjustment: its reason is the reason code and the note."""
    reason = f"{request.reason_code}: {request.note}" if request.note else request.reason_code
    return Action(actor, f"adjust.{kind}", reason=reason, order=request.order,
                  detail={"asked": request.model_dump(mode="json")})


def _check(engine, order: str, reason_code: str, qty: Decimal) -> None:
    if not qty.is_finite():
        raise AppError("invalid", f"bad quantity {qty}: write a number like 4940 or 12.5")
    try:
        rules.check_reason_code(reason_code)
    except rules.Refused as exc:
        raise AppError("invalid", str(exc)) from None
    with engine.connect() as conn:
        checks.order(conn, order)


def _post(adjust: Callable, engine, *args, **kwargs) -> AdjustmentPosted:
    try:
        r = adjust(engine, *args, **kwargs)
    except OperationRefused as exc:
        raise AppError("conflict", str(exc)) from None
    return AdjustmentPosted(document=r.document, kind=r.kind, order=r.order, material=r.material, qty=r.qty,
                            uom=r.uom, movements=r.movements, queued=r.queued)
