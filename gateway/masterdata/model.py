"""Schema of the master-data file: materials, work centers, BOMs, routings, orders, stock.

Master data is what backflush planning multiplies confirmed units with, so it is checked
strictly: unknown keys, negative quantities, dangling references and duplicate ids are
refused, all at once, with file:line messages (``gateway.masterdata.load``). Quantities
and rates are parsed as ``Decimal`` from their text, never through float.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from gateway.domain.repetitive import PeriodLength


def _exact_decimal(v: object) -> object:
    # YAML gives 0.1 as a float; go through its shortest repr so 0.1 stays 0.1.
    if isinstance(v, float):
        return Decimal(repr(v))
    if isinstance(v, int) and not isinstance(v, bool):
        return Decimal(v)
    return v


# The ledger keeps 12 decimal places (PostgreSQL NUMERIC(38, 12)); 9 leave room for the
# products of a quantity and a ratio and make both databases hold the same number.
MAX_DECIMAL_PLACES = 9
Qty = Annotated[Decimal, BeforeValidator(_exact_decimal),
                Field(ge=0, allow_inf_nan=False, decimal_places=MAX_DECIMAL_PLACES)]
PositiveQty = Annotated[Decimal, BeforeValidator(_exact_decimal),
                        Field(gt=0, allow_inf_nan=False, decimal_places=MAX_DECIMAL_PLACES)]
Pct = Annotated[Decimal, BeforeValidator(_exact_decimal),
                Field(ge=0, le=1000, allow_inf_nan=False, decimal_places=MAX_DECIMAL_PLACES)]
# A price times a quantity (at most 6 decimals) stays within the ledger's 12 places.
Price = Annotated[Decimal, BeforeValidator(_exact_decimal),
                  Field(ge=0, allow_inf_nan=False, decimal_places=6)]


def _text(v: object) -> object:
    # Ids such as order 1000123 or operation 0010 are names, even when unquoted.
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


Id = Annotated[str, BeforeValidator(_text), Field(min_length=1, max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Flushing = Literal["operation", "order_completion", "manual"]
Tracking = Literal["none", "lot", "serial"]


class MaterialDef(_Strict):
    description: str = ""
    uom: Annotated[str, Field(min_length=1, max_length=8)]
    decimals: Annotated[int, Field(ge=0, le=6)] = 0
    lot_tracked: bool = False  # the same as tracking: lot
    # none: stock is a quantity; lot: stock is held and issued by named lots; serial: every
    # unit has its own serial number (a lot of exactly one unit, in exactly one place).
    tracking: Tracking | None = None
    # Serials of produced units when the machine has no serial tag, e.g. "{order}-{seq:06}":
    # {order} the order number, {seq} the unit's number within the order (1, 2, …).
    serials: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    # Lots (and serials) are issued oldest receipt first (fifo) or earliest expiry first (fefo).
    lot_selection: Literal["fifo", "fefo"] = "fifo"
    negative_stock: Literal["allowed", "refused"] = "refused"
    flushing: Flushing | None = None  # default rule for this material in every BOM
    # Standard price per one unit of measure: stock and every movement of it are valued at it.
    standard_price: Price = Decimal(0)
    currency: Annotated[str, Field(min_length=3, max_length=3, pattern="^[A-Z]{3}$")] = "EUR"
    # Off: its open backflush errors wait for `gateway errors reprocess` instead of being
    # reprocessed by the posting that adds its stock.
    auto_reprocess: bool = True

    @property
    def effective_tracking(self) -> str:
        return self.tracking or ("lot" if self.lot_tracked else "none")


class WorkCenterDef(_Strict):
    description: str = ""
    currency: Annotated[str, Field(min_length=3, max_length=3)] = "EUR"
    labor_rate: Qty  # per hour
    machine_rate: Qty  # per hour
    overhead_pct_of_labor: Pct = Decimal(0)
    supply_location: Id
    flushing: Flushing | None = None  # default rule for components consumed here (beats the material's)


class BomItemDef(_Strict):
    item: Id
    material: Id
    quantity: Qty  # per the BOM's base_quantity of the header material
    scrap_pct: Pct = Decimal(0)
    # Unset: the operation's work center's rule, else the material's, else "operation".
    flushing: Flushing | None = None
    operation: Id
    supply_location: Id | None = None  # default: the operation's work center's
    # Consumed only when the operation's output is reworked (`gateway adjust rework`),
    # never by a confirmation.
    rework: bool = False
    # Which lots / serials this item issues first; unset: the material's lot_selection.
    selection: Literal["fifo", "fefo"] | None = None
    # total: planned on yield + scrap (the default); yield: on good units only (packaging).
    basis: Literal["total", "yield"] | None = None


class BomDef(_Strict):
    base_quantity: PositiveQty = Decimal(1)
    items: list[BomItemDef]


class RoutingOperationDef(_Strict):
    operation: Id
    work_center: Id
    setup_hours: Qty = Decimal(0)
    machine_hours: Qty = Decimal(0)  # per base_quantity
    labor_hours: Qty = Decimal(0)  # per base_quantity
    final: bool = False  # default: the last operation is final


class RoutingDef(_Strict):
    base_quantity: PositiveQty = Decimal(1)
    operations: Annotated[list[RoutingOperationDef], Field(min_length=1)]


class OrderDef(_Strict):
    material: Id
    quantity: PositiveQty
    receipt_location: Id
    # BOM and routing default to the ones keyed by the order's material.
    bom: Id | None = None
    routing: Id | None = None

    @property
    def bom_key(self) -> str:
        return self.bom if self.bom is not None else self.material

    @property
    def routing_key(self) -> str:
        return self.routing if self.routing is not None else self.material


class ProductionVersionDef(_Strict):
    """How a product is made without orders (repetitive production): its BOM, routing and receipt.

    Keyed by product and version; BOM and routing default to the ones keyed by the product,
    as for an order. Each cost collector of the version snapshots them when it is created
    (the first confirmation of a period), so a changed BOM applies from the next collector on."""

    description: str = ""
    receipt_location: Id
    bom: Id | None = None
    routing: Id | None = None

    def bom_key(self, product: str) -> str:
        return self.bom if self.bom is not None else product

    def routing_key(self, product: str) -> str:
        return self.routing if self.routing is not None else product


def _time_zone(name: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: write an IANA name such as Europe/Berlin, "
                         "America/Chicago or UTC") from None
    return name


class PeriodsDef(_Strict):
    """The posting periods of cost collectors: their length, and the plant's time zone."""

    length: PeriodLength = "month"
    time_zone: Annotated[str, AfterValidator(_time_zone)] = "UTC"


class StockDef(_Strict):
    material: Id
    location: Id
    quantity: Qty
    lot: str = ""
    serials: list[Annotated[str, Field(min_length=1, max_length=64)]] = []  # serial-tracked: one per unit
    received_on: date | None = None  # orders lots for FIFO; default: the day it is loaded
    expires_on: date | None = None  # an expired lot is never issued


class MasterData(_Strict):
    materials: dict[Id, MaterialDef] = {}
    work_centers: dict[Id, WorkCenterDef] = {}
    boms: dict[Id, BomDef] = {}
    routings: dict[Id, RoutingDef] = {}
    orders: dict[Id, OrderDef] = {}
    # Repetitive production (machines with `order: none`): product → version → definition.
    production_versions: dict[Id, dict[Id, ProductionVersionDef]] = {}
    periods: PeriodsDef = PeriodsDef()
    stock: list[StockDef] = []
