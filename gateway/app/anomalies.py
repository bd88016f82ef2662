"""Anomalies that hold units: list them, accept (post the units once) or reject (write them off);
assign the units held under an unknown or empty order to an order.

Never here: printing; the decision's postings (``gateway.ledger.anomalies``).
"""

from __future__ import annotations

from gateway.app import checks
from gateway.app.errors import AppError
from gateway.app.ledger import on_ledger
from gateway.app.models import (
    AcceptAnomaly,
    Anomaly,
    AnomalyAssigned,
    AnomalyDecided,
    AssignAnomaly,
    RejectAnomaly,
)
from gateway.ledger import anomalies as ledger_anomalies
from gateway.ledger.anomalies import DecisionRefused
from gateway.ledger.audit import Action, Actor


@on_ledger
def list_anomalies(engine, *, include_decided: bool = False) -> list[Anomaly]:
    """Anomalies waiting for a decision (all of them with ``include_decided``)."""
    return [Anomaly(id=a.id, machine=a.machine, counter=a.counter, kind=a.kind, status=a.status,
                    units_held=a.units_held, source_time=a.source_time, detail=a.detail, decision=a.decision,
                    confirmation_id=a.confirmation_id, order=a.order, held_since=a.held_since)
            for a in ledger_anomalies.list_anomalies(engine, include_decided=include_decided)]


@on_ledger
def accept(engine, request: AcceptAnomaly, *, actor: Actor) -> AnomalyDecided:
    """Post the units an anomaly holds, once, as a confirmation with its backflush."""
    if request.order is not None:
        with engine.connect() as conn:
            checks.order(conn, request.order)
    try:
        confirmation, order, units = ledger_anomalies.accept(
            engine, request.anomaly_id, reason=request.reason, order=request.order, operation=request.operation,
            audit=Action(actor, "anomalies.accept", reason=request.reason, subject=f"anomaly {request.anomaly_id}"))
    except DecisionRefused as exc:
        raise _refused(exc) from None
    return AnomalyDecided(anomaly_id=request.anomaly_id, decision="accepted", units=units,
                          confirmation_id=confirmation, order=order)


@on_ledger
def assign(engine, request: AssignAnomaly, *, actor: Actor) -> AnomalyAssigned:
    """Post the units held under an unknown or empty order to a released order, once."""
    try:
        confirmations, units = ledger_anomalies.assign(
            engine, request.anomaly_id, request.order, operation=request.operation, reason=request.reason,
            audit=Action(actor, "anomalies.assign", reason=request.reason, order=request.order,
                         subject=f"anomaly {request.anomaly_id}"))
    except DecisionRefused as exc:
        raise _refused(exc) from None
    return AnomalyAssigned(anomaly_id=request.anomaly_id, order=request.order, units=units,
                           confirmation_ids=confirmations)


@on_ledger
def reject(engine, request: RejectAnomaly, *, actor: Actor) -> AnomalyDecided:
    """Write off the units an anomaly holds: nothing is posted."""
    try:
        units = ledger_anomalies.reject(engine, request.anomaly_id, reason=request.reason,
                                        audit=Action(actor, "anomalies.reject", reason=request.reason,
                                                     subject=f"anomaly {request.anomaly_id}"))
    except DecisionRefused as exc:
        raise _refused(exc) from None
    return AnomalyDecided(anomaly_id=request.anomaly_id, decision="rejected", units=units, confirmation_id=None,
                          order=None)


def _refused(exc: DecisionRefused) -> AppError:
    text = str(exc)
    return AppError("not_found" if text.startswith("no anomaly") else "conflict", f"refused: {text}")
