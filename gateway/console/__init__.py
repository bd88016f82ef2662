"""The web console: server-rendered pages for shift leads and controls engineers, served by the
gateway's own HTTP server under ``/console`` (``/`` redirects there).

Pieces:

* ``auth`` — who is looking: the login page takes a token (``gateway token new``) and keeps it
  in an HttpOnly, SameSite=Strict cookie (Secure over https); pages need ``viewer``, actions
  ``operator`` and a same-origin ``Origin``. The tokens are the API's (``ctx.tokens``).
* ``live`` — the plant board's figures, built once per tick for every browser from the same
  accessor the JSON API uses (``gateway.http.api.machine_view``), pushed as Server-Sent Events.
* ``pages`` — the pages; ``actions`` — the operator's buttons. Both call the application layer
  through the API's own shells (``gateway.http.ledger_api``): same checks, same messages.
* ``templates/`` (Jinja2, ``base.html`` is the layout and the navigation) and ``static/``
  (CSS and a little vanilla JavaScript, shipped as package data; no build step, no CDN).

How to add a page:

1. Write a module with ``router = APIRouter(prefix="/console")`` and a route that takes
   ``principal: Principal = Depends(page_viewer)`` and returns
   ``render(request, "yours.html", principal, active="yours", …)``.
2. Add its template, ``{% extends "base.html" %}`` with a ``{% block main %}``; show operator
   buttons only ``{% if can_act %}``, and post them with ``console.post(url, body)`` (static/console.js),
   to a route that depends on ``action_operator``.
3. Add the router to ``ROUTERS`` below and, if it belongs in the navigation, an entry to ``NAV``.

Never here: ledger logic or a second copy of the API's live-state logic; a page that changes
the ledger on GET; a token in a URL, a log line or a page.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"

# (key, title, path): the navigation bar, in this order. ``key`` is a page's ``active``.
NAV = [
    ("board", "Plant board", "/console/"),
    ("errors", "Error queue", "/console/errors"),
    ("orders", "Orders", "/console/orders"),
    ("stock", "Stock & trace", "/console/stock"),
    ("accuracy", "Accuracy", "/console/accuracy"),
    ("mapping", "Mapping", "/console/mapping"),
]


def routers() -> list:
    """The console's routers, included by ``mount``."""
    from gateway.console import actions, auth, pages

    return [auth.router, pages.router, actions.router]


def mount(app, ctx, **board_options):
    """Serve the console on ``app``; returns the board hub, whose ``run()`` the server keeps as a task."""
    from fastapi.responses import RedirectResponse
    from fastapi.staticfiles import StaticFiles

    from gateway.console.auth import install as install_auth
    from gateway.console.live import Board

    board = Board(ctx, **board_options)
    app.state.board = board
    install_auth(app)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=303)

    for router in routers():
        app.include_router(router)
    return board
