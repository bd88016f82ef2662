"""The OPC UA source against a real asyncua server: delivery, resolution, faults, reconnects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from asyncua import ua
from structlog.testing import capture_logs

from gateway.sources.base import Quality
from gateway.backoff import Backoff
from gateway.sources.base import TagSpec, TagValue
from gateway.sources.opcua.source import OpcUaSource, resolve_address

from .conftest import URI, Collector, FreezableProxy, PlcServer, fast_config, free_port, running

CURRENT_TIME = "i=2258"  # Server_ServerStatus_CurrentTime, on every server
SERVER_STATE = "i=2259"


def press_tags(plc: PlcServer) -> list[TagSpec]:
    return [
        TagSpec("PRESS-01", "good", plc.address("Good")),
        TagSpec("PRESS-01", "scrap", plc.address("Scrap")),
        TagSpec("PRESS-01", "order", plc.address("Order")),
    ]


def asyncua_client_tasks() -> list[str]:
    """asyncua's per-client background tasks still running (names are asyncua internals)."""
    loops = ("_connection_supervisor", "_stale_watchdog_loop", "_renew_channel_loop", "_publish_loop")
    names = [t.get_coro().__qualname__ for t in asyncio.all_tasks() if not t.done()]
    return sorted(n for n in names if n.rsplit(".", 1)[-1] in loops)


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# --- delivery -------------------------------------------------------------------------


async def test_values_arrive_with_machine_role_and_quality(plc: PlcServer) -> None:
    got = Collector()
    source = OpcUaSource("press-line", fast_config(plc.endpoint), press_tags(plc), got)
    t = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
    async with running(source):
        # Initial values after subscribing: the consumer needs them to resume counting.
        await got.wait_for(lambda tv: tv.role == "order" and tv.value == "")
        await plc.write(
            ("Good", 41, t),
            ("Scrap", 3, t, ua.StatusCodes.UncertainLastUsableValue),
            ("Order", "1000123", t, ua.StatusCodes.BadSensorFailure),
        )
        good = await got.wait_for(lambda tv: tv.role == "good" and tv.value == 41)
        scrap = await got.wait_for(lambda tv: tv.role == "scrap" and tv.quality is Quality.UNCERTAIN)
        order = await got.wait_for(lambda tv: tv.role == "order" and tv.quality is Quality.BAD)

    assert (good.machine, good.quality, good.source_time) == ("PRESS-01", Quality.GOOD, t)
    assert good.received_at.tzinfo is not None and good.received_at > t
    assert scrap.value == 3  # uncertain keeps its value; the consumer decides
    assert order.value is None  # a bad value is never passed on as if it were one
    assert source.health.bad_tags == {}


async def test_source_time_falls_back_to_server_timestamp(plc: PlcServer) -> None:
    got = Collector()
    source = OpcUaSource("press-line", fast_config(plc.endpoint), press_tags(plc)[:1], got)
    async with running(source):
        await got.wait_for(lambda tv: tv.value == 0)
        before = datetime.now(UTC)
        await plc.write(("Good", 7, None))  # the PLC sends no source timestamp
        after = datetime.now(UTC)
        tv = await got.wait_for(lambda tv: tv.value == 7)
    assert before <= tv.source_time <= after
    assert tv.source_time.tzinfo is not None


async def test_one_write_arrives_as_one_batch_in_timestamp_order(plc: PlcServer) -> None:
    """The PLC sets the new order number, then resets the job counter, in one scan.

    The server lists notifications per monitored item, here the counter first (it was
    written first); the consumer must see the order change first to give the counts
    before the reset to the old order, so the batch is sorted by source timestamp.
    """
    got = Collector()
    source = OpcUaSource("press-line", fast_config(plc.endpoint), press_tags(plc), got)
    t = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
    async with running(source):
        await got.wait_for(lambda tv: tv.role == "order")
        await plc.write(("Good", 500, t, ua.StatusCodes.Good))
        await got.wait_for(lambda tv: tv.value == 500)
        await plc.write(("Good", 0, t + timedelta(milliseconds=2)), ("Order", "1000124", t + timedelta(milliseconds=1)))
        await got.wait_for(lambda tv: tv.value == "1000124")

    [batch] = [b for b in got.batches if any(tv.value == "1000124" for tv in b)]
    assert [(tv.role, tv.value) for tv in batch] == [("order", "1000124"), ("good", 0)]


