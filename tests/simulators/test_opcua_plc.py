"""The simulated PLC over real OPC UA sockets: nodes, commands, restarts, timestamps."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from asyncua import Client, ua

from simulators.control import SimCommandError, call_command, resolve_node_id, sim_command, sim_command_sync
from simulators.machine import SimMachineConfig
from tests.support import first_line_with, free_port
from simulators.opcua_plc import NAMESPACE_URI, OpcUaPlc, node_id, parse_machine_spec

PROJECT_ROOT = Path(__file__).resolve().parents[2]



MACHINES = [
    SimMachineConfig("PRESS-01", rate_hz=50.0, units_per_cycle=4, scrap_ratio=0.2, order="1000123", seed=1),
    SimMachineConfig("SHORT", rate_hz=20.0, width_bits=16),
    SimMachineConfig("LONG", rate_hz=20.0, width_bits=64),
]


@pytest.fixture
async def plc():
    async with OpcUaPlc(MACHINES, port=free_port()) as running:
        yield running


@pytest.fixture
async def client(plc):
    async with connected(plc.endpoint) as session:
        yield session


def connected(endpoint: str) -> Client:
    session = Client(endpoint, timeout=5)
    session.session_timeout = 60_000
    return session


async def read(client: Client, machine: str, tag: str) -> ua.DataValue:
    node = client.get_node(await resolve_node_id(client, node_id(machine, tag)))
    return await node.read_data_value()


async def read_values(client: Client, machine: str) -> dict:
    tags = ("GoodCount", "ScrapCount", "OrderNumber", "State")
    return {tag: (await read(client, machine, tag)).Value.Value for tag in tags}


def shown(truth: dict) -> dict:
    """The node values a machine's truth says the server must show."""
    return {
        "GoodCount": truth["good_count"],
        "ScrapCount": truth["scrap_count"],
        "OrderNumber": truth["order"],
        "State": truth["state"],
    }


async def test_nodes_resolve_by_namespace_uri_with_the_counter_width_as_type(plc, client):
    assert await client.get_namespace_index(NAMESPACE_URI) == plc.namespace_index == 2
    expected = {"PRESS-01": ua.VariantType.UInt32, "SHORT": ua.VariantType.UInt16, "LONG": ua.VariantType.UInt64}
    for machine, counter_type in expected.items():
        for tag in ("GoodCount", "ScrapCount"):
            assert (await read(client, machine, tag)).Value.VariantType == counter_type
        assert (await read(client, machine, "OrderNumber")).Value.VariantType == ua.VariantType.String
        state = (await read(client, machine, "State")).Value
        assert (state.VariantType, state.Value) == (ua.VariantType.Int32, 6)
    assert (await read(client, "PRESS-01", "OrderNumber")).Value.Value == "1000123"


async def test_after_pause_the_server_shows_exactly_the_truth(plc, client):
    await asyncio.sleep(0.3)
    result = await call_command(client, "*", "pause")
    for machine, truth in result.items():
        assert truth["good_cycles"] + truth["scrap_cycles"] > 0
        assert await read_values(client, machine) == shown(truth)
    await asyncio.sleep(0.1)  # several ticks: nothing moves while paused
    assert await read_values(client, "PRESS-01") == shown(result["PRESS-01"])
    assert plc.models["PRESS-01"].truth() == result["PRESS-01"]


async def test_resume_counts_on_without_a_burst(plc, client):
    paused = await call_command(client, "PRESS-01", "pause")
    await asyncio.sleep(0.5)  # at 50 Hz a burst would be 25 cycles
    await call_command(client, "PRESS-01", "resume")
    truth = await call_command(client, "PRESS-01", "pause")
    made = truth["good_cycles"] + truth["scrap_cycles"] - paused["good_cycles"] - paused["scrap_cycles"]
    assert made < 10


