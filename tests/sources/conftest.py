"""A real asyncua server (and a TCP proxy that can go silent) for the source tests,
and what every source test uses: ``Collector`` (an ``on_batch`` to await) and ``running``.

Kept tiny and local on purpose: the plant simulator in ``simulators/`` models machines;
these tests need precise control over one server (restart it with other namespaces,
stop its publishing, freeze its connection) and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime

import pytest
from asyncua import Server, ua
from asyncua.common.utils import ServiceError

from gateway.mapping.model import OpcUaSource as OpcUaSourceConfig
from gateway.sources.base import Source, TagValue
from tests.support import free_port  # noqa: F401 — re-exported to the tests

URI = "urn:test:press-line"
VARIABLES = {"Good": ua.VariantType.UInt32, "Scrap": ua.VariantType.UInt32, "Order": ua.VariantType.String}



@pytest.fixture(autouse=True)
def _quiet_asyncua() -> Iterable[None]:
    # asyncua logs every request at INFO and a traceback for each publish retry after a
    # dropped connection; failing tests should show our log lines, not thousands of those.
    logger = logging.getLogger("asyncua")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


class PlcServer:
    """An OPC UA server with Press01.{Good,Scrap,Order} in namespace ``URI``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint = f"opc.tcp://127.0.0.1:{port}"
        self.server: Server | None = None
        self.ns = 0
        self.nodes: dict[str, ua.NodeId] = {}
        self.item_calls: list[int] = []

    async def start(
        self,
        extra_namespaces: Iterable[str] = (),
        *,
        stated_items_per_call: int | None = None,
        refused_over: int | None = None,
        user_manager: object | None = None,
        configure: Callable[[Server], Awaitable[None]] | None = None,
    ) -> None:
        server = Server(user_manager=user_manager)
        await server.init()
        server.set_endpoint(f"{self.endpoint}/")
        if configure is not None:  # security: policies, certificate, validator (test_opcua_security)
            await configure(server)
        # Registered first, so that our namespace gets a later index (as after a PLC
        # program download that adds a library).
        for uri in extra_namespaces:
            await server.register_namespace(uri)
        self.ns = await server.register_namespace(URI)
        press = await server.nodes.objects.add_object(ua.NodeId("Press01", self.ns), "Press01")
        for name, vtype in VARIABLES.items():
            initial = "" if vtype == ua.VariantType.String else 0
            var = await press.add_variable(ua.NodeId(f"Press01.{name}", self.ns), name, ua.Variant(initial, vtype))
            self.nodes[name] = var.nodeid
        if stated_items_per_call is not None:
            await self._state_items_per_call(server, stated_items_per_call)
        self.item_calls = self._record_item_calls(server, refused_over)
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is None:
            return
        # Server.stop() waits up to a second for its clock task to notice a flag;
        # cancelling it instead keeps restarts (and the whole module) fast.
        clock = self.server.iserver.time_task
        if clock is not None:
            clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clock
            self.server.iserver.time_task = None
        await self.server.stop()
        self.server = None

    def address(self, name: str) -> str:
        return f"ns={self.ns};s=Press01.{name}"

    async def write(self, *values: tuple) -> None:
        """Write values in ONE Write service call, as a PLC updates its tags in one scan.

        Each value is ``(name, value)``, ``(name, value, source_time)`` or
        ``(name, value, source_time, status_code)``; ``source_time=None`` sends none.
        """
        assert self.server is not None
        params = ua.WriteParameters()
        for name, value, *rest in values:
            ts = rest[0] if rest else datetime.now(UTC)
            status = rest[1] if len(rest) > 1 else ua.StatusCodes.Good
            dv = ua.DataValue(
                ua.Variant(value, VARIABLES[name]), StatusCode=ua.StatusCode(status), SourceTimestamp=ts
            )
            write = ua.WriteValue(NodeId=self.nodes[name], AttributeId=ua.AttributeIds.Value, Value=dv)
            params.NodesToWrite.append(write)
        results = await self.server.iserver.isession.write(params)
        for r in results:
            r.check()

    def stall_publishing(self) -> None:
        """Stop every subscription from publishing (no data, no keep-alive) while the
        session still answers reads: the case only a keep-alive watchdog notices."""
        assert self.server is not None

        async def silent(*_args: object) -> bool:
            return False

        for sub in self.server.iserver.subscription_service.subscriptions.values():
            sub.publish_results = silent  # instance attribute shadows the method

    @staticmethod
    async def _state_items_per_call(server: Server, limit: int) -> None:
        limit_id = ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall
        node = server.get_node(ua.NodeId(limit_id))
        await node.write_value(ua.Variant(limit, ua.VariantType.UInt32))

    @staticmethod
    def _record_item_calls(server: Server, refused_over: int | None) -> list[int]:
        """Record the size of every CreateMonitoredItems call; refuse calls larger than
        ``refused_over`` with BadTooManyOperations, as small embedded servers do."""
        service = server.iserver.subscription_service
        original = service.create_monitored_items
        calls: list[int] = []

        async def recorded(params: ua.CreateMonitoredItemsParameters) -> list[ua.MonitoredItemCreateResult]:
            calls.append(len(params.ItemsToCreate))
            if refused_over is not None and len(params.ItemsToCreate) > refused_over:
                raise ServiceError(ua.StatusCodes.BadTooManyOperations)
            return await original(params)

        service.create_monitored_items = recorded
        return calls


