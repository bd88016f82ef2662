"""The immutable records the gateway reasons about.

Data model, from the shop floor up:

* A ``CounterReading`` is one value a PLC reported for one counter of one machine,
  with the PLC's own timestamp and the OPC UA / Modbus quality.
* A counter's position is ``(epoch, raw)``: ``raw`` is what the PLC shows and ``epoch``
  goes up by one at every rollover or reset the gateway observes. Positions only ever
  increase, so a range of positions names a slice of production exactly once.
* An ``Increment`` is the number of counts between two positions; ``units`` is counts
  times units per cycle, in the produced material's unit of measure.
* A ``Confirmation`` reports yield and scrap for one (machine, order, operation) over a
  range of positions; its id is derived from that range, so replaying the same range
  yields the same id.
* Master data (``Material``, ``WorkCenter``, ``ProductionOrder`` with its component
  and operation snapshot) is what backflush planning needs; a ``BackflushPlan`` is the
  list of postings one confirmation causes.

Every quantity and amount is a ``decimal.Decimal`` with its unit of measure next to it;
no float is ever stored here. This module holds records only: no I/O, no clock.
"""

from __future__ import annotations

import enum
from dataclasses import MISSING, dataclass, field, fields
from datetime import date, datetime
from decimal import Decimal
from typing import Literal


# Decimal(n) for the small whole numbers an increment usually makes (a Decimal never changes,
# so one of each serves every increment).
_SMALL = 1024
_SMALL_DECIMALS = tuple(Decimal(n) for n in range(_SMALL))


def whole_units(n: int) -> Decimal:
    """``Decimal(n)`` for a whole number of units, the usual small ones not built anew."""
    return _SMALL_DECIMALS[n] if 0 <= n < _SMALL else Decimal(n)


def quick_init(cls: type) -> type:
    """A frozen, slotted dataclass built for every counter change: its ``__init__`` sets the slots directly.

    The ``__init__`` that ``dataclass(frozen=True)`` writes goes round the class's own ``__setattr__``
    (which raises) by calling ``object.__setattr__(self, name, value)`` for each field; this one
    calls each slot's descriptor instead, about twice as fast (≈ 1 µs of a change's CPU for the
    four records a change builds). Built from the field names, as ``dataclasses`` builds its
    own. Same parameters, defaults and values; still frozen (assigning afterwards raises
    ``FrozenInstanceError``); ``replace``, pickling, equality and hashing unchanged
    (``tests/domain/test_quick_init.py``). Only for classes whose fields are all plain
    positional ones, without default factories or ``__post_init__``: anything else raises here.
    """
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    if not (params.frozen and "__slots__" in cls.__dict__) or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: quick_init is for frozen slotted dataclasses without __post_init__")
    names: dict[str, object] = {}
    args, body = [], []
    for f in fields(cls):
        if not f.init or f.kw_only or f.default_factory is not MISSING or not f.name.isidentifier():
            raise TypeError(f"{cls.__name__}.{f.name}: quick_init takes plain positional fields only")
        names[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is MISSING:
            args.append(f.name)
        else:
            names[f"_default_{f.name}"] = f.default
            args.append(f"{f.name}=_default_{f.name}")
        body.append(f"    _set_{f.name}(self, {f.name})\n")
    exec(f"def __init__(self, {', '.join(args)}):\n{''.join(body)}", names)  # noqa: S102 - field names only
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"  # type: ignore[attr-defined]
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[misc]
    return cls


# How far the source trusted a value: OPC UA's status class (Good, Uncertain, Bad); Modbus reads
# are good or bad. The words of the sources' ``Quality`` enum, which the domain does not import.
ReadingQuality = Literal["good", "uncertain", "bad"]


@quick_init
@dataclass(frozen=True, slots=True)
class Position:
    """Where a counter stands: ``epoch`` counts observed rollovers and resets."""

    epoch: int
    raw: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.raw}"


