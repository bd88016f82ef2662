"""Backflush planning: the postings one confirmation causes.

``plan(confirmation, order, progress, materials, work_centers, stock)`` returns a
``BackflushPlan``: component goods issues (261), activity postings (setup, machine,
labor, overhead) and, at the final operation, the goods receipt (101) of the yield.

Remainder carry. Every planned figure of an order operation is a function of the
*cumulative* consumed quantity ``c`` (yield + scrap confirmed so far), computed exactly
(``Linear``: integer numerators and denominators, the ``Fraction`` arithmetic without its
normalising on every step) and rounded only at the end: a confirmation posts
``round(f(c_after)) − planned so far`` (see ``Carry``). So the sum of all postings always
equals the rounded plan for the cumulative quantity, and 10 000 confirmations of one unit
at a ratio of 1/3 issue exactly what one confirmation of 10 000 would: no drift.

* component quantity   f(c) = c × qty_per_base ÷ base_qty × (1 + scrap_pct ÷ 100),
                        in the component's UoM decimals; for a BOM item with
                        ``basis: yield`` (packaging: one box per 50 good parts) ``c`` is
                        the cumulative *yield* instead, so scrapped units consume none;
* setup hours          f(c) = setup_hours if c > 0 else 0 (once per order operation),
                        costed at the labor rate;
* machine / labor hrs  f(c) = c × hours_per_base ÷ base_qty, costed at the rate;
* overhead             f(c) = (setup + labor cost)(c) × overhead_pct ÷ 100.

Flushing rules: ``operation`` components are issued here; ``order_completion`` and
``manual`` ones are returned as ``not_backflushed`` (WIP accrual / issued by hand).
Not enough stock: with negative stock allowed the issue goes negative; otherwise what
is available is issued and the rest becomes a ``BackflushError`` for the error queue —
the confirmation itself always stands.

Pure: no I/O; the caller supplies progress and stock from the ledger's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from dataclasses import dataclass, replace
from datetime import date
from functools import lru_cache
from fractions import Fraction

from gateway.domain.lots import allocate
from gateway.domain.records import (
    ActivityPosting,
    BackflushError,
    BackflushPlan,
    Confirmation,
    ConsumptionBasis,
    FlushingRule,
    GenealogyEdge,
    GoodsMovement,
    LotStock,
    Material,
    MovementKind,
    NotBackflushed,
    OperationProgress,
    OrderComponent,
    OrderOperation,
    ProductionOrder,
    StockView,
    WorkCenter,
)

HOURS_DECIMALS = 4
MONEY_DECIMALS = 2

# An exact rational as (numerator, denominator), denominator > 0, not necessarily in
# lowest terms: planning runs for every confirmation in the writer, and ``Fraction``'s gcd
# on every operation cost more than the rest of the plan (bench/RESULTS.md).
Ratio = tuple[int, int]
_NONE: Ratio = (0, 1)


def ratio(value: Decimal | int) -> Ratio:
    """``value`` exactly as (numerator, denominator)."""
    return value.as_integer_ratio()


def _add(a: Ratio, b: Ratio) -> Ratio:
    return (a[0] * b[1] + b[0] * a[1], a[1] * b[1])


def _mul(a: Ratio, b: Ratio) -> Ratio:
    return (a[0] * b[0], a[1] * b[1])


def _div(a: Ratio, b: Ratio) -> Ratio:
    if not b[0]:
        raise ZeroDivisionError(f"division by zero: {a[0]}/{a[1]} ÷ 0")
    num, den = a[0] * b[1], a[1] * b[0]
    return (-num, -den) if den < 0 else (num, den)


def _rounded(num: int, den: int, decimals: int) -> Decimal:
    """``num / den`` (den > 0) rounded half away from zero to ``decimals`` places, never via float."""
    whole, rest = divmod(abs(num) * 10**decimals, den)
    if 2 * rest >= den:
        whole += 1
    return Decimal(-whole if num < 0 else whole).scaleb(-decimals)


def quantize(value: Fraction, decimals: int) -> Decimal:
    """Round an exact value half away from zero to ``decimals`` places, never via float."""
    return _rounded(value.numerator, value.denominator, decimals)


@dataclass(frozen=True, slots=True)
class Linear:
    """A planned figure as a function of a cumulative quantity ``c``, exactly:
    ``f(c) = per_unit × c + (once if c > 0 else 0)``. Every figure of the plan has this
    shape (module docstring): ``once`` is the setup, ``per_unit`` the rest."""

    per_unit: Ratio
    once: Ratio = _NONE

    def times(self, k: Ratio) -> Linear:
        return Linear(_mul(self.per_unit, k), _mul(self.once, k))

    def plus(self, other: Linear) -> Linear:
        return Linear(_add(self.per_unit, other.per_unit), _add(self.once, other.once))

    def rounded(self, c: Ratio, decimals: int) -> Decimal:
        """``f(c)`` rounded half away from zero to ``decimals`` places."""
        (pn, pd), (on, od), (cn, cd) = self.per_unit, self.once, c
        num, den = pn * cn * od, pd * cd * od
        if cn > 0 and on:
            num += on * pd * cd
        return _rounded(num, den, decimals)

    def __call__(self, c: Fraction) -> Fraction:
        """``f(c)`` as a ``Fraction``, for callers that compute in fractions."""
        value = Fraction(*self.per_unit) * c
        return value + Fraction(*self.once) if c > 0 else value


class Carry:
    """Cumulative planned quantity per plan key of an order, and what this plan adds.

    A plan posts ``round(f(cumulative after)) − planned so far``. Without reversals
    "planned so far" is ``round(f(cumulative before))`` (``so_far=None``); after a
    reversal the ledger's running total is passed in and the next confirmation makes up
    any rounding the reversal took back. Never negative: a plan does not un-post.
    """

    def __init__(self, before: Ratio, so_far: Mapping[str, Decimal] | None) -> None:
        self._before = before
        self._so_far = so_far
        self.planned: dict[str, Decimal] = {}

    def due(self, key: str, f: Linear, after: Ratio, decimals: int, before: Ratio | None = None) -> Decimal:
        """``before``/``after``: the cumulative quantity ``f`` is of, when it is not yield + scrap."""
        before = self._before if before is None else before
        done = f.rounded(before, decimals) if self._so_far is None else self._so_far.get(key, _ZERO)
        qty = f.rounded(after, decimals) - done
        if qty > 0:
            self.planned[key] = qty
            return qty
        return _ZERO


_ZERO = Decimal(0)


def component_plan(component: OrderComponent, base_qty: Decimal) -> Linear:
    factor = _mul(_div(ratio(component.qty_per_base), ratio(base_qty)),
                  _add((1, 1), _div(ratio(component.scrap_pct), (100, 1))))
    return Linear(factor)


def plan(
    confirmation: Confirmation,
    order: ProductionOrder,
    progress: OperationProgress,
    materials: Mapping[str, Material],
    work_centers: Mapping[str, WorkCenter],
    stock: StockView,
    carry: Mapping[str, Decimal] | None = None,
    serials: tuple[str, ...] | None = (),
) -> BackflushPlan:
    """Postings for one confirmation of ``order``; ``progress`` and ``carry`` are before it.

    ``serials``: for a serial-tracked product at the final operation, one serial per unit of
    yield (the caller gets them from the PLC or the material's pattern). ``None``: the
    caller wants the plan's figures only (``planned``), so that receipt is left out.
    """
    operation = order.operation(confirmation.operation)
    if operation is None:
        raise ValueError(f"order {order.number} has no operation {confirmation.operation}")
    before = ratio(progress.consumed_qty)
    after = _add(before, ratio(confirmation.consumed_qty))
    yield_before = ratio(progress.yield_qty)
    yield_after = _add(yield_before, ratio(confirmation.yield_qty))
    planned = Carry(before, carry)

    movements: list[GoodsMovement] = []
    errors: list[BackflushError] = []
    deferred: list[NotBackflushed] = []
    genealogy: list[GenealogyEdge] = []
    stock_left = StockLeft(stock)
    as_of = confirmation.last_source_time.date()
    for component in order.components:
        # Rework items are consumed by a rework adjustment only, never by a confirmation.
        if component.operation != confirmation.operation or component.rework:
            continue
        material = materials[component.material]
        on_yield = component.basis is ConsumptionBasis.YIELD
        qty = planned.due(f"item:{component.item}", component_plan(component, order.base_qty),
                          yield_after if on_yield else after, material.decimals,
                          before=yield_before if on_yield else None)
        if qty == 0:
            continue
        if component.flushing is not FlushingRule.OPERATION:
            deferred.append(NotBackflushed(material.id, qty, material.uom, component.flushing, component.item))
            continue
        issued = issue_component(qty, material, component.supply_location, component.item, order,
                                 stock_left, as_of)
        movements += issued.movements
        genealogy += issued.genealogy
        errors += issued.errors

    if operation.final and confirmation.yield_qty > 0:
        product = materials[order.material]
        if product.serial_tracked and serials is None:
            pass  # figures only: no serials to receive
        elif product.serial_tracked:
            receipt = receive_serials(confirmation.yield_qty, product, order, serials)
            movements += receipt.movements
            genealogy += receipt.genealogy
        else:
            movements.append(
                GoodsMovement(
                    MovementKind.GOODS_RECEIPT, product.id, order.receipt_location,
                    confirmation.yield_qty, product.uom, lot=order.output_lot if product.lot_tracked else "",
                )
            )

    return BackflushPlan(
        confirmation_id=confirmation.id,
        movements=tuple(movements),
        activities=tuple(_activities(operation, order.base_qty, work_centers[operation.work_center], after, planned)),
        errors=tuple(errors),
        not_backflushed=tuple(deferred),
        genealogy=tuple(genealogy),
        planned=tuple(sorted(planned.planned.items())),
    )


@dataclass(frozen=True, slots=True)
class Issue:
    movements: tuple[GoodsMovement, ...]
    genealogy: tuple[GenealogyEdge, ...]
    errors: tuple[BackflushError, ...]


def issue_component(
    qty: Decimal, material: Material, location: str, bom_item: str, order: ProductionOrder,
    stock_left: StockLeft, as_of: date,
) -> Issue:
    """Goods issue of one component to an order: lots picked, genealogy, and any shortage.

    Used by planning and by error-queue reprocessing, so both issue the same way.
    """
    if material.lot_tracked:
        selection = next((c.selection for c in order.components if c.item == bom_item and c.selection),
                         material.lot_selection)  # the BOM item's, else the material's
        allocation = allocate(qty, stock_left.lots(material.id, location), selection, as_of)
        picks, expired = allocation.picks, allocation.expired
    else:
        picks, expired = _without_lots(qty, material, stock_left.total(material.id, location)), ()
    movements, genealogy = [], []
    for lot, q in picks:
        stock_left.take(material.id, location, lot, q)
        movements.append(GoodsMovement(MovementKind.GOODS_ISSUE, material.id, location, -q, material.uom,
                                       lot=lot, bom_item=bom_item))
        if lot:
            genealogy.append(GenealogyEdge(material.id, lot, q, material.uom, order.material, order.output_lot))
    missing = qty - sum((q for _, q in picks), Decimal(0))
    errors = ()
    if missing:
        reason = _shortage_reason(material, location, qty, qty - missing, expired)
        errors = (BackflushError(material.id, location, missing, material.uom, reason, bom_item),)
    return Issue(tuple(movements), tuple(genealogy), errors)


def receive_serials(yield_qty: Decimal, product: Material, order: ProductionOrder, serials: tuple[str, ...]) -> Issue:
    """Goods receipt of a serial-tracked product: one unit per serial, each a genealogy edge from the order.

    The components of an order are issued to the order's lot (``order.output_lot``), at
    whichever operation consumes them; each serial received is an edge from that lot, so a
    serial traces back through its order to every component lot and serial, and forward
    from a component to the serials of the orders it went into.
    """
    if yield_qty != len(serials) or len(set(serials)) != len(serials):
        raise ValueError(f"{yield_qty} {product.uom} of {product.id} need as many different serials, "
                         f"got {len(serials)} ({len(set(serials))} different)")
    one = Decimal(1)
    return Issue(
        tuple(GoodsMovement(MovementKind.GOODS_RECEIPT, product.id, order.receipt_location, one, product.uom,
                            lot=serial) for serial in serials),
        tuple(GenealogyEdge(product.id, order.output_lot, one, product.uom, product.id, serial) for serial in serials),
        (),
    )


class StockLeft:
    """What this plan has not yet taken, so two BOM lines of one material share the stock."""

    def __init__(self, stock: StockView) -> None:
        self._lots = {key: {lot.lot: lot for lot in lots} for key, lots in stock.lots.items()}

    def lots(self, material: str, location: str) -> list[LotStock]:
        return list(self._lots.get((material, location), {}).values())

    def total(self, material: str, location: str) -> Decimal:
        return sum((lot.qty for lot in self.lots(material, location)), Decimal(0))

    def take(self, material: str, location: str, lot: str, qty: Decimal) -> None:
        lots = self._lots.setdefault((material, location), {})
        current = lots.get(lot, LotStock(lot, Decimal(0)))
        lots[lot] = replace(current, qty=current.qty - qty)


def _without_lots(qty: Decimal, material: Material, available: Decimal) -> list[tuple[str, Decimal]]:
    """Materials without lots: negative stock if allowed, else what is there."""
    issued = qty if material.negative_stock_allowed else max(Decimal(0), min(qty, available))
    return [("", issued)] if issued else []


def _shortage_reason(material: Material, location: str, needed: Decimal, issued: Decimal,
                     expired: tuple[str, ...]) -> str:
    why = f"not enough stock of {material.id} at {location}: needed {needed}, issued {issued}"
    if expired:
        why += f" (expired lots not issued: {', '.join(expired)})"
    if material.auto_reprocess:
        return why + "; receive stock (`gateway stock receive`): the receipt issues it"
    return why + "; receive stock (`gateway stock receive`), then `gateway errors reprocess`"


@lru_cache(maxsize=4096)
def activity_plans(
    op: OrderOperation, base_qty: Decimal, wc: WorkCenter
) -> tuple[tuple[tuple[str, str, str, Linear, Linear], ...], str, Linear]:
    """The activity figures of an order operation as functions of its cumulative quantity: per activity
    (setup, machine, labor) its name, the carry keys of its hours and cost, hours and cost; then the
    overhead's carry key and cost. They depend on the operation, the order's base quantity and the
    work center only, so they are made once per order operation (the writer plans thousands of
    confirmations a second of a few operations), not once per confirmation."""
    base = ratio(base_qty)
    labor_rate, machine_rate = ratio(wc.labor_rate), ratio(wc.machine_rate)
    setup_hours = Linear(_NONE, ratio(op.setup_hours))
    machine_hours = Linear(_div(ratio(op.machine_hours_per_base), base))
    labor_hours = Linear(_div(ratio(op.labor_hours_per_base), base))
    overhead_cost = setup_hours.plus(labor_hours).times(_div(_mul(labor_rate, ratio(wc.overhead_pct_of_labor)),
                                                             (100, 1)))
    each = tuple((activity, f"{op.operation}:{activity}:hours", f"{op.operation}:{activity}:cost", hours,
                  hours.times(rate))
                 for activity, hours, rate in (("setup", setup_hours, labor_rate),
                                               ("machine", machine_hours, machine_rate),
                                               ("labor", labor_hours, labor_rate)))
    return each, f"{op.operation}:overhead:cost", overhead_cost


def _activities(
    op: OrderOperation, base_qty: Decimal, wc: WorkCenter, after: Ratio, planned: Carry
) -> list[ActivityPosting]:
    each, overhead_key, overhead_cost = activity_plans(op, base_qty, wc)
    postings = []
    for activity, hours_key, cost_key, hours, cost in each:
        h = planned.due(hours_key, hours, after, HOURS_DECIMALS)
        c = planned.due(cost_key, cost, after, MONEY_DECIMALS)
        if h or c:
            postings.append(ActivityPosting(op.operation, op.work_center, activity, h, c, wc.currency))
    overhead = planned.due(overhead_key, overhead_cost, after, MONEY_DECIMALS)
    if overhead:
        postings.append(ActivityPosting(op.operation, op.work_center, "overhead", Decimal(0), overhead, wc.currency))
    return postings
