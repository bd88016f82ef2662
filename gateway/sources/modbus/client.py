"""The gateway's one door to pymodbus: connect to a Modbus TCP device and read a range.

pymodbus changes its API between minor versions (``slave=`` became ``device_id=``,
datastores and exceptions moved), so every call into it is here and nowhere else in the
gateway. What the rest sees is ``ModbusClient`` and three exceptions of ours:

* ``ModbusExceptionResponse`` — the device answered with a Modbus exception (illegal
  address, device busy, …); the connection is fine;
* ``ModbusNoResponse`` — no answer within the timeout; a late answer could still come
  and be taken for the next request's, so the caller must drop this connection;
* ``ModbusConnectionError`` — cannot connect, or the connection is gone.

This module must never retry, reconnect, sleep or log on its own (the source decides
and reports), and never let a pymodbus type or exception reach its callers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException

__all__ = [
    "EXCEPTION_NAMES",
    "ILLEGAL_ADDRESS",
    "ModbusClient",
    "ModbusConnectionError",
    "ModbusError",
    "ModbusExceptionResponse",
    "ModbusNoResponse",
]

ILLEGAL_ADDRESS = 2
# Modbus Application Protocol 1.1b, section 7.
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge (still working)",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ModbusError(Exception):
    """Something went wrong talking to a Modbus device."""


class ModbusExceptionResponse(ModbusError):
    """The device refused a request with an exception code."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"Modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown code')})")


class ModbusNoResponse(ModbusError, TimeoutError):
    """No answer within the timeout."""


class ModbusConnectionError(ModbusError, ConnectionError):
    """Cannot connect, or the connection was lost."""


class ModbusClient:
    """One TCP connection to one device. Build a new one for every connection: like the
    OPC UA source, the gateway never reuses a client after a failure."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._client = AsyncModbusTcpClient(
            host,
            port=port,
            timeout=timeout_s,
            retries=0,  # a retry on the same connection could meet the late answer to the first try
            reconnect_delay=0,  # 0 = never reconnect by itself; the source owns reconnecting
            name=f"{host}:{port}",
        )

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    async def connect(self) -> None:
        began = time.monotonic()
        try:
            ok = await self._client.connect()
        except (OSError, ModbusException) as exc:
            raise ModbusConnectionError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        if not ok:
            # pymodbus swallows the reason; how long it took still tells the two apart.
            took = time.monotonic() - began
            why = f"no answer within {self.timeout_s:g} s" if took >= 0.9 * self.timeout_s else "refused or unreachable"
            raise ModbusConnectionError(f"cannot connect to {self.host}:{self.port}: {why}")

    async def read(self, table: str, address: int, count: int, unit: int) -> Sequence[int] | Sequence[bool]:
        """``count`` registers (or bits) of ``table`` from ``address`` on unit ``unit``."""
        if not self.connected:
            raise ModbusConnectionError(f"connection to {self.host}:{self.port} is closed")
        method = {
            "holding": self._client.read_holding_registers,
            "input": self._client.read_input_registers,
            "coil": self._client.read_coils,
            "discrete_input": self._client.read_discrete_inputs,
        }[table]
        try:
            response = await method(address, count=count, device_id=unit)
        except ConnectionException as exc:
            raise ModbusConnectionError(f"connection to {self.host}:{self.port} lost: {exc}") from None
        except (ModbusException, asyncio.TimeoutError) as exc:
            # pymodbus reports a missing answer as ModbusIOException (a ModbusException).
            if not self.connected:
                raise ModbusConnectionError(f"connection to {self.host}:{self.port} lost") from None
            raise ModbusNoResponse(f"no response within {self.timeout_s:g} s") from exc
        if response.isError():
            raise ModbusExceptionResponse(int(response.exception_code))
        values = response.bits if table in ("coil", "discrete_input") else response.registers
        if len(values) < count:  # bits come padded to whole bytes; registers never short
            raise ModbusError(f"short response: asked for {count}, got {len(values)}")
        return list(values[:count])

    def close(self) -> None:
        self._client.close()
