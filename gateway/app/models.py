"""What the application layer takes and returns: pydantic models, the same for the CLI and the HTTP API.

Quantities and money are ``Decimal`` (JSON: a string, so nothing is rounded on the way);
times are timezone-aware UTC datetimes; ages are seconds. Input models hold what a person
asks for; the functions in ``gateway.app`` check it against the ledger.

Never here: reading or writing the ledger, or presentation (column titles, colours).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- orders -----------------------------------------------------------------------------


class OperationProgress(Model):
    operation: str
    work_center: str
    final: bool
    yield_qty: Decimal
    scrap_qty: Decimal


class ComponentUse(Model):
    """One component of an order: planned for the quantity confirmed so far against what was issued."""

    item: str
    material: str
    uom: str
    rule: str  # effective flushing rule (or "substitute for …" for a material not in the BOM)
    rule_source: str  # where the rule comes from (BOM item, work center, material, default)
    operation: str
    basis: str  # total: planned on yield + scrap; yield: on good units only
    basis_source: str  # BOM item or default
    in_bom: bool
    planned: Decimal
    backflushed: Decimal
    manual: Decimal
    adjusted: Decimal
    variance: Decimal  # issued minus planned: positive is over-consumption
    wip: Decimal  # accrued for order completion, not issued yet
    open_errors: Decimal
    currency: str
    variance_value: Decimal  # the variance at the standard price (exact; reports round to cents)
    wip_value: Decimal


class OrderView(Model):
    number: str
    material: str
    quantity: Decimal
    uom: str
    status: str
    received: Decimal
    produced_lot: str
    operations: list[OperationProgress]
    components: list[ComponentUse]


# -- cost collectors (repetitive production) ----------------------------------------------


class CollectorRow(Model):
    """A standing cost collector of a product, version and line for one period, and its balance.

    Open: the balance as posted so far; closed: as its period close settled it. ``actual`` is the
    components issued (at their posted value) plus the activities; ``target`` the yield received
    at the product's standard price; ``variance`` = actual − target. The values are None when the
    collector's postings are in more than one currency (``currency`` lists them)."""

    number: str  # its order number in the ledger
    product: str
    version: str
    line: str
    period: str
    status: str  # open | closed
    created_at: datetime
    closed_at: datetime | None
    yield_qty: Decimal  # confirmed at the final operation
    scrap_qty: Decimal
    received: Decimal
    uom: str
    currency: str
    materials: Decimal | None
    activities: Decimal | None
    actual: Decimal | None
    target: Decimal | None
    variance: Decimal | None


class CollectorView(Model):
    """A collector with its standing order's progress and components, as ``orders show`` has them
    (``order`` is None while its production version is not loaded: nothing was posted to it)."""

    collector: CollectorRow
    order: OrderView | None


class PeriodClosed(Model):
    period: str
    collectors: list[CollectorRow]


class ClosePeriod(Model):
    period: str = Field(min_length=1, max_length=16, description="2026-12 (month), 2026-W49 (ISO week) or a day.")
    reason: str = ""


# -- confirmations ----------------------------------------------------------------------


class ConfirmationRow(Model):
    id: str
    posted_at: datetime
    machine: str
    order: str
    operation: str
    yield_qty: Decimal
    scrap_qty: Decimal
    uom: str
    trigger: str
    reversed_by: str | None


class ReverseConfirmation(Model):
    confirmation_id: str
    reason: str = Field(min_length=1, description="Why, for the audit trail.")
    force_reason: str | None = Field(None, description="Reverse although its produced goods were used; recorded.")


class ReversalPosted(Model):
    confirmation_id: str
    reversal_id: str
    movements: int
    forced: bool


# -- adjustments ------------------------------------------------------------------------


class AdjustAtOperation(Model):
    """Scrap or rework reported by hand at one routing operation."""

    order: str
    operation: str
    qty: Decimal
    reason_code: str
    note: str = ""


