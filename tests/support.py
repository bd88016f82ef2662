"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import socket
from pathlib import Path

# Master data the tests share, one file per plant: tests/fixtures/masterdata/<name>.yaml.
MASTERDATA_FIXTURES = Path(__file__).parent / "fixtures" / "masterdata"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def masterdata_fixture(name: str) -> str:
    """The text of ``tests/fixtures/masterdata/<name>.yaml`` (a test may vary it with ``str.replace``)."""
    return (MASTERDATA_FIXTURES / f"{name}.yaml").read_text(encoding="utf-8")


def ledger_with_masterdata(url: str, masterdata_yaml: str, folder):
    """A ledger at ``url`` holding the master data (and opening stock) of ``masterdata_yaml``."""
    from gateway.ledger.masters import store_masterdata
    from gateway.ledger.schema import open_engine
    from gateway.masterdata.load import load_masterdata, to_domain

    path = folder / "md.yaml"
    path.write_text(masterdata_yaml)
    md = load_masterdata(path)
    engine = open_engine(url)
    store_masterdata(engine, to_domain(md), md.stock)
    return engine


def post_units(engine, start: int, end: int, *, order: str, at, machine: str = "M1", operation: str = "0010"):
    """Confirm good units start..end of ``machine`` and post them as the writer does; the confirmation."""

    from gateway.domain.confirming import accumulate, confirm
    from gateway.domain.records import Increment, Position
    from gateway.ledger.masters import MasterCache
    from gateway.ledger.posting import apply
    from gateway.ledger.changes import ChangeSet

    inc = Increment(machine, "good", end - start, Position(0, start), Position(0, end), at)
    c = confirm(accumulate(None, inc, order=order, operation=operation, now=at),
                "every_units", "PC")
    with engine.begin() as conn:
        apply(conn, ChangeSet(confirmations=[c]), MasterCache())
    return c


async def first_line_with(stream, text: str) -> str:
    """The first line of a subprocess' ``stream`` that contains ``text`` ("" at its end)."""
    while True:
        line = (await stream.readline()).decode()
        if text in line or not line:
            return line
