"""Rendering a console page: the Jinja2 environment, its filters, and what every page gets
(who is looking, whether they may act, the navigation, kiosk mode).

Never here: reading the ledger or the gateway; a page's figures come in as arguments.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from fastapi import Request
from fastapi.templating import Jinja2Templates

from gateway.console import NAV, TEMPLATES
from gateway.http.auth import Principal, Role
from gateway.http.metrics import build_version

templates = Jinja2Templates(directory=str(TEMPLATES))


def qty(value) -> str:
    """A quantity as the ledger has it, without exponent or trailing zeros noise ("12", "0.125")."""
    if value is None:
        return ""
    d = Decimal(value)
    text = format(d.normalize(), "f") if d == d.to_integral_value() else format(d, "f").rstrip("0")
    return "0" if text in ("-0", "") else text


def when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(seconds: float | None) -> str:
    """Seconds as a short age: 42 s, 5 min, 3 h, 2 d."""
    if seconds is None:
        return "never"
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s // size} {unit}"
    return f"{s} s"


templates.env.filters.update(qty=qty, when=when, age=age)
templates.env.globals.update(nav=NAV, version=build_version())


def render(request: Request, template: str, principal: Principal | None, *, active: str = "", status_code: int = 200,
           **context):
    return templates.TemplateResponse(request, template, {
        "principal": principal, "can_act": principal is not None and principal.role is Role.operator,
        "active": active, "kiosk": "kiosk" in request.query_params, **context}, status_code=status_code)