@dataclass(frozen=True, slots=True)
class CounterSpec:
    """How to interpret one counter tag (from the mapping)."""

    machine: str
    counter: str  # "good" or "scrap"
    width_bits: int  # 16, 32 or 64
    units_per_count: int = 1
    # A decrease is a rollover only if the wrapped delta is at most this many counts.
    rollover_window: int | None = None
    # A delta above this many counts is held for an operator's decision.
    max_counts_per_reading: int | None = None
    # The PLC restarts this counter at 0 whenever the job changes (EUROMAP 77, PackML
    # ``Count``): the first value after a job change counts from 0, whatever it is.
    resets_with_job: bool = False

    @property
    def modulus(self) -> int:
        return 1 << self.width_bits

    @property
    def effective_rollover_window(self) -> int:
        return self.rollover_window if self.rollover_window is not None else self.modulus // 16


@dataclass(frozen=True, slots=True)
class CounterReading:
    """One value of one counter as the PLC reported it."""

    machine: str
    counter: str
    value: int | None  # None when the PLC sent no usable number
    source_time: datetime
    quality: ReadingQuality = "good"
    received_at: datetime | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class CounterState:
    """What the gateway last accepted from a counter; persisted with every commit."""

    machine: str
    counter: str
    position: Position
    source_time: datetime


@quick_init
@dataclass(frozen=True, slots=True)
class Increment:
    """Counts between two positions of one counter, and the units they make."""

    machine: str
    counter: str
    counts: int
    start: Position
    end: Position
    source_time: datetime
    units_per_count: int = 1  # the counter's units per cycle (``CounterSpec``)

    @property
    def units(self) -> Decimal:
        """The units these counts made, in the produced material's unit of measure."""
        # Read several times for every counter change: the usual small figures are not built anew.
        return whole_units(self.counts * self.units_per_count)


class AnomalyKind(enum.Enum):
    RESET = "reset"  # counter went down: units between last reading and reset unknown
    IMPLAUSIBLE = "implausible"  # delta above plausibility limit, held for a decision
    UNKNOWN_ORDER = "unknown_order"  # units kept pending until the order is known
    BAD_VALUE = "bad_value"  # wrong type / negative / out of range
    WORK_CENTER_MISMATCH = "work_center"  # the order's operation runs on another work center
    NOT_PRODUCING = "not_producing"  # counted outside the machine's count_when states, held for a decision
    JOB_CHANGE_UNSEEN = "job_change_unseen"  # job changed while not read: the old job's last units unknown
    SERIAL_MISSING = "serial_missing"  # good units with no serial written for them, held for a decision
    SERIAL_REPEATED = "serial_repeated"  # good units whose serial was used before, held for a decision


class AnomalyStatus(enum.StrEnum):
    """Where an anomaly stands (the ledger's ``anomalies.status``; the value is what is stored)."""

    OPEN = "open"  # waits for a person's decision
    RECORDED = "recorded"  # information only: nothing to decide
    ACCEPTED = "accepted"  # its held units were posted
    REJECTED = "rejected"  # its held units were written off
    ASSIGNED = "assigned"  # its pending units were confirmed for another order


class ErrorStatus(enum.StrEnum):
    """Where an error-queue item stands (the ledger's ``error_queue.status``)."""

    OPEN = "open"  # still missing; reprocessed when stock arrives or on request
    RESOLVED = "resolved"  # posted after all
    CANCELLED = "cancelled"  # no longer to be posted (its confirmation was reversed or cut)


# Anomalies that hold counted units until a person accepts (posts) or rejects them.
HOLDING_KINDS = frozenset({AnomalyKind.IMPLAUSIBLE, AnomalyKind.NOT_PRODUCING, AnomalyKind.SERIAL_MISSING,
                           AnomalyKind.SERIAL_REPEATED})


@dataclass(frozen=True, slots=True)
class Anomaly:
    """Something the gateway will not guess about; kept for a person to decide."""

    machine: str
    counter: str | None
    kind: AnomalyKind
    detail: str
    source_time: datetime
    start: Position | None = None
    end: Position | None = None
    counts_held: int = 0  # counts not posted because of this anomaly
    order: str | None = None  # UNKNOWN_ORDER: the order number the units are kept pending under
    units_per_count: int = 1  # the counter's units per cycle, for ``units_held``

    @property
    def units_held(self) -> Decimal:
        """The units of the counts held."""
        return Decimal(self.counts_held * self.units_per_count)


# --- confirmations -----------------------------------------------------------------


