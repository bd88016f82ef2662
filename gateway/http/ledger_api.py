"""Ledger operations over HTTP, under ``/api/v1``: orders, cost collectors, confirmations, the
error queue, anomalies, stock, genealogy and reports.

Each route is a thin shell over one function of the application layer (``gateway.app``):
the same input models, the same checks and the same messages as the CLI. An ``AppError``
becomes a problem (not_found 404, invalid 422, conflict 409, unavailable 503). The calls
block on the database, so they run in worker threads — at most ``LEDGER_CALLS`` at a time,
on an engine of their own — and the event loop that reads the PLCs never waits on them.
Reads need ``viewer``, anything that posts needs ``operator``. Every posting call carries its
``Actor`` into the application layer — the token's name, the client's address, the method and
endpoint — and the audit trail records it (``GET /api/v1/audit`` reads the trail).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal, TypeVar

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from gateway.app import anomalies, collectors, confirmations, error_queue, orders, reports, stock
from gateway.app import models as m
from gateway.app.audit import Actor, list_audit
from gateway.app.ledger import MAX_LEDGER_INT
from gateway.http.auth import Principal
from gateway.http.problems import PROBLEM_RESPONSES
from gateway.http.security import operator, viewer

T = TypeVar("T")
LEDGER_CALLS = 4  # ledger operations running at once; more wait (the writer keeps its database time)

Name = Annotated[str, Path(min_length=1, max_length=64)]  # an order number, a lot: as the ledger's columns
router = APIRouter(prefix="/api/v1", responses={**PROBLEM_RESPONSES, 503: PROBLEM_RESPONSES[409] | {
    "description": "The ledger is unavailable"}})
read = [Depends(viewer)]
write = [Depends(operator)]


def acting(request: Request, principal: Principal = Depends(operator)) -> Actor:
    """Who asks for a posting: the token's name, from the client's address, at this endpoint."""
    client = request.client.host if request.client else "unknown"
    return Actor(name=principal.name, kind="api", host=client, via=f"{request.method} {request.url.path}")


By = Annotated[Actor, Depends(acting)]


async def call(request: Request, fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(engine, *args, **kwargs)`` in a worker thread, on the API's own ledger engine."""
    ctx = request.app.state.ctx
    return await anyio.to_thread.run_sync(lambda: fn(ctx.ledger_engine, *args, **kwargs),
                                          limiter=ctx.ledger_calls)


# Ids are the ledger's integer keys: a number beyond 64 bits is refused here (422, with its
# place) instead of by the database driver.
LedgerId = Annotated[int, Field(ge=1, le=MAX_LEDGER_INT)]