async def test_a_tags_values_keep_their_order_when_the_plc_clock_steps_back(plc: PlcServer) -> None:
    """Sorting by timestamp alone would swap 101 and 102 and fake a counter reset."""
    got = Collector()
    source = OpcUaSource("press-line", fast_config(plc.endpoint), press_tags(plc), got)
    t = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
    async with running(source):
        await got.wait_for(lambda tv: tv.role == "order")
        await plc.write(
            ("Good", 101, t + timedelta(seconds=2)),
            ("Good", 102, t),  # NTP stepped the PLC clock back between two cycles
            ("Order", "1000125", t + timedelta(seconds=1)),
        )
        await got.wait_for(lambda tv: tv.value == 102)

    [batch] = [b for b in got.batches if any(tv.value == 102 for tv in b)]
    assert [tv.value for tv in batch] == ["1000125", 101, 102]


async def test_nsu_address_is_resolved_against_the_servers_namespaces() -> None:
    plc = PlcServer(free_port())
    await plc.start(extra_namespaces=["urn:vendor:lib-a", "urn:vendor:lib-b", "urn:vendor:lib-c"])
    try:
        assert plc.ns > 2  # the index the mapping author might have guessed is wrong
        got = Collector()
        tags = [TagSpec("PRESS-01", "good", f"nsu={URI};s=Press01.Good")]
        source = OpcUaSource("press-line", fast_config(plc.endpoint), tags, got)
        async with running(source):
            await got.wait_for(lambda tv: tv.value == 0)
            await plc.write(("Good", 12))
            await got.wait_for(lambda tv: tv.value == 12)
        assert source.health.bad_tags == {}
    finally:
        await plc.stop()


def test_resolve_address_forms() -> None:
    namespaces = ["http://opcfoundation.org/UA/", "urn:server", "urn:x", URI]
    assert resolve_address(f"nsu={URI};s=Press01.Good", namespaces) == ua.NodeId("Press01.Good", 3)
    assert resolve_address("ns=2;i=42", namespaces) == ua.NodeId(42, 2)
    assert resolve_address("i=2258", namespaces) == ua.NodeId(2258, 0)
    # String identifiers may contain ';' and '=' (Part 3, 8.2.4).
    assert resolve_address(f"nsu={URI};s=DB1;x=3", namespaces) == ua.NodeId("DB1;x=3", 3)
    with pytest.raises(ValueError, match="namespace URI 'urn:missing'"):
        resolve_address("nsu=urn:missing;s=A", namespaces)
    with pytest.raises(ValueError, match="namespace index 7"):
        resolve_address("ns=7;s=A", namespaces)
    with pytest.raises(ValueError, match="not a node id"):
        resolve_address("Press01.Good", namespaces)


# --- bad tags and server limits --------------------------------------------------------


async def test_unknown_node_does_not_stall_the_others(plc: PlcServer) -> None:
    got = Collector()
    tags = [
        TagSpec("PRESS-01", "good", plc.address("Good")),
        TagSpec("PRESS-01", "scrap", plc.address("NoSuchTag")),
        TagSpec("PRESS-02", "good", "nsu=urn:not-here;s=Press02.Good"),
        TagSpec("PRESS-01", "order", plc.address("Order")),
    ]
    with capture_logs() as logs:
        source = OpcUaSource("press-line", fast_config(plc.endpoint), tags, got)
        async with running(source):
            await got.wait_for(lambda tv: tv.role == "order")
            await plc.write(("Good", 9))
            await got.wait_for(lambda tv: tv.value == 9)
            health = source.health

    assert {(tv.machine, tv.role) for tv in got.values} == {("PRESS-01", "good"), ("PRESS-01", "order")}
    assert health.bad_tags == {
        plc.address("NoSuchTag"): "BadNodeIdUnknown",
        "nsu=urn:not-here;s=Press02.Good": health.bad_tags["nsu=urn:not-here;s=Press02.Good"],
    }
    assert "namespace URI 'urn:not-here'" in health.bad_tags["nsu=urn:not-here;s=Press02.Good"]
    bad_logs = [e for e in logs if e["event"] == "opcua.bad_tag"]
    assert [(e["machine"], e["role"], e["address"]) for e in bad_logs] == [
        ("PRESS-02", "good", "nsu=urn:not-here;s=Press02.Good"),
        ("PRESS-01", "scrap", plc.address("NoSuchTag")),
    ]
    assert all(e["source"] == "press-line" and "validate --live" in e["hint"] for e in bad_logs)


