"""Text control commands for simulated machines, shared by every protocol simulator.

A command is ``(machine, command, argument)`` as three strings, so it fits an OPC UA
method call, a CLI or a test equally well:

=====================  ==============================  ===================================
command                argument                        effect
=====================  ==============================  ===================================
``pause``              -                               no cycles until ``resume``
``resume``             -                               produce again (no catch-up burst)
``reset``              -                               raw counters to 0 (PLC restart)
``jump_near_rollover`` margin, e.g. ``10``             raw counters to 2^W - margin
``set_order``          ``number`` or ``number,reset``  new order; ``reset``: job counters 0
``reset_job_counters`` -                               job counters 0 (EUROMAP 77), no order change
``set_rate``           cycles per second, e.g. ``2.5`` new cycle rate
``miss_serial``        cycles, default ``1``           the next good cycles write no serial
``repeat_serial``      cycles, default ``1``           the next good cycles write an earlier serial
``truth``              -                               nothing; just report
=====================  ==============================  ===================================

Every command answers with the machine's ``truth()`` after it took effect; machine
``"*"`` applies the command to all machines in turn and answers ``{machine: truth}``
(if one machine refuses, e.g. a margin too wide for its counter, the ones before it
have already changed).

This module only parses and applies; it must never do I/O or know a protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from simulators.machine import MachineModel

ALL_MACHINES = "*"


class SimCommandError(ValueError):
    """A command the simulator refuses: unknown machine or command, or a bad argument."""


def _without_argument(action: Callable[[MachineModel], None]) -> Callable[[MachineModel, str], None]:
    def handler(model: MachineModel, argument: str) -> None:
        if argument:
            raise SimCommandError(f"this command takes no argument, got {argument!r}")
        action(model)

    return handler


def _jump_near_rollover(model: MachineModel, argument: str) -> None:
    model.jump_near_rollover(_parse(int, argument, "margin (whole number of counts)"))


def _set_rate(model: MachineModel, argument: str) -> None:
    model.set_rate(_parse(float, argument, "rate in cycles per second"))


def _set_order(model: MachineModel, argument: str) -> None:
    number, _, flag = (part.strip() for part in argument.partition(","))
    if not number:
        raise SimCommandError("set_order needs an order number, e.g. '1000125' or '1000125,reset'")
    if flag not in ("", "reset"):
        raise SimCommandError(f"set_order: after the comma only 'reset' is allowed, got {flag!r}")
    model.set_order(number, reset_counters=flag == "reset")


def _parse(kind: Callable[[str], object], argument: str, what: str):
    try:
        return kind(argument)
    except ValueError:
        raise SimCommandError(f"expected {what}, got {argument!r}") from None


def _serial_fault(model: MachineModel, kind: str, argument: str) -> None:
    cycles = _parse(int, argument or "1", "a number of cycles, e.g. '2'")
    try:
        model.serial_fault(kind, cycles)
    except ValueError as exc:
        raise SimCommandError(str(exc)) from None


_COMMANDS: dict[str, Callable[[MachineModel, str], None]] = {
    "pause": _without_argument(MachineModel.pause),
    "resume": _without_argument(MachineModel.resume),
    "reset": _without_argument(MachineModel.reset),
    "jump_near_rollover": _jump_near_rollover,
    "set_order": _set_order,
    "reset_job_counters": _without_argument(MachineModel.reset_job_counters),
    "set_rate": _set_rate,
    "miss_serial": lambda model, argument: _serial_fault(model, "miss", argument),
    "repeat_serial": lambda model, argument: _serial_fault(model, "repeat", argument),
    "truth": _without_argument(lambda model: None),
}

COMMANDS = tuple(_COMMANDS)


def apply_command(model: MachineModel, command: str, argument: str = "") -> dict:
    """Apply one command to one machine and return its truth afterwards."""
    handler = _COMMANDS.get(command.strip())
    if handler is None:
        raise SimCommandError(f"unknown command {command!r}; known: {', '.join(COMMANDS)}")
    try:
        handler(model, argument.strip())
    except ValueError as exc:  # ours, or the model's (e.g. a margin wider than the counter)
        raise SimCommandError(f"{model.name} {command}: {exc}") from None
    return model.truth()


def apply_to_machines(models: Mapping[str, MachineModel], machine: str, command: str, argument: str = "") -> dict:
    """Apply a command to the named machine, or to all of them for ``"*"``."""
    if machine == ALL_MACHINES:
        return {name: apply_command(model, command, argument) for name, model in models.items()}
    model = models.get(machine)
    if model is None:
        raise SimCommandError(f"unknown machine {machine!r}; known: {', '.join(models)}")
    return apply_command(model, command, argument)