class ReprocessErrors(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[LedgerId] | None = None  # None: every open item


class AcceptAnomaly(m.AcceptAnomaly):
    anomaly_id: LedgerId


class RejectAnomaly(m.RejectAnomaly):
    anomaly_id: LedgerId


class AssignAnomaly(m.AssignAnomaly):
    anomaly_id: LedgerId


# -- orders ---------------------------------------------------------------------------


@router.get("/orders/{number}", tags=["orders"], dependencies=read)
async def get_order(request: Request, number: Name) -> m.OrderView:
    """An order's progress per operation and, per component, planned against issued."""
    return await call(request, orders.show_order, number)


@router.post("/orders/{number}/complete", tags=["orders"], dependencies=write)
async def complete_order(request: Request, number: Name, actor: By) -> m.OrderView:
    """Issue the accrued order-completion components and close the order."""
    return await call(request, orders.complete_order, number, actor=actor)


# -- cost collectors (repetitive production) -------------------------------------------


@router.get("/collectors", tags=["collectors"], dependencies=read)
async def list_collectors(request: Request, period: str | None = Query(None, max_length=16),
                          status: Literal["open", "closed"] | None = None,
                          product: str | None = Query(None, max_length=64)) -> list[m.CollectorRow]:
    """Cost collectors per product, version, line and period, with their balance (actual, target, variance)."""
    return await call(request, collectors.list_collectors, period=period, status=status, product=product)


@router.get("/collectors/{number}", tags=["collectors"], dependencies=read)
async def get_collector(request: Request, number: Name) -> m.CollectorView:
    """One collector: its balance, and its standing order's progress and components."""
    return await call(request, collectors.show_collector, number)


@router.post("/periods/close", tags=["collectors"], dependencies=write)
async def close_period(request: Request, body: m.ClosePeriod, actor: By) -> m.PeriodClosed:
    """Close a period's collectors: accrued WIP issued, the balance settled, nothing posted to them after."""
    return await call(request, collectors.close_period, body, actor=actor)


# -- confirmations ----------------------------------------------------------------------


@router.get("/confirmations", tags=["confirmations"], dependencies=read)
async def list_confirmations(request: Request, order: str | None = Query(None, max_length=64),
                             last: int = Query(20, ge=1, le=1000)) -> list[m.ConfirmationRow]:
    """The latest confirmations, newest first."""
    return await call(request, confirmations.list_confirmations, order=order, last=last)


@router.post("/confirmations/reverse", tags=["confirmations"], dependencies=write)
async def reverse_confirmation(request: Request, body: m.ReverseConfirmation, actor: By) -> m.ReversalPosted:
    """Post the exact, linked inverse of one confirmation."""
    return await call(request, confirmations.reverse, body, actor=actor)


# -- the backflush error queue -----------------------------------------------------------


@router.get("/errors", tags=["errors"], dependencies=read)
async def list_errors(request: Request, include_closed: bool = Query(False, alias="all")) -> list[m.ErrorItem]:
    """Open backflush errors (``all=true``: resolved ones too)."""
    return await call(request, error_queue.list_errors, include_closed=include_closed)


@router.post("/errors/reprocess", tags=["errors"], dependencies=write)
async def reprocess_errors(request: Request, body: ReprocessErrors, actor: By) -> m.Reprocessed:
    """Retry open errors against today's stock, posting nothing twice."""
    return await call(request, error_queue.reprocess, body.ids, actor=actor)


# -- anomalies ----------------------------------------------------------------------------


@router.get("/anomalies", tags=["anomalies"], dependencies=read)
async def list_anomalies(request: Request, include_decided: bool = Query(False, alias="all")) -> list[m.Anomaly]:
    """Anomalies waiting for a decision (``all=true``: every one)."""
    return await call(request, anomalies.list_anomalies, include_decided=include_decided)


@router.post("/anomalies/accept", tags=["anomalies"], dependencies=write)
async def accept_anomaly(request: Request, body: AcceptAnomaly, actor: By) -> m.AnomalyDecided:
    """Post the held units once, as a confirmation with its backflush."""
    return await call(request, anomalies.accept, body, actor=actor)


@router.post("/anomalies/assign", tags=["anomalies"], dependencies=write)
async def assign_anomaly(request: Request, body: AssignAnomaly, actor: By) -> m.AnomalyAssigned:
    """Post the units held under an unknown or empty order to a released order, once."""
    return await call(request, anomalies.assign, body, actor=actor)


@router.post("/anomalies/reject", tags=["anomalies"], dependencies=write)
async def reject_anomaly(request: Request, body: RejectAnomaly, actor: By) -> m.AnomalyDecided:
    """Write the held units off."""
    return await call(request, anomalies.reject, body, actor=actor)


# -- stock and lots -----------------------------------------------------------------------


@router.get("/stock", tags=["stock"], dependencies=read)
async def get_stock(request: Request, material: str | None = Query(None, max_length=64),
                    location: str | None = Query(None, max_length=64)) -> list[m.StockRow]:
    """Stock per material, location and lot (optionally of one material and/or location)."""
    return await call(request, stock.on_hand, material=material, location=location)


@router.post("/stock/receive", tags=["stock"], dependencies=write)
async def receive_stock(request: Request, body: m.ReceiveStock, actor: By) -> m.StockReceived:
    """Receive stock without an order (movement 501)."""
    return await call(request, stock.receive, body, actor=actor)


@router.post("/stock/issue", tags=["stock"], dependencies=write)
async def issue_stock(request: Request, body: m.IssueStock, actor: By) -> m.StockIssued:
    """Issue a component to an order by hand (movement 261)."""
    return await call(request, stock.issue, body, actor=actor)


@router.post("/stock/count", tags=["stock"], dependencies=write)
async def count_stock(request: Request, body: m.CountStock, actor: By) -> m.CountRecorded:
    """Record a physical count; the difference is posted as 701/702."""
    return await call(request, stock.count, body, actor=actor)


@router.get("/lots/{lot}/trace", tags=["stock"], dependencies=read)
async def trace_lot(request: Request, lot: Name, material: str | None = Query(None, max_length=64),
                    direction: Literal["back", "forward"] = "back") -> m.Trace:
    """Genealogy of a lot across all levels: where-from (``back``) or where-used (``forward``)."""
    return await call(request, reports.trace, lot, material=material, direction=direction)


# -- reports ------------------------------------------------------------------------------


@router.get("/reports/summary", tags=["reports"], dependencies=read)
async def report_summary(request: Request) -> m.LedgerSummary:
    """What the ledger holds, and per machine whether its units balance."""
    return await call(request, reports.summary)


@router.get("/reports/journal/{order}", tags=["reports"], dependencies=read)
async def report_journal(request: Request, order: Name) -> m.Journal:
    """Every ledger line of one order."""
    return await call(request, reports.journal, order)


@router.get("/reports/accuracy", tags=["reports"], dependencies=read)
async def report_accuracy(request: Request) -> list[m.AccuracyRow]:
    """Inventory accuracy: the last count against the book, per material, location and lot."""
    return await call(request, reports.accuracy)


@router.get("/reports/errors", tags=["reports"], dependencies=read)
async def report_errors(request: Request) -> m.ErrorMetrics:
    """Error-queue metrics: open items by age and material, errors per 1 000 confirmations."""
    return await call(request, reports.error_metrics)


@router.get("/reports/wip", tags=["reports"], dependencies=read)
async def report_wip(request: Request) -> list[m.WipRow]:
    """Work in process: order-completion components accrued and not issued yet, per order and work center,
    with value at the standard price."""
    return await call(request, reports.wip)


@router.get("/audit", tags=["reports"], dependencies=read)
async def audit_trail(request: Request, since: datetime | None = None,
                      actor: str | None = Query(None, max_length=128), order: str | None = Query(None, max_length=64),
                      last: int | None = Query(None, ge=1, le=100000)) -> list[m.AuditEntry]:
    """The audit trail, oldest first: every manual action with who, from where, when, why and what it posted
    (``since`` an ISO time, UTC unless it says; of one ``actor``; of one ``order``; the ``last`` N)."""
    if since is not None and since.tzinfo is None:
        from datetime import UTC

        since = since.replace(tzinfo=UTC)
    return await call(request, list_audit, since=since, actor=actor, order=order, last=last)


@router.get("/gateways", tags=["reports"], dependencies=read)
async def gateways(request: Request) -> list[m.GatewayInstance]:
    """The gateways on this ledger: running or not, the machines each owns."""
    return await call(request, reports.status)
