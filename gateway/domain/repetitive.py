"""Repetitive production: posting periods and the cost collector a unit is confirmed on.

A machine in repetitive mode has no production order. Its units are confirmed against a
standing **cost collector** per product, production version, line and posting period (SAP
REM's product cost collector, Dynamics' production flow as cost object). The collector is
keyed by ``CollectorKey``; its ``number`` is what the ledger uses as the collector's order
number, so confirmations, backflush, reversals, adjustments and reports work on it as on an
order. At a period boundary the machine moves to the next period's collector, exactly as
it moves to a new order.

A period is a calendar month (``2026-12``), an ISO week (``2026-W49``, Monday to Sunday) or
a day (``2026-12-03``) in the plant's time zone. Which period a unit belongs to is decided
by the time the gateway counted it (``period_of(now, …)``), never by reading a clock here.

``CollectorCosts`` is what period close computes per collector: the actual cost debited
(component issues at their posted value, activities at their rates) against the target
credited (the yield received at the product's standard price); the difference is the
collector's variance (positive: produced above standard cost).

Pure: the time zone is passed in as a ``tzinfo`` (the shell builds it), the time as an
aware datetime; no I/O, no clock, never a float.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Literal, get_args

from gateway.domain.records import ProductionOrder

PeriodLength = Literal["month", "week", "day"]
PERIOD_LENGTHS: tuple[str, ...] = get_args(PeriodLength)
MAX_NUMBER_LENGTH = 64  # the ledger's order-number column

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


class PeriodError(ValueError):
    """Text that names no period; the message says what is accepted."""


@dataclass(frozen=True, slots=True)
class Period:
    """One posting period: its key and where it starts and ends (aware; end excluded)."""

    key: str
    length: PeriodLength
    start: datetime
    end: datetime

    def holds(self, at: datetime) -> bool:
        return self.start <= at < self.end


def period_of(at: datetime, length: PeriodLength, tz: tzinfo) -> Period:
    """The period ``at`` falls into, in time zone ``tz``."""
    if at.tzinfo is None:
        raise ValueError("a naive time has no period; give an aware datetime")
    local = at.astimezone(tz).date()
    if length == "month":
        first = local.replace(day=1)
        key = f"{first:%Y-%m}"
    elif length == "week":
        first = local - timedelta(days=local.weekday())
        year, week, _ = local.isocalendar()
        key = f"{year:04d}-W{week:02d}"
    elif length == "day":
        first, key = local, f"{local:%Y-%m-%d}"
    else:
        raise PeriodError(f"unknown period length {length!r}: one of {', '.join(PERIOD_LENGTHS)}")
    return Period(key, length, _midnight(first, tz), _midnight(_next(first, length), tz))


def parse_period(key: str, tz: tzinfo) -> Period:
    """The period a key names (``2026-12``, ``2026-W49``, ``2026-12-03``) in time zone ``tz``."""
    key = key.strip()
    try:
        if m := _MONTH.match(key):
            first = date(int(m[1]), int(m[2]), 1)
            return period_of(_midnight(first, tz), "month", tz)
        if m := _WEEK.match(key):
            first = date.fromisocalendar(int(m[1]), int(m[2]), 1)
            return period_of(_midnight(first, tz), "week", tz)
        if m := _DAY.match(key):
            first = date(int(m[1]), int(m[2]), int(m[3]))
            return period_of(_midnight(first, tz), "day", tz)
    except ValueError:
        pass
    raise PeriodError(f"{key!r} is no period: write a month 2026-12, an ISO week 2026-W49 or a day 2026-12-03")


def _midnight(day: date, tz: tzinfo) -> datetime:
    """The first instant of ``day`` in ``tz``, in UTC (midnight skipped by a DST change: the instant after)."""
    local = datetime(day.year, day.month, day.day, tzinfo=tz)
    return local.astimezone(UTC)


def _next(first: date, length: str) -> date:
    if length == "month":
        return date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first + timedelta(days=7 if length == "week" else 1)


@dataclass(frozen=True, slots=True)
class ProductionVersion:
    """A product made without orders: its BOM and routing snapshot (``template``, number "",
    quantity 0), and the periods its collectors run for."""

    product: str
    version: str
    template: ProductionOrder
    period: PeriodLength = "month"
    time_zone: str = "UTC"  # an IANA name; the shell turns it into a tzinfo

    def collector(self, number: str) -> ProductionOrder:
        """The standing order a collector is in the ledger: this version's snapshot under its number."""
        return replace(self.template, number=number)


@dataclass(frozen=True, slots=True)
class CollectorKey:
    """What a cost collector is for: a product, its production version, a line, a period."""

    product: str
    version: str
    line: str
    period: str

    @property
    def number(self) -> str:
        """The collector's number in the ledger, where orders have theirs: ``PRODUCT.VERSION@LINE:PERIOD``.

        Deterministic, so a gateway restarted mid-period, a second instance and the period
        close all name the same collector; a key too long for the column keeps its start and
        ends in a digest of the whole."""
        version = f".{self.version}" if self.version else ""
        text = f"{self.product}{version}@{self.line}:{self.period}"
        if len(text) <= MAX_NUMBER_LENGTH:
            return text
        digest = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
        return f"{text[:MAX_NUMBER_LENGTH - 17]}~{digest}"


@dataclass(frozen=True, slots=True)
class CollectorCosts:
    """A collector's balance at period close, in one currency.

    ``materials``: components issued to it less returns, at their posted value; ``activities``:
    setup, machine, labor and overhead at their rates; ``target``: the yield received (101 less
    102) at the product's standard price. ``variance`` = actual − target."""

    materials: Decimal
    activities: Decimal
    target: Decimal

    @property
    def actual(self) -> Decimal:
        return self.materials + self.activities

    @property
    def variance(self) -> Decimal:
        return self.actual - self.target