class AdjustSubstitute(Model):
    order: str
    item: str
    with_material: str
    qty: Decimal  # of the planned material, given back
    with_qty: Decimal | None = None  # of the substitute (default: qty)
    reason_code: str
    note: str = ""


class AdjustConsumption(Model):
    order: str
    item: str
    delta: Decimal  # +Q issues Q more, -Q gives Q back
    reason_code: str
    note: str = ""


class AdjustmentPosted(Model):
    document: str
    kind: str
    order: str
    material: str
    qty: Decimal
    uom: str
    movements: int
    queued: int  # shortages put on the error queue


# -- stock ------------------------------------------------------------------------------


class ReceiveStock(Model):
    material: str
    qty: Decimal
    location: str
    lot: str = ""
    expires_on: date | None = None


class StockReceived(Model):
    material: str
    qty: Decimal
    uom: str
    location: str
    lot: str
    expires_on: date | None


class IssueStock(Model):
    material: str
    qty: Decimal
    order: str
    location: str
    lot: str = ""


class StockIssued(Model):
    document: str
    material: str
    qty: Decimal
    uom: str
    order: str
    location: str
    lot: str


class CountStock(Model):
    material: str
    counted: Decimal
    location: str
    lot: str = ""


class CountRecorded(Model):
    id: int
    material: str
    location: str
    lot: str
    uom: str
    book_qty: Decimal
    counted_qty: Decimal
    difference: Decimal  # counted minus book: positive is a gain
    movement: str | None  # 701 gain / 702 loss; None: the book matched, nothing posted
    counted_at: datetime


# -- anomalies --------------------------------------------------------------------------


class Anomaly(Model):
    id: int
    machine: str
    counter: str | None
    kind: str
    status: str
    units_held: Decimal
    source_time: datetime
    detail: str
    decision: str | None
    confirmation_id: str | None
    order: str | None = None  # unknown_order: the order number its units are pending under ("" = none)
    held_since: datetime | None = None  # unknown_order with units still pending: when the first was counted


class AcceptAnomaly(Model):
    anomaly_id: int
    reason: str = ""
    order: str | None = None  # default: the order running when the units were counted
    operation: str | None = None


class RejectAnomaly(Model):
    anomaly_id: int
    reason: str = ""


class AssignAnomaly(Model):
    """Post the units an unknown_order anomaly holds to a released order."""

    anomaly_id: int
    order: str = Field(min_length=1, max_length=64)
    operation: str | None = None  # default: the operation the machine ran
    reason: str = ""


class AnomalyAssigned(Model):
    anomaly_id: int
    order: str
    units: Decimal
    confirmation_ids: list[str]


class AnomalyDecided(Model):
    anomaly_id: int
    decision: Literal["accepted", "rejected"]
    units: Decimal
    confirmation_id: str | None  # what accepting posted
    order: str | None


# -- the backflush error queue ----------------------------------------------------------


class ErrorItem(Model):
    id: int
    created_at: datetime
    order: str
    confirmation_id: str
    material: str  # "" when the whole confirmation could not be posted
    location: str
    missing_qty: Decimal
    uom: str
    reason: str
    status: str
    attempts: int
    resolved_by: str | None = None  # what cleared it: a posting that added stock, or `errors reprocess`
    missing_value: Decimal = Decimal(0)  # missing quantity at the standard price (exact)
    currency: str = "EUR"


class StillOpen(Model):
    id: int
    reason: str


class Reprocessed(Model):
    resolved: list[int]
    still_open: list[StillOpen]


# -- genealogy --------------------------------------------------------------------------


class TraceLine(Model):
    depth: int  # 0: the lot asked for; 1: made from / used in it; …
    material: str
    lot: str
    qty: Decimal | None  # None on depth 0
    uom: str
    serial: bool = False  # the "lot" is the serial of one unit of a serial-tracked material


class Trace(Model):
    lot: str
    material: str | None
    direction: Literal["back", "forward"]
    lines: list[TraceLine]  # empty: the lot is made from nothing / used nowhere (or unknown)