class Trigger(enum.StrEnum):
    """Why a confirmation was made (the ledger's ``confirmations.trigger``; the value is what is stored)."""

    EVERY_UNITS = "every_units"  # the count threshold of the machine's confirm rule
    EVERY_SECONDS = "every_seconds"  # the timer of the machine's confirm rule
    ORDER_CHANGE = "order_change"  # the machine moved on to another order
    PERIOD_CHANGE = "period_change"  # a repetitive machine moved on to the next period's cost collector
    SHUTDOWN = "shutdown"  # the gateway stopped
    RELOAD = "reload"  # the machine's mapping entry was removed or changed
    ANOMALY_ACCEPTED = "anomaly_accepted"  # a person accepted units an anomaly held
    ASSIGNED = "assigned"  # a person assigned units kept pending under an unknown order
    ADJUSTMENT_SCRAP = "adjustment:scrap"  # scrap reported by hand (``gateway adjust scrap``)
    TRUE_UP = "true-up"  # the plan of an order operation's whole progress (never posted)


@dataclass(frozen=True, slots=True)
class Confirmation:
    """Yield and scrap reported for one order operation, over a range of positions."""

    id: str
    machine: str
    order: str
    operation: str
    yield_qty: Decimal
    scrap_qty: Decimal
    uom: str
    start: tuple[tuple[str, Position], ...]  # per counter, sorted by counter name
    end: tuple[tuple[str, Position], ...]
    first_source_time: datetime
    last_source_time: datetime
    trigger: Trigger
    serials: tuple[str, ...] = ()  # from the machine's serial tag: one per unit of yield, in production order

    @property
    def consumed_qty(self) -> Decimal:
        return self.yield_qty + self.scrap_qty


# --- master data ---------------------------------------------------------------------


class FlushingRule(enum.Enum):
    OPERATION = "operation"
    ORDER_COMPLETION = "order_completion"
    MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class Material:
    id: str
    description: str
    uom: str
    decimals: int  # quantities of this material are rounded to this many places
    lot_tracked: bool = False
    negative_stock_allowed: bool = False  # never for lot-tracked materials: an issue names real lots
    lot_selection: str = "fifo"  # fifo: oldest receipt first; fefo: earliest expiry first
    # Every unit has its own serial: stock is lots of one unit named by the serial, so
    # ``lot_tracked`` is true as well and everything that issues lots issues serials.
    serial_tracked: bool = False
    serial_pattern: str = ""  # serials of produced units without a serial tag: "{order}-{seq:06}"
    standard_price: Decimal = Decimal(0)  # per one unit of measure, in ``currency``
    currency: str = "EUR"
    auto_reprocess: bool = True  # a posting that adds its stock reprocesses its open errors


@dataclass(frozen=True, slots=True)
class WorkCenter:
    id: str
    description: str
    labor_rate: Decimal  # currency per labor hour
    machine_rate: Decimal  # currency per machine hour
    overhead_pct_of_labor: Decimal  # overhead cost = labor cost × pct / 100
    currency: str
    supply_location: str  # default line-side location components are flushed from


class ConsumptionBasis(enum.Enum):
    """What a component's quantity is planned on: every unit made (yield + scrap) or good units only
    (packaging: one box per 50 good parts)."""

    TOTAL = "total"
    YIELD = "yield"


@dataclass(frozen=True, slots=True)
class OrderComponent:
    """One BOM line, as snapshotted into the order at release."""

    item: str  # BOM item number, e.g. "0010"
    material: str
    qty_per_base: Decimal  # component quantity per `base_qty` of the header material
    scrap_pct: Decimal  # component scrap, planned on top
    flushing: FlushingRule
    operation: str  # routing operation that consumes it
    supply_location: str
    flushing_source: str = ""  # where the effective rule came from: BOM item, work center, material
    rework: bool = False  # issued only by a rework adjustment, never by a confirmation
    selection: str = ""  # fifo | fefo for this item's lots and serials; "": the material's lot_selection
    basis: ConsumptionBasis = ConsumptionBasis.TOTAL
    basis_source: str = "default"  # "BOM item" when the BOM item says it


