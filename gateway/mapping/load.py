"""Load the tag-mapping file, refusing it with every problem found, each at file:line.

For: ``load_mapping`` (what the service runs on) and ``read_mapping`` (the same check,
keeping the valid part, for ``validate_mapping``). Beyond the schema in
``gateway.mapping.model`` it checks what needs the whole file: a machine's source must be
defined; a tag must be written for its source's protocol (a ``node`` on a Modbus source
or a ``register`` on an OPC UA source is refused); no PLC node and no Modbus register may
feed two counters — it would count the same parts twice — so overlapping register ranges
on one unit are refused; and a Modbus tag must fit in one read of its source. It is also
the one place that reads an OPC UA source's ``password_file`` into its ``password``, so
that the sources only ever see a password.

Must never: return a mapping with any problem in it, stop at the first problem, touch
a PLC, the master data or the ledger (references to master data are
``gateway.mapping.validate``'s), or put a password or a password file's name into a
message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace

from pydantic import Field, SecretStr

from gateway.mapping.model import (
    CounterTag,
    Machine,
    Mapping,
    ModbusCounterTag,
    ModbusOrderTag,
    ModbusSource,
    ModbusStateTag,
    OrderTag,
    StateTag,
    is_thumbprint,
)
from gateway.inputfile.errors import FileError, Loc, by_line, dotted
from gateway.inputfile.messages import show, unknown
from gateway.inputfile.read import YamlDoc, repeats
from gateway.inputfile.validate import Loaded, read_model
from gateway.mapping.templates import with_presets
from gateway.masterdata.model import Id


def load_mapping(path: str | os.PathLike[str]) -> Mapping:
    """The mapping in ``path``; raises InputFileError listing every problem."""
    return read_mapping(path).require()


def read_mapping(path: str | os.PathLike[str], *, unfinished: bool = False) -> Loaded[Mapping]:
    """Every problem in the file, and the part of it that is valid: passwords read from
    their files, and file names in the mapping (the PKI folder, certificates, keys)
    joined to the mapping's folder, as a program in any working directory needs them —
    they are relative to the mapping file so that a plant folder can be moved as a whole.

    ``unfinished``: a mapping still being written, whose ``machines:`` may be missing; its
    sources are read all the same (``gateway browse`` connects as one of them to find
    the tags the machines will need).
    """
    loaded = read_model(path, _Unfinished if unfinished else Mapping, _whole_file_errors, with_presets)
    if loaded.doc is None or loaded.model is None:
        return loaded
    mapping, errors = _with_password_files(loaded.doc, loaded.model)
    mapping = _paths_from(os.path.dirname(loaded.file), mapping)
    return replace(loaded, model=mapping, errors=by_line(loaded.errors + errors))


class _Unfinished(Mapping):
    """A mapping without machines yet: the missing key is no error, and the valid part keeps the sources."""

    machines: dict[Id, Machine] = Field(default_factory=dict)


# A password file holds one line; anything much bigger is the wrong file (or /dev/zero).
MAX_PASSWORD_FILE_BYTES = 4096


def _with_password_files(doc: YamlDoc, mapping: Mapping) -> tuple[Mapping, list[FileError]]:
    """The mapping with each ``password_file`` read into its source's ``password``."""
    errors: list[FileError] = []
    sources = dict(mapping.sources)
    for name, source in mapping.sources.items():
        config = source.opcua
        if config is None or config.password_file is None:
            continue
        loc = ("sources", name, "opcua", "password_file")
        if config.password is not None:
            errors.append(doc.error(loc, "give either `password` or `password_file`, not both"))
            continue
        # Relative to the mapping, like `masterdata:`: a plant folder moves as a whole.
        password, problem = _read_password(os.path.join(os.path.dirname(doc.file), config.password_file))
        if problem is not None:
            errors.append(doc.error(loc, problem))
            continue
        sources[name] = source.model_copy(update={"opcua": config.model_copy(update={"password": password})})
    return mapping.model_copy(update={"sources": sources}), errors


