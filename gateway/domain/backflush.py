"""Backflush planning: the postings one confirmation causes.

``plan(confirmation, order, progress, materials, work_centers, stock)`` returns a
``BackflushPlan``: component goods issues (261), activity postings (setup, machine,
labor, overhead) and, at the final operation, the goods receipt (101) of the yield.

Remainder carry. Every planned figure of an order operation is a function of the
*cumulative* consumed quantity ``c`` (yield + scrap confirmed so far), computed exactly
(``Fraction``) and rounded only at the end: a confirmation posts
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

from collections.abc import Callable, Mapping
from decimal import Decimal
from dataclasses import dataclass, replace
from datetime import date
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

Cumulative = Callable[[Fraction], Fraction]


def quantize(value: Fraction, decimals: int) -> Decimal:
    """Round an exact value half away from zero to ``decimals`` places, never via float."""
    magnitude = abs(value) * 10**decimals
    whole, rest = divmod(magnitude.numerator, magnitude.denominator)
    if 2 * rest >= magnitude.denominator:
        whole += 1
    return Decimal(-whole if value < 0 else whole).scaleb(-decimals)


class Carry:
    """Cumulative planned quantity per plan key of an order, and what this plan adds.

    A plan posts ``round(f(cumulative after)) − planned so far``. Without reversals
    "planned so far" is ``round(f(cumulative before))`` (``so_far=None``); after a
    reversal the ledger's running total is passed in and the next confirmation makes up
    any rounding the reversal took back. Never negative: a plan does not un-post.
    """

    def __init__(self, before: Fraction, so_far: Mapping[str, Decimal] | None) -> None:
        self._before = before
        self._so_far = so_far
        self.planned: dict[str, Decimal] = {}

    def due(self, key: str, f: Cumulative, after: Fraction, decimals: int, before: Fraction | None = None) -> Decimal:
        """``before``/``after``: the cumulative quantity ``f`` is of, when it is not yield + scrap."""
        before = self._before if before is None else before
        done = quantize(f(before), decimals) if self._so_far is None else self._so_far.get(key, Decimal(0))
        qty = max(Decimal(0), quantize(f(after), decimals) - done)
        if qty:
            self.planned[key] = qty
        return qty


def component_plan(component: OrderComponent, base_qty: Decimal) -> Cumulative:
    ratio = Fraction(component.qty_per_base) / Fraction(base_qty)
    factor = ratio * (1 + Fraction(component.scrap_pct) / 100)
    return lambda c: c * factor


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
    before = Fraction(progress.consumed_qty)
    after = before + Fraction(confirmation.consumed_qty)
    yield_before = Fraction(progress.yield_qty)
    yield_after = yield_before + Fraction(confirmation.yield_qty)
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


def _activities(
    op: OrderOperation, base_qty: Decimal, wc: WorkCenter, after: Fraction, planned: Carry
) -> list[ActivityPosting]:
    base = Fraction(base_qty)
    labor_rate, machine_rate = Fraction(wc.labor_rate), Fraction(wc.machine_rate)

    def setup_hours(c: Fraction) -> Fraction:
        return Fraction(op.setup_hours) if c > 0 else Fraction(0)

    def machine_hours(c: Fraction) -> Fraction:
        return c * Fraction(op.machine_hours_per_base) / base

    def labor_hours(c: Fraction) -> Fraction:
        return c * Fraction(op.labor_hours_per_base) / base

    def overhead_cost(c: Fraction) -> Fraction:
        return (setup_hours(c) + labor_hours(c)) * labor_rate * Fraction(wc.overhead_pct_of_labor) / 100

    postings = []
    for activity, hours, rate in (
        ("setup", setup_hours, labor_rate),
        ("machine", machine_hours, machine_rate),
        ("labor", labor_hours, labor_rate),
    ):
        key = f"{op.operation}:{activity}"
        h = planned.due(f"{key}:hours", hours, after, HOURS_DECIMALS)
        cost = planned.due(f"{key}:cost", lambda c, hours=hours, rate=rate: hours(c) * rate, after, MONEY_DECIMALS)
        if h or cost:
            postings.append(ActivityPosting(op.operation, op.work_center, activity, h, cost, wc.currency))
    overhead = planned.due(f"{op.operation}:overhead:cost", overhead_cost, after, MONEY_DECIMALS)
    if overhead:
        postings.append(ActivityPosting(op.operation, op.work_center, "overhead", Decimal(0), overhead, wc.currency))
    return postings
