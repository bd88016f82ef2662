"""Counting: turn successive raw counter values into increments, exactly once.

``advance(state, reading, spec)`` is the only entry point. It decides, for one reading
of one counter, how many counts happened since the last accepted reading, and returns
the new counter state. Rules:

============================================  =================================================
case                                          outcome
============================================  =================================================
bad / uncertain quality, no value             ignored, state unchanged
value outside 0 .. 2^W-1                      BAD_VALUE anomaly, state unchanged
first reading ever                            baseline only: 0 counts (never the lifetime total)
same value again                              no-op (idempotent)
value > last                                  counts = value − last
value < last with a job/order change          job reset: counts = value, no anomaly
value < last, wrapped delta ≤ rollover window rollover: counts = 2^W − last + value
value < last otherwise                        reset: counts = value, RESET anomaly (the counts
                                              between the last reading and the reset are unknown)
counts > plausibility limit                   IMPLAUSIBLE anomaly holds the counts; not posted
============================================  =================================================

Every accepted change of raw value moves the position; a decrease also opens a new
epoch, so positions are strictly increasing and a range of them names production once.
Timestamps never decide: a PLC's clock can step back after a restart, and a rule that
ignored "older" values would silently drop the counts made since. The source delivers
each tag's values in the order the server produced them.
Pure: no I/O, no clock — the caller passes everything in.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.domain.records import (
    Anomaly,
    AnomalyKind,
    CounterReading,
    CounterSpec,
    CounterState,
    Increment,
    Position,
    Quality,
)


@dataclass(frozen=True, slots=True)
class Step:
    """Outcome of one reading. ``state`` is None only before the first good reading."""

    state: CounterState | None
    increment: Increment | None = None
    anomaly: Anomaly | None = None
    ignored: str | None = None  # why the reading changed nothing, for metrics


def advance(
    state: CounterState | None,
    reading: CounterReading,
    spec: CounterSpec,
    *,
    job_changed: bool = False,
) -> Step:
    """Apply one reading to a counter's state (see the module table)."""
    if reading.quality is not Quality.GOOD or reading.value is None:
        return Step(state, ignored=f"quality_{reading.quality.value}")
    value = reading.value
    if not 0 <= value < spec.modulus:
        return Step(state, anomaly=_bad_value(reading, spec, state), ignored="out_of_range")
    if state is None:
        return Step(_state(reading, Position(0, value)), ignored="baseline")

    last = state.position
    if value == last.raw:
        return Step(state, ignored="unchanged")
    if value > last.raw:
        return _counted(state, reading, spec, value - last.raw, Position(last.epoch, value))
    new = Position(last.epoch + 1, value)
    if job_changed:
        return _counted(state, reading, spec, value, new)
    wrapped = spec.modulus - last.raw + value
    if wrapped <= spec.effective_rollover_window:
        return _counted(state, reading, spec, wrapped, new)
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
    step = _counted(state, reading, spec, value, new)
    if step.anomaly is not None:  # also implausible: keep the hold, mention the reset
        return step
    return Step(step.state, increment=step.increment, anomaly=reset)


def _state(reading: CounterReading, position: Position) -> CounterState:
    return CounterState(reading.machine, reading.counter, position, reading.source_time)


def _counted(
    state: CounterState, reading: CounterReading, spec: CounterSpec, counts: int, end: Position
) -> Step:
    new_state = _state(reading, end)
    if spec.max_counts_per_reading is not None and counts > spec.max_counts_per_reading:
        held = Anomaly(
            machine=reading.machine,
            counter=reading.counter,
            kind=AnomalyKind.IMPLAUSIBLE,
            detail=(
                f"{counts} counts in one reading exceeds the plausibility limit of "
                f"{spec.max_counts_per_reading}; held as an open anomaly, not posted"
            ),
            source_time=reading.source_time,
            start=state.position,
            end=end,
            counts_held=counts,
        )
        return Step(new_state, anomaly=held)
    increment = Increment(
        machine=reading.machine,
        counter=reading.counter,
        counts=counts,
        start=state.position,
        end=end,
        source_time=reading.source_time,
    )
    return Step(new_state, increment=increment)


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
