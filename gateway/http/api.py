"""The JSON API under ``/api/v1``: the running gateway's machines, and ledger operations.

Machine views are read from the gateway's memory on the event loop (cheap, no database);
the committed figures come from the metrics' commit hook, so they equal the ledger's.
Ledger operations call the application layer in a worker thread: the loop that reads the
PLCs never waits on the database. Reads need the ``viewer`` role, changes ``operator``.
"""

from __future__ import annotations

import time
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field

from gateway.http.problems import PROBLEM_RESPONSES, Problem
from gateway.sources.base import ORDER_ROLE
from gateway.http.security import viewer


class Units(BaseModel):
    yield_: Decimal = Field(alias="yield", serialization_alias="yield")
    scrap: Decimal

    model_config = {"populate_by_name": True}


class SourceView(BaseModel):
    name: str
    connected: bool
    last_data_at: datetime | None
    last_data_age_s: float | None
    reconnects: int
    last_error: str | None
    bad_tags: dict[str, str]


class MachineView(BaseModel):
    """One machine as the running gateway sees it now."""

    name: str
    work_center: str
    operation: str
    owned: bool = Field(description="False: another gateway instance owns it (this one stands by)")
    order: str | None = Field(description="The order running on the machine (None: no order number yet)")
    counted_units: Decimal = Field(description="Units its counters ever showed, as committed to the ledger")
    confirmed: Units = Field(description="Units confirmed ever, as committed to the ledger")
    pending: Units = Field(description="Units counted and not yet confirmed")
    held: Decimal = Field(description="Units held by open anomalies (the ledger, read every few seconds)")
    counters: dict[str, int] = Field(description="Last accepted raw value of each counter")
    last_reading_at: datetime | None = Field(description="When the gateway last received a value of the machine")
    last_reading_age_s: float | None
    source: SourceView


router = APIRouter(prefix="/api/v1", responses=PROBLEM_RESPONSES)


def _machine_view(request: Request, name: str, health: dict) -> MachineView:
    return machine_view(request.app.state.ctx, name, health)


def machine_view(ctx, name: str, health: dict) -> MachineView:
    """One machine now, from the server context (``health``: ``gateway.source_health()``, read once)."""
    gw = ctx.gateway
    rt = gw.machines[name]
    counted, good, scrap = ctx.metrics.committed_figures(name)
    seen = [gw.last_seen.get((name, role)) for role in (*rt.specs, ORDER_ROLE)]  # its own tags only
    last = max((tv.received_at for tv in seen if tv is not None), default=None)
    h = health.get(rt.config.source)
    now = time.time()
    source = SourceView(name=rt.config.source, connected=bool(h and h.connected),
                        last_data_at=h.last_data_at if h else None,
                        last_data_age_s=round(now - h.last_data_at.timestamp(), 3) if h and h.last_data_at else None,
                        reconnects=h.reconnects if h else 0, last_error=h.last_error if h else None,
                        bad_tags=dict(h.bad_tags) if h else {})
    return MachineView(
        name=name, work_center=rt.config.work_center, operation=rt.operation, owned=rt.owned, order=rt.order or None,
        counted_units=counted, confirmed=Units(yield_=good, scrap=scrap),
        pending=Units(yield_=sum((p.yield_qty for p in rt.pendings.values()), Decimal(0)),
                      scrap=sum((p.scrap_qty for p in rt.pendings.values()), Decimal(0))),
        held=ctx.metrics.ledger.held.get(name, Decimal(0)),
        counters={c: s.position.raw for c, s in sorted(rt.states.items())},
        last_reading_at=last, last_reading_age_s=round(now - last.timestamp(), 3) if last else None,
        source=source)


@router.get("/machines", response_model=list[MachineView], response_model_by_alias=True, tags=["machines"],
            dependencies=[Depends(viewer)])
async def machines(request: Request) -> list[MachineView]:
    """Every machine of the mapping: order, units, last value and its age, its source's health."""
    gw = request.app.state.ctx.gateway
    health = gw.source_health()  # once per request, not per machine
    return [_machine_view(request, name, health) for name in sorted(gw.machines)]


@router.get("/machines/{name}", response_model=MachineView, response_model_by_alias=True, tags=["machines"],
            dependencies=[Depends(viewer)])
async def machine(request: Request, name: Annotated[str, Path(max_length=64)]) -> MachineView:
    """One machine (404 if the mapping has no machine of that name)."""
    if name not in request.app.state.ctx.gateway.machines:
        raise Problem(404, "unknown-machine", f"no machine {name!r} in this gateway's mapping")
    gw = request.app.state.ctx.gateway
    return _machine_view(request, name, gw.source_health())