async def test_reset_and_jump_through_the_method(client):
    before = await call_command(client, "PRESS-01", "pause")
    reset = await call_command(client, "PRESS-01", "reset")
    assert await read_values(client, "PRESS-01") == shown(reset) | {"GoodCount": 0, "ScrapCount": 0}
    assert reset["last_reset_raw"] == {"good": before["good_count"], "scrap": before["scrap_count"]}
    assert reset["good_cycles"] == before["good_cycles"]
    short = await call_command(client, "SHORT", "pause")
    jumped = await call_command(client, "SHORT", "jump_near_rollover", "3")
    assert (await read(client, "SHORT", "GoodCount")).Value.Value == 2**16 - 3
    assert jumped["jumped"]["good"] == 2**16 - 3 - short["good_count"]
    assert jumped["good_cycles"] == short["good_cycles"]


async def test_order_change_with_job_reset_is_written_before_the_zeroed_counters(client):
    await asyncio.sleep(0.2)  # some production, so the job reset moves the counters
    await call_command(client, "PRESS-01", "pause")
    truth = await call_command(client, "PRESS-01", "set_order", "1000125,reset")
    order = await read(client, "PRESS-01", "OrderNumber")
    good = await read(client, "PRESS-01", "GoodCount")
    assert (order.Value.Value, good.Value.Value) == ("1000125", 0)
    assert order.SourceTimestamp < good.SourceTimestamp
    assert set(truth["by_order"]) == {"1000123", "1000125"}
    assert truth["job_resets"] == 1


async def test_notifications_sorted_by_source_timestamp_tell_the_story(client):
    """asyncua groups a publish by monitored item, not by time: order by SourceTimestamp."""
    seen: list[tuple] = []

    class Collect:
        def datachange_notification(self, node, value, data):
            stamp = data.monitored_item.Value.SourceTimestamp
            seen.append((stamp, node.nodeid.Identifier.split(".")[1], value))

    subscription = await client.create_subscription(200, Collect())
    tags = ("GoodCount", "OrderNumber")
    nodes = [client.get_node(await resolve_node_id(client, node_id("PRESS-01", tag))) for tag in tags]
    await subscription.subscribe_data_change(nodes, queuesize=100)
    await asyncio.sleep(0.3)
    await call_command(client, "PRESS-01", "set_order", "1000126,reset")
    await asyncio.sleep(0.5)
    await subscription.delete()
    stamps = [stamp for stamp, _, _ in seen]
    assert len(set(stamps)) == len(stamps)  # strictly increasing: sorting is unambiguous
    story = [(tag, value) for _, tag, value in sorted(seen)]
    change = story.index(("OrderNumber", "1000126"))
    old_job = [value for tag, value in story[:change] if tag == "GoodCount"]
    assert old_job == sorted(old_job) and old_job[-1] > 0
    # The new order number first, then the job counters restarting from zero.
    assert story[change + 1] == ("GoodCount", 0)


async def test_refused_commands_come_back_as_errors(plc):
    with pytest.raises(SimCommandError, match="unknown command 'explode'"):
        await sim_command(plc.endpoint, "PRESS-01", "explode")
    with pytest.raises(SimCommandError, match="unknown machine"):
        await plc.command("NOPE", "pause")


async def test_machines_keep_counting_while_the_server_is_down(plc):
    before = await sim_command(plc.endpoint, "SHORT", "truth")
    await plc.stop_server()
    assert not plc.serving
    with pytest.raises(OSError):
        await sim_command(plc.endpoint, "SHORT", "truth", timeout_s=1)
    await asyncio.sleep(0.3)
    await plc.start_server()
    after = await sim_command(plc.endpoint, "SHORT", "pause")
    assert after["good_cycles"] >= before["good_cycles"] + 5  # 20 Hz for well over 0.3 s
    async with connected(plc.endpoint) as client:
        assert await read_values(client, "SHORT") == shown(after)


