"""The console's pages (GET only; they change nothing) and the board's event stream.

Figures come from where the JSON API takes them: the board hub (``live.Board``, over
``gateway.http.api.machine_view``) for the live state, and the application layer through
``gateway.http.ledger_api.call`` (worker thread, the API's own engine and limit) for the ledger.

Never here: a posting, or a query of the ledger that the application layer answers.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from gateway.console.auth import page_viewer, stream_viewer
from gateway.console.render import render
from gateway.http.auth import Principal
from gateway.http.problems import Problem

router = APIRouter(prefix="/console", include_in_schema=False)
Viewer = Annotated[Principal, Depends(page_viewer)]


def board_of(request: Request):
    return request.app.state.board


# -- the plant board ---------------------------------------------------------------------


@router.get("/")
async def board(request: Request, principal: Viewer, line: str = "", source: str = "") -> Response:
    hub = board_of(request)
    rows = list(hub.rows().values())
    gw = request.app.state.ctx.gateway
    return render(request, "board.html", principal, active="board", rows=rows, line=line, source=source,
                  work_centers=sorted({r["work_center"] for r in rows}), sources=sorted(gw.mapping.sources),
                  stale_after_s=hub.stale_after_s)


@router.get("/events/board")
async def board_events(request: Request, _: Annotated[Principal, Depends(stream_viewer)],
                       machine: str | None = Query(None, max_length=64)) -> StreamingResponse:
    """Server-Sent Events: ``rows`` (the whole board first, then the rows that changed)."""
    if machine is not None and machine not in request.app.state.ctx.gateway.machines:
        raise Problem(404, "unknown-machine", f"no machine {machine!r} in this gateway's mapping")
    return StreamingResponse(board_of(request).stream(machine), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


MachineName = Annotated[str, Path(min_length=1, max_length=64)]