@pytest.mark.parametrize(
    ("stated", "refused_over", "calls"),
    [
        pytest.param(2, 2, [2, 2, 1], id="stated-limit-is-respected"),
        # States the default 10000 but accepts only 2: halve until the server takes it.
        pytest.param(None, 2, [5, 2, 2, 1], id="unstated-limit-is-found"),
    ],
)
async def test_monitored_items_are_created_in_batches_the_server_accepts(
    stated: int | None, refused_over: int, calls: list[int]
) -> None:
    plc = PlcServer(free_port())
    await plc.start(stated_items_per_call=stated, refused_over=refused_over)
    try:
        got = Collector()
        tags = press_tags(plc) + [TagSpec("PLC", "clock", CURRENT_TIME), TagSpec("PLC", "state", SERVER_STATE)]
        source = OpcUaSource("press-line", fast_config(plc.endpoint), tags, got)
        async with running(source):
            await wait_until(lambda: {tv.role for tv in got.values} == {t.role for t in tags})
        assert plc.item_calls == calls
        assert source.health.bad_tags == {}
    finally:
        await plc.stop()


# --- faults: restart, silence, consumer errors -----------------------------------------


async def test_reconnects_by_itself_after_server_restart_with_new_namespace_index() -> None:
    plc = PlcServer(free_port())
    await plc.start()
    got = Collector()
    tags = [TagSpec("PRESS-01", "good", f"nsu={URI};s=Press01.Good")]
    source = OpcUaSource("press-line", fast_config(plc.endpoint), tags, got)
    try:
        async with running(source):
            await got.wait_for(lambda tv: tv.value == 0)
            await plc.write(("Good", 100))
            await got.wait_for(lambda tv: tv.value == 100)
            first_ns = plc.ns

            await plc.stop()
            await wait_until(lambda: not source.health.connected)
            await plc.start(extra_namespaces=["urn:vendor:new-library"])  # same port
            assert plc.ns != first_ns

            await plc.write(("Good", 3))  # the PLC restarted: its counter starts again
            await got.wait_for(lambda tv: tv.value == 3)
            health = source.health
    finally:
        await plc.stop()
    assert health.connected and health.reconnects == 1 and health.bad_tags == {}
    assert "connection" in (health.last_error or "").lower()


async def test_frozen_connection_is_detected_and_rebuilt(plc: PlcServer) -> None:
    """The PLC's TCP stack stays up but nothing comes back: neither data nor keep-alive,
    nor answers to asyncua's ServerStatus probe. The source must not wait forever."""
    proxy = FreezableProxy(plc.port)
    await proxy.start()
    got = Collector()
    source = OpcUaSource("press-line", fast_config(proxy.endpoint), press_tags(plc), got)
    try:
        async with running(source):
            await got.wait_for(lambda tv: tv.role == "order")
            proxy.freeze_open_connections()
            frozen_at = time.monotonic()
            await plc.write(("Good", 77))
            await got.wait_for(lambda tv: tv.value == 77)  # through a new connection
            took = time.monotonic() - frozen_at
            # The abandoned client left nothing behind: one client's worth of tasks.
            assert len(asyncua_client_tasks()) == 4
        assert asyncua_client_tasks() == []
    finally:
        await proxy.stop()
    assert proxy.connections == 2
    assert source.health.reconnects == 1
    assert took < 6  # watchdog 1 s + teardown bounded by the request timeout + backoff


async def test_silent_subscription_is_detected_by_the_keepalive_watchdog(plc: PlcServer) -> None:
    """The server answers reads (so asyncua's own ServerStatus probe is happy) but its
    subscription stopped publishing: only the keep-alive watchdog notices."""
    got = Collector()
    source = OpcUaSource("press-line", fast_config(plc.endpoint), press_tags(plc), got)
    async with running(source):
        await got.wait_for(lambda tv: tv.role == "order")
        plc.stall_publishing()
        await plc.write(("Good", 5))
        await got.wait_for(lambda tv: tv.value == 5)  # delivered by a new subscription
        health = source.health
    assert health.reconnects == 1
    assert "no data or keep-alive" in (health.last_error or "")


async def test_consumer_error_resubscribes_and_redelivers_current_values(plc: PlcServer) -> None:
    got = Collector()
    failures: list[list[TagValue]] = []

    def flaky(batch: list[TagValue]) -> None:
        if not failures:
            failures.append(batch)
            raise RuntimeError("consumer bug")
        got(batch)

    source = OpcUaSource("press-line", fast_config(plc.endpoint), press_tags(plc), flaky)
    with capture_logs() as logs:
        async with running(source):
            await got.wait_for(lambda tv: tv.role == "good" and tv.value == 0)
    assert [tv.role for tv in failures[0]] == ["good", "scrap", "order"]
    assert any(e["event"] == "opcua.consumer_failed" for e in logs)
    assert source.health.reconnects == 1


