"""Client side of the simulated PLC's control channel: the ``Sim.Command`` OPC UA method.

Tests and scripts use it to pause, reset or re-order a simulated machine that runs in
another process or on another event loop, and to read its ground truth. It resolves
``nsu=`` NodeIds on every call, so it keeps working after the server renumbered its
namespaces.

Each call opens its own short session and closes it: this module must never hold a
connection between calls, nor touch the sessions or subscriptions of the code under test.
"""

from __future__ import annotations

import asyncio
import json

from asyncua import Client, ua

from simulators.commands import SimCommandError
from simulators.opcua_plc import COMMAND_METHOD, COMMAND_OBJECT, NAMESPACE_URI

_SESSION_TIMEOUT_MS = 60_000

__all__ = ["SimCommandError", "call_command", "resolve_node_id", "sim_command", "sim_command_sync"]


async def resolve_node_id(client: Client, text: str) -> ua.NodeId:
    """``"nsu=<uri>;s=<id>"`` -> the NodeId with the index the server uses for ``uri`` now."""
    parsed = ua.NodeId.from_string(text)
    uri = getattr(parsed, "NamespaceUri", None)
    if not uri:
        return parsed
    index = await client.get_namespace_index(uri)
    return ua.NodeId(parsed.Identifier, index, parsed.NodeIdType)


async def call_command(client: Client, machine: str, command: str, argument: str = "") -> dict:
    """Call ``Sim.Command`` on a connected client; raises SimCommandError when refused."""
    sim = client.get_node(await resolve_node_id(client, f"nsu={NAMESPACE_URI};s={COMMAND_OBJECT}"))
    method = await resolve_node_id(client, f"nsu={NAMESPACE_URI};s={COMMAND_METHOD}")
    result = json.loads(await sim.call_method(method, machine, command, argument))
    # A refusal is {"error": "<message>"}; a truth never has a text under "error".
    if isinstance(result.get("error"), str):
        raise SimCommandError(result["error"])
    return result


async def sim_command(
    endpoint: str, machine: str, command: str, argument: str = "", timeout_s: float = 5.0
) -> dict:
    """Connect, apply one command, disconnect; returns the truth (see simulators.commands)."""
    client = Client(endpoint, timeout=timeout_s)
    # A one-call session; asking for asyncua's default hour only earns a warning.
    client.session_timeout = _SESSION_TIMEOUT_MS
    async with client:
        return await call_command(client, machine, command, argument)


def sim_command_sync(
    endpoint: str, machine: str, command: str, argument: str = "", timeout_s: float = 5.0
) -> dict:
    """``sim_command`` for synchronous code. Not from inside a running event loop: the
    simulator may be serving on that very loop, and blocking it would deadlock."""
    return asyncio.run(sim_command(endpoint, machine, command, argument, timeout_s))
