"""Reference checks of a master-data file: what the schema alone cannot see.

For: dangling names (materials, work centers, routings, BOMs), duplicate item and
operation numbers, BOM items on operations their routing does not have, more than one
final operation, orders without a routing, stock rows whose lot does not fit the
material, and what serial tracking needs (whole units, a usable serial pattern, one
serial per unit of stock, each serial once). Each problem is a FileError at the line that has to change.

Must never: report a name as unknown when the file defines it but the definition is
broken (that is reported once, by the schema), or change the data.
"""

from __future__ import annotations

from collections.abc import Iterator

from gateway.inputfile.errors import FileError
from gateway.inputfile.messages import unknown
from gateway.inputfile.read import YamlDoc, repeats
from gateway.masterdata.model import BomDef, MasterData, MaterialDef, OrderDef, RoutingDef


def reference_errors(doc: YamlDoc, md: MasterData) -> list[FileError]:
    """Every reference problem of the valid part ``md`` of the file behind ``doc``."""
    refs = _Refs(doc, md)
    checks = (refs.materials, refs.boms, refs.routings, refs.bom_operations, refs.orders, refs.stock, refs.orphans)
    return [error for check in checks for error in check()]


class _Refs:
    def __init__(self, doc: YamlDoc, md: MasterData) -> None:
        self.doc, self.md = doc, md
        # Names as written, valid or not: see "must never" above.
        self.names = {s: doc.keys_at((s,)) for s in ("materials", "work_centers", "boms", "routings")}
        self._serials_seen: dict[tuple[str, str], tuple] = {}

    def _dangling(self, loc: tuple, what: str, name: str, section: str) -> Iterator[FileError]:
        if name not in self.names[section]:
            yield self.doc.error(loc, unknown(what, name, self.names[section]))

    def _twice(self, what: str, at: tuple, numbers: list[str], field: str) -> Iterator[FileError]:
        """Each number of a BOM's items or a routing's operations names one row."""
        for number, loc, first in repeats((n, at + (i, field)) for i, n in enumerate(numbers)):
            yield self.doc.error(loc, f"{what} '{number}' is used twice (first at line {self.doc.line(first)})")

    def materials(self) -> Iterator[FileError]:
        for key, m in self.md.materials.items():
            yield from self._tracking(("materials", key), m)

    def _tracking(self, loc: tuple, m: MaterialDef) -> Iterator[FileError]:
        if m.tracking is not None and m.lot_tracked and m.tracking != "lot":
            yield self.doc.error(loc + ("lot_tracked",),
                                 f"lot_tracked: true contradicts tracking: {m.tracking}; keep tracking alone")
        if m.effective_tracking != "serial":
            if m.serials is not None:
                yield self.doc.error(loc + ("serials",), "a serial pattern needs tracking: serial on the material")
            return
        if m.decimals:
            yield self.doc.error(loc + ("decimals",), "a serial-tracked material is counted in whole units: "
                                                      "decimals must be 0")
        if m.negative_stock == "allowed":
            yield self.doc.error(loc + ("negative_stock",), "a serial-tracked material cannot go negative: "
                                                            "every unit issued is a serial in stock")
        if m.serials is not None:
            problem = serial_pattern_problem(m.serials)
            if problem:
                yield self.doc.error(loc + ("serials",), problem)

    def boms(self) -> Iterator[FileError]:
        for key, bom in self.md.boms.items():
            at = ("boms", key, "items")
            for i, item in enumerate(bom.items):
                yield from self._dangling(at + (i, "material"), "material", item.material, "materials")
            yield from self._twice("item number", at, [item.item for item in bom.items], "item")

    def routings(self) -> Iterator[FileError]:
        for key, routing in self.md.routings.items():
            at = ("routings", key, "operations")
            for i, op in enumerate(routing.operations):
                yield from self._dangling(at + (i, "work_center"), "work center", op.work_center, "work_centers")
            yield from self._twice("operation", at, [op.operation for op in routing.operations], "operation")
            yield from self._finals(at, routing)

    def _finals(self, at: tuple, routing: RoutingDef) -> Iterator[FileError]:
        finals = [i for i, op in enumerate(routing.operations) if op.final]
        for i in finals[1:]:
            first = routing.operations[finals[0]].operation
            line = self.doc.line(at + (finals[0], "final"))
            message = f"only one operation can be final; operation '{first}' (line {line}) is final already"
            yield self.doc.error(at + (i, "final"), message)

    def bom_operations(self) -> Iterator[FileError]:
        """Each BOM item is consumed at an operation of the routing it is used with."""
        pairs = {(k, k) for k in self.md.boms if k in self.md.routings}
        pairs |= {(o.bom_key, o.routing_key) for o in self.md.orders.values()}
        for bom_key, routing_key in sorted(pairs):
            bom, routing = self.md.boms.get(bom_key), self.md.routings.get(routing_key)
            if bom is not None and routing is not None:
                yield from self._items_on_routing(bom_key, bom, routing_key, routing)

    def _items_on_routing(
        self, bom_key: str, bom: BomDef, routing_key: str, routing: RoutingDef
    ) -> Iterator[FileError]:
        ops = ", ".join(dict.fromkeys(op.operation for op in routing.operations))
        for i, item in enumerate(bom.items):
            if item.operation not in {op.operation for op in routing.operations}:
                message = f"operation '{item.operation}' is not in routing '{routing_key}' (operations: {ops})"
                yield self.doc.error(("boms", bom_key, "items", i, "operation"), message)

    def orders(self) -> Iterator[FileError]:
        for number, order in self.md.orders.items():
            yield from self._order(("orders", number), order)

    def _order(self, loc: tuple, order: OrderDef) -> Iterator[FileError]:
        yield from self._dangling(loc + ("material",), "material", order.material, "materials")
        if order.bom is not None:
            yield from self._dangling(loc + ("bom",), "BOM", order.bom, "boms")
        if order.routing is not None:
            yield from self._dangling(loc + ("routing",), "routing", order.routing, "routings")
        elif order.material in self.names["materials"] and order.material not in self.names["routings"]:
            hint = f"add routings.{order.material}, or routing: to the order"
            yield self.doc.error(loc + ("material",), f"material '{order.material}' has no routing ({hint})")

    def stock(self) -> Iterator[FileError]:
        for i, row in enumerate(self.md.stock):
            loc = ("stock", i)
            yield from self._dangling(loc + ("material",), "material", row.material, "materials")
            material = self.md.materials.get(row.material)
            if material is None:
                continue
            tracking = material.effective_tracking
            if tracking == "serial":
                yield from self._serial_stock(loc, row)
            elif row.serials:
                fix = "give the lot instead" if tracking == "lot" else "remove them, or set tracking: serial"
                yield self.doc.error(loc + ("serials",), f"material '{row.material}' is not serial-tracked: {fix}")
            elif tracking == "lot" and not row.lot.strip():
                message = f"material '{row.material}' is lot-tracked: give the lot of this stock"
                yield self.doc.error(loc + ("lot",), message)
            elif tracking == "none" and row.lot.strip():
                fix = "remove the lot, or set lot_tracked: true on the material"
                yield self.doc.error(loc + ("lot",), f"material '{row.material}' is not lot-tracked: {fix}")

    def _serial_stock(self, loc: tuple, row) -> Iterator[FileError]:
        if row.lot.strip():
            yield self.doc.error(loc + ("lot",), f"material '{row.material}' is serial-tracked: "
                                                 "list its serials (serials: [...]) instead of a lot")
            return
        if not row.serials:
            yield self.doc.error(loc + ("serials",), f"material '{row.material}' is serial-tracked: "
                                                     "list the serial of every unit (serials: [...])")
            return
        if row.quantity != len(row.serials):
            yield self.doc.error(loc + ("quantity",), f"quantity {row.quantity} but {len(row.serials)} serial(s) "
                                                      "listed: one serial per unit")
        for i, serial in enumerate(row.serials):
            where = self._serials_seen.setdefault((row.material, serial), loc + ("serials", i))
            if where != loc + ("serials", i):
                yield self.doc.error(loc + ("serials", i), f"serial '{serial}' of '{row.material}' is listed "
                                     f"twice (first at line {self.doc.line(where)}): a serial is in one place")

    def orphans(self) -> Iterator[FileError]:
        """A BOM or routing for no material, named by no order: most likely a typo'd key,
        and the material it was meant for then silently has none."""
        for section, field, what in (("boms", "bom", "BOM"), ("routings", "routing", "routing")):
            named = self._named_by_orders(field)
            for key in sorted(self.names[section] - self.names["materials"] - named):
                message = f"{what} '{key}' belongs to no material and no order names it ({field}: {key})"
                yield self.doc.error((section, key), message)

    def _named_by_orders(self, field: str) -> set[str]:
        orders = self.doc.data.get("orders")
        if not isinstance(orders, dict):
            return set()
        return {str(o[field]) for o in orders.values() if isinstance(o, dict) and o.get(field) is not None}


def serial_pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot number produced units (None: it can)."""
    from gateway.domain.serials import PatternError, serial_of

    try:
        first, second = serial_of(pattern, "1000123", 1), serial_of(pattern, "1000123", 2)
    except PatternError as exc:
        return str(exc)
    if first == second:
        return f"serial pattern {pattern!r} gives every unit the same serial: put {{seq}} in it"
    return None
