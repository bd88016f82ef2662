"""Physical inventory counts and the reports built on them: count accuracy, error metrics.

``record_count`` is the one write here. It runs in one transaction of its own, like the
operations in ``gateway.ledger.operations``: it reads the book quantity through a
``LedgerTx`` (locked, so no backflush moves it in between), stores the count next to it
and posts the difference with ``LedgerTx.move`` (701 count gain / 702 count loss), so
afterwards the book equals the count and stock is still the sum of its movements. It
never edits a movement or a stock row any other way.

``accuracy`` and ``error_metrics`` only read. Quantities are summed in Python over
Decimals because SQLite keeps them as text (see ``schema.Dec``); SQL only filters and
counts rows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import Connection, Engine, func, insert, select

from gateway.domain.records import ErrorStatus, GoodsMovement, Material, MovementKind
from gateway.domain.valuation import value
from gateway.ledger import outbox
from gateway.ledger import schema as t
from gateway.ledger.operations import OperationRefused, stock_material
from gateway.ledger.audit import Action, manual
from gateway.ledger.claims import claim
from gateway.ledger.operations import movement_ids
from gateway.ledger.masters import MasterCache, read_materials
from gateway.ledger.posting import settle
from gateway.ledger.tx import buffered

_HUNDRED = Decimal(100)
_PCT = Decimal("0.01")


# -- counting -------------------------------------------------------------------------


@dataclass(frozen=True)
class CountResult:
    id: int
    material: str
    location: str
    lot: str
    book_qty: Decimal
    counted_qty: Decimal
    uom: str
    counted_at: datetime
    movement: MovementKind | None  # None: the book already matched, nothing was posted

    @property
    def difference(self) -> Decimal:
        """Counted minus book: positive is a gain, negative a loss."""
        return self.counted_qty - self.book_qty


def record_count(engine: Engine, material: str, counted: Decimal, location: str, *, lot: str = "",
                 now: datetime | None = None, audit: Action | None = None) -> CountResult:
    """Record a physical count and post its difference to the book (701 gain / 702 loss).

    A count that matches the book is still recorded (it is the start of the next
    accuracy window) but posts no movement.
    """
    now = now or t.utcnow()
    if not location:
        raise OperationRefused("give the counted location with --location")
    if not counted.is_finite() or counted < 0:
        raise OperationRefused(f"a counted quantity is a number of zero or more, got {counted}")
    with manual(engine, audit) as record, buffered(record.conn) as tx:
        conn = record.conn
        m = stock_material(conn, material, counted, lot, verb="counted")
        book = tx.stock_qty(material, location, lot)
        record.before = {"stock": book}
        count_id = conn.execute(insert(t.stock_counts).values(
            material=material, location=location, lot=lot, book_qty=book, counted_qty=counted, uom=m.uom,
            counted_at=now)).inserted_primary_key[0]
        kind = None
        if counted != book:
            kind = MovementKind.COUNT_GAIN if counted > book else MovementKind.COUNT_LOSS
            difference = GoodsMovement(kind, material, location, counted - book, m.uom, lot=lot)
            tx.move(None, None, [difference], now)
            record.postings = [f"movement:{i}" for i in movement_ids(tx, kind, material, location, lot, now)]
            outbox.enqueue(tx, "stock", f"count:{count_id}", order=None, machine=None, now=now, body={
                "posted_at": now, "movements": outbox.movements([difference])})
            settle(tx, MasterCache(), now, by=f"count:{count_id}")  # a gain may clear errors waiting for it
        claim("stock_counted", f"count:{count_id}", count_id=count_id, material=material, location=location, lot=lot,
              book_qty=str(book), counted_qty=str(counted), uom=m.uom, movement=kind.value if kind else None,
              movements=" ".join(record.postings))
    return CountResult(count_id, material, location, lot, book, counted, m.uom, now, kind)


# -- accuracy -------------------------------------------------------------------------


@dataclass(frozen=True)
class AccuracyRow:
    material: str
    location: str
    lot: str
    uom: str
    counts: int  # how many counts of this material/location/lot there are
    counted_at: datetime  # the last count
    book_qty: Decimal
    counted_qty: Decimal
    accuracy_pct: Decimal
    since: datetime | None  # the previous count; None: the window starts at the beginning
    errors: int  # backflush error items created in the window, whatever their status now
    error_qty: Decimal  # of those, the quantity still missing (resolved items add 0)
    adjustments: int
    adjustment_qty: Decimal
    anomalies: int
    anomaly_machines: tuple[str, ...]
    price: Decimal = Decimal(0)  # the material's standard price now, per unit of measure
    currency: str = "EUR"

    @property
    def difference(self) -> Decimal:
        return self.counted_qty - self.book_qty

    @property
    def book_value(self) -> Decimal:
        return value(self.book_qty, self.price)

    @property
    def difference_value(self) -> Decimal:
        """The count difference in money: what the 701/702 movement was valued at."""
        return value(self.difference, self.price)

    @property
    def error_value(self) -> Decimal:
        return value(self.error_qty, self.price)


def accuracy_pct(book: Decimal, counted: Decimal) -> Decimal:
    """100 × (1 − |counted − book| ÷ max(|book|, counted)), 100 when both are 0, never below 0.

    ``|book|`` because a material with negative stock allowed can have a negative book;
    the floor keeps such a count from reading as a negative accuracy.
    """
    scale = max(abs(book), counted)
    if scale == 0:
        return _HUNDRED.quantize(_PCT)
    pct = _HUNDRED * (1 - abs(counted - book) / scale)
    return max(pct, Decimal(0)).quantize(_PCT, rounding=ROUND_HALF_UP)


def accuracy(engine: Engine) -> list[AccuracyRow]:
    """Per material, location and lot with at least one count: the last count against the book.

    Correlation rule. The difference a count finds built up since the count before it,
    so each row looks at the window (previous count, last count] — from the beginning of
    the ledger when there is only one count — and reports, within it:

    * errors: backflush error-queue items on this material *at this location*
      (``error_queue.created_at`` in the window; an item has no lot, so every lot row of
      the material/location shows the same items);
    * adjustments on this material (``adjustments.created_at`` in the window; an
      adjustment names no location, so it is matched on the material alone);
    * anomalies (``anomalies.created_at`` in the window) on the machines that posted a
      confirmation in the window (``confirmations.posted_at``) for an order with a
      component of this material supplied from this location
      (``confirmations.order_no`` → ``order_components.material`` / ``supply_location``):
      a counter reset or held units on such a machine means consumption that was not
      (or not yet) backflushed from this stock.

    Events after the last count are not in any row: they belong to the next count.
    """
    with engine.connect() as conn:
        counts: dict[tuple[str, str, str], list] = defaultdict(list)
        for r in conn.execute(select(t.stock_counts).order_by(t.stock_counts.c.counted_at, t.stock_counts.c.id)):
            counts[(r.material, r.location, r.lot)].append(r)
        materials = read_materials(conn)
        return [_accuracy_row(conn, rows, materials) for _, rows in sorted(counts.items())]


def _accuracy_row(conn: Connection, rows: list, materials: dict[str, Material]) -> AccuracyRow:
    last = rows[-1]
    since = rows[-2].counted_at if len(rows) > 1 else None
    until = last.counted_at

    def window(column):
        return (column > since, column <= until) if since is not None else (column <= until,)

    eq, adj, an, conf, oc = t.error_queue, t.adjustments, t.anomalies, t.confirmations, t.order_components
    errors = conn.execute(select(eq.c.missing_qty).where(
        eq.c.material == last.material, eq.c.location == last.location, *window(eq.c.created_at))).scalars().all()
    adjustments = conn.execute(select(adj.c.qty).where(
        adj.c.material == last.material, *window(adj.c.created_at))).scalars().all()
    machines = conn.execute(select(conf.c.machine).distinct().join(oc, oc.c.order_no == conf.c.order_no).where(
        oc.c.material == last.material, oc.c.supply_location == last.location,
        *window(conf.c.posted_at))).scalars().all()
    anomaly_machines = conn.execute(select(an.c.machine).where(
        an.c.machine.in_(machines), *window(an.c.created_at))).scalars().all() if machines else []
    return AccuracyRow(
        material=last.material, location=last.location, lot=last.lot, uom=last.uom, counts=len(rows),
        counted_at=until, book_qty=last.book_qty, counted_qty=last.counted_qty,
        accuracy_pct=accuracy_pct(last.book_qty, last.counted_qty), since=since,
        errors=len(errors), error_qty=sum(errors, Decimal(0)),
        adjustments=len(adjustments), adjustment_qty=sum(adjustments, Decimal(0)),
        anomalies=len(anomaly_machines), anomaly_machines=tuple(sorted(set(anomaly_machines))),
        price=materials[last.material].standard_price if last.material in materials else Decimal(0),
        currency=materials[last.material].currency if last.material in materials else "EUR",
    )


# -- error metrics --------------------------------------------------------------------


# Upper bounds of the age buckets; an item exactly on a bound goes to the older bucket.
AGE_BUCKETS: tuple[tuple[str, timedelta | None], ...] = (
    ("< 1 h", timedelta(hours=1)),
    ("1–24 h", timedelta(hours=24)),
    ("1–7 d", timedelta(days=7)),
    ("> 7 d", None),
)


@dataclass(frozen=True)
class MaterialErrors:
    material: str  # "" for a confirmation that could not be planned at all
    uom: str
    open_items: int
    missing_qty: Decimal
    oldest_age: timedelta
    missing_value: Decimal = Decimal(0)  # at the standard price (0 for whole confirmations)
    currency: str = "EUR"


@dataclass(frozen=True)
class ErrorMetrics:
    now: datetime
    open_items: int
    by_age: dict[str, int]  # every bucket of AGE_BUCKETS, in order, also when 0
    by_material: list[MaterialErrors]  # oldest first
    errors_created: int  # error items ever created, whatever their status now
    confirmations: int
    errors_created_24h: int
    confirmations_24h: int
    open_values: dict[str, Decimal] = field(default_factory=dict)  # currency → value of what is missing

    @property
    def rate_per_1000(self) -> Decimal | None:
        return _per_1000(self.errors_created, self.confirmations)

    @property
    def rate_per_1000_24h(self) -> Decimal | None:
        return _per_1000(self.errors_created_24h, self.confirmations_24h)


def _per_1000(errors: int, confirmations: int) -> Decimal | None:
    """Error items per 1 000 confirmations; None when there were no confirmations."""
    if confirmations == 0:
        return None
    return (Decimal(errors) * 1000 / confirmations).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def age_bucket(age: timedelta) -> str:
    for label, bound in AGE_BUCKETS:
        if bound is None or age < bound:
            return label
    raise AssertionError("the last bucket has no bound")


def error_metrics(engine: Engine, now: datetime | None = None) -> ErrorMetrics:
    """Open errors by age and by material; error items per 1 000 confirmations, overall and last 24 h.

    An item's age is ``now − created_at`` (its first failure: reprocessing keeps it
    open under the same id). The rate counts every item ever created, resolved or not,
    against every confirmation posted; the 24 h rate both within (now − 24 h, now].
    """
    now = now or t.utcnow()
    day_ago = now - timedelta(hours=24)
    eq, conf = t.error_queue, t.confirmations
    with engine.connect() as conn:
        open_rows = conn.execute(select(eq.c.material, eq.c.uom, eq.c.missing_qty, eq.c.created_at)
                                 .where(eq.c.status == ErrorStatus.OPEN)).all()
        errors_created = conn.execute(select(func.count()).select_from(eq)).scalar_one()
        confirmations = conn.execute(select(func.count()).select_from(conf)).scalar_one()
        errors_24h = conn.execute(select(func.count()).select_from(eq).where(
            eq.c.created_at > day_ago, eq.c.created_at <= now)).scalar_one()
        confirmations_24h = conn.execute(select(func.count()).select_from(conf).where(
            conf.c.posted_at > day_ago, conf.c.posted_at <= now)).scalar_one()
        materials = read_materials(conn)

    by_age = dict.fromkeys((label for label, _ in AGE_BUCKETS), 0)
    grouped: dict[tuple[str, str], list] = defaultdict(list)
    for r in open_rows:
        # An item stamped after `now` (clocks, or a `now` in the past) counts as new.
        by_age[age_bucket(max(now - r.created_at, timedelta(0)))] += 1
        grouped[(r.material, r.uom)].append(r)
    def of(material: str, missing: Decimal) -> tuple[Decimal, str]:
        m = materials.get(material)
        return (value(missing, m.standard_price), m.currency) if m else (Decimal(0), "EUR")

    by_material = sorted(
        (MaterialErrors(material, uom, len(rows), missing, max(now - min(r.created_at for r in rows), timedelta(0)),
                        *of(material, missing))
         for (material, uom), rows in grouped.items()
         for missing in [sum((r.missing_qty for r in rows), Decimal(0))]),
        key=lambda m: (-m.oldest_age, m.material))
    open_values: dict[str, Decimal] = defaultdict(Decimal)
    for m in by_material:
        if m.material:
            open_values[m.currency] += m.missing_value
    return ErrorMetrics(now, len(open_rows), by_age, by_material, errors_created, confirmations,
                        errors_24h, confirmations_24h, dict(sorted(open_values.items())))
