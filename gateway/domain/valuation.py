"""Values in money: a quantity at a material's standard price.

Standard costing, as ERPs do it for backflushed components: every goods movement is
valued at the material's standard price in force when it is posted, so the value of
stock is Σ quantity × standard price, and issues, receipts, scrap, count differences and
adjustments carry the value of their quantity. Values are exact (a quantity has at most
6 decimals and a price at most 6, so a value has at most 12, which the ledger keeps);
they are rounded to cents for display only (``money``).

Pure: no I/O; never a float.
"""

from __future__ import annotations

from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, ROUND_HALF_UP, Context, Decimal

_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
CENT = Decimal("0.01")


def value(qty: Decimal, price: Decimal) -> Decimal:
    """``qty`` × ``price``, exactly (signed like ``qty``)."""
    return _EXACT.multiply(qty, price)


def money(amount: Decimal) -> Decimal:
    """An amount rounded half up to cents, for reports."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)