# -- reports ----------------------------------------------------------------------------


class MachineBalance(Model):
    machine: str
    confirmations: int
    confirmed_yield: Decimal
    confirmed_scrap: Decimal
    pending: Decimal
    held: Decimal
    written_off: Decimal
    counted: Decimal | None  # None: only confirmed by hand, nothing to check
    accounted: Decimal
    balanced: bool


class MaterialFlow(Model):
    material: str
    uom: str
    issued: Decimal  # 261 − 262
    received: Decimal  # 101 − 102


class NotBackflushed(Model):
    material: str
    rule: str
    uom: str
    planned: Decimal


class ActivityTotal(Model):
    work_center: str
    activity: str
    hours: Decimal
    cost: Decimal
    currency: str


class StockRow(Model):
    material: str
    location: str
    lot: str
    uom: str
    qty: Decimal


class LedgerSummary(Model):
    machines: list[MachineBalance]
    goods: list[MaterialFlow]
    not_backflushed: list[NotBackflushed]
    activities: list[ActivityTotal]
    stock: list[StockRow]
    open_errors: int
    open_anomalies: int
    duplicate_confirmation_ids: int
    unbalanced: list[str]  # machines whose units counted ≠ confirmed + pending + held + written off


class Journal(Model):
    order: str
    sections: dict[str, list[dict[str, Any]]]  # title → rows, in posting order


class AccuracyRow(Model):
    material: str
    location: str
    lot: str
    uom: str
    counts: int
    counted_at: datetime
    book_qty: Decimal
    counted_qty: Decimal
    difference: Decimal
    accuracy_pct: Decimal
    since: datetime | None  # the count before; None: since the beginning
    errors: int
    error_qty: Decimal
    adjustments: int
    adjustment_qty: Decimal
    anomalies: int
    anomaly_machines: list[str]
    currency: str
    book_value: Decimal  # at the standard price (exact; the CLI rounds to cents)
    difference_value: Decimal
    error_value: Decimal


class ErrorsOfAge(Model):
    age: str
    items: int


class MaterialErrors(Model):
    material: str
    uom: str
    open_items: int
    missing_qty: Decimal
    oldest_age_s: float
    missing_value: Decimal
    currency: str


class ErrorMetrics(Model):
    now: datetime
    open_items: int
    by_age: list[ErrorsOfAge]
    by_material: list[MaterialErrors]
    errors_created: int
    confirmations: int
    rate_per_1000: Decimal | None  # None: no confirmations
    errors_created_24h: int
    confirmations_24h: int
    rate_per_1000_24h: Decimal | None
    open_values: dict[str, Decimal]  # currency → value of the open items' missing quantities


class WipRow(Model):
    """A component accrued for order completion and not issued yet, with its value."""

    order: str
    work_center: str
    operation: str
    item: str
    material: str
    qty: Decimal
    uom: str
    value: Decimal  # qty × standard price (exact)
    currency: str


# -- gateways ---------------------------------------------------------------------------


class Lease(Model):
    machine: str
    age_s: float
    expires_in_s: float


class GatewayInstance(Model):
    name: str
    host: str
    pid: int
    standby: bool
    running: bool
    seen_ago_s: float
    last_commit_ago_s: float | None
    leases: list[Lease]  # machines owned now (not the ledger-wide SQLite lease)


# -- the audit trail ---------------------------------------------------------------------


class AuditEntry(Model):
    """One manual action: who, from where, when, why, and the ids of what it posted."""

    id: int
    at: datetime
    actor: str  # the OS user of a command, the API token's name
    actor_kind: Literal["cli", "api", "console"]
    host: str
    via: str  # the command line (without secrets) or the method and endpoint
    action: str
    reason: str
    order: str | None
    subject: str
    postings: list[str]
    detail: dict[str, Any]  # the ledger before (``before``), what changed (``changed``), a file's SHA-256 …
