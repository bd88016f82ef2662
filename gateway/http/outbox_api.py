"""The outbox over HTTP, under ``/api/v1``: list the deliveries to the outputs, retry, park or skip
them, and the published JSON Schema of a delivery.

The same application-layer functions as ``gateway outbox list|retry|park|skip``
(``gateway.app.outbox``), with the same checks and messages; a refusal is a problem (unknown
delivery 404, a missing reason 422, a delivery in the wrong state 409). Reads need ``viewer``;
an action needs ``operator`` and is audited under the token's name, address and endpoint.

Never here: delivering anything (the workers in ``gateway.outputs.worker`` do), or a second copy
of the schema (it is the package's ``gateway/outputs/outputs.schema.json``).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.app import outbox
from gateway.http.ledger_api import By, LedgerId, call, read, write
from gateway.http.problems import PROBLEM_RESPONSES
from gateway.outputs import delivery_schema

router = APIRouter(prefix="/api/v1", responses={**PROBLEM_RESPONSES, 503: PROBLEM_RESPONSES[409] | {
    "description": "The ledger is unavailable"}})

Status = Literal["pending", "unknown", "delivered", "parked", "skipped", "all"]
SCHEMA_MEDIA_TYPE = "application/schema+json"


class Deliveries(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[LedgerId] = Field(min_length=1, max_length=1000, description="Ids from GET /api/v1/outbox")


class DecidedDeliveries(Deliveries):
    reason: str = Field(max_length=500, description="Why (required; kept in the audit trail)")


@router.get("/outbox", tags=["outbox"], dependencies=read)
async def list_outbox(request: Request, status: Status | None = None,
                      target: str | None = Query(None, max_length=64), order: str | None = Query(None, max_length=64),
                      last: int = Query(500, ge=1, le=10000)) -> list[outbox.OutboxRow]:
    """Deliveries newest first, with their state, attempts and the target's last message
    (default: those not delivered yet — pending, unknown, parked; ``status=all``: every one)."""
    return await call(request, outbox.list_outbox, status=status, target=target, order=order, last=last)


@router.post("/outbox/retry", tags=["outbox"], dependencies=write)
async def retry_deliveries(request: Request, body: Deliveries, actor: By) -> list[outbox.OutboxRow]:
    """Send parked (or waiting) deliveries again now, attempts from 0; all or nothing."""
    return await call(request, outbox.act, "retry", body.ids, "", actor=actor)


@router.post("/outbox/park", tags=["outbox"], dependencies=write)
async def park_deliveries(request: Request, body: DecidedDeliveries, actor: By) -> list[outbox.OutboxRow]:
    """Hold deliveries: not sent until retried; the later ones of the same order wait behind them."""
    return await call(request, outbox.act, "park", body.ids, body.reason, actor=actor)


@router.post("/outbox/skip", tags=["outbox"], dependencies=write)
async def skip_deliveries(request: Request, body: DecidedDeliveries, actor: By) -> list[outbox.OutboxRow]:
    """Never deliver these (the target got them another way); the order's later ones go on."""
    return await call(request, outbox.act, "skip", body.ids, body.reason, actor=actor)


@router.get("/outputs/schema", tags=["outbox"], dependencies=read, response_class=JSONResponse,
            responses={200: {"content": {SCHEMA_MEDIA_TYPE: {}}, "description": "JSON Schema (draft 2020-12)"}})
async def outputs_schema() -> JSONResponse:
    """The JSON Schema of a delivery's body (the webhook's POST body, the MQTT confirmation message)."""
    return JSONResponse(delivery_schema(), media_type=SCHEMA_MEDIA_TYPE)
