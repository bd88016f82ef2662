"""One posting transaction: counter state, confirmations with their backflush, anomalies.

``apply`` writes one change-set (``gateway.ledger.changes.ChangeSet``) on a connection inside
the caller's transaction; the writer thread calls it, and so do the tests and benchmarks
that need a transaction without a thread. ``post_confirmation`` and ``backflush`` are
also what reprocessing and anomaly decisions use, so a confirmation posted by a person
looks exactly like one posted by the service.

Self-reprocessing (``settle``): a posting that adds stock of a material (a receipt, a count
gain, a reversal, a return, a goods receipt from an order, opening stock) reprocesses the
open error items that stock can now satisfy, oldest first, in its own transaction, with
FIFO/FEFO and expiry as any issue (``issue_component``); a material with
``auto_reprocess: false`` waits for ``gateway errors reprocess``. The item records the
posting that cleared it (``resolved_by``). Items are read ``FOR UPDATE`` and lowered by
what is issued, so nothing is issued twice, and an issue never takes more than the stock
this transaction sees. It locks the items' orders after the stock that was added (the
opposite of the usual order): should that deadlock on PostgreSQL, the database aborts one
side, and the writer retries its transaction, a command fails whole and can be run again.

Backflush planning runs here, inside the transaction, so the stock and progress it plans
against are exactly the ones it commits against. This module never commits and never
retries: the transaction and its retries belong to the caller. For the same reason it
never logs a line that claims a posting (``confirmation_posted`` …): it claims it
(``gateway.ledger.claims``), and the line is written once the caller's transaction committed.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import structlog
from sqlalchemy import Connection, bindparam, delete, insert, select, tuple_, update

from gateway.clock import utcnow
from gateway.domain.backflush import StockLeft, issue_component, plan
from gateway.domain.confirming import Pending, format_positions
from gateway.domain.serials import serials_of
from gateway.domain.records import (
    Anomaly,
    AnomalyStatus,
    ErrorStatus,
    HOLDING_KINDS,
    BackflushPlan,
    Confirmation,
)
from gateway.ledger import outbox
from gateway.ledger import schema
from gateway.ledger.changes import ChangeSet
from gateway.ledger.claims import claim, tentative
from gateway.ledger.collectors import ensure_collectors
from gateway.ledger.failures import cause, lost_to_transient, short_error
from gateway.ledger.masters import MasterCache
from gateway.ledger.sql import execute_rows, upsert
from gateway.ledger.tx import LedgerTx, buffered

log = structlog.get_logger("gateway.ledger")

# Built once (see gateway.ledger.sql): a pending confirmed in this transaction goes.
_DELETE_PENDING = delete(schema.pending_units).where(
    schema.pending_units.c.machine == bindparam("machine"), schema.pending_units.c.order_no == bindparam("order"),
    schema.pending_units.c.operation == bindparam("operation"))


def apply(conn: Connection, batch: ChangeSet, masters: MasterCache) -> int:
    """Write ``batch`` on ``conn`` (inside the caller's transaction); how many confirmations were new.

    A confirmation whose postings fail (a bug in planning, a value the database refuses)
    is kept with its units and an error-queue entry (see ``post_confirmations``); only
    what cannot be stored at all raises, and then nothing of ``batch`` is written.
    """
    now = utcnow()
    if batch.collectors:  # before the confirmations that post to them (repetitive production)
        ensure_collectors(conn, batch.collectors, now)
    posted = post_confirmations(conn, batch.confirmations, masters, now)
    if batch.anomalies:
        conn.execute(insert(schema.anomalies), [_anomaly_row(a, units, now) for a, units in batch.anomalies])
    upsert(conn, schema.counter_states, [
        {"machine": s.machine, "counter": s.counter, "epoch": s.position.epoch, "raw": s.position.raw,
         "source_time": s.source_time, "updated_at": now}
        for s in batch.latest_states().values()
    ], ["machine", "counter"])
    upsert(conn, schema.pending_units, [_pending_row(p) for p in batch.pendings.values() if p is not None],
           ["machine", "order_no", "operation"])
    confirmed = [{"machine": m, "order": o, "operation": op} for (m, o, op), p in batch.pendings.items() if p is None]
    if confirmed:
        execute_rows(conn, _DELETE_PENDING, confirmed)
    upsert(conn, schema.machine_states, [
        {"machine": m, "order_no": o, "updated_at": now, **_job_reset_row(batch.job_resets.get(m))}
        for m, o in batch.machine_orders.items()
    ], ["machine"])
    for m, pending in batch.job_resets.items():  # a counter's first value after the change: no new order
        if m not in batch.machine_orders:
            conn.execute(update(schema.machine_states).where(schema.machine_states.c.machine == m).values(
                updated_at=now, **_job_reset_row(pending)))
    set_counted(conn, batch.counted, now)
    return posted


def _job_reset_row(pending: tuple[frozenset[str], frozenset[str]] | None) -> dict[str, str]:
    counters, unseen = pending or (frozenset(), frozenset())
    return {"job_reset_pending": " ".join(sorted(counters)), "job_change_unseen": " ".join(sorted(unseen))}


def post_confirmations(conn: Connection, confirmations: list[Confirmation], masters: MasterCache,
                       now: datetime) -> int:
    """Post ``confirmations`` in a SAVEPOINT; how many were new.

    All of them go together first (one ``LedgerTx``, one statement per table). If that
    fails for anything but a transient database error, the savepoint is rolled back and
    each is posted alone in a savepoint of its own; one whose postings fail even alone is
    stored without them, with its units, and an error-queue entry "not posted: <error>"
    that ``gateway errors reprocess`` retries once the cause is fixed. If even that cannot
    be stored, the error is raised: the change cannot be stored at all.
    """
    if not confirmations:
        return 0
    # Every order first, in one sorted order, outside the savepoints (so held to the commit):
    # `errors reprocess` takes them the same way, and the two never wait on each other in a cycle.
    LedgerTx(conn).lock_orders(c.order for c in confirmations)
    try:
        with tentative(), conn.begin_nested(), buffered(conn) as tx:
            tx.prefetch_confirmations(c.id for c in confirmations)
            new = sum(post_confirmation(tx, c, masters, now) for c in confirmations)
            settle(tx, masters, now)
            return new
    except Exception as exc:
        if lost_to_transient(exc):
            raise
        found = cause(exc)
        log.error("postings_refused", error=short_error(exc), confirmations=len(confirmations),
                  cause=found.name if found else None,
                  hint=(f"{found.hint}; " if found else "")
                  + "posting the confirmations one by one; those that fail are kept with an error-queue entry")
    return sum(_post_alone(conn, c, masters, now) for c in confirmations)


def _post_alone(conn: Connection, c: Confirmation, masters: MasterCache, now: datetime) -> bool:
    try:
        with tentative(), conn.begin_nested(), buffered(conn) as tx:
            new = post_confirmation(tx, c, masters, now)
            settle(tx, masters, now)
            return new
    except Exception as exc:
        if lost_to_transient(exc):
            raise
        reason = f"not posted: {short_error(exc)}; fix the cause, then `gateway errors reprocess`"
    with buffered(conn) as tx:
        keep_unposted(tx, c, now, reason)
    claim("confirmation_not_posted", c.id, level="error", confirmation_id=c.id, machine=c.machine, order=c.order,
          units=str(c.yield_qty + c.scrap_qty), reason=reason)
    return True


def post_confirmation(tx: LedgerTx, c: Confirmation, masters: MasterCache, now: datetime) -> bool:
    """Insert a confirmation and its postings; False if it was already there (a replay)."""
    if tx.confirmation_exists(c.id):
        log.warning("confirmation_replay_skipped", confirmation_id=c.id, machine=c.machine, order=c.order)
        return False
    refusal = cannot_plan(tx, c, masters)
    if refusal:
        keep_unposted(tx, c, now, refusal)
        claim("confirmation_not_planned", c.id, level="warning", confirmation_id=c.id, machine=c.machine,
              order=c.order, reason=refusal)
        return True
    tx.insert(schema.confirmations, [_confirmation_row(c, now)])
    backflush(tx, c, masters, now)
    return True


def keep_unposted(tx: LedgerTx, c: Confirmation, now: datetime, reason: str) -> None:
    """The confirmation stands without postings; the whole of it waits in the error queue."""
    tx.insert(schema.confirmations, [_confirmation_row(c, now)])
    tx.insert(schema.error_queue, [{
        "confirmation_id": c.id, "order_no": c.order, "material": "", "location": "",
        "missing_qty": c.consumed_qty, "uom": c.uom, "status": ErrorStatus.OPEN, "created_at": now, "reason": reason}])


def _confirmation_row(c: Confirmation, now: datetime) -> dict:
    return {
        "id": c.id, "machine": c.machine, "order_no": c.order, "operation": c.operation,
        "yield_qty": c.yield_qty, "scrap_qty": c.scrap_qty, "uom": c.uom,
        "start_pos": format_positions(c.start), "end_pos": format_positions(c.end),
        "first_source_time": c.first_source_time, "last_source_time": c.last_source_time,
        "trigger": c.trigger, "posted_at": now, "serials": "\n".join(c.serials),
    }


def set_counted(conn: Connection, counted: dict[str, Decimal], now: datetime) -> None:
    """Each machine's units counted ever (``counted_units``), as the service has them: absolute,
    so that a transaction retried after an unknown outcome writes the same figure again."""
    rows = []
    for machine, units in sorted(counted.items()):
        if units != int(units):
            raise ValueError(f"units counted on {machine} must be whole, got {units}")
        rows.append({"machine": machine, "units": int(units), "updated_at": now})
    upsert(conn, schema.counted_units, rows, ["machine"])


def cannot_plan(tx: LedgerTx, c: Confirmation, masters: MasterCache) -> str | None:
    """Why a confirmation cannot be backflushed now, if it cannot."""
    order = masters.order(tx.conn, c.order)
    if order is None or order.operation(c.operation) is None:
        return (f"order {c.order} operation {c.operation} is not in the master data; "
                "load it (`gateway masterdata load`), then `gateway errors reprocess`")
    status = tx.order_status(c.order)
    if status != "released":
        return f"order {c.order} is {status}; nothing is posted to it (reverse or re-assign the confirmation)"
    return no_serials(c, order, masters.materials(tx.conn))


def no_serials(c: Confirmation, order, materials) -> str | None:
    """Why the yield of a serial-tracked product cannot be received: no serial for its units."""
    product = materials.get(order.material)
    if product is None or not product.serial_tracked or not order.operation(c.operation).final or not c.yield_qty:
        return None
    if c.serials:
        if len(c.serials) != c.yield_qty or len(set(c.serials)) != len(c.serials):
            return (f"{order.material} is serial-tracked: {c.yield_qty} {c.uom} came with {len(c.serials)} serials "
                    f"({len(set(c.serials))} different); reverse the confirmation")
        return None
    if not product.serial_pattern:
        return (f"{order.material} is serial-tracked and {c.yield_qty} {c.uom} have no serial; give the material "
                'a serial pattern (serials: "{order}-{seq:06}") and load the master data, '
                "then `gateway errors reprocess`")
    return None


def product_serials(tx: LedgerTx, c: Confirmation, order, materials) -> tuple[str, ...]:
    """The serials of a serial-tracked product's yield: the ones the machine's serial tag wrote,
    else numbered by the material's pattern on from the last one the order received, skipping
    any serial the ledger already knows (received by hand, say), so that one stray serial
    never blocks the order."""
    product = materials[order.material]
    units = int(c.yield_qty)
    if not product.serial_tracked or not order.operation(c.operation).final or not units:
        return ()
    if c.serials:
        return c.serials
    serials: list[str] = []
    seq = tx.lots_produced(product.id, order.number) + 1
    while len(serials) < units:
        batch = serials_of(product.serial_pattern, order.number, seq, units - len(serials))
        known = tx.known_lots(product.id, batch)
        serials += [s for s in batch if s not in known]
        seq += len(batch)
    return tuple(serials)


def backflush(tx: LedgerTx, c: Confirmation, masters: MasterCache, now: datetime) -> BackflushPlan:
    """Plan and write the postings of a stored confirmation (``cannot_plan`` said it can)."""
    order = masters.order(tx.conn, c.order)
    progress = tx.progress(c.order, c.operation)
    locations = {(k.material, k.supply_location) for k in order.components if k.operation == c.operation}
    materials = masters.materials(tx.conn)
    result = plan(c, order, progress, materials, masters.work_centers(tx.conn),
                  tx.stock(locations), tx.carry(c.order), serials=product_serials(tx, c, order, materials))
    write_plan(tx, c, order.number, result, now)
    tx.add_progress(c.order, c.operation, c.yield_qty, c.scrap_qty)
    tx.add_carry(c.order, result.planned)
    outbox.enqueue(tx, "confirmation", c.id, order=c.order, machine=c.machine, now=now,
                   body=lambda: confirmation_body(c, result, now))
    claim(
        "confirmation_posted", c.id, confirmation_id=c.id, machine=c.machine, order=c.order, operation=c.operation,
        yield_qty=str(c.yield_qty), scrap_qty=str(c.scrap_qty), trigger=c.trigger,
        movements=len(result.movements), activities=len(result.activities), errors=len(result.errors),
    )
    return result


def confirmation_body(c: Confirmation, p: BackflushPlan, now: datetime) -> dict:
    """What a target gets of a posted confirmation (gateway/outputs/outputs.schema.json)."""
    return {"operation": c.operation, "yield_qty": c.yield_qty, "scrap_qty": c.scrap_qty, "uom": c.uom,
            "trigger": c.trigger, "first_source_time": c.first_source_time, "last_source_time": c.last_source_time,
            "start": format_positions(c.start), "end": format_positions(c.end), "posted_at": now,
            "movements": outbox.movements(p.movements), "activities": outbox.activities(p.activities)}


def write_plan(tx: LedgerTx, c: Confirmation, order_no: str, p: BackflushPlan, now: datetime) -> None:
    """Write a plan's postings (movements with stock, activities, errors, WIP, genealogy)."""
    tx.move(c.id, order_no, p.movements, now)
    write_genealogy(tx, c.id, order_no, p.genealogy, now)
    write_activities(tx, c.id, order_no, p.activities, now)
    write_deferred(tx, c.id, order_no, p.not_backflushed)
    write_errors(tx, c.id, order_no, p.errors, now)


# -- self-reprocessing of the error queue --------------------------------------------


def settle(tx: LedgerTx, masters: MasterCache, now: datetime, by: str = "") -> list[int]:
    """Reprocess the open errors the stock added in ``tx`` can satisfy (module docstring); the ids resolved.

    ``by`` names the posting when the movements carry no document (a receipt, a count). A
    failure here (not a transient one) is logged and leaves the items open for
    ``gateway errors reprocess``: it never costs the posting that added the stock.
    """
    added, tx.stock_added = tx.stock_added, {}
    if not added:
        return []
    tx.flush()  # the posting's own rows (and the items it queued itself): their failure is the posting's
    try:
        keys = _waiting(tx, added, masters)
        if not keys:
            return []
        with tx.savepoint():
            return _settle(tx, keys, added, masters, now, by)
    except Exception as exc:
        if lost_to_transient(exc):
            raise
        log.error("self_reprocessing_failed", error=short_error(exc), by=by or None,
                  hint="the errors stay open; `gateway errors reprocess` retries them")
        return []


def _waiting(tx: LedgerTx, added: dict[tuple[str, str], str | None], masters: MasterCache) -> list[tuple[str, str]]:
    """The (material, location) of ``added`` that reprocess by themselves and have open error items.

    Asked before ``tx.savepoint()``, whose copy of the transaction's state cost the writer ~15 µs
    per confirmation of a 500-confirmation transaction (``bench/writer_tx.py``), for nothing in the
    usual case (no open item waits for what a posting added). A read, in a database savepoint of its
    own: a failing statement aborts a PostgreSQL transaction, and this one must never cost the posting."""
    with tx.conn.begin_nested():  # the master-data read too: it may go to the database
        materials = masters.materials(tx.conn)
        keys = sorted(k for k in added if k[0] in materials and materials[k[0]].auto_reprocess)
        if not keys:
            return []
        found = tx.conn.execute(select(schema.error_queue.c.id).where(*_open_items_of(keys)).limit(1)).first()
    return keys if found is not None else []


def _open_items_of(keys: list[tuple[str, str]]) -> tuple:
    """The open error items of a component at one of ``keys`` (material, location): what settling reissues."""
    eq = schema.error_queue.c
    return eq.status == ErrorStatus.OPEN, eq.material != "", tuple_(eq.material, eq.location).in_(keys)


def _settle(tx: LedgerTx, keys: list[tuple[str, str]], added: dict[tuple[str, str], str | None],
            masters: MasterCache, now: datetime, by: str) -> list[int]:
    eq = schema.error_queue.c
    rows = tx.conn.execute(select(schema.error_queue).where(*_open_items_of(keys))
                           .order_by(eq.id).with_for_update()).all()
    if not rows:
        return []
    tx.lock_orders(r.order_no for r in rows)
    resolved = []
    for row in rows:
        left, why = reissue(tx, row, masters, now)
        if left == row.missing_qty:  # nothing there for it after all (expired lots, an older item took it)
            continue
        document = added.get((row.material, row.location)) or by
        close_error(tx.conn, row, left, why, now, document)
        if left == 0:
            resolved.append(row.id)
    return resolved


def reissue(tx: LedgerTx, row, masters: MasterCache, now: datetime) -> tuple[Decimal, str]:
    """Issue what an open error item of a component misses, as far as the stock allows now:
    (still missing, why). Manual and automatic reprocessing both issue through here."""
    order = masters.order(tx.conn, row.order_no)
    material = masters.materials(tx.conn)[row.material]
    stock = StockLeft(tx.stock({(row.material, row.location)}))
    issued = issue_component(row.missing_qty, material, row.location, row.bom_item, order, stock, now.date())
    tx.move(row.confirmation_id, order.number, issued.movements, now)
    write_genealogy(tx, row.confirmation_id, order.number, issued.genealogy, now)
    if issued.movements:  # a goods issue of its own, posted now: the outputs get it as one (the ERP's stock too)
        c = schema.confirmations.c
        machine = tx.conn.execute(select(c.machine).where(c.id == row.confirmation_id)).scalar()
        # Not chained behind the order's deliveries (order=None for the outbox; the body names it): an
        # ERP target parks it for a person to post by hand, and must not hold the order's later
        # confirmations back meanwhile.
        outbox.enqueue(tx, "stock", outbox.reissue_document(row.id, row.attempts + 1), order=None, machine=machine,
                       now=now, body={"posted_at": now, "order": order.number, "confirmation_id": row.confirmation_id,
                                      "reason": f"error {row.id} reprocessed: what the confirmation could not issue",
                                      "movements": outbox.movements(issued.movements)})
    if issued.errors:
        return issued.errors[0].missing_qty, issued.errors[0].reason
    return Decimal(0), ""


def close_error(conn: Connection, row, left: Decimal, why: str, now: datetime, by: str) -> None:
    """Store what reprocessing did to an error item: lowered, or resolved, and by which posting."""
    if left != row.missing_qty:  # something was posted for it
        claim("error_reprocessed", row.confirmation_id, error_id=row.id, document=row.confirmation_id,
              order=row.order_no, material=row.material, missing_before=str(row.missing_qty),
              missing_now=str(left), resolved=left == 0, by=by)
    conn.execute(update(schema.error_queue).where(schema.error_queue.c.id == row.id).values(
        missing_qty=left, attempts=row.attempts + 1,
        status=ErrorStatus.RESOLVED if left == 0 else ErrorStatus.OPEN, resolved_at=now if left == 0 else None,
        reason=row.reason if left == 0 else why,
        resolved_by=by if left != row.missing_qty else row.resolved_by))


# The row writers below buffer their rows in the transaction's LedgerTx until its flush.


def write_errors(tx: LedgerTx, document: str, order_no: str, errors, now: datetime) -> None:
    """Postings that could not be made go to the error queue, never away."""
    if errors:
        tx.insert(schema.error_queue, [{
            "confirmation_id": document, "order_no": order_no, "bom_item": e.bom_item, "material": e.material,
            "location": e.location, "missing_qty": e.missing_qty, "uom": e.uom, "reason": e.reason,
            "status": ErrorStatus.OPEN, "created_at": now} for e in errors])
        for e in errors:
            claim("backflush_error_queued", document, level="warning", document=document, order=order_no,
                  material=e.material, missing=str(e.missing_qty), reason=e.reason)


def write_genealogy(tx: LedgerTx, document: str, order_no: str, edges, now: datetime) -> None:
    if edges:
        tx.insert(schema.genealogy, [{
            "confirmation_id": document, "order_no": order_no, "component": g.component,
            "component_lot": g.component_lot, "qty": g.qty, "uom": g.uom, "product": g.product,
            "product_lot": g.product_lot, "posted_at": now} for g in edges])


def write_activities(tx: LedgerTx, document: str, order_no: str, activities, now: datetime) -> None:
    if activities:
        tx.insert(schema.activity_postings, [{
            "confirmation_id": document, "order_no": order_no, "operation": a.operation,
            "work_center": a.work_center, "activity": a.activity, "hours": a.hours, "cost": a.cost,
            "currency": a.currency, "posted_at": now} for a in activities])


def write_deferred(tx: LedgerTx, document: str, order_no: str, items) -> None:
    if items:
        tx.insert(schema.deferred_components, [{
            "confirmation_id": document, "order_no": order_no, "bom_item": n.bom_item, "material": n.material,
            "qty": n.qty, "uom": n.uom, "rule": n.rule.value} for n in items])


def _pending_row(p: Pending) -> dict:
    return {
        "machine": p.machine, "order_no": p.order, "operation": p.operation,
        "yield_qty": p.yield_qty, "scrap_qty": p.scrap_qty,
        "start_pos": format_positions(p.start), "end_pos": format_positions(p.end),
        "first_source_time": p.first_source_time, "last_source_time": p.last_source_time,
        "opened_at": p.opened_at, "serials": "\n".join(p.serials),
    }


def _anomaly_row(a: Anomaly, units_held: Decimal, now: datetime) -> dict:
    needs_decision = a.kind in HOLDING_KINDS
    return {
        "machine": a.machine, "counter": a.counter, "kind": a.kind.value, "detail": a.detail,
        "start_pos": str(a.start) if a.start else None, "end_pos": str(a.end) if a.end else None,
        "counts_held": a.counts_held, "units_held": units_held, "source_time": a.source_time,
        "status": AnomalyStatus.OPEN if needs_decision else AnomalyStatus.RECORDED, "created_at": now, "order_no": a.order,
    }
