"""What every protocol simulator shares: machines that count on one clock, and commands.

``SimulatedPlant`` owns the ``MachineModel``s, advances them by the real elapsed time on
a tick loop and applies control commands (``simulators.commands``) so that production up
to the command's instant is shown before the command takes effect. A protocol simulator
(``opcua_plc``, ``modbus_plc``) subclasses it and implements ``_publish``: make the
models' current values visible on its protocol. Both simulators therefore count, fault
and report ground truth the same way.

The command-line pieces they share are here too: machine specs (``--machine``), the demo
plant (``--demo``) and serving until SIGINT/SIGTERM.

This module must never know a protocol, decide a number (that is the model's job) or
block the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from fractions import Fraction
from typing import Self, TypeVar

from simulators.commands import apply_to_machines
from simulators.machine import MachineModel, SimMachineConfig

_DUE_MARGIN_NS = 1_000
_LONGEST_WAIT_S = 60.0

__all__ = ["SimulatedPlant", "add_machine_arguments", "machines_from_args", "parse_machine_spec", "run_cli"]


class SimulatedPlant:
    """Machines counting on a monotonic clock; ``start``, ``stop`` and ``_publish`` are
    the protocol's part."""

    def __init__(self, machines: Sequence[SimMachineConfig], tick_s: float) -> None:
        names = [config.name for config in machines]
        if not names:
            raise ValueError("a simulated PLC needs at least one machine")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"machine names must be unique; given more than once: {', '.join(duplicates)}")
        if tick_s <= 0:
            raise ValueError(f"tick_s must be > 0, got {tick_s}")
        self.models: dict[str, MachineModel] = {config.name: MachineModel(config) for config in machines}
        self.tick_s = tick_s
        # One lock orders ticks, commands and server changes, so a command never sees
        # half a tick published.
        self._lock = asyncio.Lock()
        self._tick_task: asyncio.Task[None] | None = None
        # Each model's clock, in nanoseconds of the monotonic clock: up to when it was advanced, and
        # from when its next cycle may end. A tick advances only the models whose cycle may have
        # ended (the others would make nothing); a command first advances all of them.
        self._advanced_ns = dict.fromkeys(self.models, time.monotonic_ns())
        self._due_ns = dict.fromkeys(self.models, 0)
        self._log = logging.getLogger(type(self).__module__)

    async def start(self) -> None:
        """Start counting and serving."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop counting and serving; the models keep their state for inspection."""
        raise NotImplementedError

    async def _publish(self) -> None:
        """Show the models' current values on the protocol (called with the lock held)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- the clock -------------------------------------------------------------------

    def _reset_clock(self) -> None:
        """From now on time counts: nothing is produced for the time before this."""
        self._advanced_ns = dict.fromkeys(self.models, time.monotonic_ns())
        self._due_ns = dict.fromkeys(self.models, 0)

    def _start_ticking(self) -> None:
        if self._tick_task is not None:
            raise RuntimeError("simulated PLC already started")
        self._tick_task = asyncio.create_task(self._tick_loop(), name=f"{type(self).__name__}-ticks")

    async def _stop_ticking(self) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
            await asyncio.gather(self._tick_task, return_exceptions=True)
            self._tick_task = None

    @property
    def ticking(self) -> bool:
        return self._tick_task is not None

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                async with self._lock:
                    await self._advance_and_publish()
            except Exception:
                # The machines must keep counting whatever the server does.
                self._log.exception("simulated PLC tick failed; continuing")

    def _advance_models(self, every: bool = False) -> None:
        """Advance the models by the time since their last advance: those whose next cycle may
        have ended, or ``every`` one (before a command, which may pause, resume or retime them).

        Exact either way: a model's time is whole nanoseconds, so its slices add up to the time
        elapsed, and a model left out would have made nothing. With thousands of machines at
        1 Hz and a tick of 50 ms, nearly all of them are left out of nearly every tick.
        """
        now = time.monotonic_ns()
        advanced, due = self._advanced_ns, self._due_ns
        for name, model in self.models.items():
            if not every and now < due[name]:
                continue
            model.advance(Fraction(now - advanced[name], 1_000_000_000))
            advanced[name] = now
            # The float may be a rounding later than the exact moment: a microsecond early is safe. A
            # paused machine, or one whose next cycle is far off, is looked at again after a minute.
            wait = min(model.seconds_to_next_cycle(), _LONGEST_WAIT_S)
            due[name] = now + int(wait * 1e9) - _DUE_MARGIN_NS

    async def _advance_and_publish(self, every: bool = False) -> None:
        self._advance_models(every)
        await self._publish()

    # --- control ---------------------------------------------------------------------

    async def command(self, machine: str, command: str, argument: str = "") -> dict:
        """Apply a control command now; returns the truth afterwards ({machine: truth} for "*").

        Raises ``SimCommandError`` for an unknown machine/command or a bad argument.
        """
        async with self._lock:
            # Production up to this instant belongs before the command (old order,
            # counters before a reset), so publish it first.
            await self._advance_and_publish(every=True)
            try:
                return apply_to_machines(self.models, machine, command, argument)
            finally:
                self._due_ns = dict.fromkeys(self.models, 0)  # paused, resumed or retimed: asked anew
                await self._publish()


P = TypeVar("P", bound=SimulatedPlant)


# --- CLI pieces -------------------------------------------------------------------------

def flag(text: str) -> bool:
    """``paused=1`` / ``paused=true``; a flag's value as people type it."""
    if text.strip().lower() in ("1", "true", "yes"):
        return True
    if text.strip().lower() in ("0", "false", "no"):
        return False
    raise ValueError(text)


