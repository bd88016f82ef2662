"""Who is looking at the console, and whether they may act.

A browser cannot send the API's ``Authorization: Bearer`` header when it navigates, so the
login page takes the token once and keeps it in a cookie: HttpOnly (page scripts never see
it), SameSite=Strict (no other site's page or link sends it), Secure when served over https,
Path=/console, for the browser session. The cookie holds the token itself, checked against
the configured hashes (``ctx.tokens``) on every request like a bearer header — so a token
removed from the tokens file logs its console users out, and a restart of the gateway does
not. No server-side session exists to leak or to lose.

Actions (POST) need the ``operator`` role and a same-origin request: an ``Origin`` (or, when a
browser sends none, ``Referer``) whose host is the request's own host. With SameSite=Strict
that is two locks against cross-site request forgery; the login form is checked the same way.

Never here: logging, echoing or embedding a token in a page or a URL.
"""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from gateway.http.auth import Principal, Role
from gateway.http.problems import Problem

COOKIE = "bgw_console"
LOGIN = "/console/login"
MAX_FORM_BYTES = 4096

router = APIRouter(prefix="/console", include_in_schema=False)


class LoginNeeded(Exception):
    """A page was asked for without a valid cookie: answered with a redirect to the login page."""

    def __init__(self, then: str) -> None:
        super().__init__(then)
        self.then = then


def install(app: FastAPI) -> None:
    @app.exception_handler(LoginNeeded)
    async def _to_login(_: Request, exc: LoginNeeded) -> RedirectResponse:
        return RedirectResponse(f"{LOGIN}?next={quote(exc.then, safe='/')}", status_code=303)


def _who(request: Request) -> Principal | None:
    token = request.cookies.get(COOKIE)
    return request.app.state.ctx.tokens.who(token) if token else None


def page_viewer(request: Request) -> Principal:
    """A page's dependency: the principal of the cookie, else a redirect to the login page."""
    principal = _who(request)
    if principal is None:
        raise LoginNeeded(_safe_next(request.url.path + (f"?{request.url.query}" if request.url.query else "")))
    return principal


def stream_viewer(request: Request) -> Principal:
    """The event streams' dependency: a 401 problem, not a redirect (EventSource cannot follow it)."""
    principal = _who(request)
    if principal is None:
        raise Problem(401, "unauthorized", "log in to the console first")
    return principal


def same_origin(request: Request) -> None:
    """Refuse a POST that another site's page made (403)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    host = request.headers.get("host")
    if not origin or not host or urlsplit(origin).netloc != host:
        raise Problem(403, "cross-origin", "the console accepts actions from its own pages only")


def action_operator(request: Request, _: None = Depends(same_origin)) -> Principal:
    """An action's dependency: same origin, a valid cookie (401) of role operator (403)."""
    principal = _who(request)
    if principal is None:
        raise Problem(401, "unauthorized", "log in to the console first")
    if not principal.role.allows(Role.operator):
        raise Problem(403, "forbidden", f"token {principal.name!r} has role {principal.role.value}; "
                      "this needs operator")
    return principal


def _safe_next(then: str | None) -> str:
    """Only a console path: never another host (``//evil``) or a scheme."""
    if not then or not then.startswith("/console/") or then.startswith("//") or "\\" in then:
        return "/console/"
    return then


@router.get("/login")
async def login_page(request: Request, next: str = "/console/") -> Response:  # noqa: A002 — the query's name
    from gateway.console.render import render

    return render(request, "login.html", _who(request), then=_safe_next(next), error=None)


@router.post("/login")
async def login(request: Request, _: None = Depends(same_origin)) -> Response:
    from gateway.console.render import render

    body = await request.body()
    form = parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace")) if len(body) <= MAX_FORM_BYTES else {}
    token = (form.get("token") or [""])[0].strip()
    then = _safe_next((form.get("next") or [""])[0])
    principal = request.app.state.ctx.tokens.who(token) if token else None
    if principal is None:
        return render(request, "login.html", None, then=then, status_code=401,
                      error="That is not one of the gateway's tokens (make one with `gateway token new`).")
    response = RedirectResponse(then, status_code=303)
    response.set_cookie(COOKIE, token, path="/console", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
async def logout(request: Request, _: None = Depends(same_origin)) -> Response:
    response = RedirectResponse(LOGIN, status_code=303)
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
    return response
