"""Timer confirmations that fall due together reach the ledger over a few ticks."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from gateway import service
from gateway.clock import utcnow
from gateway.domain.confirming import Moment, accumulate
from gateway.domain.records import Increment, Position
from gateway.ledger import schema as t
from gateway.mapping.model import Mapping
from gateway.service import Gateway
from tests.integration.lines import MASTERDATA
from tests.support import ledger_with_masterdata

MACHINES = 450


def gateway_with_pending(folder, confirm: dict, opened_at: datetime) -> Gateway:
    """A gateway (sources not started, writer started) whose every machine has 3 units pending."""
    engine = ledger_with_masterdata(f"sqlite:///{folder / 'ledger.sqlite'}", Path(MASTERDATA).read_text(), folder)
    mapping = Mapping.model_validate({
        "sources": {"sim": {"opcua": {"endpoint": "opc.tcp://127.0.0.1:9"}}},  # never connected here
        "machines": {f"M{i:03d}": {
            "source": "sim", "work_center": "WC-ASSY", "operation": "0010", "order": "1000124",
            "counters": {"good": {"node": f"ns=2;s=M{i:03d}.Good", "type": "uint32"}}, "confirm": confirm,
        } for i in range(MACHINES)},
    })
    gateway = Gateway(mapping, engine)
    gateway._restore()
    gateway.writer.start()
    for name, rt in gateway.machines.items():
        inc = Increment(name, "good", 3, Position(0, 0), Position(0, 3), opened_at)
        p = accumulate(None, inc, order="1000124", operation="0010", now=opened_at)
        rt.pendings[(p.order, p.operation)] = p
    return gateway


def confirmed(gateway: Gateway) -> int:
    with gateway.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.confirmations)).scalar()


def test_due_timers_are_confirmed_in_turns_of_at_most_the_cap_and_none_is_lost(tmp_path):
    gateway = gateway_with_pending(tmp_path, {"every_units": None, "every_seconds": 5, "jitter_seconds": 0},
                                   utcnow() - timedelta(minutes=5))
    after_each_tick = []
    for _ in range(3):
        gateway.tick()
        gateway.writer.barrier().result(30)
        after_each_tick.append(confirmed(gateway))
    cap = service.TIMER_CONFIRMATIONS_PER_TICK
    assert after_each_tick == [cap, 2 * cap, MACHINES]
    assert all(not rt.pendings for rt in gateway.machines.values())
    assert gateway.writer.stop(30)


def test_shutdown_confirms_everything_at_once(tmp_path):
    gateway = gateway_with_pending(tmp_path, {}, utcnow())
    gateway._confirm_all(Moment.SHUTDOWN)
    assert gateway.writer.stop(30)
    assert confirmed(gateway) == MACHINES
