"""Counting: turn successive raw counter values into increments, exactly once.

``advance(state, reading, spec)`` is the only entry point. It decides, for one reading
of one counter, how many counts happened since the last accepted reading, and returns
the new counter state. An increment carries the counter's units per cycle (and so its
``units``), as does an anomaly that holds counts (``units_held``): how many units a reading
makes is decided here, nowhere else. Rules:

============================================  =================================================
case                                          outcome
============================================  =================================================
bad / uncertain quality, no value             ignored, state unchanged
value outside 0 .. 2^W-1                      BAD_VALUE anomaly, state unchanged
first reading ever                            baseline only: 0 counts (never the lifetime total)
same value again                              no-op (idempotent)
value > last                                  counts = value − last
first value after a job change, on a counter  job reset: counts = value (from 0), no anomaly
that restarts with every job (resets_with_job)
value < last with a job/order change          job reset: counts = value, no anomaly
value < last, wrapped delta ≤ rollover window rollover: counts = 2^W − last + value
value < last otherwise                        reset: counts = value, RESET anomaly (the counts
                                              between the last reading and the reset are unknown)
a job reset the gateway did not see happen    as a job reset, plus a JOB_CHANGE_UNSEEN anomaly
(``job_change_unseen``: the job changed       holding nothing: the old job's counts after the
while it was not reading)                     last reading are unknown, never guessed
counts > plausibility limit                   IMPLAUSIBLE anomaly holds the counts; not posted
counts while the machine is not producing     NOT_PRODUCING anomaly holds the counts; not posted,
(``not_producing``: outside ``count_when``)   not lost (a person accepts or rejects them)
============================================  =================================================

A job reset is not a PLC reset. The units counted before the job change belong to the
old job (they were counted from its readings); those after the reset to the new one.
What a job reset can leave unknown is the old job's tail — units made after the last
value the gateway read and before the counter restarted. While the gateway reads a
subscription that delivers every change, that tail is empty; across an outage it is not
observable, so it is recorded as such with the last position known, and nothing is
invented for it.

Every accepted change of raw value moves the position; a decrease also opens a new
epoch, so positions are strictly increasing and a range of them names production once.
Timestamps never decide: a PLC's clock can step back after a restart, and a rule that
ignored "older" values would silently drop the counts made since. The source delivers
each tag's values in the order the server produced them.
Pure: no I/O, no clock — the caller passes everything in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from gateway.domain.records import (
    Anomaly,
    AnomalyKind,
    CounterReading,
    CounterSpec,
    CounterState,
    Increment,
    Position,
)


class Ignored(enum.StrEnum):
    """Why a reading changed nothing (counted per machine, logged at stop); the value is what is logged."""

    BAD_QUALITY = "quality_bad"
    UNCERTAIN_QUALITY = "quality_uncertain"
    NO_VALUE = "quality_good"  # a good status with no usable number
    OUT_OF_RANGE = "out_of_range"  # outside the counter's width: a BAD_VALUE anomaly
    BASELINE = "baseline"  # the first reading ever: where counting starts
    UNCHANGED = "unchanged"  # the same value again
    BAD_VALUE = "bad_value"  # not a number at all (judged by the shell before counting)

    @property
    def for_quality(self) -> bool:
        """Not judged at all: the source had no good value."""
        return self in _QUALITY


_QUALITY = frozenset({Ignored.BAD_QUALITY, Ignored.UNCERTAIN_QUALITY, Ignored.NO_VALUE})
_BY_QUALITY = {"bad": Ignored.BAD_QUALITY, "uncertain": Ignored.UNCERTAIN_QUALITY, "good": Ignored.NO_VALUE}


@dataclass(frozen=True, slots=True)
class Step:
    """Outcome of one reading. ``state`` is None only before the first good reading."""

    state: CounterState | None
    increment: Increment | None = None
    anomaly: Anomaly | None = None
    ignored: Ignored | None = None  # why the reading changed nothing, for metrics


def advance(
    state: CounterState | None,
    reading: CounterReading,
    spec: CounterSpec,
    *,
    job_changed: bool = False,
    job_change_unseen: bool = False,
    not_producing: str | None = None,
) -> Step:
    """Apply one reading to a counter's state (see the module table).

    ``job_changed``: the machine's job (order) changed since this counter's last reading;
    ``job_change_unseen``: and it changed while the gateway was not reading, so the old
    job's last counts may never have been read. ``not_producing``: why the machine is not
    producing now (its state is outside ``count_when``); None while it produces.
    """
    if reading.quality != "good" or reading.value is None:
        return Step(state, ignored=_BY_QUALITY[reading.quality])
    value = reading.value
    if not 0 <= value < spec.modulus:
        return Step(state, anomaly=_bad_value(reading, spec, state), ignored=Ignored.OUT_OF_RANGE)
    if state is None:
        return Step(_state(reading, Position(0, value)), ignored=Ignored.BASELINE)

    last = state.position
    job_reset = job_changed and (spec.resets_with_job or value < last.raw)
    if value == last.raw and not job_reset:
        return Step(state, ignored=Ignored.UNCHANGED)
    if value > last.raw and not job_reset:
        return _counted(state, reading, spec, value - last.raw, Position(last.epoch, value), not_producing)
    new = Position(last.epoch + 1, value)
    if job_reset:
        unseen = _job_change_unseen(state, reading, value) if job_change_unseen else None
        return _counted(state, reading, spec, value, new, not_producing, note=unseen)
    wrapped = spec.modulus - last.raw + value
    if wrapped <= spec.effective_rollover_window:
        return _counted(state, reading, spec, wrapped, new, not_producing)
    reset = Anomaly(
        machine=reading.machine,
        counter=reading.counter,
        kind=AnomalyKind.RESET,
        detail=(
            f"counter went down from {last.raw} to {value} (PLC restart or clear); "
            f"counted {value} after the reset, the counts between the last reading and "
            "the reset are unknown"
        ),
        source_time=reading.source_time,
        start=last,
        end=new,
    )
    return _counted(state, reading, spec, value, new, not_producing, note=reset)


def advance_increase(
    state: CounterState | None,
    machine: str,
    counter: str,
    value: int,
    source_time: datetime,
    spec: CounterSpec,
    not_producing: str | None = None,
) -> tuple[CounterState, Increment] | None:
    """``advance`` for the common case, without its reading and its ``Step``: a good value
    above the last one of a counter that has a state, no job change, counts not held.

    The new state and the increment, exactly as ``advance`` gives them for a good reading of
    ``value`` of ``machine``'s ``counter`` at ``source_time`` (with ``job_changed`` false); None
    in every other case, for which the caller calls ``advance``. It runs for nearly every
    counter change the gateway reads.
    """
    if state is None:
        return None
    last = state.position
    if not last.raw < value < spec.modulus:
        return None
    counts = value - last.raw
    limit = spec.max_counts_per_reading
    if (limit is not None and counts > limit) or not_producing is not None:
        return None  # held: ``advance`` builds the anomaly
    end = Position(last.epoch, value)
    return (CounterState(machine, counter, end, source_time),
            Increment(machine, counter, counts, last, end, source_time, spec.units_per_count))


def _job_change_unseen(state: CounterState, reading: CounterReading, value: int) -> Anomaly:
    return Anomaly(
        machine=reading.machine,
        counter=reading.counter,
        kind=AnomalyKind.JOB_CHANGE_UNSEEN,
        detail=(
            f"the job changed while the gateway was not reading: counted {value} for the new job from its "
            f"job reset; the previous job's counts after {state.position.raw} (its last reading, "
            f"{state.source_time.isoformat()}) until the reset are unknown"
        ),
        source_time=reading.source_time,
        start=state.position,
        end=Position(state.position.epoch + 1, value),
    )


def _state(reading: CounterReading, position: Position) -> CounterState:
    return CounterState(reading.machine, reading.counter, position, reading.source_time)


def _counted(
    state: CounterState, reading: CounterReading, spec: CounterSpec, counts: int, end: Position,
    not_producing: str | None = None, note: Anomaly | None = None,
) -> Step:
    """The counts between the state and ``end``: an increment, or held by an anomaly.

    ``note`` is an anomaly that comes with these counts (a reset); when the counts are
    held, the hold is the anomaly and the note goes into its detail.
    """
    new_state = _state(reading, end)
    held: tuple[AnomalyKind, str] | None = None
    if spec.max_counts_per_reading is not None and counts > spec.max_counts_per_reading:
        held = (AnomalyKind.IMPLAUSIBLE, f"{counts} counts in one reading exceeds the plausibility limit of "
                f"{spec.max_counts_per_reading}; held as an open anomaly, not posted")
    elif not_producing is not None and counts > 0:
        held = (AnomalyKind.NOT_PRODUCING, f"{counts} counts while the machine was not producing "
                f"({not_producing}); held as an open anomaly, not posted: accept to post them, reject to "
                "write them off")
    if held is not None:
        kind, detail = held
        return Step(new_state, anomaly=Anomaly(
            machine=reading.machine,
            counter=reading.counter,
            kind=kind,
            detail=detail if note is None or note.kind is AnomalyKind.RESET else f"{detail}; {note.detail}",
            source_time=reading.source_time,
            start=state.position,
            end=end,
            counts_held=counts,
            units_per_count=spec.units_per_count,
        ))
    increment = Increment(
        machine=reading.machine,
        counter=reading.counter,
        counts=counts,
        start=state.position,
        end=end,
        source_time=reading.source_time,
        units_per_count=spec.units_per_count,
    )
    return Step(new_state, increment=increment, anomaly=note)


def _bad_value(reading: CounterReading, spec: CounterSpec, state: CounterState | None) -> Anomaly:
    return Anomaly(
        machine=reading.machine,
        counter=reading.counter,
        kind=AnomalyKind.BAD_VALUE,
        detail=(
            f"value {reading.value} is outside 0..{spec.modulus - 1} of a "
            f"uint{spec.width_bits} counter; reading ignored — check the tag's type in the mapping"
        ),
        source_time=reading.source_time,
        start=state.position if state else None,
    )