_SPEC_KEYS: dict[str, tuple[str, Callable[[str], object]]] = {
    "rate": ("rate_hz", float),
    "upc": ("units_per_cycle", int),
    "scrap": ("scrap_ratio", float),
    "order": ("order", str),
    "width": ("width_bits", int),
    "initial": ("initial_count", int),
    "seed": ("seed", int),
    "paused": ("paused", flag),
    "phase": ("phase", float),
}


def parse_machine_spec(text: str) -> SimMachineConfig:
    """``"PRESS-01,rate=5,upc=4,scrap=0.02,order=1000123"`` -> SimMachineConfig.

    Keys: rate (cycles/s, default 1), upc, scrap, order, width, initial, seed, paused (1: start paused),
    phase (how much of its first cycle is done at the start, 0 ≤ phase < 1: machines out of step).
    """
    name, *pairs = (part.strip() for part in text.split(","))
    fields: dict[str, object] = {"rate_hz": 1.0}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in _SPEC_KEYS:
            raise ValueError(f"{text!r}: expected key=value with key one of {', '.join(_SPEC_KEYS)}, got {pair!r}")
        field, convert = _SPEC_KEYS[key]
        try:
            fields[field] = convert(value)
        except ValueError:
            raise ValueError(f"{text!r}: {key}={value!r} is not a valid {convert.__name__}") from None
    return SimMachineConfig(name=name, **fields)


def add_machine_arguments(parser: argparse.ArgumentParser, *, port: int, demo_help: str) -> None:
    """--host, --port, --tick, --machine and --demo, as every simulator takes them."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--tick", type=float, default=0.02, help="seconds between counter updates")
    parser.add_argument(
        "--machine",
        action="append",
        default=[],
        metavar="NAME,key=value,...",
        help="a machine; keys: rate, upc, scrap, order, width, initial, seed, paused (repeatable)",
    )
    parser.add_argument("--demo", action="store_true", help=demo_help)


def machines_from_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace, demo: Callable[[], list[SimMachineConfig]]
) -> list[SimMachineConfig]:
    """The machines the arguments name; exits with a usage error when there are none."""
    try:
        machines = (demo() if args.demo else []) + [parse_machine_spec(m) for m in args.machine]
    except ValueError as exc:
        parser.error(str(exc))
    if not machines:
        parser.error("give at least one --machine, or --demo")
    return machines


async def serve_until_signal(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]], describe: Callable[[float], str]
) -> None:
    """Start, log ``describe(seconds it took)``, serve until SIGINT/SIGTERM, then stop."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    began = time.perf_counter()
    await start()
    logging.getLogger("simulators").info("%s", describe(time.perf_counter() - began))
    try:
        await stopping.wait()
    finally:
        await stop()


def run_cli(build: Callable[[], P], describe: Callable[[P, float], str], where: str) -> int:
    """A simulator's ``main``: 0 after SIGINT/SIGTERM, 2 for a bad configuration, 1 when
    it cannot serve (typically: the port is taken)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The protocol libraries narrate every session and request at INFO.
    for library in ("asyncua", "pymodbus"):
        logging.getLogger(library).setLevel(logging.WARNING)
    log = logging.getLogger("simulators")
    try:
        plc = build()
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    try:
        asyncio.run(serve_until_signal(plc.start, plc.stop, lambda took: describe(plc, took)))
    except OSError as exc:
        log.error("cannot serve on %s: %s", where, exc)
        return 1
    return 0
