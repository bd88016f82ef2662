"""What one posting transaction has read, and the rows it is going to write.

The writer posts hundreds of confirmations in one transaction when many machines confirm
at once; each reads the order's progress and carry and the stock it issues from, and
writes a dozen rows. Reading those per confirmation and writing row by row cost more CPU
than the database took (``bench/writer_tx.py``). ``LedgerTx`` reads each row once per
transaction and keeps it, changes it in memory, and writes everything with one
statement per table in ``flush()``, before the transaction commits.

It is the only way the ledger's balances change: stock (with its goods movements and
lots), order progress and order carry. The writer, reprocessing, reversals, adjustments,
order completion and the stock commands all post through it, so one set of rules keeps
concurrent transactions from losing each other's changes:

* SQLite: the writer holds the database's write lock from ``BEGIN IMMEDIATE``; nothing
  else writes until the commit.
* PostgreSQL, rows that exist: read ``FOR UPDATE`` (stock) and kept locked until the
  commit, so what this transaction writes is based on the latest committed value.
* PostgreSQL, one order at a time: before reading an order's progress or carry, its
  ``production_orders`` row is locked (``order_status``, ``FOR NO KEY UPDATE``). Two
  transactions posting to one order take turns, so the second plans from what the first
  committed (cumulative progress, rounding carry, setup once), even for the order's
  first confirmation, whose progress and carry rows do not exist yet. Order completion
  and a master-data reload of the order wait for the same lock.
* PostgreSQL, rows that did not exist when read (an order's first progress and carry, a
  first receipt into a new lot or location): ``FOR UPDATE`` cannot lock a row that is
  not there, so ``flush()`` creates them first (``INSERT … ON CONFLICT DO NOTHING`` of a
  zero row, one statement per table), locks them (``SELECT … FOR UPDATE``) and adds this
  transaction's change to what another one may have committed meanwhile. No change is
  lost, whether or not the order lock was held.

Locks are taken in a fixed order where one call takes several: orders and stock keys
sorted, rows created and written in key order, an order before its stock. The writer
(``posting.post_confirmations``) and ``errors reprocess`` both lock all their orders first,
sorted, so they never wait on each other in a cycle; should two paths still deadlock
(stock of several orders' components), PostgreSQL aborts one side: the writer retries its
transaction, a command fails whole and can be run again.

Rules for code that uses it: read progress, carry, stock, lots, order status and
confirmation ids through it, not around it; a direct read of a table it writes (movements,
genealogy, error queue) sees its buffered rows only after ``flush()``, which may run
any number of times in a transaction; never commit without ``flush()`` (``buffered``
does both for callers outside the writer). It never decides a quantity: it only stores
what the pure core computed. Stock moves with ``move``: a goods movement row valued at the
material's standard price (``gateway.domain.valuation``) and the balance change, a lot
registered on its first receipt, and the stock key noted in ``stock_added`` for the
self-reprocessing of the error queue.

Serials. A serial-tracked material's stock is lots of one unit named by the serial
(``gateway.domain.serials``). ``move`` refuses (``SerialConflict``) any movement after which a
serial would be in stock more than once, at one location or across locations, or below
zero: whatever path posts, a serial is in exactly one place at a time. A serial issued to
an order is in that order: it comes back to stock only by a return (262) to that order, once
(a reversal, a consumption adjustment); a receipt or count gain of it is refused.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from itertools import groupby

from sqlalchemy import Connection, Table, bindparam, func, select, tuple_

from gateway.domain.records import LotStock, OperationProgress, StockView
from gateway.domain.valuation import value
from gateway.ledger import schema
from gateway.ledger.claims import tentative
from gateway.ledger.sql import LOTS_OF, STOCK_LOTS, insert_absent, insert_rows, movement_row, upsert

_CARRY = select(schema.order_carry).where(schema.order_carry.c.order_no == bindparam("order")).with_for_update()
_PROGRESS = select(schema.order_progress).where(schema.order_progress.c.order_no == bindparam("order"),
                                          schema.order_progress.c.operation == bindparam("operation")).with_for_update()
# The order lock (module docstring). FOR NO KEY UPDATE excludes every transaction that
# locks or updates the order's row (postings, completion, a reload); plain reads go on.
_STATUS = (select(schema.production_orders.c.status).where(schema.production_orders.c.number == bindparam("order"))
           .with_for_update(key_share=True))
_STATUSES = (select(schema.production_orders.c.number, schema.production_orders.c.status)
             .where(schema.production_orders.c.number.in_(bindparam("orders", expanding=True)))
             .order_by(schema.production_orders.c.number).with_for_update(key_share=True))
_CONFIRMATIONS_IN = select(schema.confirmations.c.id).where(schema.confirmations.c.id.in_(bindparam("ids", expanding=True)))
_ID_CHUNK = 500  # bound parameters per IN list

# The balances LedgerTx keeps: table, key columns, value columns.
_BALANCES = {
    "stock": (schema.stock, ("material", "location", "lot"), ("qty",)),
    "progress": (schema.order_progress, ("order_no", "operation"), ("yield_qty", "scrap_qty")),
    "carry": (schema.order_carry, ("order_no", "key"), ("planned",)),
}


_ORDER_ISSUES = ("261", "262")  # what an order got of a component: issues less returns


class SerialConflict(ValueError):
    """A movement would put a serial in two places (or take one that is not there); nothing moved."""


class LedgerTx:
    """Reads kept and writes buffered for one transaction on ``conn``."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._confirmations: set[str] = set()  # known to exist (read or written here)
        self._checked: set[str] = set()  # ids whose existence was read
        self._status: dict[str, str | None] = {}  # orders read, and so locked
        self._progress: dict[tuple[str, str], OperationProgress] = {}
        self._carry: dict[str, dict[str, Decimal]] = {}
        self._stock: dict[tuple[str, str], dict[str, Decimal]] = {}  # lot → qty, in the database's order
        self._lot_info: dict[str, dict[str, tuple]] = {}  # material → lot → (received_at, expires_on)
        self._dirty: dict[str, set[tuple]] = {name: set() for name in _BALANCES}  # keys changed, not yet written
        self._absent: dict[str, set[tuple]] = {name: set() for name in _BALANCES}  # keys read as "no row"
        self._inserts: dict[Table, list[dict]] = defaultdict(list)  # tables in first-use order
        self._new_lots: dict[tuple[str, str], dict] = {}
        self._serial_materials: set[str] | None = None
        self._produced: dict[tuple[str, str], int] = {}  # (material, order) → lots received from it
        self._prices: dict[str, Decimal] | None = None  # material → standard price, read once
        # (material, location) pairs this transaction added stock to: what self-reprocessing
        # (``gateway.ledger.reprocessing``) looks at; it empties the set when it has.
        # → the document that added it (None: a movement without one, e.g. a receipt).
        self.stock_added: dict[tuple[str, str], str | None] = {}

    # -- reads -------------------------------------------------------------------------

    def prefetch_confirmations(self, ids: Iterable[str]) -> None:
        """Which of ``ids`` exist, in a few queries instead of one per id."""
        todo = [i for i in dict.fromkeys(ids) if i not in self._checked]
        for k in range(0, len(todo), _ID_CHUNK):
            chunk = todo[k:k + _ID_CHUNK]
            self._confirmations.update(self.conn.execute(_CONFIRMATIONS_IN, {"ids": chunk}).scalars())
            self._checked.update(chunk)

    def confirmation_exists(self, confirmation_id: str) -> bool:
        if confirmation_id not in self._checked:
            self.prefetch_confirmations([confirmation_id])
        return confirmation_id in self._confirmations

    def order_status(self, order: str) -> str | None:
        """The order's status (None: not in the ledger); its row stays locked until the commit."""
        if order not in self._status:
            self._status[order] = self.conn.execute(_STATUS, {"order": order}).scalar()
        return self._status[order]

    def lock_orders(self, orders: Iterable[str]) -> None:
        """Lock several orders at once, in sorted order (for a transaction that posts to many)."""
        todo = sorted(set(orders) - self._status.keys())
        for k in range(0, len(todo), _ID_CHUNK):
            chunk = todo[k:k + _ID_CHUNK]
            found = {r.number: r.status for r in self.conn.execute(_STATUSES, {"orders": chunk})}
            self._status.update({o: found.get(o) for o in chunk})

    def progress(self, order: str, operation: str) -> OperationProgress:
        key = (order, operation)
        if key not in self._progress:
            self.order_status(order)
            row = self.conn.execute(_PROGRESS, {"order": order, "operation": operation}).first()
            if row is None:
                self._absent["progress"].add(key)
            self._progress[key] = (OperationProgress(order, operation) if row is None
                                   else OperationProgress(order, operation, row.yield_qty, row.scrap_qty))
        return self._progress[key]

    def carry(self, order: str) -> dict[str, Decimal]:
        """The order's planned-so-far figures (a copy: change them with ``add_carry``)."""
        if order not in self._carry:
            self.order_status(order)
            self._carry[order] = {r.key: r.planned for r in self.conn.execute(_CARRY, {"order": order})}
        return dict(self._carry[order])

    def stock(self, keys: Iterable[tuple[str, str]]) -> StockView:
        """Stock lot by lot for (material, location) pairs, locked until the commit."""
        view = {}
        for material, location in sorted(keys):
            lots = self._stock_of(material, location)
            info = self._lots_of(material)
            view[(material, location)] = tuple(
                LotStock(lot, qty, *info.get(lot, (None, None))) for lot, qty in lots.items())
        return StockView(view)

    def stock_qty(self, material: str, location: str, lot: str) -> Decimal:
        """One lot's stock (0 without a row), locked like ``stock``."""
        return self._stock_of(material, location).get(lot, Decimal(0))

    def _stock_of(self, material: str, location: str) -> dict[str, Decimal]:
        key = (material, location)
        if key not in self._stock:
            rows = self.conn.execute(STOCK_LOTS, {"material": material, "location": location})
            self._stock[key] = {r.lot: r.qty for r in rows}
        return self._stock[key]

    def _lots_of(self, material: str) -> dict[str, tuple]:
        if material not in self._lot_info:
            rows = self.conn.execute(LOTS_OF, {"material": material})
            self._lot_info[material] = {r.lot: (r.received_at, r.expires_on) for r in rows}
        return self._lot_info[material]

    def lots_produced(self, material: str, order: str) -> int:
        """How many lots (serials) of ``material`` were ever received from ``order``, buffered ones too."""
        key = (material, order)
        if key not in self._produced:
            lots = schema.lots.c
            stored = self.conn.execute(select(func.count()).select_from(schema.lots).where(
                lots.material == material, lots.produced_by_order == order)).scalar_one()
            self._produced[key] = stored + sum(1 for (m, _), row in self._new_lots.items()
                                               if m == material and row["produced_by_order"] == order)
        return self._produced[key]

    def known_lots(self, material: str, names: Iterable[str]) -> set[str]:
        """Which of ``names`` are lots (serials) of ``material`` the ledger knows, buffered ones too."""
        names = set(names)
        lots = schema.lots.c
        found = set(self.conn.execute(select(lots.lot).where(lots.material == material,
                                                             lots.lot.in_(sorted(names)))).scalars())
        return found | {lot for (m, lot) in self._new_lots if m == material and lot in names}

    def _serial_tracked(self, material: str) -> bool:
        if self._serial_materials is None:
            m = schema.materials.c
            self._serial_materials = set(self.conn.execute(select(m.id).where(m.tracking == "serial")).scalars())
        return material in self._serial_materials

    def _check_serial(self, material: str, location: str, serial: str, qty: Decimal) -> None:
        """Refuse a movement after which ``serial`` is not in stock exactly 0 or 1 times in all."""
        if not serial:
            raise SerialConflict(f"{material} is serial-tracked: a movement at {location} names no serial")
        s = schema.stock.c
        places = {location} | set(self.conn.execute(select(s.location).where(
            s.material == material, s.lot == serial).order_by(s.location).with_for_update()).scalars())
        places |= {place for (m, place), lots in self._stock.items() if m == material and lots.get(serial)}
        # What this transaction holds for each place (read locked, changed in memory) is the truth.
        held = {place: self._stock_of(material, place).get(serial, Decimal(0)) for place in sorted(places)}
        after = held[location] + qty
        elsewhere = {place: q for place, q in held.items() if place != location and q}
        if after not in (0, 1) or (after and elsewhere):
            where = ", ".join(f"{q} at {place}" for place, q in held.items() if q) or "nowhere"
            raise SerialConflict(f"serial {serial} of {material} is in stock {where}; moving {qty} at {location} "
                                 "would put it in stock other than once in one place (a serial is in exactly one "
                                 "place: receive a new serial, or issue this one where it is)")

    def serial_issued(self, material: str, serial: str) -> dict[str, Decimal]:
        """Order → how much of ``serial`` stands issued to it (issues less returns), buffered movements too."""
        gm = schema.goods_movements.c
        net: dict[str, Decimal] = defaultdict(Decimal)
        for order_no, qty in self.conn.execute(select(gm.order_no, gm.qty).where(
                gm.material == material, gm.lot == serial, gm.kind.in_(_ORDER_ISSUES))):
            net[order_no] -= qty
        for row in self._inserts.get(schema.goods_movements, ()):
            if row["material"] == material and row["lot"] == serial and row["kind"] in _ORDER_ISSUES:
                net[row["order_no"]] -= row["qty"]
        return {order_no: qty for order_no, qty in net.items() if qty}

    def _check_serial_issue(self, m, order_no: str | None) -> None:
        """A serial issued to an order is in that order (the serial of the unit it went into), not in
        stock: it comes back only as a return (262) to that order, once; nothing else brings it back.
        Refuse a movement that would return a serial twice, or to an order it was not issued to."""
        if m.qty <= 0:
            return  # taking a serial out of stock: ``_check_serial`` saw that it is there
        issued = self.serial_issued(m.material, m.lot)
        if m.kind.value == "262":
            if issued.get(order_no or "", Decimal(0)) < m.qty:
                raise SerialConflict(
                    f"serial {m.lot} of {m.material} is not issued to order {order_no} (any more); a return "
                    "gives back a serial the order holds, once")
        elif issued:
            held = ", ".join(f"order {o}" for o in sorted(issued))
            raise SerialConflict(
                f"serial {m.lot} of {m.material} is issued to {held}, not in stock; it comes back only from the "
                "order: reverse the confirmation that issued it, or `gateway adjust consumption` with a negative "
                "quantity")

    def standard_price(self, material: str) -> Decimal:
        """What a movement of ``material`` is valued at (0 for a material without a price)."""
        if self._prices is None:
            self._prices = {r.id: r.standard_price for r in self.conn.execute(
                select(schema.materials.c.id, schema.materials.c.standard_price))}
        return self._prices.get(material, Decimal(0))

    # -- writes (buffered) -------------------------------------------------------------

    def insert(self, table: Table, rows: list[dict]) -> None:
        if table is schema.confirmations:
            self._confirmations.update(r["id"] for r in rows)
            self._checked.update(r["id"] for r in rows)
        self._inserts[table].extend(rows)

    def add_progress(self, order: str, operation: str, yield_qty: Decimal, scrap_qty: Decimal) -> None:
        p = self.progress(order, operation)
        self._progress[(order, operation)] = OperationProgress(order, operation, p.yield_qty + yield_qty,
                                                               p.scrap_qty + scrap_qty)
        self._dirty["progress"].add((order, operation))

    def add_carry(self, order: str, deltas: Iterable[tuple[str, Decimal]]) -> None:
        self.carry(order)
        kept = self._carry[order]
        for key, qty in deltas:
            if key not in kept:
                self._absent["carry"].add((order, key))
            kept[key] = kept.get(key, Decimal(0)) + qty
            self._dirty["carry"].add((order, key))

    def register_lot(self, material: str, lot: str, received_at: datetime, *, expires_on=None,
                     produced_by_order: str | None = None) -> None:
        """A lot's first receipt dates it (FIFO/FEFO); a lot already known keeps its dates."""
        if not lot:
            return
        lots = self._lots_of(material)
        if lot not in lots:
            lots[lot] = (received_at, expires_on)
            self._new_lots[(material, lot)] = {"material": material, "lot": lot, "received_at": received_at,
                                               "expires_on": expires_on, "produced_by_order": produced_by_order}
            if (material, produced_by_order) in self._produced:
                self._produced[(material, produced_by_order)] += 1

    def move(self, confirmation_id: str | None, order_no: str | None, movements, now: datetime) -> None:
        """Goods movements and the stock they change; a receipt registers a lot it names."""
        for m in movements:
            if self._serial_tracked(m.material):
                self._check_serial(m.material, m.location, m.lot, m.qty)
                self._check_serial_issue(m, order_no)
            self.insert(schema.goods_movements, [movement_row(confirmation_id, order_no, m, now,
                                                         value(m.qty, self.standard_price(m.material)))])
            if m.qty > 0:
                self.register_lot(m.material, m.lot, now, produced_by_order=order_no if confirmation_id else None)
                self.stock_added.setdefault((m.material, m.location), confirmation_id)
            stock = self._stock_of(m.material, m.location)
            if m.lot not in stock:
                self._absent["stock"].add((m.material, m.location, m.lot))
            stock[m.lot] = stock.get(m.lot, Decimal(0)) + m.qty
            self._dirty["stock"].add((m.material, m.location, m.lot))

    # -- the end -----------------------------------------------------------------------

    def flush(self) -> None:
        """Write what was buffered: one statement per table (inserts in the order made)."""
        for table, rows in self._inserts.items():
            # executemany needs one set of columns: consecutive rows that share it go together.
            for _, run in groupby(rows, key=lambda r: tuple(r)):
                insert_rows(self.conn, table, list(run))
        self._inserts.clear()
        if self._new_lots:  # another transaction may register the same lot: the first one dates it
            insert_absent(self.conn, schema.lots, [self._new_lots[k] for k in sorted(self._new_lots)], ["material", "lot"])
            self._new_lots.clear()
        for name, (table, keys, values) in _BALANCES.items():
            self._create_absent(name)
            dirty = sorted(self._dirty[name])
            upsert(self.conn, table, [dict(zip(keys, k)) | dict(zip(values, self._kept(name, k))) for k in dirty],
                   list(keys))
            self._dirty[name].clear()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A part that may fail alone: if it raises, the database and what this LedgerTx keeps
        are back where they were before it (and the exception goes on)."""
        self.flush()
        kept = copy.deepcopy({k: v for k, v in vars(self).items() if k not in ("conn", "_inserts")})
        nested = self.conn.begin_nested()
        try:
            with tentative():  # what it claimed goes with it (gateway.ledger.claims)
                yield
                self.flush()
        except BaseException:
            nested.rollback()
            vars(self).update(kept)
            self._inserts.clear()
            raise
        nested.commit()

    def _create_absent(self, name: str) -> None:
        """Create-then-lock the changed rows that were not there when read (module docstring).

        What this transaction kept for such a row is its change from zero; another
        transaction may have committed the row since, so what is stored is added to it.
        """
        absent = sorted(self._absent[name] & self._dirty[name])
        if not absent:
            return
        self._absent[name].difference_update(absent)
        table, keys, values = _BALANCES[name]
        zero = dict.fromkeys(values, Decimal(0))
        insert_absent(self.conn, table, [dict(zip(keys, k)) | zero for k in absent], list(keys))
        columns = [table.c[c] for c in keys]
        for row in self.conn.execute(select(*columns, *(table.c[c] for c in values))
                                     .where(tuple_(*columns).in_(absent)).order_by(*columns).with_for_update()):
            stored = tuple(row[len(keys):])
            if any(stored):
                self._add_stored(name, tuple(row[:len(keys)]), stored)

    def _kept(self, name: str, key: tuple) -> tuple[Decimal, ...]:
        """The values this transaction holds for a row of a balance table (``_BALANCES``)."""
        if name == "stock":
            return (self._stock[key[:2]][key[2]],)
        if name == "progress":
            p = self._progress[key]
            return p.yield_qty, p.scrap_qty
        return (self._carry[key[0]][key[1]],)

    def _add_stored(self, name: str, key: tuple, stored: tuple[Decimal, ...]) -> None:
        if name == "stock":
            self._stock[key[:2]][key[2]] += stored[0]
        elif name == "progress":
            p = self._progress[key]
            self._progress[key] = OperationProgress(p.order, p.operation, p.yield_qty + stored[0],
                                                    p.scrap_qty + stored[1])
        else:
            self._carry[key[0]][key[1]] += stored[0]


@contextmanager
def buffered(conn: Connection) -> Iterator[LedgerTx]:
    """A ``LedgerTx`` on ``conn`` for a whole transaction, flushed when the block ends without an error."""
    tx = LedgerTx(conn)
    yield tx
    tx.flush()
