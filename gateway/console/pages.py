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
from gateway.http.ledger_api import call
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


# -- one machine -------------------------------------------------------------------------


@router.get("/machines/{name}")
async def machine(request: Request, principal: Viewer, name: MachineName) -> Response:
    from gateway.app import anomalies, confirmations

    gw = request.app.state.ctx.gateway
    if name not in gw.machines:
        return render(request, "missing.html", principal, active="board", status_code=404,
                      what=f"There is no machine {name!r} in this gateway's mapping.")
    row = board_of(request).row(name)
    rt = gw.machines[name]
    specs = {c: s.units_per_count for c, s in rt.specs.items()}
    recent = await call(request, confirmations.list_confirmations, last=RECENT_SCAN)
    found = await call(request, anomalies.list_anomalies, include_decided=True)
    mine = sorted((a for a in found if a.machine == name), key=lambda a: (a.status != "open", -a.id))
    label, lines = mapping_lines(gw, name)
    return render(request, "machine.html", principal, active="board", row=row, specs=specs, name=name,
                  confirmations=[c for c in recent if c.machine == name][:RECENT_SHOWN], anomalies=mine,
                  mapping_label=label, mapping_lines=lines, stale_after_s=board_of(request).stale_after_s)


RECENT_SCAN, RECENT_SHOWN = 500, 20  # the latest confirmations of the plant, and of them this machine's


def mapping_lines(gw, name: str) -> tuple[str, list[tuple[int, str]]]:
    """The machine's block in the running mapping's file, with its line numbers; without a file
    (a gateway built in code) the running mapping's entry as YAML, numbered from 1."""
    if gw.mapping_file is not None:
        try:
            text = open(gw.mapping_file, encoding="utf-8").read()  # noqa: SIM115 — small, read once per page
            span = _machine_span(text, name)
        except (OSError, ValueError):
            span = None
        if span is not None:
            all_lines = text.splitlines()
            first, last = span
            return str(gw.mapping_file), [(i + 1, all_lines[i]) for i in range(first, last)]
    import io

    from ruamel.yaml import YAML

    out = io.StringIO()
    YAML().dump({name: gw.machines[name].config.model_dump(mode="json", exclude_defaults=True)}, out)
    return "the running mapping (not read from a file)", list(enumerate(out.getvalue().splitlines(), start=1))


def _machine_span(text: str, name: str) -> tuple[int, int] | None:
    """0-based [first, last) lines of ``machines: → name:`` in a mapping file, or None."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        data = YAML().load(text)
        machines = data["machines"]
        keys = list(machines)
        first = machines.lc.key(name)[0]
    except (YAMLError, KeyError, TypeError, AttributeError):
        return None
    after = keys.index(name) + 1
    if after < len(keys):
        last = machines.lc.key(keys[after])[0]
    else:
        tops = [data.lc.key(k)[0] for k in data if data.lc.key(k)[0] > first]
        last = min(tops) if tops else len(text.splitlines())
    lines = text.splitlines()
    while last > first + 1 and not lines[last - 1].strip():
        last -= 1
    return first, last


# -- the error queue ---------------------------------------------------------------------


@router.get("/errors")
async def errors(request: Request, principal: Viewer) -> Response:
    from gateway.app import error_queue, reports

    items = await call(request, error_queue.list_errors)
    metrics = await call(request, reports.error_metrics)
    return render(request, "errors.html", principal, active="errors", items=items, metrics=metrics)


# -- orders ------------------------------------------------------------------------------


@router.get("/orders")
async def orders(request: Request, principal: Viewer, number: str = Query("", max_length=64)) -> Response:
    from gateway.app import confirmations
    from gateway.app import orders as app_orders
    from gateway.app.errors import AppError

    gw = request.app.state.ctx.gateway
    running = sorted({(rt.order, name) for name, rt in gw.machines.items() if rt.order})
    recent = await call(request, confirmations.list_confirmations, last=RECENT_SCAN)
    known = sorted({o for o, _ in running} | {c.order for c in recent})
    view, refused = None, None
    if number:
        try:
            view = await call(request, app_orders.show_order, number)
        except AppError as exc:
            refused = exc.detail
    return render(request, "orders.html", principal, active="orders", number=number, view=view, refused=refused,
                  running=running, known=known)


# -- stock and traceability --------------------------------------------------------------


@router.get("/stock")
async def stock(request: Request, principal: Viewer, material: str = Query("", max_length=64),
                location: str = Query("", max_length=64), lot: str = Query("", max_length=64),
                trace_material: str = Query("", max_length=64)) -> Response:
    from gateway.app import reports, stock as stock_app
    from gateway.app.errors import AppError

    everything = await call(request, stock_app.on_hand)
    traces, refused = [], None
    try:
        rows = await call(request, stock_app.on_hand, material=material or None, location=location or None)
    except AppError as exc:  # a typo in the filter: say so, not "no stock"
        rows, refused = [], exc.detail
    if lot:
        for direction in ("back", "forward"):
            try:
                traces.append(await call(request, reports.trace, lot, material=trace_material or None,
                                         direction=direction))
            except AppError as exc:
                refused = exc.detail
                break
    return render(request, "stock.html", principal, active="stock", rows=rows, material=material,
                  location=location, lot=lot, trace_material=trace_material, traces=traces, refused=refused,
                  materials=sorted({s.material for s in everything}),
                  locations=sorted({s.location for s in everything}))


# -- inventory accuracy ------------------------------------------------------------------


@router.get("/accuracy")
async def accuracy(request: Request, principal: Viewer) -> Response:
    from gateway.app import reports

    rows = await call(request, reports.accuracy)
    return render(request, "accuracy.html", principal, active="accuracy", rows=rows)