async def test_a_restart_can_renumber_our_namespace(plc):
    async with connected(plc.endpoint) as client:
        old_id = await resolve_node_id(client, node_id("PRESS-01", "GoodCount"))
    await plc.stop_server()
    await plc.start_server(extra_namespaces_first=3)
    assert plc.namespace_index == 5
    async with connected(plc.endpoint) as client:
        new_id = await resolve_node_id(client, node_id("PRESS-01", "GoodCount"))
        assert (old_id.NamespaceIndex, new_id.NamespaceIndex) == (2, 5)
        assert (await client.get_node(new_id).read_data_value()).Value.VariantType == ua.VariantType.UInt32
        with pytest.raises(ua.UaStatusCodeError):
            await client.get_node(old_id).read_value()  # a cached ns=2 id is now wrong
        truth = await call_command(client, "PRESS-01", "pause")
        assert await read_values(client, "PRESS-01") == shown(truth)


async def test_heartbeat_moves(client):
    current_time = client.get_node(ua.ObjectIds.Server_ServerStatus_CurrentTime)
    first = await current_time.read_value()
    await asyncio.sleep(1.2)
    assert await current_time.read_value() > first


async def test_sync_helper_from_another_thread(plc):
    truth = await asyncio.to_thread(sim_command_sync, plc.endpoint, "LONG", "truth")
    assert truth["width_bits"] == 64


# --- CLI -------------------------------------------------------------------------------


def test_machine_spec_keys():
    config = parse_machine_spec("PRESS-01,rate=5,upc=4,scrap=0.02,order=1000123,width=16,initial=65530,seed=9")
    assert config == SimMachineConfig(
        "PRESS-01",
        rate_hz=5.0,
        units_per_cycle=4,
        scrap_ratio=0.02,
        order="1000123",
        width_bits=16,
        initial_count=65530,
        seed=9,
    )
    assert parse_machine_spec("WELD-02").rate_hz == 1.0
    assert parse_machine_spec("WELD-02,phase=0.5").phase == 0.5


@pytest.mark.parametrize(
    ("spec", "message"), [("M,speed=3", "key one of"), ("M,rate", "key=value"), ("M,upc=x", "upc")]
)
def test_machine_spec_refusals(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_machine_spec(spec)


async def test_cli_serves_until_sigterm():
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators.opcua_plc",
        "--port",
        str(port),
        "--demo",
        "--machine",
        "EXTRA,rate=2,width=16",
        cwd=PROJECT_ROOT,
        env=os.environ | {"PYTHONPATH": str(PROJECT_ROOT)},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        started = await asyncio.wait_for(first_line_with(process.stderr, "serving"), timeout=15)
        assert f"opc.tcp://127.0.0.1:{port}" in started
        result = await sim_command(f"opc.tcp://127.0.0.1:{port}", "*", "truth")
        assert set(result) == {"PRESS-01", "WELD-02", "ASSY-03", "EXTRA"}
        assert result["PRESS-01"]["units_per_cycle"] == 4
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0


def test_a_machine_is_written_again_only_when_its_model_or_its_fault_changed():
    """What the tick skips: a machine whose model did not move since it was written (``has_news``)."""
    from simulators.machine import MachineModel
    from simulators.opcua_plc import _MachineNodes

    model = MachineModel(SimMachineConfig(name="M", rate_hz=1.0))
    nodes = _MachineNodes(model, [])
    assert nodes.has_news(None)  # never written
    asyncio.run(nodes.publish(None, None))  # no nodes: nothing to write, the revision is taken as shown
    assert not nodes.has_news(None)
    assert nodes.has_news("bad")  # a fault to show
    model.advance(0.5)
    assert not nodes.has_news(None)  # half a cycle: nothing a tag shows
    model.advance(0.5)
    assert nodes.has_news(None)  # a cycle
    asyncio.run(nodes.publish(None, None))
    model.pause()
    assert nodes.has_news(None)  # the state tag
    asyncio.run(nodes.publish(None, None))
    model.set_order("B")
    assert nodes.has_news(None)  # the order tag