@pytest.fixture
async def plc() -> AsyncIterator[PlcServer]:
    server = PlcServer(free_port())
    await server.start()
    yield server
    await server.stop()


class FreezableProxy:
    """TCP proxy whose open connections can be frozen: bytes are swallowed, sockets stay
    open. That is a PLC whose runtime hangs while its TCP stack still answers."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}"
        self._frozen: set[int] = set()
        self._conns: list[int] = []
        self._server: asyncio.base_events.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def freeze_open_connections(self) -> None:
        self._frozen.update(self._conns)

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_id = len(self._conns)
        self._conns.append(conn_id)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:  # server down: the client sees its connection closed, as without proxy
            writer.close()
            return
        self._writers += [writer, up_writer]
        await asyncio.gather(
            self._pipe(conn_id, reader, up_writer), self._pipe(conn_id, up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, conn_id: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if conn_id in self._frozen:
                continue
            writer.write(data)
            await writer.drain()
        writer.close()


class Collector:
    """The ``on_batch`` callback of the tests: keeps every batch, lets tests await values."""

    def __init__(self) -> None:
        self.batches: list[list[TagValue]] = []
        self._changed = asyncio.Event()

    def __call__(self, batch: list[TagValue]) -> None:
        self.batches.append(batch)
        self._changed.set()

    @property
    def values(self) -> list[TagValue]:
        return [tv for batch in self.batches for tv in batch]

    async def wait_for(self, predicate: Callable[[TagValue], bool], timeout: float = 10.0) -> TagValue:
        deadline = time.monotonic() + timeout
        while True:
            found = next((tv for tv in self.values if predicate(tv)), None)
            if found is not None:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching value within {timeout}s; got {self.values}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass


@contextlib.asynccontextmanager
async def running(source: Source) -> AsyncIterator[asyncio.Task[None]]:
    """``source.run()`` as a task for the duration; cancelled (and must end so) afterwards."""
    task = asyncio.create_task(source.run())
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def fast_config(endpoint: str, **overrides: object) -> OpcUaSourceConfig:
    """Source settings that make reconnects happen within a second in tests."""
    settings: dict[str, object] = {
        "endpoint": endpoint,
        "publishing_interval_ms": 50,
        "watchdog_s": 1.0,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.3,
    }
    settings.update(overrides)
    return OpcUaSourceConfig(**settings)
