"""Confirming: group counted units into confirmations per (machine, order, operation).

A ``Pending`` collects the units counted for one order operation on one machine since
its last confirmation, together with the range of counter positions they came from.
``due`` says whether a rule fires (every N units, every T seconds with units pending —
plus the machine's own ``spread_seconds``, see ``timer_spread``); ``decide`` says which of
a machine's pendings to confirm at a given moment and why (a ``Trigger``: a rule, an order
change, shutdown, reload), and which wait (an order not known yet). ``confirm`` turns a
Pending into a ``Confirmation`` whose id is the time its first unit was made followed by a
hash of the machine and the position ranges, so the same slice of production always gets
the same id and a replay after a crash can be recognised (``confirmation_id``).

Units of the ``scrap`` counter are scrap; units of any other counter are yield. On a
machine whose parts counter is a ``total`` (good and bad), scrap is part of the total:
its units move from yield to scrap, so yield is total − scrap. Such a pending whose scrap
was read before its total (yield below zero) is not due until the total is read.
Pure: the wall clock is passed in as ``now``; nothing here reads it.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from gateway.domain.records import Confirmation, Increment, Position, Trigger, quick_init, whole_units

SCRAP_COUNTER = "scrap"
TOTAL_COUNTER = "total"  # every part, good and scrap

Positions = tuple[tuple[str, Position], ...]
PendingKey = tuple[str, str]  # (order, operation): a machine's pendings are keyed so


@dataclass(frozen=True, slots=True)
class ConfirmRule:
    every_units: int | None = None
    every_seconds: float | None = None
    spread_seconds: float = 0.0  # added to every_seconds for this machine (timer_spread)


def timer_spread(machine: str, jitter_seconds: float) -> float:
    """This machine's fixed share of ``jitter_seconds``, in [0, jitter_seconds).

    Machines whose timers started together (a gateway start, a shift start) would
    otherwise all confirm in the same second, every time, and the ledger would get their
    confirmations in one burst (Telegraf's ``flush_jitter`` exists for the same reason).
    Derived from the name, not drawn at random, so a machine's timer is the same on
    every run and the core stays deterministic.
    """
    digest = hashlib.blake2b(machine.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * jitter_seconds


@quick_init
@dataclass(frozen=True, slots=True)
class Pending:
    """Units counted for one order operation and not yet confirmed."""

    machine: str
    order: str
    operation: str
    yield_qty: Decimal
    scrap_qty: Decimal
    start: Positions  # per counter: position before the first counted increment
    end: Positions  # per counter: position after the last counted increment
    first_source_time: datetime
    last_source_time: datetime
    opened_at: datetime  # when the first units arrived (wall clock, for every_seconds)
    serials: tuple[str, ...] = ()  # serials read from the machine's serial tag for the yield, in order

    @property
    def units(self) -> Decimal:
        return self.yield_qty + self.scrap_qty

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.machine, self.order, self.operation)


def accumulate(
    pending: Pending | None,
    increment: Increment,
    *,
    order: str,
    operation: str,
    now: datetime,
    scrap_in_total: bool = False,
    serials: tuple[str, ...] = (),
) -> Pending:
    """Add one increment's units (and the serials of its good units) to the pending of
    (machine, order, operation).

    ``scrap_in_total``: the machine counts a ``total``, which holds the scrap too.

    It runs for every counter change the gateway reads, so it builds the new ``Pending``
    directly (``dataclasses.replace`` costs several times more)."""
    units = increment.units
    counter = increment.counter
    if counter == SCRAP_COUNTER:
        yield_units, scrap_units = (-units if scrap_in_total else _ZERO), units
    else:
        yield_units, scrap_units = units, _ZERO
    at = increment.source_time
    if pending is None:
        return Pending(increment.machine, order, operation, yield_units, scrap_units, ((counter, increment.start),),
                       ((counter, increment.end),), at, at, now, serials)
    if pending.machine != increment.machine or pending.order != order or pending.operation != operation:
        raise ValueError(f"increment of {increment.machine}/{order}/{operation} added to {pending.key}")
    first, last = pending.first_source_time, pending.last_source_time
    return Pending(
        pending.machine, pending.order, pending.operation,
        pending.yield_qty + yield_units,
        pending.scrap_qty + scrap_units,
        _keep_first(pending.start, counter, increment.start),
        _set(pending.end, counter, increment.end),
        at if at < first else first,  # min() and max(), without their call
        at if at > last else last,
        pending.opened_at,
        pending.serials + serials,
    )


def accumulate_run(
    pending: Pending | None,
    run: Sequence[Increment],
    *,
    order: str,
    operation: str,
    now: datetime,
) -> Pending:
    """``accumulate`` of each increment of ``run`` in turn, the ``Pending`` built once.

    ``run``: increments of one counter that is not the scrap counter (its units are yield),
    one after the other, with no serials. A machine at 50 Hz read every 100 ms has five
    of them per response: counted as one, the pending is built once instead of five times
    (``MachineRuntime``, ``tests/test_machine_runs.py`` proves it the same as one by one)."""
    first, last = run[0], run[-1]
    counter = first.counter
    if counter == SCRAP_COUNTER:
        raise ValueError("a run of scrap increments is accumulated one by one (its units may leave the yield)")
    units = 0
    earliest = latest = first.source_time
    for increment in run:
        units += increment.counts * increment.units_per_count
        at = increment.source_time
        if at < earliest:
            earliest = at
        elif at > latest:
            latest = at
    units = whole_units(units)
    if pending is None:
        return Pending(first.machine, order, operation, units, _ZERO, ((counter, first.start),),
                       ((counter, last.end),), earliest, latest, now)
    if pending.machine != first.machine or pending.order != order or pending.operation != operation:
        raise ValueError(f"increments of {first.machine}/{order}/{operation} added to {pending.key}")
    return Pending(
        pending.machine, pending.order, pending.operation,
        pending.yield_qty + units,
        pending.scrap_qty,
        _keep_first(pending.start, counter, first.start),
        _set(pending.end, counter, last.end),
        earliest if earliest < pending.first_source_time else pending.first_source_time,
        latest if latest > pending.last_source_time else pending.last_source_time,
        pending.opened_at,
        pending.serials,
    )


def yield_before_due(pending: Pending | None, every_units: int | None) -> int | None:
    """How many more units of yield ``pending`` takes before the count rule fires (``_count_reached``
    then holds for it); None: the count rule never fires (there is none)."""
    if every_units is None:
        return None
    units, yield_qty = (pending.yield_qty + pending.scrap_qty, pending.yield_qty) if pending else (_ZERO, _ZERO)
    # The rule fires at the smallest whole r with units + r >= every_units, units + r > 0, yield + r >= 0.
    fires_at = max(math.ceil(every_units - units), math.ceil(-yield_qty), math.floor(-units) + 1)
    return max(fires_at - 1, 0)


def due(pending: Pending | None, rule: ConfirmRule, now: datetime) -> Trigger | None:
    """The rule that fires for this pending now, if any."""
    if pending is None:
        return None
    units = pending.yield_qty + pending.scrap_qty  # asked for every reading and every machine each tick
    if units <= 0 or pending.yield_qty < 0:
        return None
    if _count_reached(pending, rule.every_units):
        return Trigger.EVERY_UNITS
    if (rule.every_seconds is not None
            and (now - pending.opened_at).total_seconds() >= rule.every_seconds + rule.spread_seconds):
        return Trigger.EVERY_SECONDS
    return None


class Moment(enum.Enum):
    """When the confirmations of one machine are decided (see ``decide``)."""

    COUNTED = "counted"  # units were just counted for the running order
    TICK = "tick"  # the confirm timer's round
    ORDER_CHANGED = "order_changed"  # the machine's order has just changed to the running order
    PERIOD_CHANGED = "period_changed"  # a repetitive machine has just moved to the running period's collector
    SHUTDOWN = "shutdown"  # the gateway stops
    RELOAD = "reload"  # the machine's mapping entry is removed or changed


_CLOSING = {Moment.SHUTDOWN: Trigger.SHUTDOWN, Moment.RELOAD: Trigger.RELOAD}


def decide(
    pendings: Mapping[PendingKey, Pending],
    current_order: str,
    known_orders: Container[str],
    rule: ConfirmRule,
    now: datetime,
    moment: Moment = Moment.TICK,
) -> list[tuple[PendingKey, Trigger]]:
    """Which of one machine's pendings (keyed ``(order, operation)``) to confirm now, and why.

    ==============  ===========================================  =========================
    moment          pending                                      outcome
    ==============  ===========================================  =========================
    any             of an order not known (not in the master     waits: it cannot be
                    data, completed, or no order number)         confirmed against nothing
    COUNTED         of the running order, count threshold        ``every_units``
                    reached
    COUNTED         timer expired                                waits for the tick (which
                                                                 takes due timers in turns)
    COUNTED         of another order                             waits for the tick
    TICK            of another order than the running one        ``order_change``
    TICK            of the running order: the rule that fires    ``every_units`` /
                    (``due``)                                    ``every_seconds``
    TICK            of the running order, no rule fires          waits
    ORDER_CHANGED   of another order than the (new) running one  ``order_change``, whatever
                                                                 the rules say
    ORDER_CHANGED   of the running order                         waits
    PERIOD_CHANGED  of another order (last period's collector)   ``period_change``, whatever
                                                                 the rules say
    PERIOD_CHANGED  of the running order (this period's)         waits
    SHUTDOWN        any                                          ``shutdown``
    RELOAD          any                                          ``reload``
    ==============  ===========================================  =========================

    A pending of no order number (``""``) is never known: it waits until a person assigns it.
    The result is in the order of ``pendings``.
    """
    if moment is Moment.COUNTED:  # after every counter change: only the count threshold, running order
        return _counted_due(pendings, current_order, known_orders, rule.every_units)
    closing = _CLOSING.get(moment)
    out: list[tuple[PendingKey, Trigger]] = []
    for key, pending in pendings.items():
        if pending.order not in known_orders:
            continue
        if closing is not None:
            why: Trigger | None = closing
        elif pending.order != current_order:
            why = Trigger.PERIOD_CHANGE if moment is Moment.PERIOD_CHANGED else Trigger.ORDER_CHANGE
        elif moment in (Moment.ORDER_CHANGED, Moment.PERIOD_CHANGED):
            why = None
        else:
            why = due(pending, rule, now)
        if why is not None:
            out.append((key, why))
    return out


# How much earlier than the exact moment ``quiet_until`` ends a timer's quiet: ``due`` compares a float of
# seconds, a ``timedelta`` rounds to microseconds; a millisecond early is a decide that finds nothing, never
# a late confirmation.
_QUIET_MARGIN = timedelta(milliseconds=1)
NEVER = datetime.max.replace(tzinfo=UTC)


def quiet_until(
    pendings: Mapping[PendingKey, Pending],
    current_order: str,
    known_orders: Container[str],
    rule: ConfirmRule,
) -> datetime | None:
    """Until when ``decide`` at ``Moment.TICK`` finds nothing to confirm among ``pendings``, as long as they,
    the running order and the known orders stay as they are (only the clock moving): ``NEVER`` when only
    such a change can make one due, None when one may be due already or a pending's order is not known
    (it may become known at any moment: no promise).

    The confirm timer asks every machine every tick; a machine whose next timer is seconds away need not
    be asked again until then (thousands of machines at 1 Hz were a tenth of the gateway's CPU).
    """
    until = NEVER
    for pending in pendings.values():
        if pending.order not in known_orders or pending.order != current_order:
            return None
        if pending.yield_qty + pending.scrap_qty <= 0 or pending.yield_qty < 0:
            continue  # nothing to confirm until more units come
        if _count_reached(pending, rule.every_units):
            return None
        if rule.every_seconds is not None:
            try:
                fires = pending.opened_at + timedelta(seconds=rule.every_seconds + rule.spread_seconds) - _QUIET_MARGIN
            except OverflowError:  # a timer beyond the calendar never fires
                continue
            until = min(until, fires)
    return until


def _counted_due(pendings: Mapping[PendingKey, Pending], current_order: str, known_orders: Container[str],
                 every_units: int | None) -> list[tuple[PendingKey, Trigger]]:
    """``decide`` at ``Moment.COUNTED``: what ``due`` gives as ``EVERY_UNITS`` for the running order."""
    if every_units is None:
        return []
    return [(key, Trigger.EVERY_UNITS) for key, pending in pendings.items()
            if pending.order == current_order and pending.order in known_orders
            and _count_reached(pending, every_units)]


def _count_reached(pending: Pending, every_units: int | None) -> bool:
    """The count rule: ``every_units`` reached by a pending with units to confirm (none below zero)."""
    if every_units is None:
        return False
    units = pending.yield_qty + pending.scrap_qty
    return units >= every_units and units > 0 and pending.yield_qty >= 0


def confirm(pending: Pending, trigger: Trigger, uom: str) -> Confirmation:
    """The confirmation of everything pending; its id depends only on what it covers (its counter
    positions, and when its first unit was made)."""
    return Confirmation(
        id=confirmation_id(pending.machine, pending.start, pending.end, pending.first_source_time),
        machine=pending.machine,
        order=pending.order,
        operation=pending.operation,
        yield_qty=pending.yield_qty,
        scrap_qty=pending.scrap_qty,
        uom=uom,
        start=pending.start,
        end=pending.end,
        first_source_time=pending.first_source_time,
        last_source_time=pending.last_source_time,
        trigger=trigger,
        serials=pending.serials,
    )


def confirmation_id(machine: str, start: Positions, end: Positions, first_source_time: datetime) -> str:
    """Deterministic id: ``C-``, the time the first unit was made (milliseconds since 1970, 11 hex
    digits), then a digest of the machine and its counter position ranges.

    The ranges never overlap, so neither do ids. The time comes first so that ids sort roughly
    in the order production happened: every index that holds them (the confirmations', the
    postings', the outbox keys) then grows at its end instead of at a random place, and a
    transaction of 500 confirmations touches a few pages of each instead of 500: with 50 000
    confirmations in the ledger its COMMIT took 4–13 ms instead of 21–35 ms and the transaction
    10–35 % less time (``bench/writer_tx.py --ids``, bench/RESULTS.md). A clock before 1970
    counts as 1970.
    """
    ranges = ",".join(f"{c}={s}..{e}" for (c, s), (_, e) in zip(start, end, strict=True))
    digest = hashlib.sha256(f"{machine}|{ranges}".encode()).hexdigest()[:20]
    ms = min(max((first_source_time - _EPOCH) // _MS, 0), _MAX_MS)
    return f"C-{ms:011x}{digest}"


_EPOCH, _MS, _MAX_MS = datetime(1970, 1, 1, tzinfo=UTC), timedelta(milliseconds=1), 16**11 - 1


def format_positions(positions: Positions) -> str:
    """Text form used by the ledger: ``good=0:120,scrap=1:4``."""
    # Position's own text (``epoch:raw``) written out: this runs for every pending the writer stores.
    return ",".join([f"{counter}={pos.epoch}:{pos.raw}" for counter, pos in positions])


def parse_positions(text: str) -> Positions:
    if not text:
        return ()
    out = []
    for part in text.split(","):
        counter, pos = part.split("=")
        epoch, raw = pos.split(":")
        out.append((counter, Position(int(epoch), int(raw))))
    return tuple(out)


_ZERO = Decimal(0)


def _keep_first(positions: Positions, counter: str, pos: Position) -> Positions:
    for c, _ in positions:
        if c == counter:
            return positions
    return _set(positions, counter, pos)


def _set(positions: Positions, counter: str, pos: Position) -> Positions:
    """``positions`` with ``counter`` at ``pos``, sorted by counter."""
    # The usual shapes (one counter, or good and scrap already sorted) without building a dict.
    if len(positions) == 1 and positions[0][0] == counter:
        return ((counter, pos),)
    if len(positions) == 2 and positions[0][0] < positions[1][0]:
        if positions[0][0] == counter:
            return ((counter, pos), positions[1])
        if positions[1][0] == counter:
            return (positions[0], (counter, pos))
    kept = {c: p for c, p in positions}
    kept[counter] = pos
    return tuple(sorted(kept.items()))
