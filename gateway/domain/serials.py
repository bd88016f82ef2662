"""Serial numbers of produced units: from a pattern, or as the PLC wrote them per cycle.

A serial-tracked material's stock is held as lots of exactly one unit, named by the
serial: everything that issues, returns, reverses and traces lots serves serials too. What
is particular to serials is decided here:

* ``serial_of(pattern, order, seq)``: the serial of the ``seq``-th unit an order produced,
  from the material's pattern (``{order}-{seq:06}``);
* ``take_serials(fresh, units, used)``: which of the serials the PLC wrote since the last
  count go with ``units`` new good units, and which units have none (a missed serial) or
  only a serial already used (a repeated serial) — those are held, never received
  under a guessed serial;
* ``split_at(increment, counts, modulus)``: the first ``counts`` of an increment (the units
  with a serial) and where the rest (the held units) starts, so the two are disjoint
  ranges of counter positions, as every confirmation and anomaly is.

Pure: no I/O, no clock; the caller knows which serials were used and numbers the units.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import dataclass, replace

from gateway.domain.records import Increment, Position

FIELDS = ("order", "seq")


class PatternError(ValueError):
    """A serial pattern that cannot number units; the message says why."""


def serial_of(pattern: str, order: str, seq: int) -> str:
    """The serial of unit number ``seq`` (from 1) of ``order``."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None]
    except ValueError as exc:
        raise PatternError(f"serial pattern {pattern!r}: {exc}") from None
    for name in names:
        if name not in FIELDS:
            raise PatternError(f"serial pattern {pattern!r}: unknown field {{{name}}} (use {{order}} and {{seq}})")
    try:
        serial = pattern.format(order=order, seq=seq)
    except (ValueError, IndexError, KeyError) as exc:
        raise PatternError(f"serial pattern {pattern!r}: {exc}") from None
    if not serial.strip() or len(serial) > 64:
        raise PatternError(f"serial pattern {pattern!r} gives {serial!r}: a serial is 1 to 64 characters")
    return serial


def serials_of(pattern: str, order: str, first_seq: int, count: int) -> tuple[str, ...]:
    """Serials of ``count`` units of ``order`` numbered from ``first_seq`` on."""
    return tuple(serial_of(pattern, order, seq) for seq in range(first_seq, first_seq + count))


@dataclass(frozen=True, slots=True)
class SerialTake:
    """What ``take_serials`` decided for one count of good units."""

    serials: tuple[str, ...]  # one per unit received, in production order
    missing: int  # units with no serial written for them
    repeated: tuple[str, ...]  # serials written again: their units are held

    @property
    def held(self) -> int:
        return self.missing + len(self.repeated)


def take_serials(fresh: Iterable[str], units: int, used: Iterable[str] = ()) -> SerialTake:
    """Give ``units`` new good units the serials written since the last count (``fresh``, oldest first).

    A serial already ``used`` (received before, or earlier in ``fresh``) is a repeated one:
    the unit it was written for is held. Units beyond the serials written are missing
    one: held. Serials beyond the units are not taken (the counter has not caught up
    yet; the caller keeps them for the next count).
    """
    if units < 0:
        raise ValueError(f"units must be zero or more, got {units}")
    seen = set(used)
    taken: list[str] = []
    repeated: list[str] = []
    for serial in fresh:
        if len(taken) + len(repeated) == units:
            break
        if serial in seen:
            repeated.append(serial)
        else:
            seen.add(serial)
            taken.append(serial)
    return SerialTake(tuple(taken), units - len(taken) - len(repeated), tuple(repeated))


def split_at(increment: Increment, counts: int, modulus: int) -> tuple[Increment, Position]:
    """The first ``counts`` of ``increment`` as an increment of their own, and the position after them."""
    if not 0 <= counts <= increment.counts:
        raise ValueError(f"cannot split {counts} counts off an increment of {increment.counts}")
    start, end = increment.start, increment.end
    if start.epoch == end.epoch:
        at = Position(start.epoch, start.raw + counts)
    elif increment.counts == end.raw:  # a reset: counted from 0 in the new epoch
        at = Position(end.epoch, counts)
    elif start.raw + counts < modulus:  # a rollover, split before the wrap
        at = Position(start.epoch, start.raw + counts)
    else:
        at = Position(end.epoch, start.raw + counts - modulus)
    return replace(increment, counts=counts, end=at), at
