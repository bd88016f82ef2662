"""Hot reload of the mapping: reading a new mapping as `gateway run` does, and what it changes.

``checked_mapping`` is the one way a mapping file becomes the mapping a gateway runs on,
at start and at every reload (SIGHUP, ``gateway reload``): the file's own checks and, when it
names a master-data file, the references into it (``gateway validate``'s checks). Any
problem refuses the file with every ``file:line: key: message``.

``diff_mappings`` compares the running mapping with the new one (a pure function): which
machines are added, removed, changed (anything in their entry) or unchanged, and which
sources must be rebuilt — their connection settings changed, or the tags read over them
did (a source reads a fixed set of tags, so a machine added to, removed from or changed on
it means a new connection with the new set). ``gateway.service.Gateway.reload`` applies it.

Must never: touch a PLC or the ledger, or decide a quantity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from gateway.inputfile.errors import InputFileError
from gateway.mapping.load import load_mapping
from gateway.mapping.model import Mapping
from gateway.sources import modbus_tags, opcua_tags


def checked_mapping(path: str | os.PathLike[str]) -> Mapping:
    """The mapping in ``path`` if it passes every check; InputFileError with all problems otherwise."""
    from gateway.mapping.validate import validate_mapping

    errors = validate_mapping(path)  # the file, and its references into the master data it names
    if errors:
        raise InputFileError(errors)
    return load_mapping(path)


@dataclass(frozen=True)
class MappingChange:
    """What a new mapping changes against the running one (names sorted)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    sources_reconnected: tuple[str, ...] = ()  # running before and after, on a new connection
    sources_started: tuple[str, ...] = ()  # read from now on (new, or its first machine)
    sources_stopped: tuple[str, ...] = ()  # no longer read (gone, or without machines)

    @property
    def sources_rebuilt(self) -> tuple[str, ...]:
        """Every source whose current connection ends."""
        return tuple(sorted({*self.sources_reconnected, *self.sources_stopped}))

    def summary(self) -> str:
        def names(what: tuple[str, ...]) -> str:
            return ", ".join(what) or "none"

        return (f"machines added: {names(self.added)}; removed: {names(self.removed)}; changed: "
                f"{names(self.changed)}; unchanged: {len(self.unchanged)}; sources reconnected: "
                f"{names(self.sources_reconnected)}; started: {names(self.sources_started)}; "
                f"stopped: {names(self.sources_stopped)}")


def diff_mappings(old: Mapping, new: Mapping) -> MappingChange:
    added = sorted(new.machines.keys() - old.machines.keys())
    removed = sorted(old.machines.keys() - new.machines.keys())
    kept = sorted(old.machines.keys() & new.machines.keys())
    changed = [m for m in kept if old.machines[m] != new.machines[m]]
    before, after = _reads(old), _reads(new)
    return MappingChange(
        added=tuple(added), removed=tuple(removed), changed=tuple(changed),
        unchanged=tuple(m for m in kept if old.machines[m] == new.machines[m]),
        sources_reconnected=tuple(sorted(s for s in before.keys() & after.keys() if before[s] != after[s])),
        sources_started=tuple(sorted(after.keys() - before.keys())),
        sources_stopped=tuple(sorted(before.keys() - after.keys())),
    )


def _reads(mapping: Mapping) -> dict[str, tuple]:
    """Per source that is read (it has tags): its settings and the tags read over it."""
    reads = {}
    for name, config in mapping.sources.items():
        tags = opcua_tags(mapping, name) if config.opcua is not None else modbus_tags(mapping, name)
        if tags:
            # An OPC UA session also depends on the PKI folder and the application URI it presents.
            # The folder as a place, not as written: a mapping read through another path to the
            # same file (the workbench's check) names the same folder.
            pki = os.path.abspath(mapping.pki) if mapping.pki else None
            session = (pki, mapping.application_uri) if config.opcua is not None else ()
            reads[name] = (config, tuple(tags), session)
    return reads
