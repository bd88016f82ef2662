"""Turn loaded master data into the domain records: ``to_domain(md) -> DomainMasterData``.

For: snapshotting each order's BOM and routing into a ``ProductionOrder`` the way
backflush planning reads it — one base quantity for both, each component's supply
location resolved, exactly one final operation, flushing rules as the enum.

BOM and routing each state quantities per their own base quantity. The order gets one
``base_qty``: the smallest quantity that is a whole multiple of both (the routing's own
base whenever it is a multiple of the BOM's, as it usually is). Both sides are then
rescaled by a whole factor, which is exact in Decimal; dividing by the BOM's base instead
would turn 0.1 per 3 into 0.0333… and lose parts over a long order.

Must never: use float arithmetic, round a quantity, or accept master data that has not
been through ``load_masterdata`` (it relies on the references being checked there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from fractions import Fraction

from gateway.domain.records import (
    ConsumptionBasis,
    FlushingRule,
    Material,
    OrderComponent,
    OrderOperation,
    ProductionOrder,
    WorkCenter,
)
from gateway.domain.repetitive import ProductionVersion
from gateway.masterdata.model import BomDef, BomItemDef, MasterData, MaterialDef, OrderDef, RoutingDef, WorkCenterDef

# Wide enough that multiplying never rounds: every product below is exact.
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


@dataclass(frozen=True, slots=True)
class DomainMasterData:
    materials: dict[str, Material]
    work_centers: dict[str, WorkCenter]
    orders: dict[str, ProductionOrder]
    # (product, version) → how the product is made without orders (repetitive production)
    versions: dict[tuple[str, str], ProductionVersion] = field(default_factory=dict)


def to_domain(md: MasterData) -> DomainMasterData:
    """Domain records for all materials, work centers, orders and production versions of ``md``."""
    return DomainMasterData(
        materials={k: _material(k, m) for k, m in md.materials.items()},
        work_centers={k: _work_center(k, w) for k, w in md.work_centers.items()},
        orders={k: _order(k, o, md) for k, o in md.orders.items()},
        versions={(product, version): ProductionVersion(
            product, version,
            _snapshot("", product, Decimal(0), v.receipt_location, v.bom_key(product), v.routing_key(product), md),
            md.periods.length, md.periods.time_zone)
            for product, versions in md.production_versions.items() for version, v in versions.items()},
    )


def _material(key: str, m: MaterialDef) -> Material:
    return Material(
        id=key,
        description=m.description,
        uom=m.uom,
        decimals=m.decimals,
        lot_tracked=m.effective_tracking in ("lot", "serial"),
        negative_stock_allowed=m.negative_stock == "allowed",
        lot_selection=m.lot_selection,
        serial_tracked=m.effective_tracking == "serial",
        serial_pattern=m.serials or "",
        standard_price=m.standard_price,
        currency=m.currency,
        auto_reprocess=m.auto_reprocess,
    )


def _work_center(key: str, w: WorkCenterDef) -> WorkCenter:
    return WorkCenter(
        id=key,
        description=w.description,
        labor_rate=w.labor_rate,
        machine_rate=w.machine_rate,
        overhead_pct_of_labor=w.overhead_pct_of_labor,
        currency=w.currency,
        supply_location=w.supply_location,
    )


def _order(number: str, order: OrderDef, md: MasterData) -> ProductionOrder:
    return _snapshot(number, order.material, order.quantity, order.receipt_location, order.bom_key,
                     order.routing_key, md)


def _snapshot(number: str, material: str, quantity: Decimal, receipt_location: str, bom_key: str,
              routing_key: str, md: MasterData) -> ProductionOrder:
    """BOM and routing copied into one order (or a production version's template), on one base."""
    routing = md.routings[routing_key]
    bom = md.boms.get(bom_key)
    base = common_base(bom.base_quantity, routing.base_quantity) if bom else routing.base_quantity
    return ProductionOrder(
        number=number,
        material=material,
        quantity=quantity,
        base_qty=base,
        receipt_location=receipt_location,
        components=_components(bom, routing, base, md) if bom else (),
        operations=_operations(routing, base),
    )


def common_base(a: Decimal, b: Decimal) -> Decimal:
    """The smallest positive quantity that is a whole multiple of both ``a`` and ``b``."""
    fa, fb = Fraction(a), Fraction(b)
    # For p/q and r/s in lowest terms the least common multiple is lcm(p, r) / gcd(q, s).
    both = Fraction(math.lcm(fa.numerator, fb.numerator), math.gcd(fa.denominator, fb.denominator))
    return _decimal(both)


def _decimal(f: Fraction) -> Decimal:
    """``f`` as the exact Decimal; its denominator divides a power of ten (it came from Decimals)."""
    for places in range(f.denominator.bit_length() + 1):
        if 10**places % f.denominator == 0:
            return Decimal(f.numerator * 10**places // f.denominator).scaleb(-places, _EXACT)
    raise ValueError(f"{f} has no finite decimal form")


def _times(qty: Decimal, base: Decimal, own_base: Decimal) -> Decimal:
    """``qty`` per ``own_base`` restated per ``base``, a whole multiple of it: exact."""
    factor = Fraction(base) / Fraction(own_base)
    if factor.denominator != 1:
        raise ValueError(f"{base} is not a whole multiple of {own_base}")
    return _tidy(_EXACT.multiply(qty, Decimal(factor.numerator)))


def _tidy(qty: Decimal) -> Decimal:
    """The same number without trailing fractional zeros: 1.25 × 10 reads 12.5, not 12.50."""
    plain = qty.normalize(_EXACT)
    if plain.as_tuple().exponent > 0:  # type: ignore[operator]  # normalize writes 100 as 1E+2
        return plain.quantize(Decimal(1), context=_EXACT)
    return plain


def _components(bom: BomDef, routing: RoutingDef, base: Decimal, md: MasterData) -> tuple[OrderComponent, ...]:
    work_center_of = {op.operation: op.work_center for op in routing.operations}
    return tuple(
        OrderComponent(
            item=item.item,
            material=item.material,
            qty_per_base=_times(item.quantity, base, bom.base_quantity),
            scrap_pct=item.scrap_pct,
            flushing=FlushingRule(rule),
            flushing_source=source,
            operation=item.operation,
            supply_location=item.supply_location or md.work_centers[work_center_of[item.operation]].supply_location,
            rework=item.rework,
            selection=item.selection or "",
            basis=ConsumptionBasis(item.basis or "total"),
            basis_source="BOM item" if item.basis else "default",
        )
        for item in bom.items
        for rule, source in [effective_flushing(item, md.work_centers[work_center_of[item.operation]],
                                                work_center_of[item.operation], md)]
    )


def effective_flushing(item: BomItemDef, wc: WorkCenterDef, wc_id: str, md: MasterData) -> tuple[str, str]:
    """The most specific rule wins: BOM item, then work center, then material, then "operation"."""
    material = md.materials.get(item.material)
    for rule, source in ((item.flushing, "BOM item"), (wc.flushing, f"work center {wc_id}"),
                         (material.flushing if material else None, f"material {item.material}")):
        if rule is not None:
            return rule, source
    return "operation", "default"


def _operations(routing: RoutingDef, base: Decimal) -> tuple[OrderOperation, ...]:
    ops = routing.operations
    final = next((i for i, op in enumerate(ops) if op.final), len(ops) - 1)
    return tuple(
        OrderOperation(
            operation=op.operation,
            work_center=op.work_center,
            setup_hours=op.setup_hours,  # once per order operation: no base to rescale
            machine_hours_per_base=_times(op.machine_hours, base, routing.base_quantity),
            labor_hours_per_base=_times(op.labor_hours, base, routing.base_quantity),
            final=i == final,
        )
        for i, op in enumerate(ops)
    )
