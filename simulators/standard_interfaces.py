"""EUROMAP 77 and PackML address spaces on the simulated OPC UA PLC.

With ``OpcUaPlc(..., interfaces=("euromap77", "packml"))`` (CLI: ``--interface``) every
machine ``M`` also shows, beside ``s=M.OrderNumber`` / ``GoodCount`` / ``ScrapCount`` /
``State``, the nodes the gateway's presets read (ids: the machine's name, a dot, the
browse path joined by dots):

* ``euromap77``: ``M.Jobs.ActiveJob.JobName`` (String, the order), ``M.Jobs.ActiveJobValues.
  JobGoodPartsCounter`` / ``JobBadPartsCounter`` (UInt64, parts: cycles × cavities),
  ``M.Jobs.ActiveJobValues.JobStatus`` (Int32, ProductionStatusEnumeration: 4 PRODUCTION,
  1 NO_PRODUCTION while paused) and ``M.MachineStatus.MachineMode`` (Int32, 1 AUTOMATIC);
* ``packml``: ``M.Status.Parameter[0].Value`` (String, the order), ``M.Admin.ProdProcessedCount[0].Count``
  (Int32, every part processed, good and defective, as most PLCs count it) and
  ``M.Admin.ProdDefectiveCount[0].Count`` (Int32, the defective parts), and
  ``M.Status.StateCurrent`` (Int32: 6 Execute, 5 Suspended).

The job counters are the model's counters, so ``set_order NUMBER,reset`` is a job change
with ResetJobCounters. Each group is written in the simulator's order: order tags before
counters before states. This module only names nodes and reads the model; it must never
decide a number or import anything but the OPC UA types.
"""

from __future__ import annotations

from collections.abc import Callable

from asyncua import ua

from simulators.machine import MachineModel

INTERFACES = ("euromap77", "packml")
PRODUCTION, NO_PRODUCTION = 4, 1  # ProductionStatusEnumeration (OPC 40083)
AUTOMATIC = 1  # MachineModeEnumeration
INT32_MODULUS = 1 << 31  # PackML counts are Int32: they wrap at 2^31

Node = tuple[str, ua.VariantType, Callable[[MachineModel], object]]


def _parts(*counters: str) -> Callable[[MachineModel], int]:
    return lambda m: sum(getattr(m, f"{c}_count") for c in counters) * m.config.units_per_cycle


def nodes(interfaces: tuple[str, ...]) -> tuple[list[Node], list[Node], list[Node]]:
    """(order tags, counters, states) of these interfaces, for every machine."""
    unknown = [i for i in interfaces if i not in INTERFACES]
    if unknown:
        raise ValueError(f"unknown interface {unknown[0]!r}; expected one of {', '.join(INTERFACES)}")
    orders: list[Node] = []
    counters: list[Node] = []
    states: list[Node] = []
    if "euromap77" in interfaces:
        values = "Jobs.ActiveJobValues."
        orders.append(("Jobs.ActiveJob.JobName", ua.VariantType.String, lambda m: m.order))
        counters += [(values + "JobGoodPartsCounter", ua.VariantType.UInt64, _parts("good")),
                     (values + "JobBadPartsCounter", ua.VariantType.UInt64, _parts("scrap"))]
        states += [(values + "JobStatus", ua.VariantType.Int32, lambda m: NO_PRODUCTION if m.paused else PRODUCTION),
                   ("MachineStatus.MachineMode", ua.VariantType.Int32, lambda m: AUTOMATIC)]
    if "packml" in interfaces:
        orders.append(("Status.Parameter[0].Value", ua.VariantType.String, lambda m: m.order))
        counters += [("Admin.ProdProcessedCount[0].Count", ua.VariantType.Int32,
                      lambda m: _parts("good", "scrap")(m) % INT32_MODULUS),
                     ("Admin.ProdDefectiveCount[0].Count", ua.VariantType.Int32,
                      lambda m: _parts("scrap")(m) % INT32_MODULUS)]
        states.append(("Status.StateCurrent", ua.VariantType.Int32, lambda m: m.state))
    return orders, counters, states


def counter_value(interfaces: tuple[str, ...], path: str, model: MachineModel) -> int | None:
    """What the counter node at ``path`` (its id after the machine's name and a dot) shows
    for ``model``; None if these interfaces have no such counter."""
    for name, _, value in nodes(interfaces)[1]:
        if name == path:
            return value(model)
    return None