def _read_password(file: str) -> tuple[SecretStr | None, str | None]:
    """The password in ``file``, or why there is none; messages never name the file (a
    password written here by mistake would be shown)."""
    try:
        with open(file, "rb") as stream:
            raw = stream.read(MAX_PASSWORD_FILE_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        reason = getattr(exc, "strerror", None) or "not a file name"
        return None, f"cannot read the password file (the path is relative to the mapping file): {reason}"
    if len(raw) > MAX_PASSWORD_FILE_BYTES:
        return None, f"the password file is larger than {MAX_PASSWORD_FILE_BYTES} bytes: is it the right file?"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None, "the password file is not UTF-8 text"
    password = text.rstrip("\r\n")  # editors end a file with a newline; a password does not
    if not password:
        return None, "the password file is empty"
    return SecretStr(password), None


def _paths_from(folder: str, mapping: Mapping) -> Mapping:
    def here(name: str) -> str:
        return os.path.join(folder, os.path.expanduser(name))

    sources = {}
    for name, source in mapping.sources.items():
        ua = source.opcua
        if ua is not None:
            pin = ua.server_certificate
            ua = ua.model_copy(update={
                "certificate": here(ua.certificate) if ua.certificate else None,
                "private_key": here(ua.private_key) if ua.private_key else None,
                "server_certificate": here(pin) if pin and not is_thumbprint(pin) else pin,
            })
            source = source.model_copy(update={"opcua": ua})
        sources[name] = source
    return mapping.model_copy(update={"pki": here(mapping.pki or "pki"), "sources": sources})


def _whole_file_errors(doc: YamlDoc, mapping: Mapping) -> list[FileError]:
    return (
        _unknown_sources(doc, mapping)
        + _wrong_protocol(doc, mapping)
        + _shared_nodes(doc, mapping)
        + _modbus_layout(doc, mapping)
    )


def _unknown_sources(doc: YamlDoc, mapping: Mapping) -> list[FileError]:
    # Names from the file, not the valid part: a broken source is reported on its own.
    sources = doc.keys_at(("sources",))
    return [
        doc.error(("machines", name, "source"), unknown("source", m.source, sources))
        for name, m in mapping.machines.items()
        if m.source not in sources
    ]


def _shared_nodes(doc: YamlDoc, mapping: Mapping) -> list[FileError]:
    """A node read as two counters, or as a counter and an order tag, on one source.

    Several machines may share one order-number tag (a line running one order); a
    counter node must be a single machine's single counter.
    """
    errors = []
    for (source, node), loc, first in repeats(_nodes(mapping)):
        if loc[2] == first[2] and loc[2] in ("order", "count_when"):
            continue  # a line's machines may share one order tag, or one state tag
        where = f"{dotted(first[:-1])} (line {doc.line(first)})"
        errors.append(doc.error(loc, f"node {show(node)} of source '{source}' is already used at {where}"))
    return errors


def _nodes(mapping: Mapping) -> Iterator[tuple[tuple[str, str], Loc]]:
    for name, machine, loc, tag in _tags(mapping):
        if isinstance(tag, (CounterTag, OrderTag, StateTag)):
            yield (machine.source, tag.node.strip()), loc + ("node",)


Tag = CounterTag | OrderTag | StateTag | ModbusCounterTag | ModbusOrderTag | ModbusStateTag


def _tags(mapping: Mapping) -> Iterator[tuple[str, Machine, Loc, Tag]]:
    """Every tag with its machine and place; counters first, so that an order tag
    that repeats a counter is the one reported."""
    for name, machine in mapping.machines.items():
        for counter, tag in _counters(machine):
            yield name, machine, ("machines", name, "counters", counter), tag
    for name, machine in mapping.machines.items():
        if not isinstance(machine.order, str):
            yield name, machine, ("machines", name, "order"), machine.order
    for name, machine in mapping.machines.items():
        if machine.count_when is not None:
            yield name, machine, ("machines", name, "count_when"), machine.count_when
    for name, machine in mapping.machines.items():
        if machine.serial is not None:
            yield name, machine, ("machines", name, "serial"), machine.serial


def _counters(machine: Machine) -> Iterator[tuple[str, CounterTag | ModbusCounterTag]]:
    for counter, tag in machine.counters:
        if tag is not None:
            yield counter, tag


def _wrong_protocol(doc: YamlDoc, mapping: Mapping) -> list[FileError]:
    """A tag written for the other protocol than its source speaks."""
    errors = []
    for _, machine, loc, tag in _tags(mapping):
        source = mapping.sources.get(machine.source)
        if source is None:
            continue  # reported as an unknown source
        if source.protocol == "modbus" and isinstance(tag, (CounterTag, OrderTag, StateTag)):
            errors.append(doc.error(loc + ("node",), (
                f"source '{machine.source}' is a Modbus source: write this tag as "
                "{register: …, type: …}, not as an OPC UA node")))
        elif source.protocol == "opcua" and isinstance(tag, (ModbusCounterTag, ModbusOrderTag, ModbusStateTag)):
            errors.append(doc.error(loc + ("register",), (
                f"source '{machine.source}' is an OPC UA source: write this tag as {{node: …}}, "
                "not as a Modbus register")))
    return errors


@dataclass(frozen=True)
class _Span:
    """The registers one Modbus tag occupies, and where the tag is written."""

    first: int
    last: int
    loc: Loc
    source: str
    tag: ModbusCounterTag | ModbusOrderTag

    def text(self) -> str:
        what = f"register {self.first}" if self.first == self.last else f"registers {self.first}..{self.last}"
        return f"{self.tag.table} {what}"


def _modbus_layout(doc: YamlDoc, mapping: Mapping) -> list[FileError]:
    """Modbus tags that do not fit in one read, or that overlap on one unit."""
    errors = []
    units: dict[tuple[str, int, int, str], list[_Span]] = {}
    for _, machine, loc, tag in _tags(mapping):
        source = mapping.sources.get(machine.source)
        if source is None or source.modbus is None or not isinstance(tag, (ModbusCounterTag, ModbusOrderTag,
                                                                             ModbusStateTag)):
            continue
        config: ModbusSource = source.modbus
        if tag.registers > config.max_registers_per_read:
            key = "length" if isinstance(tag, ModbusOrderTag) and tag.type == "string" else "type"
            errors.append(doc.error(loc + (key,), (
                f"{tag.registers} registers do not fit in one read of source '{machine.source}' "
                f"(max_registers_per_read: {config.max_registers_per_read})")))
            continue
        # Two sources may poll the same unit (e.g. at other intervals): a unit is its
        # address, not its source's name.
        unit = (config.host.strip().lower(), config.port, config.unit, tag.table)
        units.setdefault(unit, []).append(_Span(tag.register, tag.register + tag.registers - 1, loc, machine.source, tag))
    for spans in units.values():
        errors += _overlaps(doc, spans)
    return errors


def _overlaps(doc: YamlDoc, spans: list[_Span]) -> list[FileError]:
    """Each tag that overlaps a tag written before it, reported once, at itself.

    Sorted by first register, the tags a span can overlap are those still "open" (their
    last register not passed yet); with sparse layouts that set stays tiny, so thousands
    of tags take one sweep. Machines may share one order tag (a line running one
    order): identical order tags are one value read once, not an overlap.
    """
    order = {id(s): i for i, s in enumerate(spans)}  # file order: counters, then order tags
    first_clash: dict[int, _Span] = {}  # later tag → the earliest-written tag it overlaps
    open_spans: list[_Span] = []
    for span in sorted(spans, key=lambda s: (s.first, order[id(s)])):
        open_spans = [o for o in open_spans if o.last >= span.first]
        for other in open_spans:
            if _same_order_tag(span, other):
                continue
            later, earlier = (span, other) if order[id(span)] > order[id(other)] else (other, span)
            known = first_clash.get(id(later))
            if known is None or order[id(earlier)] < order[id(known)]:
                first_clash[id(later)] = earlier
        open_spans.append(span)
    errors = []
    for later in spans:
        earlier = first_clash.get(id(later))
        if earlier is None:
            continue
        where = f"{dotted(earlier.loc)} ({earlier.text()}"
        where += f" of source '{earlier.source}'" if earlier.source != later.source else ""
        verb = "overlaps" if later.first == later.last else "overlap"
        message = f"{later.text()} {verb} {where}, line {doc.line(earlier.loc)}): a register belongs to one tag"
        errors.append(doc.error(later.loc + ("register",), message))
    return errors


def _same_order_tag(a: _Span, b: _Span) -> bool:
    """The same order (or state) tag, shared by a line's machines: one value, read once."""
    return isinstance(a.tag, (ModbusOrderTag, ModbusStateTag)) and a.tag == b.tag
