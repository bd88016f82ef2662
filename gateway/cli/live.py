"""``gateway validate --live``: read every tag of a mapping once from the real PLCs.

Each source connects, reads all its tags once and disconnects (``read_once``); a tag
that does not exist or cannot be read, a counter that is not an unsigned integer of its
declared width, and an order tag that is neither text nor a number become file:line
errors at the tag's key. A source that cannot be reached is one error at the source.
Reads only: it never writes to a PLC and never touches the ledger.
"""

from __future__ import annotations

import asyncio

from gateway.sources.base import Quality
from gateway.inputfile.errors import FileError
from gateway.inputfile.validate import Loaded
from gateway.mapping.model import COUNTER_WIDTH_BITS
from gateway.sources import build_sources
from gateway.sources.base import ORDER_ROLE, SERIAL_ROLE, TagValue


async def check_live(loaded: Loaded, *, timeout_s: float = 15.0) -> list[FileError]:
    mapping, doc = loaded.model, loaded.doc
    errors: list[FileError] = []
    for source in build_sources(mapping, lambda _batch: None):
        try:
            values = await asyncio.wait_for(source.read_once(), timeout_s)
        except Exception as exc:  # noqa: BLE001 — any failure to connect is reported, not raised
            # The source's own words: why, and what to do (a refused certificate, a
            # security mode the server does not offer, a wrong password, …).
            error, hint = source._why(exc)
            text = error.splitlines()[0] if error else type(exc).__name__
            errors.append(doc.error(("sources", source.name), f"cannot read from the PLC: {text}; {hint}"))
            continue
        bad = source.health.bad_tags
        for tv in values:
            problem = _problem(tv, mapping, bad)
            if problem:
                loc = ("machines", tv.machine, tv.role) if tv.role in (ORDER_ROLE, SERIAL_ROLE) else \
                    ("machines", tv.machine, "counters", tv.role)
                errors.append(doc.error(loc, problem))
    return sorted(errors, key=lambda e: e.line)


def _problem(tv: TagValue, mapping, bad_tags) -> str | None:
    machine = mapping.machines[tv.machine]
    if tv.quality is Quality.BAD or tv.value is None:
        reasons = "; ".join(sorted(set(bad_tags.values()))) or "bad quality"
        return f"cannot be read ({reasons})"
    if tv.role in (ORDER_ROLE, SERIAL_ROLE):
        if isinstance(tv.value, bool) or not isinstance(tv.value, str | int):
            return f"the {tv.role} tag holds {type(tv.value).__name__} {tv.value!r:.40}, expected text or a number"
        return None
    tag = getattr(machine.counters, tv.role)
    bits = COUNTER_WIDTH_BITS.get(tag.type)
    if isinstance(tv.value, bool) or not isinstance(tv.value, int):
        return f"holds {type(tv.value).__name__} {tv.value!r:.40}, expected an unsigned integer ({tag.type})"
    if bits and not 0 <= tv.value < 1 << bits:
        return f"holds {tv.value}, outside {tag.type}: check `type:` against the PLC"
    return None