def test_a_publish_response_split_by_the_server_is_delivered_as_one_batch() -> None:
    """Servers split a large publish into several responses (MoreNotifications); one
    write must still reach the consumer as one batch. (No server here splits, so the
    callback is fed directly.)"""
    from gateway.sources.opcua.source import _Connection, _Item

    got = Collector()
    source = OpcUaSource("press-line", fast_config("opc.tcp://127.0.0.1:4840"), [], got)
    good, order = TagSpec("PRESS-01", "good", "ns=2;s=G"), TagSpec("PRESS-01", "order", "ns=2;s=O")
    conn = _Connection(watchdog_s=1.0)
    conn.items = {1: _Item(ua.NodeId("G", 2), [good]), 2: _Item(ua.NodeId("O", 2), [order])}
    t = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)

    def response(handle: int, value: object, ts: datetime, more: bool) -> ua.PublishResult:
        dv = ua.DataValue(ua.Variant(value), SourceTimestamp=ts)
        data = ua.DataChangeNotification(MonitoredItems=[ua.MonitoredItemNotification(handle, dv)])
        message = ua.NotificationMessage(SequenceNumber=1, NotificationData=[data])
        return ua.PublishResult(SubscriptionId=1, MoreNotifications=more, NotificationMessage=message)

    source._on_publish(conn, response(1, 0, t + timedelta(milliseconds=2), more=True))
    assert got.batches == []
    source._on_publish(conn, response(2, "1000124", t + timedelta(milliseconds=1), more=False))
    assert [[(tv.role, tv.value) for tv in b] for b in got.batches] == [[("order", "1000124"), ("good", 0)]]


# --- shutdown and one-shot read --------------------------------------------------------


async def test_cancel_deletes_subscription_and_session(plc: PlcServer) -> None:
    got = Collector()
    source = OpcUaSource("press-line", fast_config(plc.endpoint), press_tags(plc), got)
    async with running(source):
        await got.wait_for(lambda tv: tv.role == "order")
        assert len(plc.server.iserver.subscription_service.subscriptions) == 1
    assert plc.server.iserver.subscription_service.subscriptions == {}
    assert not source.health.connected


async def test_cancel_does_not_hang_on_a_dead_server(plc: PlcServer) -> None:
    proxy = FreezableProxy(plc.port)
    await proxy.start()
    got = Collector()
    config = fast_config(proxy.endpoint, watchdog_s=30)  # the watchdog must not be what ends it
    source = OpcUaSource("press-line", config, press_tags(plc), got, request_timeout_s=1.0)
    try:
        task = asyncio.create_task(source.run())
        await got.wait_for(lambda tv: tv.role == "order")
        proxy.freeze_open_connections()
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        took = time.monotonic() - started
    finally:
        await proxy.stop()
    # Delete subscription and close session each wait at most the 1 s request timeout.
    assert took < 3


async def test_read_once_reads_every_tag_and_marks_bad_ones(plc: PlcServer) -> None:
    await plc.write(("Good", 1234), ("Order", "1000123"))
    tags = press_tags(plc) + [TagSpec("PRESS-02", "good", plc.address("Missing"))]
    source = OpcUaSource("press-line", fast_config(plc.endpoint), tags, lambda batch: None)
    values = await source.read_once()
    assert [(tv.machine, tv.role, tv.value, tv.quality) for tv in values] == [
        ("PRESS-01", "good", 1234, Quality.GOOD),
        ("PRESS-01", "scrap", 0, Quality.GOOD),
        ("PRESS-01", "order", "1000123", Quality.GOOD),
        ("PRESS-02", "good", None, Quality.BAD),
    ]
    assert source.health.bad_tags == {plc.address("Missing"): "BadNodeIdUnknown"}
    assert plc.server.iserver.subscription_service.subscriptions == {}


async def test_read_once_raises_when_nothing_listens() -> None:
    source = OpcUaSource("press-line", fast_config(f"opc.tcp://127.0.0.1:{free_port()}"), [], lambda batch: None)
    with pytest.raises(ConnectionRefusedError):
        await source.read_once()


# --- backoff ---------------------------------------------------------------------------


def test_backoff_doubles_up_to_max_with_jitter_and_resets() -> None:
    top = Backoff(0.5, 4.0, rand=lambda: 1.0)
    assert [top.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    bottom = Backoff(0.5, 4.0, rand=lambda: 0.0)
    assert [bottom.next() for _ in range(5)] == [0.5, 0.5, 1.0, 2.0, 2.0]
    top.reset()
    assert top.next() == 0.5


def test_backoff_refuses_nonsense_bounds() -> None:
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(2, 1)
