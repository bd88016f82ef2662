"""The mapping workbench page (``/console/mapping``) and the calls its script makes.

The page edits the running mapping's text in the browser; nothing reaches the mapping file
until Apply. Every call is the JSON API's own route function (``gateway.http.mapping_api``)
with the console's authentication (the cookie) instead of a bearer header: validate, diff,
the version history and browsing need ``viewer``; apply and restore need ``operator`` and a
same-origin request (``gateway.console.auth.action_operator``). So the page checks, applies
and refuses exactly as ``/api/v1/mapping`` does.

Never here: reading or writing the mapping file, checking a mapping, or talking to a PLC
other than through ``mapping_api``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from gateway.console.actions import acting
from gateway.console.auth import page_viewer, same_origin, stream_viewer
from gateway.console.render import render
from gateway.http import mapping_api as api
from gateway.http.auth import Principal
from gateway.http.problems import Problem
from gateway.ledger.audit import Actor
from gateway.mapping.model import LAST_ADDRESS, MAX_REGISTERS_PER_READ

router = APIRouter(prefix="/console", include_in_schema=False)
Viewer = Annotated[Principal, Depends(stream_viewer)]  # script calls: a 401 problem, not a redirect
Acting = Annotated[Actor, Depends(acting)]  # an operator pressing a button, for the audit trail
VersionId = api.VersionId
SourceName = Annotated[str, PathParam(max_length=64)]


@router.get("/mapping")
async def workbench(request: Request, principal: Annotated[Principal, Depends(page_viewer)]) -> Response:
    gw = request.app.state.ctx.gateway
    try:
        running = await api.running_mapping(request)
    except Problem as exc:  # e.g. a gateway built without its file: the page says so
        return render(request, "missing.html", principal, active="mapping", status_code=exc.status, what=exc.detail)
    sources = [(name, "opcua" if s.opcua is not None else "modbus") for name, s in sorted(gw.mapping.sources.items())]
    return render(request, "workbench.html", principal, active="mapping", title="Mapping workbench", running=running,
                  sources=sources, machines=sorted(gw.mapping.machines))


@router.get("/mapping/running")
async def running(request: Request, _: Viewer) -> api.RunningMapping:
    return await api.running_mapping(request)


@router.post("/mapping/validate", dependencies=[Depends(same_origin)])
async def validate(request: Request, _: Viewer, body: api.MappingText) -> api.Validation:
    return await api.validate_text(request, body)


@router.post("/mapping/diff", dependencies=[Depends(same_origin)])
async def diff(request: Request, _: Viewer, body: api.MappingText) -> api.MappingDiff:
    return await api.diff_text(request, body)


@router.get("/mapping/versions")
async def versions(request: Request, _: Viewer) -> list[api.VersionSummary]:
    return await api.versions(request)


@router.get("/mapping/versions/{version_id}")
async def version(request: Request, _: Viewer, version_id: VersionId) -> api.Version:
    return await api.version(request, version_id)


@router.get("/mapping/browse/opcua/{source}")
async def browse_opcua(request: Request, _: Viewer, source: SourceName,
                       node: Annotated[str, Query(min_length=1, max_length=1000)] = "i=85") -> api.OpcUaLevel:
    return await api.browse_opcua(request, source, node)


@router.get("/mapping/browse/modbus/{source}")
async def browse_modbus(request: Request, _: Viewer, source: SourceName,
                        table: Literal["holding", "input"] = "holding",
                        start: Annotated[int, Query(ge=0, le=LAST_ADDRESS)] = 0,
                        count: Annotated[int, Query(ge=1, le=MAX_REGISTERS_PER_READ)] = 16) -> api.RegisterRange:
    return await api.browse_modbus(request, source, table, start, count)


@router.post("/actions/mapping/apply")
async def apply(request: Request, who: Acting, body: api.ApplyRequest) -> api.ApplyResult:
    return await api.apply(request, body.text, body.base_hash, body.comment, who)


@router.post("/actions/mapping/versions/{version_id}/restore")
async def restore(request: Request, who: Acting, version_id: VersionId, body: api.Restore) -> api.ApplyResult:
    return await api.restore(request, version_id, body, who)
