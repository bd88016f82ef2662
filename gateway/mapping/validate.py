"""Check a mapping file against the master data it names: ``gateway validate FILE``.

For: everything ``load_mapping`` checks, plus the references into master data — each
machine's work center exists; a fixed ``order:`` exists; that order's routing has the
machine's operation and runs it on the machine's work center. Problems in the master-data
file itself are reported too, under that file's own name.

Must never: raise for bad input (it returns the problems), connect to a PLC, or load
anything into the ledger. Without master data it checks the mapping alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from gateway.mapping.load import read_mapping
from gateway.mapping.model import Machine, Mapping
from gateway.masterdata.load import read_masterdata
from gateway.masterdata.model import MasterData
from gateway.yamldoc import FileError, Loaded, YamlDoc, by_line, unknown


def validate_mapping(
    path: str | os.PathLike[str], masterdata_path: str | os.PathLike[str] | None = None
) -> list[FileError]:
    """Every problem of the mapping (and of its master data, when there is one)."""
    mapping = read_mapping(path)
    if mapping.doc is None:
        return mapping.errors
    md_file, missing = _masterdata_file(mapping.doc, masterdata_path)
    if md_file is None:
        return by_line(mapping.errors + missing)
    masterdata = read_masterdata(md_file)
    references = _references(mapping, masterdata) if mapping.model and masterdata.model else []
    return by_line(mapping.errors + references) + masterdata.errors


def _masterdata_file(doc: YamlDoc, given: str | os.PathLike[str] | None) -> tuple[str | None, list[FileError]]:
    """The master-data file to check against, resolved like the service resolves it."""
    if given is not None:
        return os.fspath(given), []
    named = doc.data.get("masterdata") if isinstance(doc.data, dict) else None
    if not isinstance(named, str) or not named:
        return None, []
    # Relative to the mapping file, so a plant folder can be moved as a whole.
    file = os.path.join(os.path.dirname(doc.file), named)
    if not os.path.isfile(file):
        return None, [doc.error(("masterdata",), f"master-data file '{file}' does not exist")]
    return file, []


def _references(mapping: Loaded[Mapping], masterdata: Loaded[MasterData]) -> list[FileError]:
    assert mapping.doc and mapping.model and masterdata.doc and masterdata.model
    checker = _Checker(mapping.doc, masterdata.doc, masterdata.model)
    return [e for name, m in mapping.model.machines.items() for e in checker.machine(name, m)]


class _Checker:
    """References of one mapping into one master-data file."""

    def __init__(self, doc: YamlDoc, md_doc: YamlDoc, md: MasterData) -> None:
        self.doc, self.md_doc, self.md = doc, md_doc, md

    def machine(self, name: str, machine: Machine) -> Iterator[FileError]:
        yield from self._work_center(name, machine)
        if isinstance(machine.order, str):
            yield from self._fixed_order(name, machine, machine.order)

    def _unknown(self, loc: tuple[str, ...], what: str, value: str, section: str) -> FileError:
        known = self.md_doc.keys_at((section,))
        return self.doc.error(loc, unknown(what, value, known, where=self.md_doc.file))

    def _work_center(self, name: str, machine: Machine) -> Iterator[FileError]:
        if machine.work_center not in self.md_doc.keys_at(("work_centers",)):
            loc = ("machines", name, "work_center")
            yield self._unknown(loc, "work center", machine.work_center, "work_centers")

    def _fixed_order(self, name: str, machine: Machine, number: str) -> Iterator[FileError]:
        if number not in self.md_doc.keys_at(("orders",)):
            yield self._unknown(("machines", name, "order"), "order", number, "orders")
            return
        order = self.md.orders.get(number)
        routing = self.md.routings.get(order.routing_key) if order else None
        if order is None or routing is None:  # broken in the master data: reported there
            return
        loc = ("machines", name, "operation")
        op = next((o for o in routing.operations if o.operation == machine.operation), None)
        if op is None:
            ops = ", ".join(dict.fromkeys(o.operation for o in routing.operations))
            has = f"its routing '{order.routing_key}' has {ops}"
            yield self.doc.error(loc, f"order {number} has no operation '{machine.operation}' ({has})")
        elif op.work_center != machine.work_center:
            message = (
                f"operation '{op.operation}' of order {number} runs on work center '{op.work_center}', "
                f"not on this machine's '{machine.work_center}'"
            )
            yield self.doc.error(loc, message)
