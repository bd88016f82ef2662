"""What the three ERP targets (ERPNext, Odoo, SAP OData) share: reading a delivery's payload
into a confirmation message, and turning an HTTP exchange that failed into an ``Outcome``.

The rule every adapter follows, in one place: a request that surely did not reach the ERP
(connection refused, connect timeout, 5xx other than 504, 429, 401/403) is ``retry``; a request that
was sent and got no answer (read timeout, 504 from a proxy in front of the ERP, connection
dropped mid-answer) is ``unknown`` — the worker asks the adapter's ``find`` before sending
again; a 4xx business answer is ``park`` with the ERP's own message.

This module never sends anything and never touches the ledger.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
from pydantic import SecretStr

from gateway.outputs.base import Outcome, target_message


class PayloadError(ValueError):
    """The delivery's payload lacks what the adapter needs (a bug upstream, parked visibly)."""


@dataclass(frozen=True, slots=True)
class Movement:
    kind: str  # SAP movement type: 261 issue, 101 receipt, 262/102 reversals, 551 scrap
    material: str
    location: str
    qty: Decimal  # signed in the ledger: + in, − out; ERPs want the magnitude
    uom: str
    lot: str = ""

    @property
    def is_receipt(self) -> bool:
        return self.kind in ("101", "262")  # stock comes in: a receipt, or an issue reversed


@dataclass(frozen=True, slots=True)
class Activity:
    operation: str
    work_center: str
    activity: str  # setup | machine | labor | overhead
    hours: Decimal


@dataclass(frozen=True, slots=True)
class ConfirmationMessage:
    """A confirmation with its goods movements and activities, as the ERP adapters read it."""

    id: str
    order: str
    operation: str
    machine: str
    yield_qty: Decimal
    scrap_qty: Decimal
    uom: str
    movements: tuple[Movement, ...]
    activities: tuple[Activity, ...]
    posted_at: str = ""  # ISO time of the last counted unit (of the posting, if none)

    @property
    def receipt(self) -> Movement | None:
        return next((m for m in self.movements if m.kind == "101"), None)

    @property
    def issues(self) -> tuple[Movement, ...]:
        return tuple(m for m in self.movements if m.kind == "261")


def _decimal(value: Any, where: str) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise PayloadError(f"{where}: {value!r} is not a number") from exc


def _need(obj: dict[str, Any], key: str, where: str) -> Any:
    if key not in obj or obj[key] is None:
        raise PayloadError(f"payload lacks {where}{key}")
    return obj[key]


def read_confirmation(payload: dict[str, Any], *, order: str | None = None) -> ConfirmationMessage:
    """The confirmation in a delivery payload (``gateway.ledger.posting.confirmation_body``:
    ``document``, ``order``, ``operation``, ``yield_qty``… and ``movements`` / ``activities``)."""
    movements = tuple(
        Movement(kind=str(_need(m, "type", "movements[].")), material=str(_need(m, "material", "movements[].")),
                 location=str(m.get("location") or ""), qty=_decimal(_need(m, "qty", "movements[]."), "qty"),
                 uom=str(m.get("uom") or ""), lot=str(m.get("lot") or ""))
        for m in payload.get("movements") or ())
    activities = tuple(
        Activity(operation=str(a.get("operation") or payload.get("operation") or ""),
                 work_center=str(a.get("work_center") or ""), activity=str(_need(a, "activity", "activities[].")),
                 hours=_decimal(_need(a, "hours", "activities[]."), "hours"))
        for a in payload.get("activities") or ())
    return ConfirmationMessage(
        id=str(_need(payload, "document", "")),
        order=str(payload.get("order") or order or _need(payload, "order", "")),
        operation=str(_need(payload, "operation", "")),
        machine=str(payload.get("machine") or ""),
        yield_qty=_decimal(_need(payload, "yield_qty", ""), "yield_qty"),
        scrap_qty=_decimal(payload.get("scrap_qty", "0"), "scrap_qty"),
        uom=str(payload.get("uom") or ""),
        movements=movements,
        activities=activities,
        posted_at=str(payload.get("last_source_time") or payload.get("posted_at") or ""),
    )


def short_key(key: str, limit: int) -> str:
    """The delivery key, or a digest of it when the ERP's field is shorter than the key.

    Stable (the same key gives the same text on every attempt and every restart), which is
    all ``find`` needs."""
    if len(key) <= limit:
        return key
    return "bg-" + hashlib.sha256(key.encode()).hexdigest()[: max(limit - 3, 16)]


def credential(value: SecretStr, what: str) -> str:
    """A secret of the mapping, as the mapping file's ``${NAME}`` expanded it when it was read
    (``what`` names it for messages)."""
    return value.get_secret_value()


def transport_outcome(exc: httpx.HTTPError, target: str) -> Outcome:
    """A request that failed before an answer came: sent or not?"""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return Outcome.retry(target_message(f"{target} not reachable: {type(exc).__name__}: {exc}"))
    # ReadTimeout, WriteTimeout, RemoteProtocolError, ReadError: the request (or part of it)
    # left; the ERP may have committed it. Only find() can tell.
    return Outcome.unknown(target_message(f"{target} sent, no answer: {type(exc).__name__}: {exc}"))


def status_outcome(response: httpx.Response, target: str, message: str) -> Outcome | None:
    """The outcome of an HTTP status that is not the ERP's business answer, else None."""
    code = response.status_code
    if code == 504:  # a proxy gave up waiting; the ERP behind it may have committed
        return Outcome.unknown(target_message(f"{target} HTTP 504 (sent, outcome unknown): {message}"))
    if code >= 500 or code == 429:
        return Outcome.retry(target_message(f"{target} HTTP {code}: {message}"))
    if code in (401, 403):
        # Credentials or rights: every delivery to this target fails alike until someone fixes
        # them, so retry (the worker parks after its N failures) rather than park one by one.
        return Outcome.retry(target_message(f"{target} refused the login (HTTP {code}): {message}"))
    return None
