"""The simulated machine: what a PLC would count, and the ground truth behind it.

A ``MachineModel`` turns elapsed time into machine cycles at a configured rate, splits
them into good and scrap cycles with a seeded random generator, and keeps two things
apart:

* the **raw counters** a PLC would show (``good_count``, ``scrap_count``): finite width,
  they wrap at 2^W, and faults move them (reset, jump near rollover, per-job reset);
* the **ground truth**: cycles really produced since the model was created, in total and
  per order number, never reset and never wrapped. Tests compare what the gateway
  confirmed against this.

With ``serials`` the machine writes a serial per good cycle (``M-0000001``, …) to its
serial tag, before the counter that counts the cycle: ``serial_events`` hands the
simulator each (serial, good count after) pair in order, so a subscriber sees every one.
Faults on command: ``miss_serial`` (the next good cycle writes none) and ``repeat_serial``
(the next good cycle writes a serial of an earlier unit again). The truth lists the serials
written for units and counts the missed and repeated ones.

Reconciling the two: since the raw counters were last set to zero (or to
``initial_count`` at creation), ``raw == (start + truth cycles + jumped) mod 2^W`` for
each counter, where ``jumped`` is the forward distance ``jump_near_rollover`` moved it.

This module is shared by every protocol simulator, so it must never do I/O, import a
protocol library, use asyncio or read a clock: time comes in as ``advance(dt_seconds)``.
Given the same config and the same calls it produces the same numbers, every time.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from fractions import Fraction

# PackML StateCurrent values (ISA-TR88 / OPC 30050) a gateway may use as "is producing".
PACKML_SUSPENDED = 5
PACKML_EXECUTE = 6

COUNTER_WIDTHS = (16, 32, 64)


@dataclass(frozen=True)
class SimMachineConfig:
    """How one simulated machine behaves when it is created."""

    name: str
    rate_hz: float  # machine cycles per second
    units_per_cycle: int = 1  # cavities / parts per stroke
    scrap_ratio: float = 0.0  # probability that a cycle is scrap
    order: str = ""  # order number shown on the order tag
    width_bits: int = 32  # counter width: 16, 32 or 64
    initial_count: int = 0  # raw value both counters start at (e.g. near rollover)
    seed: int = 0
    paused: bool = False  # start paused, e.g. a PLC that comes back from a restart in stop
    serials: bool = False  # write a serial per good cycle to a serial tag
    # How much of its first cycle the machine has done when it starts (0 ≤ phase < 1): machines
    # of one plant are out of step, each finishing its cycles at its own moment of the second.
    phase: float = 0.0

    def __post_init__(self) -> None:
        # "*" addresses all machines in control commands, so it cannot name one.
        if not self.name or self.name == "*":
            raise ValueError(f"machine name must be non-empty and not '*', got {self.name!r}")
        _check_rate(self.rate_hz)
        if self.units_per_cycle < 1:
            raise ValueError(f"{self.name}: units_per_cycle must be >= 1, got {self.units_per_cycle}")
        if not 0.0 <= self.scrap_ratio <= 1.0:
            raise ValueError(f"{self.name}: scrap_ratio must be in 0..1, got {self.scrap_ratio}")
        if self.width_bits not in COUNTER_WIDTHS:
            raise ValueError(f"{self.name}: width_bits must be one of {COUNTER_WIDTHS}, got {self.width_bits}")
        if not 0.0 <= self.phase < 1.0:
            raise ValueError(f"{self.name}: phase must be in [0, 1), got {self.phase}")
        if not 0 <= self.initial_count < self.modulus:
            raise ValueError(
                f"{self.name}: initial_count must be in 0..{self.modulus - 1}, got {self.initial_count}"
            )

    @property
    def modulus(self) -> int:
        return 1 << self.width_bits


def _check_rate(rate_hz: float) -> None:
    if not math.isfinite(rate_hz) or rate_hz < 0:
        raise ValueError(f"rate must be a finite number >= 0 cycles/s, got {rate_hz!r}")


class MachineModel:
    """One machine's counters and ground truth; driven by ``advance`` and fault commands."""

    def __init__(self, config: SimMachineConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        # Exact arithmetic: a float carry would drift, and "rate × elapsed time" must
        # hold to the cycle however the time is sliced into ticks.
        self._rate = Fraction(config.rate_hz)
        self._carry = Fraction(config.phase)
        self._paused = config.paused
        self._order = config.order
        self._raw = {"good": config.initial_count, "scrap": config.initial_count}
        self._truth = {"good": 0, "scrap": 0}
        self._by_order: dict[str, dict[str, int]] = {}
        self._jumped = {"good": 0, "scrap": 0}
        self._resets = 0
        self._job_resets = 0
        self._last_reset_raw: dict[str, int] | None = None
        self._touch_order(self._order)
        self._serial = ""  # what the serial tag shows
        self._serials: list[str] = []  # new serials written, one per good unit, in order
        self._serial_events: list[tuple[str | None, int]] = []  # (serial written or None, good count after)
        self._faults = {"miss": 0, "repeat": 0}  # good cycles still to come with that serial fault
        self._serial_faults = {"missed": 0, "repeated": 0}
        # Moves with every change a tag can show (counts, order, state): a publisher that saw
        # this revision already has nothing new to write for the machine.
        self.revision = 0

    # --- what a PLC shows ----------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def good_count(self) -> int:
        return self._raw["good"]

    @property
    def scrap_count(self) -> int:
        return self._raw["scrap"]

    @property
    def order(self) -> str:
        return self._order

    @property
    def serial(self) -> str:
        return self._serial

    def serial_events(self) -> list[tuple[str | None, int]]:
        """The (serial, good count) writes since the last call, in the order the PLC made them."""
        events, self._serial_events = self._serial_events, []
        return events

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def state(self) -> int:
        """PackML StateCurrent: Execute while producing, Suspended while paused."""
        return PACKML_SUSPENDED if self._paused else PACKML_EXECUTE

    @property
    def rate_hz(self) -> float:
        return float(self._rate)

    # --- production ----------------------------------------------------------------

    def advance(self, dt_seconds: float | Fraction) -> int:
        """Let ``dt_seconds`` pass; return how many cycles (good + scrap) were made."""
        if not math.isfinite(dt_seconds) or dt_seconds < 0:
            raise ValueError(f"elapsed time must be finite and >= 0, got dt_seconds={dt_seconds!r}")
        if self._paused:
            # Paused time earns no credit, so resuming cannot produce a burst.
            return 0
        self._carry += self._rate * Fraction(dt_seconds)
        cycles = math.floor(self._carry)
        self._carry -= cycles
        if not cycles:
            return 0
        self.revision += 1
        scrap = sum(1 for _ in range(cycles) if self._rng.random() < self.config.scrap_ratio)
        self._produce("good", cycles - scrap)
        self._produce("scrap", scrap)
        return cycles

    def seconds_to_next_cycle(self) -> float:
        """How long until the next cycle ends at the present rate (infinite while paused or at
        rate 0); rounded as a float, so a caller that skips ``advance`` until then must allow a
        margin."""
        if self._paused or not self._rate:
            return math.inf
        try:
            return float((1 - self._carry) / self._rate)
        except OverflowError:  # a rate so low that the next cycle is beyond any float
            return math.inf

    def _produce(self, counter: str, cycles: int) -> None:
        self._truth[counter] += cycles
        self._by_order[self._order][counter] += cycles
        if counter == "good" and self.config.serials:
            for _ in range(cycles):
                self._raw[counter] = (self._raw[counter] + 1) % self.config.modulus
                self._serial_events.append((self._next_serial(), self._raw[counter]))
            return
        self._raw[counter] = (self._raw[counter] + cycles) % self.config.modulus

    def _next_serial(self) -> str | None:
        """The serial written for the good cycle just made (None: none written, a missed serial)."""
        if self._faults["miss"]:
            self._faults["miss"] -= 1
            self._serial_faults["missed"] += 1
            return None
        earlier = [s for s in self._serials[-2::-1][:2] if s != self._serial]  # a unit one or two before the last
        if self._faults["repeat"] and earlier:
            self._faults["repeat"] -= 1
            self._serial_faults["repeated"] += 1
            self._serial = earlier[0]
            return self._serial
        self._serial = f"{self.name}-{len(self._serials) + 1:07d}"
        self._serials.append(self._serial)
        return self._serial

    def serial_fault(self, kind: str, cycles: int = 1) -> None:
        """The next ``cycles`` good cycles write no serial (``miss``) or an earlier one again (``repeat``)."""
        if kind not in self._faults or cycles < 1:
            raise ValueError(f"serial fault is miss or repeat for 1 or more cycles, got {kind!r} {cycles}")
        if not self.config.serials:
            raise ValueError(f"{self.name} writes no serials (start it with serials)")
        self._faults[kind] += cycles

    # --- faults and commands -------------------------------------------------------

    def pause(self) -> None:
        self._paused = True
        self.revision += 1

    def resume(self) -> None:
        self._paused = False
        self.revision += 1

    def set_rate(self, rate_hz: float) -> None:
        _check_rate(rate_hz)
        self._rate = Fraction(rate_hz)

    def reset(self) -> None:
        """Both raw counters to 0, as after a PLC restart; production is unaffected."""
        self._last_reset_raw = dict(self._raw)
        self._resets += 1
        self._zero_counters()

    def jump_near_rollover(self, margin: int) -> None:
        """Set both raw counters to 2^W - margin. Not production: truth is unchanged."""
        modulus = self.config.modulus
        if not 1 <= margin <= modulus:
            raise ValueError(f"margin must be in 1..{modulus} for a {self.config.width_bits}-bit counter")
        target = modulus - margin
        for counter, value in self._raw.items():
            # The forward distance a counter reader sees, so raw = start + truth + jumped.
            self._jumped[counter] += (target - value) % modulus
            self._raw[counter] = target
        self.revision += 1

    def set_order(self, number: str, reset_counters: bool = False) -> None:
        """Start making another order; with ``reset_counters`` the job counters restart
        at 0, as EUROMAP 77 ``ResetJobCounters`` does (an expected reset, not a fault)."""
        self._order = number
        self._touch_order(number)
        self.revision += 1
        if reset_counters:
            self.reset_job_counters()

    def reset_job_counters(self) -> None:
        """The job counters to 0 for the running job (EUROMAP 77 ``ResetJobCounters`` on its
        own, e.g. a moment after the job name changed): expected, not a fault."""
        self._job_resets += 1
        self._zero_counters()

    def _zero_counters(self) -> None:
        self._raw = {"good": 0, "scrap": 0}
        self.revision += 1

    def _touch_order(self, number: str) -> None:
        self._by_order.setdefault(number, {"good": 0, "scrap": 0})

    # --- ground truth --------------------------------------------------------------

    def truth(self) -> dict:
        """Everything a test needs to reconcile, as plain JSON-serialisable values."""
        upc = self.config.units_per_cycle
        return {
            "machine": self.name,
            "order": self._order,
            "good_cycles": self._truth["good"],
            "scrap_cycles": self._truth["scrap"],
            "good_units": self._truth["good"] * upc,
            "scrap_units": self._truth["scrap"] * upc,
            "by_order": {order: _order_truth(counts, upc) for order, counts in self._by_order.items()},
            "good_count": self._raw["good"],
            "scrap_count": self._raw["scrap"],
            "width_bits": self.config.width_bits,
            "units_per_cycle": upc,
            "rate_hz": self.rate_hz,
            "paused": self._paused,
            "state": self.state,
            "resets": self._resets,
            "last_reset_raw": None if self._last_reset_raw is None else dict(self._last_reset_raw),
            "job_resets": self._job_resets,
            "jumped": dict(self._jumped),
            **({"serials": list(self._serials), "serials_missed": self._serial_faults["missed"],
                "serials_repeated": self._serial_faults["repeated"]} if self.config.serials else {}),
        }


def _order_truth(counts: dict[str, int], units_per_cycle: int) -> dict[str, int]:
    return {
        "good_cycles": counts["good"],
        "scrap_cycles": counts["scrap"],
        "good_units": counts["good"] * units_per_cycle,
        "scrap_units": counts["scrap"] * units_per_cycle,
    }
