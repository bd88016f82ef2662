"""Cost collectors of repetitive production: list them, show one, close a period.

A collector is a standing order under its number (``gateway.ledger.collectors``), so showing
one is showing that order plus the collector's key and balance; the order's own operations
(``orders show``, ``report journal``, reversals, adjustments) take the number as well.

Never here: printing; the close's postings (``gateway.ledger.collectors.close_period`` makes them).
"""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.app.errors import AppError
from gateway.app.ledger import on_ledger
from gateway.app.models import ClosePeriod, CollectorRow, CollectorView, PeriodClosed
from gateway.app.orders import show_order
from gateway.domain.repetitive import PeriodError, parse_period
from gateway.ledger import collectors as ledger_collectors
from gateway.ledger.audit import Action, Actor
from gateway.ledger.operations import OperationRefused

STATUSES = ("open", "closed")


@on_ledger
def list_collectors(engine, *, period: str | None = None, status: str | None = None,
                    product: str | None = None) -> list[CollectorRow]:
    """The collectors, by period, product, version and line (optionally of one period, status or product)."""
    if period is not None:
        _period(period)
    if status is not None and status not in STATUSES:
        raise AppError("invalid", f"status {status!r}: one of {', '.join(STATUSES)}")
    return [_row(r) for r in ledger_collectors.list_collectors(engine, period=period, status=status, product=product)]


@on_ledger
def show_collector(engine, number: str) -> CollectorView:
    """One collector: its key and balance, and its standing order's progress and components."""
    with engine.connect() as conn:
        row = ledger_collectors.read_collector(conn, number)
    if row is None:
        raise AppError("not_found", f"no cost collector {number} (`gateway collectors list` shows them)")
    order = show_order(engine, number) if row.has_order else None
    return CollectorView(collector=_row(row), order=order)


@on_ledger
def close_period(engine, request: ClosePeriod, *, actor: Actor, now: datetime | None = None) -> PeriodClosed:
    """Close every open collector of a period: WIP issued, balance settled, nothing posted to them after."""
    _period(request.period)
    audit = Action(actor, "period.close", reason=request.reason, subject=request.period)
    try:
        closed = ledger_collectors.close_period(engine, request.period, now=now, audit=audit)
    except OperationRefused as exc:
        raise AppError("conflict", str(exc)) from None
    return PeriodClosed(period=closed.period, collectors=[_row(r) for r in closed.collectors])


def _period(text: str) -> None:
    try:
        parse_period(text, UTC)
    except PeriodError as exc:
        raise AppError("invalid", str(exc)) from None


def _row(r: ledger_collectors.CollectorRow) -> CollectorRow:
    one = next(iter(r.costs.values())) if len(r.costs) == 1 else None  # None: postings in several currencies
    return CollectorRow(
        number=r.number, product=r.key.product, version=r.key.version, line=r.key.line, period=r.key.period,
        status=r.status, created_at=r.created_at, closed_at=r.closed_at, yield_qty=r.yield_qty,
        scrap_qty=r.scrap_qty, received=r.received, uom=r.uom, currency="+".join(r.costs),
        materials=one and one.materials, activities=one and one.activities, actual=one and one.actual,
        target=one and one.target, variance=one and one.variance)
