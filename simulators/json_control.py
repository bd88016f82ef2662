"""A line-based JSON control channel for simulators that have no method call of their own.

The OPC UA simulator takes commands through its ``Sim.Command`` method; Modbus has
nothing of the kind (a command mailbox in holding registers would need a protocol of
its own for the answer), so the Modbus simulator listens on a second TCP port. One
request per line, ``{"machine": …, "command": …, "argument": …}``, one answer per line:
the truth (see ``simulators.commands``) or ``{"error": "<message>"}``.

The client opens a connection per call and closes it: it must never hold a connection
between calls, nor touch anything of the code under test.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from simulators.commands import SimCommandError

__all__ = ["json_command", "json_command_sync", "serve_json_commands"]

Handler = Callable[[str, str, str], Awaitable[dict]]
_MAX_LINE = 4 * 1024 * 1024  # the truth of a few hundred machines in one answer


async def serve_json_commands(handle: Handler, host: str, port: int) -> asyncio.Server:
    """Listen on ``host:port`` and answer each request line with ``handle``'s result."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(json.dumps(await _answer(handle, line)).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # a client that went away or sent junk; the next one gets a fresh session
        finally:
            writer.close()

    return await asyncio.start_server(session, host, port, limit=_MAX_LINE)


async def _answer(handle: Handler, line: bytes) -> dict:
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise SimCommandError("a request is a JSON object with machine, command and argument")
        fields = [request.get(key, "") for key in ("machine", "command", "argument")]
        if not all(isinstance(f, str) for f in fields):
            raise SimCommandError("machine, command and argument must be text")
        return await handle(*fields)
    except SimCommandError as exc:
        return {"error": str(exc)}
    except json.JSONDecodeError as exc:
        return {"error": f"not JSON: {exc}"}


async def json_command(
    host: str, port: int, machine: str, command: str, argument: str = "", timeout_s: float = 5.0
) -> dict:
    """Connect, apply one command, disconnect; returns the truth. Raises SimCommandError
    when the simulator refuses, OSError when it cannot be reached."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(host, port, limit=_MAX_LINE)
        try:
            request = {"machine": machine, "command": command, "argument": argument}
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
    if not line:
        raise ConnectionError(f"the simulator at {host}:{port} closed the connection without an answer")
    result = json.loads(line)
    # A refusal is {"error": "<message>"}; a truth never has a text under "error".
    if isinstance(result.get("error"), str):
        raise SimCommandError(result["error"])
    return result


def json_command_sync(
    host: str, port: int, machine: str, command: str, argument: str = "", timeout_s: float = 5.0
) -> dict:
    """``json_command`` for synchronous code (not from inside a running event loop)."""
    return asyncio.run(json_command(host, port, machine, command, argument, timeout_s))
