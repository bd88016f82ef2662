"""Fault 4: the network between gateway and PLCs is cut: blackholed, then reset.

A ``TcpProxy`` sits between the gateway and each simulator (OPC UA and Modbus). First
it swallows everything for a while (a pulled cable: sessions hang until they time out),
then it resets every connection and refuses new ones (half as long). The machines keep counting; when
the link is back the cumulative counters cover the gap and nothing is lost.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import FaultLine

pytestmark = pytest.mark.slow


def test_network_cut_blackhole_then_reset(ledger_url, tmp_path, soak, soak_round):
    cut_s = 30.0 if soak else 10.0
    with FaultLine(ledger_url, tmp_path, scenario="network cut") as line:
        line.sims.command("resume")
        time.sleep(1.5)
        for mode in ("blackhole", "reset"):
            for proxy in (line.opc_proxy, line.modbus_proxy):
                proxy.set_mode(mode)
            line.faults += 1
            time.sleep(cut_s if mode == "blackhole" else cut_s / 2)
            for proxy in (line.opc_proxy, line.modbus_proxy):
                proxy.set_mode("pass")
            time.sleep(2.0)
        figures = line.finish()
    assert figures.lost == 0
