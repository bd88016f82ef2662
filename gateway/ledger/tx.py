"""What one posting transaction has read, and the rows it is going to write.

The writer posts hundreds of confirmations in one transaction when many machines confirm
at once; each reads the order's progress and carry and the stock it issues from, and
writes a dozen rows. Reading those per confirmation and writing row by row cost more CPU
than the database took (``bench/writer_tx.py``). ``LedgerTx`` reads each row once per
transaction and keeps it, changes it in memory, and writes everything with one
statement per table in ``flush()``, before the transaction commits.

That is sound because the rows it keeps are locked for the transaction: SQLite's writer
holds the database's write lock from its ``BEGIN IMMEDIATE``; on PostgreSQL the rows are
read ``FOR UPDATE`` (the same statements as ``gateway.ledger.sql``). Nothing else can
change them before the commit.

Rules for code that uses it: read progress, carry, stock, lots, order status and
confirmation ids through it, not around it, until ``flush()``; never commit without
``flush()`` (``buffered`` does both for callers outside the writer). It never decides a
quantity: it only stores what the pure core computed. Stock moves here with the same
rule as ``gateway.ledger.sql.write_movements``: a goods movement row and the balance
change, a lot registered on its first receipt.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from itertools import groupby

from sqlalchemy import Connection, Table, bindparam, insert, select

from gateway.domain.records import LotStock, OperationProgress, StockView
from gateway.ledger import schema as t
from gateway.ledger.sql import LOTS_OF, STOCK_LOTS, movement_row, upsert

# Locked for the transaction (PostgreSQL), so the writer and a CLI adjustment or reversal
# of the same order cannot both plan from the same totals.
_CARRY = select(t.order_carry).where(t.order_carry.c.order_no == bindparam("order")).with_for_update()
_PROGRESS = select(t.order_progress).where(t.order_progress.c.order_no == bindparam("order"),
                                          t.order_progress.c.operation == bindparam("operation")).with_for_update()
_STATUS = select(t.production_orders.c.status).where(t.production_orders.c.number == bindparam("order"))
_CONFIRMATIONS_IN = select(t.confirmations.c.id).where(t.confirmations.c.id.in_(bindparam("ids", expanding=True)))
_ID_CHUNK = 500  # bound parameters per IN list


class LedgerTx:
    """Reads kept and writes buffered for one transaction on ``conn``."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._confirmations: set[str] = set()  # known to exist (read or written here)
        self._checked: set[str] = set()  # ids whose existence was read
        self._status: dict[str, str | None] = {}
        self._progress: dict[tuple[str, str], OperationProgress] = {}
        self._carry: dict[str, dict[str, Decimal]] = {}
        self._stock: dict[tuple[str, str], dict[str, Decimal]] = {}  # lot → qty, in the database's order
        self._lot_info: dict[str, dict[str, tuple]] = {}  # material → lot → (received_at, expires_on)
        self._dirty_progress: set[tuple[str, str]] = set()
        self._dirty_carry: set[tuple[str, str]] = set()
        self._dirty_stock: set[tuple[str, str, str]] = set()
        self._inserts: dict[Table, list[dict]] = defaultdict(list)  # tables in first-use order

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
        if order not in self._status:
            self._status[order] = self.conn.execute(_STATUS, {"order": order}).scalar()
        return self._status[order]

    def progress(self, order: str, operation: str) -> OperationProgress:
        key = (order, operation)
        if key not in self._progress:
            row = self.conn.execute(_PROGRESS, {"order": order, "operation": operation}).first()
            self._progress[key] = (OperationProgress(order, operation) if row is None
                                   else OperationProgress(order, operation, row.yield_qty, row.scrap_qty))
        return self._progress[key]

    def carry(self, order: str) -> dict[str, Decimal]:
        """The order's planned-so-far figures (a copy: change them with ``add_carry``)."""
        if order not in self._carry:
            self._carry[order] = {r.key: r.planned for r in self.conn.execute(_CARRY, {"order": order})}
        return dict(self._carry[order])

    def stock(self, keys: Iterable[tuple[str, str]]) -> StockView:
        """Stock lot by lot for (material, location) pairs, as ``sql.read_stock`` gives it."""
        view = {}
        for material, location in keys:
            lots = self._stock_of(material, location)
            info = self._lots_of(material)
            view[(material, location)] = tuple(
                LotStock(lot, qty, *info.get(lot, (None, None))) for lot, qty in lots.items())
        return StockView(view)

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

    # -- writes (buffered) -------------------------------------------------------------

    def insert(self, table: Table, rows: list[dict]) -> None:
        if table is t.confirmations:
            self._confirmations.update(r["id"] for r in rows)
            self._checked.update(r["id"] for r in rows)
        self._inserts[table].extend(rows)

    def add_progress(self, order: str, operation: str, yield_qty: Decimal, scrap_qty: Decimal) -> None:
        p = self.progress(order, operation)
        self._progress[(order, operation)] = OperationProgress(order, operation, p.yield_qty + yield_qty,
                                                               p.scrap_qty + scrap_qty)
        self._dirty_progress.add((order, operation))

    def add_carry(self, order: str, deltas: Iterable[tuple[str, Decimal]]) -> None:
        self.carry(order)
        kept = self._carry[order]
        for key, qty in deltas:
            kept[key] = kept.get(key, Decimal(0)) + qty
            self._dirty_carry.add((order, key))

    def move(self, confirmation_id: str | None, order_no: str | None, movements, now: datetime) -> None:
        """Goods movements and the stock they change (see ``sql.write_movements``)."""
        for m in movements:
            self.insert(t.goods_movements, [movement_row(confirmation_id, order_no, m, now)])
            if m.qty > 0 and m.lot:
                lots = self._lots_of(m.material)
                if m.lot not in lots:  # first receipt registers the lot; later ones keep its date (FIFO)
                    lots[m.lot] = (now, None)
                    self.insert(t.lots, [{"material": m.material, "lot": m.lot, "received_at": now,
                                          "expires_on": None,
                                          "produced_by_order": order_no if confirmation_id else None}])
            stock = self._stock_of(m.material, m.location)
            stock[m.lot] = stock.get(m.lot, Decimal(0)) + m.qty
            self._dirty_stock.add((m.material, m.location, m.lot))

    # -- the end -----------------------------------------------------------------------

    def flush(self) -> None:
        """Write what was buffered: one statement per table (inserts in the order made)."""
        for table, rows in self._inserts.items():
            # executemany needs one set of columns: consecutive rows that share it go together.
            for _, run in groupby(rows, key=lambda r: tuple(r)):
                self.conn.execute(insert(table), list(run))
        upsert(self.conn, t.stock, [{"material": m, "location": loc, "lot": lot, "qty": self._stock[(m, loc)][lot]}
                                    for m, loc, lot in sorted(self._dirty_stock)], ["material", "location", "lot"])
        upsert(self.conn, t.order_progress, [
            {"order_no": o, "operation": op, "yield_qty": self._progress[(o, op)].yield_qty,
             "scrap_qty": self._progress[(o, op)].scrap_qty} for o, op in sorted(self._dirty_progress)],
            ["order_no", "operation"])
        upsert(self.conn, t.order_carry, [{"order_no": o, "key": k, "planned": self._carry[o][k]}
                                          for o, k in sorted(self._dirty_carry)], ["order_no", "key"])
        self._inserts.clear()
        self._dirty_stock.clear()
        self._dirty_progress.clear()
        self._dirty_carry.clear()


@contextmanager
def buffered(conn: Connection) -> Iterator[LedgerTx]:
    """A ``LedgerTx`` on ``conn`` for a few postings, flushed when the block ends."""
    tx = LedgerTx(conn)
    yield tx
    tx.flush()
