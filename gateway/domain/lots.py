"""Lot selection: which lots a goods issue takes its quantity from.

``allocate(qty, lots, selection, as_of)`` splits a quantity across the lots at one
location: FIFO takes the oldest receipt first, FEFO the earliest expiry first (lots
without expiry last). A lot whose expiry date is before ``as_of`` is never issued; what
the usable lots cannot cover is returned as ``missing`` (for the error queue), together
with the expired lots that were passed over, so the reason can name them.

Pure: ``as_of`` is given (the confirmation's date), never read from a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from gateway.domain.records import LotStock

FIFO = "fifo"
FEFO = "fefo"

_NEVER = date.max
_LONG_AGO = datetime.min


@dataclass(frozen=True, slots=True)
class Allocation:
    picks: tuple[tuple[str, Decimal], ...]  # (lot, quantity), in issue order
    missing: Decimal
    expired: tuple[str, ...] = ()

    @property
    def issued(self) -> Decimal:
        return sum((q for _, q in self.picks), Decimal(0))


def issue_order(lots: tuple[LotStock, ...] | list[LotStock], selection: str) -> list[LotStock]:
    """Lots in the order they are consumed."""
    if selection == FEFO:
        key = lambda lot: (lot.expires_on or _NEVER, _received(lot), lot.lot)  # noqa: E731
    elif selection == FIFO:
        key = lambda lot: (_received(lot), lot.lot)  # noqa: E731
    else:
        raise ValueError(f"unknown lot selection {selection!r} (use fifo or fefo)")
    return sorted(lots, key=key)


def allocate(qty: Decimal, lots: tuple[LotStock, ...] | list[LotStock], selection: str, as_of: date) -> Allocation:
    if qty < 0:
        raise ValueError(f"cannot allocate a negative quantity {qty}")
    remaining = qty
    picks: list[tuple[str, Decimal]] = []
    expired: list[str] = []
    for lot in issue_order(lots, selection):
        if remaining == 0:
            break
        if lot.qty <= 0:
            continue
        if lot.expires_on is not None and lot.expires_on < as_of:
            expired.append(lot.lot)
            continue
        take = min(remaining, lot.qty)
        picks.append((lot.lot, take))
        remaining -= take
    return Allocation(tuple(picks), remaining, tuple(expired))


def _received(lot: LotStock) -> datetime:
    if lot.received_at is None:
        return _LONG_AGO
    return lot.received_at.replace(tzinfo=None)
