"""Reference checks of a master-data file: what the schema alone cannot see.

For: dangling names (materials, work centers, routings, BOMs), duplicate item and
operation numbers, BOM items on operations their routing does not have, more than one
final operation, orders without a routing, stock rows whose lot does not fit the
material. Each problem is a FileError at the line that has to change.

Must never: report a name as unknown when the file defines it but the definition is
broken (that is reported once, by the schema), or change the data.
"""

from __future__ import annotations

from collections.abc import Iterator

from gateway.masterdata.model import BomDef, MasterData, OrderDef, RoutingDef
from gateway.yamldoc import FileError, YamlDoc, repeats, unknown


def reference_errors(doc: YamlDoc, md: MasterData) -> list[FileError]:
    """Every reference problem of the valid part ``md`` of the file behind ``doc``."""
    refs = _Refs(doc, md)
    checks = (refs.boms, refs.routings, refs.bom_operations, refs.orders, refs.stock, refs.orphans)
    return [error for check in checks for error in check()]


class _Refs:
    def __init__(self, doc: YamlDoc, md: MasterData) -> None:
        self.doc, self.md = doc, md
        # Names as written, valid or not: see "must never" above.
        self.names = {s: doc.keys_at((s,)) for s in ("materials", "work_centers", "boms", "routings")}

    def _dangling(self, loc: tuple, what: str, name: str, section: str) -> Iterator[FileError]:
        if name not in self.names[section]:
            yield self.doc.error(loc, unknown(what, name, self.names[section]))

    def _twice(self, what: str, at: tuple, numbers: list[str], field: str) -> Iterator[FileError]:
        """Each number of a BOM's items or a routing's operations names one row."""
        for number, loc, first in repeats((n, at + (i, field)) for i, n in enumerate(numbers)):
            yield self.doc.error(loc, f"{what} '{number}' is used twice (first at line {self.doc.line(first)})")

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
            if material.lot_tracked and not row.lot.strip():
                message = f"material '{row.material}' is lot-tracked: give the lot of this stock"
                yield self.doc.error(loc + ("lot",), message)
            elif not material.lot_tracked and row.lot.strip():
                fix = "remove the lot, or set lot_tracked: true on the material"
                yield self.doc.error(loc + ("lot",), f"material '{row.material}' is not lot-tracked: {fix}")

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