@dataclass(frozen=True, slots=True)
class OrderOperation:
    """One routing operation, as snapshotted into the order at release."""

    operation: str  # e.g. "0010"
    work_center: str
    setup_hours: Decimal  # once per order operation
    machine_hours_per_base: Decimal
    labor_hours_per_base: Decimal
    final: bool = False  # goods receipt is posted at the final operation


@dataclass(frozen=True, slots=True)
class ProductionOrder:
    number: str
    material: str  # what it makes
    quantity: Decimal
    base_qty: Decimal  # BOM and routing quantities are per this many units
    receipt_location: str
    components: tuple[OrderComponent, ...] = ()
    operations: tuple[OrderOperation, ...] = ()
    status: str = "released"
    produced_lot: str = ""  # default: one produced lot per order, named like the order

    def operation(self, op: str) -> OrderOperation | None:
        return next((o for o in self.operations if o.operation == op), None)

    @property
    def output_lot(self) -> str:
        return self.produced_lot or self.number


# --- postings ----------------------------------------------------------------------


class MovementKind(enum.Enum):
    """Goods movement kinds; the value is the SAP movement type users know."""

    GOODS_ISSUE = "261"
    GOODS_ISSUE_REVERSAL = "262"
    GOODS_RECEIPT = "101"
    GOODS_RECEIPT_REVERSAL = "102"
    SCRAP = "551"
    OPENING_STOCK = "561"
    OTHER_RECEIPT = "501"  # receipt without an order, e.g. line-side replenishment
    COUNT_GAIN = "701"  # physical count found more than the book
    COUNT_LOSS = "702"  # physical count found less than the book


@dataclass(frozen=True, slots=True)
class GoodsMovement:
    """Stock change of one material at one location; `qty` is signed (+in, −out)."""

    kind: MovementKind
    material: str
    location: str
    qty: Decimal
    uom: str
    lot: str = ""
    bom_item: str = ""  # which order component, for issues


@dataclass(frozen=True, slots=True)
class ActivityPosting:
    operation: str
    work_center: str
    activity: str  # setup | machine | labor | overhead
    hours: Decimal
    cost: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class BackflushError:
    """A posting that could not be made; goes to the error queue, never dropped."""

    material: str
    location: str
    missing_qty: Decimal
    uom: str
    reason: str
    bom_item: str = ""


@dataclass(frozen=True, slots=True)
class NotBackflushed:
    """A component the plan deliberately did not issue (manual / order completion)."""

    material: str
    qty: Decimal
    uom: str
    rule: FlushingRule
    bom_item: str = ""


@dataclass(frozen=True, slots=True)
class GenealogyEdge:
    """``qty`` of a component lot went into a produced lot (where-used / where-from)."""

    component: str
    component_lot: str
    qty: Decimal
    uom: str
    product: str
    product_lot: str


@dataclass(frozen=True, slots=True)
class BackflushPlan:
    confirmation_id: str
    movements: tuple[GoodsMovement, ...] = ()
    activities: tuple[ActivityPosting, ...] = ()
    errors: tuple[BackflushError, ...] = ()
    not_backflushed: tuple[NotBackflushed, ...] = ()
    genealogy: tuple[GenealogyEdge, ...] = ()
    # What this plan adds to the order's running plan totals, per key (``item:0010``,
    # ``0010:machine:hours``…): issued + queued + deferred, hours and cost.
    planned: tuple[tuple[str, Decimal], ...] = ()


@dataclass(frozen=True, slots=True)
class OperationProgress:
    """Cumulative quantities confirmed for one order operation (drives remainder carry)."""

    order: str
    operation: str
    yield_qty: Decimal = Decimal(0)
    scrap_qty: Decimal = Decimal(0)

    @property
    def consumed_qty(self) -> Decimal:
        return self.yield_qty + self.scrap_qty


@dataclass(frozen=True, slots=True)
class LotStock:
    """Stock of one lot at one location (lot "" for materials without lots)."""

    lot: str
    qty: Decimal
    received_at: datetime | None = None
    expires_on: date | None = None


@dataclass(frozen=True, slots=True)
class StockView:
    """Stock per (material, location), lot by lot, at planning time."""

    lots: dict[tuple[str, str], tuple[LotStock, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, available: dict[tuple[str, str], Decimal]) -> StockView:
        """Stock of materials without lots."""
        return cls({key: (LotStock("", qty),) for key, qty in available.items()})
