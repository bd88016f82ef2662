"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

# Master data the tests share, one file per plant: tests/fixtures/masterdata/<name>.yaml.
MASTERDATA_FIXTURES = Path(__file__).parent / "fixtures" / "masterdata"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses right now, for a server a test starts a moment later.

    Not one the kernel would hand out by itself (``bind(0)``): those come from the ephemeral range, which
    every outgoing connection also takes its source port from, so in the moment between this check and
    the server's bind a connection of the other test lane (pytest-xdist) could take it ("address already
    in use"). The ports come from below that range, a slice of it per lane, so the lanes never meet."""
    lane = _lane_ports()
    if lane is None:  # an unusual ephemeral range: the kernel's choice, as before the lanes
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    low, high = lane
    for _ in range(500):
        port = random.randint(low, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free TCP port on 127.0.0.1 between {low} and {high}")


def _lane_ports() -> tuple[int, int] | None:
    """This lane's slice of the ports below the ephemeral range; None if that range leaves too few."""
    ephemeral_low = 32768
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    low, high = 10000, min(ephemeral_low, 65536) - 1
    lanes = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    lane = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % lanes
    size = (high - low + 1) // lanes
    if size < 100:
        return None
    return low + lane * size, low + (lane + 1) * size - 1


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


def post_units(engine, start: int, end: int, *, order: str, at, machine: str = "M1", operation: str = "0010",
               collector=None):
    """Confirm good units start..end of ``machine`` and post them as the writer does; the confirmation.

    ``collector``: the ``CollectorKey`` whose number ``order`` is (repetitive production)."""
    from gateway.domain.confirming import accumulate, confirm
    from gateway.domain.records import Increment, Position
    from gateway.ledger.masters import MasterCache
    from gateway.ledger.posting import apply
    from gateway.ledger.changes import ChangeSet

    inc = Increment(machine, "good", end - start, Position(0, start), Position(0, end), at)
    c = confirm(accumulate(None, inc, order=order, operation=operation, now=at),
                "every_units", "PC")
    with engine.begin() as conn:
        apply(conn, ChangeSet(confirmations=[c], collectors={order: collector} if collector else {}), MasterCache())
    return c


async def first_line_with(stream, text: str) -> str:
    """The first line of a subprocess' ``stream`` that contains ``text`` ("" at its end)."""
    while True:
        line = (await stream.readline()).decode()
        if text in line or not line:
            return line
