"""The checks every operation shares: text to quantities and dates, and references the ledger must know.

Each check returns what it checked (the material row, the parsed Decimal) or raises one
``AppError`` whose detail says what is wrong and what to write instead. The ledger's
posting functions check again inside their transaction; these checks exist so that a
person gets the same clear answer from every front end before anything is attempted.

Never here: writing to the ledger, printing.
"""

from __future__ import annotations

import difflib
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import Connection, select, union

from gateway.app.errors import AppError
from gateway.ledger import schema


def quantity(text: str, what: str = "quantity") -> Decimal:
    """A quantity typed by a person: digits with an optional sign and decimal point."""
    try:
        qty = Decimal(text.strip())
    except InvalidOperation:
        qty = Decimal("NaN")
    if not qty.is_finite():
        raise AppError("invalid", f"bad {what} {text!r}: write a number like 4940 or 12.5")
    return qty


def moment(text: str, what: str = "time") -> datetime:
    """A point in time typed by a person: a date (its midnight, UTC) or an ISO time (UTC unless it says)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise AppError("invalid", f"bad {what} {text!r}: write it as YYYY-MM-DD or YYYY-MM-DDTHH:MM, "
                                  "e.g. 2026-03-31T14:00 (UTC unless it gives an offset)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def day(text: str, what: str = "date") -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise AppError("invalid", f"bad {what} {text!r}: write it as YYYY-MM-DD, e.g. 2026-03-31") from None


def material(conn: Connection, material_id: str):
    """The material's row, or not_found."""
    m = conn.execute(select(schema.materials).where(schema.materials.c.id == material_id)).first()
    if m is None:
        raise AppError("not_found", f"unknown material {material_id!r}; load it with `gateway masterdata load`"
                                    + _did_you_mean(material_id, conn.execute(select(schema.materials.c.id)).scalars()))
    return m


def in_decimals(m, qty: Decimal, *, verb: str = "kept") -> Decimal:
    """``qty`` of material row ``m`` has no more decimals than the material is ``verb`` in."""
    if qty.as_tuple().exponent < -m.decimals:
        raise AppError("invalid", f"{m.id} is {verb} in {m.decimals} decimal(s) of {m.uom}; got {qty}")
    return qty


def positive(qty: Decimal, what: str = "quantity") -> Decimal:
    if qty <= 0:
        raise AppError("invalid", f"{what} must be positive, got {qty}")
    return qty


def lot(conn: Connection, m, lot_no: str, *, must_exist: bool) -> str:
    """A lot given exactly when material row ``m`` is lot-tracked; ``must_exist``: a lot the ledger knows."""
    if m.tracking == "serial" and not lot_no:
        raise AppError("invalid", f"{m.id} is serial-tracked: give the serial with --lot")
    if m.lot_tracked and not lot_no:
        raise AppError("invalid", f"{m.id} is lot-tracked: give the lot with --lot")
    if not m.lot_tracked and lot_no:
        raise AppError("invalid", f"{m.id} is not lot-tracked: leave out --lot")
    if lot_no and must_exist:
        known = conn.execute(select(schema.lots.c.lot).where(schema.lots.c.material == m.id)).scalars().all()
        if lot_no not in known:
            raise AppError("not_found", f"no lot {lot_no!r} of {m.id}" + _did_you_mean(lot_no, known))
    return lot_no


def location(conn: Connection, where: str) -> str:
    """A location the master data or the stock names: a typo must not open a new one."""
    if not where:
        raise AppError("invalid", "give the location with --location")
    known = known_locations(conn)
    if where not in known:
        hint = _did_you_mean(where, known) or (f"; known: {', '.join(sorted(known)[:12])}" if known else
                                              "; the ledger knows none yet (load master data)")
        raise AppError("not_found", f"unknown location {where!r}{hint}")
    return where


def known_locations(conn: Connection) -> set[str]:
    """Supply and receipt locations of the master data, and every location stock was ever moved at."""
    q = union(select(schema.work_centers.c.supply_location.label("loc")),
              select(schema.order_components.c.supply_location),
              select(schema.production_orders.c.receipt_location),
              select(schema.stock.c.location),
              select(schema.goods_movements.c.location).distinct())
    return {loc for loc in conn.execute(q).scalars() if loc}


def order(conn: Connection, number: str):
    """The order's header row, or not_found."""
    row = conn.execute(select(schema.production_orders).where(schema.production_orders.c.number == number)).first()
    if row is None:
        raise AppError("not_found", f"no order {number}")  # no "did you mean": order numbers differ by a digit
    return row


def _did_you_mean(word: str, known) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""
