"""The operator's buttons: POST routes of the console, each the API's own route function called
with the console's authentication (cookie, operator, same origin) instead of a bearer header.

So an action checks, posts and answers exactly as ``/api/v1`` does (``gateway.http.ledger_api``):
the same application-layer function, the same problem+json refusals. The console adds only
what a person at a page must give: a reason for every anomaly decision.

Never here: a posting path of its own.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, StringConstraints

from gateway.console.auth import action_operator
from gateway.app import models as m
from gateway.http import ledger_api
from gateway.http.auth import Principal
from gateway.ledger.audit import Actor

router = APIRouter(prefix="/console/actions", include_in_schema=False)


def acting(request: Request, principal: Principal = Depends(action_operator)) -> Actor:
    """Who presses the button: the token's name, from the browser's address, on this console action."""
    client = request.client.host if request.client else "unknown"
    return Actor(name=principal.name, kind="console", host=client, via=f"{request.method} {request.url.path}")


Operator = Annotated[Actor, Depends(acting)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class Decide(BaseModel):
    """An anomaly decision from the machine page: a person says why (the audit trail needs it)."""

    model_config = ConfigDict(extra="forbid")

    anomaly_id: ledger_api.LedgerId
    reason: Reason


@router.post("/anomalies/accept")
async def accept_anomaly(request: Request, actor: Operator, body: Decide) -> m.AnomalyDecided:
    return await ledger_api.accept_anomaly(request, ledger_api.AcceptAnomaly(anomaly_id=body.anomaly_id,
                                                                              reason=body.reason), actor)


@router.post("/anomalies/reject")
async def reject_anomaly(request: Request, actor: Operator, body: Decide) -> m.AnomalyDecided:
    return await ledger_api.reject_anomaly(request, ledger_api.RejectAnomaly(anomaly_id=body.anomaly_id,
                                                                              reason=body.reason), actor)


@router.post("/errors/reprocess")
async def reprocess_errors(request: Request, actor: Operator, body: ledger_api.ReprocessErrors) -> m.Reprocessed:
    return await ledger_api.reprocess_errors(request, body, actor)


@router.post("/orders/{number}/complete")
async def complete_order(request: Request, actor: Operator, number: ledger_api.Name) -> m.OrderView:
    return await ledger_api.complete_order(request, number, actor)


@router.post("/stock/receive")
async def receive_stock(request: Request, actor: Operator, body: m.ReceiveStock) -> m.StockReceived:
    return await ledger_api.receive_stock(request, body, actor)
