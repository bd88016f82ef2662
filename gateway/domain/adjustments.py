"""Adjustments: the postings of an exception a person reports against a production order.

For deciding the numbers of the corrections that are not a machine's confirmation:

* rework: the BOM items marked ``rework`` of one operation, for the quantity reworked
  (``qty × qty_per_base ÷ base_qty × (1 + scrap % ÷ 100)``, rounded to the material's
  decimals), and the labor the rework took (``qty × labor hours ÷ base_qty`` at the
  labor rate, with the work center's overhead on that labor cost);
* substitution: material B issued (261) for the BOM item instead of its planned
  material A, which goes back (262) to the lots it was issued from;
* over / under consumption: one more issue, or a return, of a BOM item's material;
* the checks they share: reason code, quantity within the material's decimals.

Scrap reported by hand is not here: it is a confirmation of scrap only, planned by
``backflush.plan`` like any other, so that it can be reversed like any other.

Returns go to the (location, lot) most recently issued to the order first: what was put
to the line last is what is still there. Each returned lot gets a negative genealogy
edge, so the produced lot's where-from nets to what it really holds.

Must never: read a clock or the ledger, give back more of a material than the order
holds on that item, or issue less than asked without saying so (a substitution or an
extra issue is a deliberate act: a shortage is refused, not queued).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from fractions import Fraction
from typing import TypeVar

from gateway.domain.backflush import (
    HOURS_DECIMALS,
    MONEY_DECIMALS,
    Issue,
    StockLeft,
    component_plan,
    issue_component,
    quantize,
)
from gateway.domain.records import (
    ActivityPosting,
    BackflushError,
    FlushingRule,
    GenealogyEdge,
    GoodsMovement,
    Material,
    MovementKind,
    NotBackflushed,
    OrderComponent,
    ProductionOrder,
    StockView,
    WorkCenter,
)

REASON_CODE = re.compile(r"[A-Z0-9][A-Z0-9_-]{1,31}")  # whole string: `$` would let a newline through

K = TypeVar("K", bound=Hashable)


class Refused(ValueError):
    """The adjustment cannot be made as asked; the message says why. Nothing is posted."""


@dataclass(frozen=True, slots=True)
class AdjustmentPlan:
    """What one adjustment posts, under one document."""

    movements: tuple[GoodsMovement, ...] = ()
    genealogy: tuple[GenealogyEdge, ...] = ()
    activities: tuple[ActivityPosting, ...] = ()
    errors: tuple[BackflushError, ...] = ()  # rework shortages: queued like a backflush's
    deferred: tuple[NotBackflushed, ...] = ()  # rework items flushed at completion, or by hand

    def __add__(self, other: AdjustmentPlan) -> AdjustmentPlan:
        return AdjustmentPlan(*(a + b for a, b in zip(self._parts(), other._parts(), strict=True)))

    def _parts(self) -> tuple[tuple, ...]:
        return self.movements, self.genealogy, self.activities, self.errors, self.deferred


# -- checks -----------------------------------------------------------------------------


def check_reason_code(code: str) -> str:
    if not REASON_CODE.fullmatch(code or ""):
        raise Refused(f"reason code {code!r} is not valid: 2 to 32 of A-Z, 0-9, '_' and '-', "
                      "starting with a letter or digit (e.g. SCRAP-DAMAGED)")
    return code


def check_quantity(qty: Decimal, material: Material, *, signed: bool = False) -> Decimal:
    """``qty`` as given, if it is a finite non-zero (positive unless ``signed``) quantity of ``material``."""
    if not qty.is_finite() or qty == 0 or (qty < 0 and not signed):
        raise Refused(f"quantity must be {'non-zero' if signed else 'positive'}, got {qty}")
    if qty.as_tuple().exponent < -material.decimals:  # type: ignore[operator]
        raise Refused(f"{material.id} is kept in {material.decimals} decimal(s) of {material.uom}; got {qty}")
    return qty


def bom_item(order: ProductionOrder, item: str) -> OrderComponent:
    found = next((c for c in order.components if c.item == item), None)
    if found is None:
        items = ", ".join(f"{c.item} ({c.material})" for c in order.components) or "none"
        raise Refused(f"order {order.number} has no BOM item {item!r} (its items: {items})")
    return found


# -- returns ----------------------------------------------------------------------------


def returns_from_issues(qty: Decimal, issued: Sequence[tuple[K, Decimal]]) -> list[tuple[K, Decimal]]:
    """Where ``qty`` goes back to: ``(key, quantity)`` pairs, the key most recently issued first.

    ``issued`` is what the order got of one material, in posting order: ``(key, +q)`` for
    an issue, ``(key, −q)`` for a return; a key is usually ``(location, lot)``. Only a key
    the order still holds something of (net > 0) takes a return, and never more than that.
    """
    if qty <= 0:
        raise Refused(f"quantity to give back must be positive, got {qty}")
    held: dict[K, Decimal] = {}
    last_issue: dict[K, int] = {}
    for i, (key, q) in enumerate(issued):
        held[key] = held.get(key, Decimal(0)) + q
        if q > 0:
            last_issue[key] = i
    holding = sorted((key for key in held if held[key] > 0), key=lambda k: last_issue.get(k, -1), reverse=True)
    total = sum((held[key] for key in holding), Decimal(0))
    if qty > total:
        raise Refused(f"cannot give back {qty}: only {_plain(total)} is issued to the order (net of returns)")
    picks: list[tuple[K, Decimal]] = []
    remaining = qty
    for key in holding:
        if remaining == 0:
            break
        take = min(remaining, held[key])
        picks.append((key, take))
        remaining -= take
    return picks


def give_back(order: ProductionOrder, material: Material, item: str,
              picks: Sequence[tuple[tuple[str, str], Decimal]]) -> AdjustmentPlan:
    """Returns (262) to each (location, lot), with the genealogy edge of each lot netted."""
    movements = tuple(GoodsMovement(MovementKind.GOODS_ISSUE_REVERSAL, material.id, location, q, material.uom,
                                    lot=lot, bom_item=item) for (location, lot), q in picks)
    genealogy = tuple(GenealogyEdge(material.id, lot, -q, material.uom, order.material, order.output_lot)
                      for (_, lot), q in picks if lot)
    return AdjustmentPlan(movements, genealogy)


def issue_all(qty: Decimal, material: Material, location: str, item: str, order: ProductionOrder,
              stock: StockView, as_of: date) -> AdjustmentPlan:
    """Issue (261) exactly ``qty``, lots picked as a backflush picks them; a shortage is refused."""
    issued = issue_component(qty, material, location, item, order, StockLeft(stock), as_of)
    if issued.errors:
        missing = issued.errors[0].missing_qty
        raise Refused(f"not enough {material.id} at {location}: {qty} {material.uom} needed, only {_plain(qty - missing)} "
                      "can be issued (expired lots are not); receive stock first, nothing was posted")
    return AdjustmentPlan(issued.movements, issued.genealogy)


# -- the kinds --------------------------------------------------------------------------


def substitution(order: ProductionOrder, item: str, qty: Decimal, planned: Material,
                 issued: Sequence[tuple[tuple[str, str], Decimal]], substitute: Material, substitute_qty: Decimal,
                 stock: StockView, as_of: date) -> AdjustmentPlan:
    """``qty`` of the item's planned material back to its lots, ``substitute_qty`` of B issued for the item.

    ``issued``: the order's issues (+) and returns (−) of the planned material on this
    item, ``((location, lot), qty)`` in posting order. B is issued at the item's supply
    location and carries the item, so the order shows what it stood in for.
    """
    component = bom_item(order, item)
    if substitute.id == component.material:
        raise Refused(f"{substitute.id} is the planned material of item {item}; "
                      "use a consumption adjustment for more or less of it")
    check_quantity(qty, planned)
    check_quantity(substitute_qty, substitute)
    back = give_back(order, planned, item, returns_from_issues(qty, issued))
    return back + issue_all(substitute_qty, substitute, component.supply_location, item, order, stock, as_of)


def consumption(order: ProductionOrder, item: str, delta: Decimal, material: Material,
                issued: Sequence[tuple[tuple[str, str], Decimal]], stock: StockView, as_of: date) -> AdjustmentPlan:
    """``delta > 0``: issue that much more of the item; ``delta < 0``: give it back to the latest lots."""
    component = bom_item(order, item)
    check_quantity(delta, material, signed=True)
    if delta > 0:
        return issue_all(delta, material, component.supply_location, item, order, stock, as_of)
    return give_back(order, material, item, returns_from_issues(-delta, issued))


def rework_quantity(component: OrderComponent, base_qty: Decimal, qty: Decimal, decimals: int) -> Decimal:
    """What reworking ``qty`` takes of a rework item: no carry, each rework stands alone."""
    return quantize(component_plan(component, base_qty)(Fraction(qty)), decimals)


def rework(order: ProductionOrder, operation: str, qty: Decimal, materials: Mapping[str, Material],
           work_center: WorkCenter, stock: StockView, as_of: date) -> AdjustmentPlan:
    """The rework items of ``operation`` for ``qty`` reworked, and its labor; no goods receipt."""
    op = order.operation(operation)
    if op is None:
        raise Refused(f"order {order.number} has no operation {operation!r} "
                      f"(its operations: {', '.join(o.operation for o in order.operations)})")
    check_quantity(qty, materials[order.material])
    stock_left = StockLeft(stock)
    issued: list[Issue] = []
    deferred: list[NotBackflushed] = []
    for component in order.components:
        if not component.rework or component.operation != operation:
            continue
        material = materials[component.material]
        need = rework_quantity(component, order.base_qty, qty, material.decimals)
        if need == 0:
            continue
        if component.flushing is not FlushingRule.OPERATION:  # its rule holds, as in a backflush
            deferred.append(NotBackflushed(material.id, need, material.uom, component.flushing, component.item))
            continue
        issued.append(issue_component(need, material, component.supply_location, component.item, order,
                                      stock_left, as_of))
    return AdjustmentPlan(
        movements=tuple(m for i in issued for m in i.movements),
        genealogy=tuple(g for i in issued for g in i.genealogy),
        activities=rework_activities(
            operation, Fraction(qty) * Fraction(op.labor_hours_per_base) / Fraction(order.base_qty), work_center),
        errors=tuple(e for i in issued for e in i.errors),
        deferred=tuple(deferred),
    )


def rework_activities(operation: str, hours: Fraction, wc: WorkCenter) -> tuple[ActivityPosting, ...]:
    """Labor hours at the labor rate, and the work center's overhead on that labor cost.

    Overhead is posted too because the work center's rule is overhead = % of labor,
    whatever the labor was for; leaving it out would under-cost reworked orders.
    """
    cost = hours * Fraction(wc.labor_rate)
    overhead = cost * Fraction(wc.overhead_pct_of_labor) / 100
    postings = []
    labor = ActivityPosting(operation, wc.id, "labor", quantize(hours, HOURS_DECIMALS),
                            quantize(cost, MONEY_DECIMALS), wc.currency)
    if labor.hours or labor.cost:
        postings.append(labor)
    if quantize(overhead, MONEY_DECIMALS):
        postings.append(ActivityPosting(operation, wc.id, "overhead", Decimal(0),
                                        quantize(overhead, MONEY_DECIMALS), wc.currency))
    return tuple(postings)


def _plain(qty: Decimal) -> str:
    """A sum as people write it: 1 rather than 1.0 after adding 0.5 and 0.5."""
    return format(qty.normalize(), "f")
