"""One machine as the gateway reads it: tag values in, changes out.

``MachineRuntime`` mirrors one machine's ledger state in memory (counter states, the units
pending per order operation, the running order) and applies the values its source
delivers, one at a time (``on_value``): an order number, a state, a serial or a counter
value. What a value changes is added to the ``ChangeSet`` it is given; the caller hands
that to the ledger writer. How many units a counter value makes is decided by
``gateway.domain.counting.advance``, which units become confirmations and why by
``gateway.domain.confirming.decide``; this module keeps the machine's state between
values, checks what the PLC sends, and records as anomalies what it will not guess.

A machine with ``job_counters: reset`` counts the first value of each counter after an
order change from 0 (a job reset). An order change that happened while the gateway was not
reading (the first order value after a start or takeover differs from the committed one)
is a job change it did not see: the old job's last units are unknown, and say so. Which
counters still await their first value after an order change is committed with the order
change (and emptied with each first value), so a gateway killed in between takes that value
for the new job's after its restart too, not for a PLC reset.

A machine with ``count_when`` counts only while its state tag holds one of the listed
values; units counted otherwise (or before its state is known) are held as anomalies. A
state read in the same snapshot as a counter (the same source time: one Modbus poll, one PLC
scan) is that counter's state too: which of the two changed first is not known there, so
counts read with a change into or out of production are counted, not held
(``state_snapshots``, ``first_states``).

A machine with a ``serial`` tag gets the serial of every unit it makes: each new value the
tag shows is the next unit's serial, and each good unit counted takes the next serial not
used before (``gateway.domain.serials.take_serials``). A good unit with no new serial (a
serial the PLC missed, or one read too late) or only a serial used before is held as an
anomaly (``serial_missing`` / ``serial_repeated``) for a person to accept or reject: never
received under a guessed serial, never lost. The first value read after a start is the
serial of a unit counted before it, not a new one.

Units counted while the order is unknown (no order number yet, or a number that is not
in the master data) are kept pending under that number and recorded as an anomaly, once
per order; they are confirmed as soon as the order is known. Nothing is dropped.

A repetitive machine (``order: none``) has the cost collector of the running period as its
order; the service moves it to the next one (``gateway.repetitive``, ``Moment.PERIOD_CHANGED``).

Runs: within one batch (``on_value`` given a ``runs`` list), a counter's plain increases that
follow its first one with nothing else of the machine in between are counted together: their
counter states are reached one by one as always, their units are added to the pending once
(``accumulate_run``) when something else of the machine comes, when the count rule would fire
(so a confirmation covers exactly what it would value by value), or when the batch ends
(``settle``, which the caller must call for every machine in ``runs``). The changes are the
same as value by value (``tests/test_machine_runs.py``); a machine read at 50 Hz every 100 ms
builds its pending once per response instead of five times. Not for the scrap counter (its
units can leave the yield) nor for a counter whose good units take serials.

This module never writes anything (no ledger, no writer thread, no sources, no event
loop): a machine is tested with a ``ChangeSet`` and an ``OrderDirectory`` alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import structlog

from gateway.domain.confirming import (SCRAP_COUNTER, ConfirmRule, Moment, Pending, accumulate, accumulate_run, confirm,
                                       decide, quiet_until, timer_spread, yield_before_due)
from gateway.domain.counting import Ignored, advance, advance_increase
from gateway.domain.records import Anomaly, AnomalyKind, CounterReading, CounterSpec, CounterState, Increment
from gateway.sources.base import Quality
from gateway.domain.serials import split_at, take_serials
from gateway.ledger.changes import ChangeSet
from gateway.ledger.resume import OrderDirectory, ResumeState
from gateway.mapping.model import COUNTER_WIDTH_BITS, Machine
from gateway.sources.base import ORDER_ROLE, SERIAL_ROLE, STATE_ROLE, TagValue

log = structlog.get_logger("gateway.machine")

MAX_ORDER_LENGTH = 64  # the ledger's order-number column
MAX_SERIAL_LENGTH = 64  # the ledger's lot column: a serial is a lot of one unit
SERIALS_REMEMBERED = 100_000  # per machine, to see a repeated serial (the ledger refuses older ones)
SERIALS_WAITING = 10_000  # serials read ahead of the counter, per machine


def counter_specs(name: str, machine: Machine) -> dict[str, CounterSpec]:
    """How to count each counter tag of the machine's mapping entry."""
    specs = {}
    for counter, tag in machine.counters:
        if tag is None:
            continue
        upc = tag.units_per_cycle or machine.units_per_cycle
        max_units = machine.plausibility.max_units_per_reading
        specs[counter] = CounterSpec(
            machine=name, counter=counter, width_bits=COUNTER_WIDTH_BITS[tag.type], units_per_count=upc,
            rollover_window=tag.rollover_window,
            max_counts_per_reading=None if max_units is None else max(1, max_units // upc),
            resets_with_job=machine.job_counters == "reset",
        )
    return specs


@dataclass
class MachineRuntime:
    """In-memory mirror of one machine's ledger state, and what its values do to it."""

    name: str
    config: Machine
    specs: dict[str, CounterSpec]
    rule: ConfirmRule
    order: str = ""
    states: dict[str, CounterState] = field(default_factory=dict)
    pendings: dict[tuple[str, str], Pending] = field(default_factory=dict)
    job_changed: set[str] = field(default_factory=set)
    job_change_unseen: set[str] = field(default_factory=set)  # of job_changed: changed while not reading
    order_seen: bool = False  # an order value was read since the state was resumed
    state: object = None  # the count_when tag's latest good value; None: not known
    reported_unknown_orders: set[str] = field(default_factory=set)  # unknown orders recorded as anomalies
    reported_work_centers: set[str] = field(default_factory=set)  # orders whose other work center was recorded
    reported_bad: set[str] = field(default_factory=set)  # tags in a streak of bad values, reported once
    counted_units: Decimal = Decimal(0)  # since this process started, for progress output
    counted_total: Decimal = Decimal(0)  # ever, as the ledger's counted_units has it plus what is queued
    token: int | None = None  # the lease token this instance posts under; None: not leased
    owned: bool = True  # False: another instance owns it (standby, or lost); its values are not counted
    ignored: dict[str, int] = field(default_factory=dict)  # readings not counted, by why (Ignored); logged at stop
    serial: str | None = None  # the serial tag's last value; None: not read since the start
    fresh_serials: list[str] = field(default_factory=list)  # new serials not yet given to a counted unit
    used_serials: dict[str, None] = field(default_factory=dict)  # given to a unit or held, oldest first
    # What every counter change asks of the (frozen) mapping entry, read once.
    repetitive: bool = field(init=False, repr=False, compare=False)
    _operation: str = field(init=False, repr=False, compare=False)
    _gated: bool = field(init=False, repr=False, compare=False)  # count_when
    _scrap_in_total: bool = field(init=False, repr=False, compare=False)  # a total counter holds the scrap
    _serials: bool = field(init=False, repr=False, compare=False)  # a serial tag
    # (the order directory's work centers, order) last checked by _check_work_center with nothing
    # (more) to report: a directory is replaced, never changed, when master data is reloaded.
    _work_center_checked: tuple[object, str] | None = field(default=None, init=False, repr=False, compare=False)
    # The open run (module docstring): its counter, the increments not yet counted (the first's value
    # with them), and how many more units the pending takes before the count rule fires (None: any).
    _run_role: str | None = field(default=None, init=False, repr=False, compare=False)
    _run: list[Increment] = field(default_factory=list, init=False, repr=False, compare=False)
    _run_value: TagValue | None = field(default=None, init=False, repr=False, compare=False)
    _run_room: int | None = field(default=None, init=False, repr=False, compare=False)
    # What the confirm timer found quiet (``quiet_until``): the pendings, running order, known orders and
    # rule it asked about, and until when. The directory is compared by identity: a reload replaces it,
    # and what is added to it in place (a new collector) can only make a pending of an order not known
    # yet confirmable — and with such a pending ``quiet_until`` promises nothing.
    _quiet: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cfg = self.config
        self.repetitive = cfg.repetitive
        self._operation = cfg.operation
        self._gated = cfg.count_when is not None
        self._scrap_in_total = cfg.counters.total is not None
        self._serials = cfg.serial is not None

    @classmethod
    def of(cls, name: str, cfg: Machine) -> MachineRuntime:
        """A machine of the mapping, before anything is resumed or read."""
        return cls(name, cfg, counter_specs(name, cfg),
                   ConfirmRule(cfg.confirm.every_units, cfg.confirm.every_seconds,
                               timer_spread(name, cfg.confirm.effective_jitter_seconds)))

    @property
    def operation(self) -> str:
        return self._operation

    # -- state ------------------------------------------------------------------------

    def resume(self, resumed: ResumeState) -> None:
        """Take the machine's committed state (at a start, a takeover, a reload that adds it)."""
        name, cfg = self.name, self.config
        # A repetitive machine resumes on its last collector; the service moves it on if the period ended.
        self.order = (cfg.order if isinstance(cfg.order, str) and not cfg.repetitive
                      else resumed.machine_orders.get(name, ""))
        self.states = {c: s for (m, c), s in resumed.counter_states.items() if m == name}
        self.pendings = {(p.order, p.operation): p for k, p in resumed.pendings.items() if k[0] == name}
        pending, unseen = resumed.job_resets.get(name, (frozenset(), frozenset()))
        self.job_changed, self.job_change_unseen = set(pending) & set(self.specs), set(unseen) & set(self.specs)
        self.order_seen, self.state = False, None
        self.counted_total = resumed.counted.get(name, Decimal(0))
        log.info("machine_resumed", machine=name, order=self.order or None, operation=cfg.operation,
                 counters={c: str(s.position) for c, s in self.states.items()},
                 pending_units=str(sum((p.units for p in self.pendings.values()), Decimal(0))))

    def redefined(self, cfg: Machine) -> MachineRuntime:
        """This machine under its new mapping entry, counting on from the same positions.

        Its old pending units were confirmed just before (those of an order not known yet stay
        pending, as they would at a restart)."""
        rt = MachineRuntime.of(self.name, cfg)
        rt.order = cfg.order if isinstance(cfg.order, str) and not cfg.repetitive else self.order
        rt.states, rt.pendings = self.states, self.pendings
        rt.job_changed = self.job_changed & set(rt.specs)
        rt.job_change_unseen = self.job_change_unseen & set(rt.specs)
        rt.order_seen, rt.state = self.order_seen, self.state
        rt.counted_units, rt.counted_total, rt.ignored = self.counted_units, self.counted_total, self.ignored
        rt.token, rt.owned = self.token, self.owned
        rt.serial, rt.fresh_serials, rt.used_serials = self.serial, self.fresh_serials, self.used_serials
        return rt

    def forget(self) -> None:
        """Another instance owns the machine now: its state is that one's (the ledger has it)."""
        self.token, self.owned = None, False
        self.states, self.pendings, self.job_changed, self.job_change_unseen = {}, {}, set(), set()
        self._run_role, self._run, self._run_value = None, [], None

    def newer_than_committed(self, tv: TagValue) -> bool:
        """A value read after what the last owner committed for the machine, so worth replaying.

        A value the standby read earlier (before the owner's last commit, or before its own link
        to the PLC went down) would be counted against a newer position: a counter going back
        reads as a PLC reset, an old order as an order change. The next value read is counted
        from the committed position instead.
        """
        newest = max((s.source_time for s in self.states.values()), default=None)
        if tv.role == ORDER_ROLE:
            return newest is None or tv.source_time > newest
        state = self.states.get(tv.role)
        return state is None or (tv.source_time > state.source_time
                                 and not (isinstance(tv.value, int) and tv.value < state.position.raw))

    # -- values -----------------------------------------------------------------------

    def on_value(self, tv: TagValue, changes: ChangeSet, orders: OrderDirectory, now: datetime,
                 state_read_with: frozenset = frozenset(), runs: list[MachineRuntime] | None = None) -> None:
        """Apply one value of one of the machine's tags.

        ``state_read_with``: the states before and after a state change read in the same
        snapshot as this value (``state_snapshots``). ``runs``: the batch's machines with a run
        open (module docstring); the caller settles them when the batch ends. None: every value
        is counted at once."""
        if self._run_role is not None and tv.role != self._run_role:
            self.settle(changes, orders, now)
        if tv.role == ORDER_ROLE:
            self.on_order_value(tv, changes, orders, now)
        elif tv.role == STATE_ROLE:
            self.state = tv.value if tv.quality is Quality.GOOD else None
        elif tv.role == SERIAL_ROLE:
            self.on_serial_value(tv, changes)
        else:
            self.on_counter_value(tv, changes, orders, now, state_read_with, runs)

    def on_order_value(self, tv: TagValue, changes: ChangeSet, orders: OrderDirectory, now: datetime) -> None:
        if tv.quality is not Quality.GOOD:
            return
        order = str(tv.value).strip() if isinstance(tv.value, str | int) and not isinstance(tv.value, bool) else None
        if order is None or len(order) > MAX_ORDER_LENGTH or not order.isprintable():
            self._bad_value(tv, changes, f"order tag delivered {tv.value!r:.80}, expected an order number of "
                            f"at most {MAX_ORDER_LENGTH} printable characters; the machine keeps order "
                            f"{self.order!r} — check the order tag in the PLC and the mapping")
            return
        self.reported_bad.discard(tv.role)
        # The first order read since the last committed state: a different one changed
        # while nobody was reading, so the old job's last counts were never read.
        unseen, self.order_seen = not self.order_seen and bool(self.order), True
        if order == self.order:
            return
        log.info("order_changed", machine=self.name, order=order or None, previous=self.order or None,
                 while_not_reading=unseen)
        # From no order at all (a first start) the counters' baselines were read on this job
        # already: only a change from one known order to another is a job change.
        changed = set(self.specs) if self.order else set()
        self.order = order
        self.confirm_due(changes, orders, now, Moment.ORDER_CHANGED)  # the previous order's units
        self.job_changed = changed
        self.job_change_unseen = changed if unseen else set()
        changes.machine_orders[self.name] = order
        changes.job_resets[self.name] = (frozenset(self.job_changed), frozenset(self.job_change_unseen))

    def on_serial_value(self, tv: TagValue, changes: ChangeSet) -> None:
        if tv.quality is not Quality.GOOD:
            return
        value = tv.value
        serial = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else None
        if serial is None or len(serial) > MAX_SERIAL_LENGTH or not serial.isprintable():
            self._bad_value(tv, changes, f"serial tag delivered {value!r:.80}, expected a serial of at most "
                            f"{MAX_SERIAL_LENGTH} printable characters; the unit it was written for gets none "
                            "and is held — check the serial tag in the PLC and the mapping")
            return
        self.reported_bad.discard(tv.role)
        previous, self.serial = self.serial, serial
        if previous is None or serial == previous or not serial:
            return  # the serial of a unit counted before this start; the same value read again; a cleared tag
        self.fresh_serials.append(serial)
        del self.fresh_serials[:-SERIALS_WAITING]

    def on_counter_value(self, tv: TagValue, changes: ChangeSet, orders: OrderDirectory, now: datetime,
                         state_read_with: frozenset = frozenset(), runs: list[MachineRuntime] | None = None) -> None:
        role = tv.role
        spec = self.specs.get(role)
        if spec is None:
            return
        value, quality = tv.value, tv.quality
        good = quality is Quality.GOOD
        if good and type(value) is not int and (isinstance(value, bool) or not isinstance(value, int)):
            self.settle(changes, orders, now)
            self._bad_value(tv, changes, f"counter tag delivered {type(value).__name__} {value!r:.80}, "
                            "expected an unsigned integer; reading ignored — check the node id and type in the mapping")
            return
        not_producing = self._not_producing(state_read_with) if self._gated else None
        state = self.states.get(role)
        job_changed = role in self.job_changed
        if good and not job_changed:
            # The usual change: a good counter gone up, counted. What ``advance`` would say, without its reading.
            increased = advance_increase(state, self.name, role, value, tv.source_time, spec, not_producing)
            if increased is not None:
                new_state, increment = increased
                self.reported_bad.discard(role)
                self.states[role] = new_state
                changes.counter_states.append(new_state)
                if role == self._run_role:
                    self._add_to_run(tv, increment, changes, orders, now)
                    return
                self._counted(tv, increment, role == SCRAP_COUNTER and self._scrap_in_total, changes, orders, now)
                if runs is not None and role != SCRAP_COUNTER and not (self._serials and role == "good"):
                    self._open_run(role, runs, orders)
                return
        self.settle(changes, orders, now)
        reading = CounterReading(self.name, role, value if good else None, tv.source_time, quality, tv.received_at)
        step = advance(state, reading, spec, job_changed=job_changed, job_change_unseen=role in self.job_change_unseen,
                       not_producing=not_producing)
        if step.ignored is not None and step.ignored.for_quality:
            self.ignored[step.ignored.value] = self.ignored.get(step.ignored.value, 0) + 1
            return
        if tv.role in self.job_changed:  # its first value after the order change is taken: committed with it
            self.job_changed.discard(tv.role)
            self.job_change_unseen.discard(tv.role)
            changes.job_resets[self.name] = (frozenset(self.job_changed), frozenset(self.job_change_unseen))
        if step.ignored is not Ignored.OUT_OF_RANGE:
            self.reported_bad.discard(tv.role)
        if step.state is not None and step.state != self.states.get(tv.role):
            self.states[tv.role] = step.state
            changes.counter_states.append(step.state)
        # Scrap that is part of the machine's total: its units are counted (or held) with the
        # total's; counting the scrap moves them from yield to scrap, holding it holds none.
        in_total = tv.role == SCRAP_COUNTER and self._scrap_in_total
        if step.anomaly is not None and step.anomaly.kind is AnomalyKind.BAD_VALUE:
            self._bad_value(tv, changes, step.anomaly.detail)
        elif step.anomaly is not None:
            held = Decimal(0) if in_total else step.anomaly.units_held
            self._anomaly(step.anomaly, changes, held)
            if held:  # counted, and held for a decision: accepted → confirmed, rejected → written off
                self.counted_total += held
                changes.counted[self.name] = self.counted_total
        if step.increment is not None and step.increment.counts > 0:
            self._counted(tv, step.increment, in_total, changes, orders, now)

    def _counted(self, tv: TagValue, increment: Increment, in_total: bool, changes: ChangeSet,
                 orders: OrderDirectory, now: datetime) -> None:
        """Units counted: pending for the running order, confirmed when ``decide`` says so."""
        units = increment.units
        if not in_total:
            self.counted_units += units
        serials: tuple[str, ...] = ()
        if self._serials and tv.role == "good":
            increment, serials = self._with_serials(tv, increment, changes)
            if not increment.counts:
                return
            units = increment.units
        if not in_total:
            self.counted_total += units
            changes.counted[self.name] = self.counted_total
        order, operation = self.order, self._operation
        key = (order, operation)
        self._pend(accumulate(self.pendings.get(key), increment, order=order, operation=operation,
                              now=now, scrap_in_total=self._scrap_in_total, serials=serials), tv, changes, orders, now)

    def _pend(self, pending: Pending, tv: TagValue, changes: ChangeSet, orders: OrderDirectory, now: datetime) -> None:
        """The running order's pending with units just added: kept, checked, confirmed if the count is reached."""
        self.pendings[(pending.order, pending.operation)] = pending
        changes.pendings[pending.key] = pending
        if pending.order not in orders.uoms:
            self._unknown_order(tv, changes, orders)
        else:
            self._check_work_center(tv, changes, orders)
            # A count threshold confirms here; an expired timer is left to the tick, which
            # takes due timers in capped turns (the service's confirm timer).
            self.confirm_due(changes, orders, now, Moment.COUNTED)

    def _open_run(self, role: str, runs: list[MachineRuntime], orders: OrderDirectory) -> None:
        """The counter's next plain increases in this batch join a run (module docstring)."""
        self._run_role = role
        # Only the running order's count rule fires while counting (``decide`` at COUNTED), and only
        # for an order known to the master data.
        self._run_room = (yield_before_due(self.pendings.get((self.order, self._operation)), self.rule.every_units)
                          if self.order in orders.uoms else None)
        runs.append(self)

    def _add_to_run(self, tv: TagValue, increment: Increment, changes: ChangeSet, orders: OrderDirectory,
                    now: datetime) -> None:
        run = self._run
        if not run:
            self._run_value = tv
        run.append(increment)
        room = self._run_room
        if room is not None:
            room -= increment.counts * increment.units_per_count
            self._run_room = room
            if room < 0:  # the count rule fires with this one: counted now, as value by value
                self._count_run(changes, orders, now)
                self._run_room = yield_before_due(self.pendings.get((self.order, self._operation)),
                                                  self.rule.every_units)

    def settle(self, changes: ChangeSet, orders: OrderDirectory, now: datetime) -> None:
        """Count the open run's increments (if any) and close it: at the end of a batch, and before
        anything else of the machine is applied."""
        self._run_role = None
        if self._run:
            self._count_run(changes, orders, now)

    def _count_run(self, changes: ChangeSet, orders: OrderDirectory, now: datetime) -> None:
        """``_counted`` of the run's increments, the pending built once (``accumulate_run``)."""
        run, tv = self._run, self._run_value
        self._run, self._run_value = [], None
        units = sum(i.counts * i.units_per_count for i in run)
        self.counted_units += units
        self.counted_total += units
        changes.counted[self.name] = self.counted_total
        order, operation = self.order, self._operation
        self._pend(accumulate_run(self.pendings.get((order, operation)), run, order=order, operation=operation,
                                  now=now), tv, changes, orders, now)

    def _with_serials(self, tv: TagValue, increment: Increment,
                      changes: ChangeSet) -> tuple[Increment, tuple[str, ...]]:
        """The good units that have a serial (an increment and their serials); the rest are held."""
        took = take_serials(self.fresh_serials, int(increment.units), self.used_serials)
        del self.fresh_serials[:len(took.serials) + len(took.repeated)]
        for serial in took.serials + took.repeated:
            self.used_serials[serial] = None
        while len(self.used_serials) > SERIALS_REMEMBERED:
            del self.used_serials[next(iter(self.used_serials))]
        if not took.held:
            return increment, took.serials
        spec = self.specs[tv.role]
        with_serial, held_from = split_at(increment, len(took.serials), spec.modulus)
        kind = AnomalyKind.SERIAL_REPEATED if took.repeated else AnomalyKind.SERIAL_MISSING
        why = []
        if took.missing:
            why.append(f"{took.missing} with no new serial written for it")
        if took.repeated:
            why.append(f"{len(took.repeated)} whose serial was used before ({', '.join(took.repeated[:5])})")
        detail = (f"{took.held} good unit(s) of order {self.order or '(none)'} without a serial of their own: "
                  f"{'; '.join(why)}; held, not received — accept to post them without serials "
                  "(the material's serial pattern numbers them), or reject")
        held = Anomaly(self.name, tv.role, kind, detail, increment.source_time, held_from, increment.end,
                       counts_held=took.held)
        self._anomaly(held, changes, held.units_held)
        self.counted_total += held.units_held
        changes.counted[self.name] = self.counted_total
        return with_serial, took.serials

    def _not_producing(self, read_with: frozenset = frozenset()) -> str | None:
        """Why the machine is not producing now (``count_when``), or None while it is.

        ``read_with``: the states before and after a change read in the same snapshot as the
        counter (see the module docstring)."""
        gate = self.config.count_when
        if gate is None or self.state in gate.states or any(s in gate.states for s in read_with):
            return None
        allowed = ", ".join(map(str, gate.states))
        if self.state is None:
            return f"its state is not known (count_when: no good value read yet), counting only in {allowed}"
        return f"state {self.state!r}, counting only in {allowed}"

    # -- what it will not guess ---------------------------------------------------------

    def _bad_value(self, tv: TagValue, changes: ChangeSet, detail: str) -> None:
        """Record the first bad value of a streak; the rest of the streak only counts."""
        self.ignored[Ignored.BAD_VALUE.value] = self.ignored.get(Ignored.BAD_VALUE.value, 0) + 1
        if tv.role in self.reported_bad:
            return
        self.reported_bad.add(tv.role)
        self._anomaly(Anomaly(self.name, tv.role, AnomalyKind.BAD_VALUE, detail, tv.source_time),
                      changes, Decimal(0))

    def _unknown_order(self, tv: TagValue, changes: ChangeSet, orders: OrderDirectory) -> None:
        if self.order in self.reported_unknown_orders:
            return
        self.reported_unknown_orders.add(self.order)
        if self.config.repetitive and self.order in orders.closed:
            detail = (f"cost collector {self.order} is closed (its period was closed while the machine still "
                      "counted for it); counted units are kept pending, not posted — assign them to an open "
                      "collector (`gateway anomalies assign ID --order COLLECTOR`)")
        elif self.config.repetitive:
            detail = (f"product {self.config.product} has no production version"
                      + (f" {self.config.version}" if self.config.version else " (or several: say which, `version:`)")
                      + f" in the ledger; counted units are kept pending under {self.order} and confirmed once it "
                      "is loaded (`gateway masterdata load`)")
        elif self.order in orders.closed:
            detail = (f"order {self.order!r} is completed; counted units are kept pending, not posted — "
                      "put the machine on an open order")
        else:
            what = (f"order {self.order!r} is not in the master data" if self.order
                    else "no order number on the machine")
            detail = (f"{what}; counted units are kept pending and confirmed once the order is loaded "
                      "(`gateway masterdata load`)")
        self._anomaly(Anomaly(self.name, None, AnomalyKind.UNKNOWN_ORDER, detail, tv.source_time,
                              order=self.order), changes, Decimal(0))

    def _check_work_center(self, tv: TagValue, changes: ChangeSet, orders: OrderDirectory) -> None:
        """Activities are costed at the routing's work center; say so once if it is not the machine's."""
        work_centers, checked = orders.work_centers, self._work_center_checked
        if checked is not None and checked[0] is work_centers and checked[1] == self.order:
            return
        planned = work_centers.get((self.order, self._operation))
        if planned in (None, self.config.work_center) or self.order in self.reported_work_centers:
            self._work_center_checked = (work_centers, self.order)
            return
        self.reported_work_centers.add(self.order)
        self._anomaly(Anomaly(
            self.name, None, AnomalyKind.WORK_CENTER_MISMATCH,
            f"operation {self.operation} of order {self.order} runs on {planned}, but this machine is on "
            f"{self.config.work_center}; units are confirmed and activities costed at {planned} — check the "
            "machine's operation in the mapping or the order's routing", tv.source_time), changes, Decimal(0))

    def _anomaly(self, anomaly: Anomaly, changes: ChangeSet, units_held: Decimal) -> None:
        log.warning("anomaly", machine=self.name, order=self.order or None, operation=self.operation,
                    counter=anomaly.counter, kind=anomaly.kind.value, detail=anomaly.detail,
                    units_held=str(units_held))
        changes.anomalies.append((anomaly, units_held))

    # -- confirming -------------------------------------------------------------------

    def confirm_due(self, changes: ChangeSet, orders: OrderDirectory, now: datetime, moment: Moment) -> int:
        """Confirm what ``decide`` says is due at ``moment`` (orders not known wait); how many."""
        if self._run_role is not None:  # the run's units first: they were counted before this moment
            self.settle(changes, orders, now)
        elif moment is Moment.TICK and (quiet := self._quiet) is not None and now < quiet[4] and \
                quiet[1] == self.order and quiet[2] is orders.uoms and quiet[3] is self.rule and \
                quiet[0] == tuple(self.pendings.values()):
            return 0  # nothing changed but the clock, and no timer has come: ``decide`` would find nothing
        decided = decide(self.pendings, self.order, orders.uoms, self.rule, now, moment)
        if moment is Moment.TICK and not decided:
            until = quiet_until(self.pendings, self.order, orders.uoms, self.rule)
            self._quiet = None if until is None else (tuple(self.pendings.values()), self.order, orders.uoms,
                                                      self.rule, until)
        for key, trigger in decided:
            pending = self.pendings.pop(key)
            changes.confirmations.append(confirm(pending, trigger, orders.uoms[pending.order]))
            changes.pendings[pending.key] = None
        return len(decided)


def first_states(machines: dict[str, MachineRuntime], values: Iterable[TagValue]) -> None:
    """A machine whose state is not known yet takes it from this batch, wherever in it.

    The first batch after a (re)connect has every tag's current value, the state tag's
    often after the counters (it changed last); the counts made meanwhile are judged by
    the state the machine is in now, the only one known, rather than held for want of it.
    """
    for tv in values:
        if tv.role != STATE_ROLE or tv.quality is not Quality.GOOD:
            continue
        rt = machines.get(tv.machine)
        if rt is not None and rt.state is None:
            rt.state = tv.value


def state_snapshots(machines: dict[str, MachineRuntime],
                    values: Iterable[TagValue]) -> dict[tuple[str, datetime], frozenset]:
    """Per machine and source time of a state change in ``values``: the state before it and after."""
    running: dict[str, object] = {}
    out: dict[tuple[str, datetime], set] = {}
    for tv in values:
        if tv.role != STATE_ROLE or tv.quality is not Quality.GOOD:
            continue
        rt = machines.get(tv.machine)
        if rt is not None:
            out.setdefault((tv.machine, tv.source_time), {running.get(tv.machine, rt.state)}).add(tv.value)
            running[tv.machine] = tv.value
    return {key: frozenset(states) for key, states in out.items()}
