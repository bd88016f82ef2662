"""``gateway browse``: a PLC's OPC UA address space as a tree, to pick counter and order tags.

A controls engineer writing a mapping needs to see what the PLC offers: which nodes
exist, their ``nsu=`` ids (stable across server restarts, unlike ``ns=<index>``), their
data types and what they hold right now. This module has two halves:

* I/O: ``browse`` walks the address space from one node down to a depth, level by level
  (one Browse and one Read request per level, in batches the server accepts), and
  ``describe`` reads the nodes a user picked; both connect through ``session``, which
  makes and connects the client exactly as the gateway's OPC UA source does
  (``secure_client``, ``connect_client``): same security, same PKI and trust list;
* pure: ``render_tree``, ``render_json``, ``notes`` and ``mapping_yaml`` turn what was
  read into lines, so that the output is tested without a server.

It must never write to a server, never print or log a password, never trust a server
certificate the gateway would not, and never walk without a bound: the depth and a node
budget limit every request it makes.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from asyncua import Client, ua
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from gateway.mapping.model import OpcUaSource as OpcUaSourceConfig
from gateway.pki import Pki, default_application_uri
from gateway.sources.opcua.source import CREDENTIALS_CODES, DEFAULT_ITEMS_PER_CALL, ConnectRefused, connect_client, \
    connect_hint, resolve_address, secure_client, without_credentials

OBJECTS_FOLDER = "i=85"
SERVER_OBJECT = "i=2253"
DEFAULT_DEPTH = 3
DEFAULT_MAX_NODES = 2000
DEFAULT_TIMEOUT_S = 10.0
# Even a server that states no limit gets requests of a size a small PLC answers quickly.
MAX_PER_CALL = 1000
MAX_LIST_ITEMS = 5  # of an array value, shown

# The mapping's counter types (gateway.mapping.model.CounterType) by OPC UA data type.
COUNTER_TYPES = {"UInt16": "uint16", "UInt32": "uint32", "UInt64": "uint64"}
_SIGNED = frozenset({"SByte", "Int16", "Int32", "Int64"})
_FLOATING = frozenset({"Float", "Double"})
# Abstract data types: the declaration says little; the value read now says which type it is.
_ABSTRACT = frozenset({"BaseDataType", "Number", "Integer", "UInteger"})
ROLES = ("good", "scrap", "order")


class BrowseError(Exception):
    """What went wrong, in one line for people, saying what to do."""


@dataclass(frozen=True)
class Endpoint:
    """How to reach one OPC UA server, as the gateway's source for it does: the source's
    settings (a mapping's ``opcua:``, or made from the command line, with the password as
    SecretStr), the PKI folder and the application URI the gateway states in its
    certificate and sessions. The last two matter only for a secured endpoint."""

    config: OpcUaSourceConfig
    pki: Pki = field(default_factory=lambda: Pki("pki"))
    application_uri: str = field(default_factory=default_application_uri)
    from_mapping: bool = False  # hints then name the mapping's keys, else browse's options

    @property
    def shown(self) -> str:
        """The URL as output may show it: no user info."""
        return without_credentials(self.config.endpoint)


@dataclass(frozen=True)
class BrowsedNode:
    """One node as the user sees it."""

    node_id: str  # nsu=<namespace uri>;s=… (i=… in the standard namespace)
    name: str  # browse name without its namespace index (that index can change)
    node_class: str  # Object, Variable, Method, ObjectType, …
    parent: str | None = None
    depth: int = 0
    data_type: str | None = None  # variables: "UInt32", "String", "Double[]"
    value_type: str | None = None  # variables: the built-in type of the value read now
    value: Any = None  # JSON-able: str, int, float, bool, None or a list of them
    status: str | None = None  # why the value (or a browse) is not Good; None when Good
    more: int = 0  # children below the depth limit, not shown
    skipped: bool = False  # not browsed: the server's own Server object, unless asked for


@dataclass(frozen=True)
class Browse:
    """What one walk found: the root first, then level by level."""

    endpoint: str
    nodes: tuple[BrowsedNode, ...]
    depth: int
    max_nodes: int
    not_shown: int = 0  # nodes found beyond the node budget


# --- connecting ---------------------------------------------------------------------------


async def build_client(endpoint: Endpoint, timeout_s: float, log: Any = None) -> Client:
    """A client made as the gateway's source makes one (``secure_client``), not connected.

    Anonymous or with username and password; for a secured endpoint with the gateway's
    certificate (made in the PKI on first use) and a server certificate that passed the
    PKI's trust list or the pin, so that browse trusts exactly the servers the gateway trusts.
    ``log`` gets the one line this can log: the gateway's certificate made, with its thumbprint.
    """
    return await asyncio.wait_for(
        secure_client(endpoint.config, endpoint.pki, endpoint.application_uri, name="browse", timeout=timeout_s,
                      log=log),
        timeout_s * 3)  # asks the server for its endpoints first when secured: several round trips


@asynccontextmanager
async def session(endpoint: Endpoint, timeout_s: float = DEFAULT_TIMEOUT_S, log: Any = None
                  ) -> AsyncIterator[Client]:
    """A connected client; every failure to connect becomes one BrowseError line."""
    client = None
    try:
        client = await build_client(endpoint, timeout_s, log)
        # Several round trips (hello, channel, session, activate), each with its timeout.
        await connect_client(client, timeout_s * 3)
    except Exception as exc:  # noqa: BLE001 — every cause is turned into a message below
        if client is not None:
            await _close(client)
        raise BrowseError(_connect_problem(endpoint, exc, timeout_s)) from None
    try:
        yield client
    except (UaError, OSError, TimeoutError) as exc:
        raise BrowseError(f"{endpoint.shown}: {_exception_text(exc)} "
                          f"(the connection or a request failed; try again)") from None
    finally:
        await _close(client)


async def _close(client: Client) -> None:
    try:
        await asyncio.wait_for(client.disconnect(), 2.0)
    except Exception:  # noqa: BLE001 — closing a broken connection may fail; nothing is left to do
        pass


def _connect_problem(endpoint: Endpoint, exc: BaseException, timeout_s: float) -> str:
    """The refusals the gateway words (certificates, security, the server's status codes)
    as it words them; a login, an unreachable or silent server in browse's own words,
    which name its options."""
    where = f"cannot connect to {endpoint.shown}"
    if isinstance(exc, UaStatusCodeError) and exc.code in CREDENTIALS_CODES:
        user = endpoint.config.username
        who = f"user {user!r}" if user else "an anonymous session"
        return (f"{endpoint.shown} refused {who} ({ua.StatusCode(exc.code).name}): check --username and the password "
                f"(--password-file or OPCUA_PASSWORD), or the user's rights on the server")
    if isinstance(exc, ConnectRefused) and exc.offered and not endpoint.from_mapping:
        secured = [f"{p}:{m}" for p, m in exc.offered if p != "None"] or [f"{p}:{m}" for p, m in exc.offered]
        return (f"{exc}; browse with --security {secured[0]}"
                + ("; the server's certificate must then be trusted (`gateway pki trust`)" if secured else ""))
    if isinstance(exc, ConnectRefused):
        return f"{exc}; {connect_hint(exc, endpoint.config, endpoint.pki)}"
    if isinstance(exc, UaStatusCodeError):
        return f"{where}: {_exception_text(exc)}; {connect_hint(exc, endpoint.config, endpoint.pki)}"
    if isinstance(exc, ConnectionRefusedError):
        return f"{where}: nothing listens there; is the OPC UA server running, are host and port right?"
    if isinstance(exc, TimeoutError):
        return (f"{where}: no answer within {timeout_s * 3:g} s; check the network path and firewall, "
                f"or the server is overloaded")
    if isinstance(exc, OSError):
        return f"{where}: {_exception_text(exc)}; check the host name, the network path and that the server runs"
    return f"{where}: {_exception_text(exc)}"


def _exception_text(exc: BaseException) -> str:
    if isinstance(exc, UaStatusCodeError):
        return ua.StatusCode(exc.code).name
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- reading ------------------------------------------------------------------------------


@dataclass
class _Walk:
    """The state of one walk: the namespaces, the server's limits and what was found."""

    client: Client
    namespaces: list[str]
    browse_per_call: int
    read_per_call: int
    nodes: list[BrowsedNode] = field(default_factory=list)
    ids: list[ua.NodeId] = field(default_factory=list)  # the server's id of nodes[i]
    seen: set[ua.NodeId] = field(default_factory=set)
    type_names: dict[ua.NodeId, str] = field(default_factory=dict)

    def add(self, node: BrowsedNode, nid: ua.NodeId) -> int:
        self.nodes.append(node)
        self.ids.append(nid)
        return len(self.nodes) - 1


async def browse(endpoint: Endpoint, root: str = OBJECTS_FOLDER, *, depth: int = DEFAULT_DEPTH,
                 max_nodes: int = DEFAULT_MAX_NODES, include_server: bool = False,
                 timeout_s: float = DEFAULT_TIMEOUT_S, log: Any = None) -> Browse:
    """The address space from ``root`` down ``depth`` levels, at most ``max_nodes`` nodes.

    The server's own Server object (i=2253, diagnostics and capabilities: hundreds of
    nodes no counter lives in) is listed but not browsed unless ``include_server`` or
    ``root`` is inside it. Raises BrowseError for an unknown root or a failed connection.
    """
    async with session(endpoint, timeout_s, log) as client:
        walk = await _start(client)
        root_id = _resolve(root, walk.namespaces)
        (found,) = await _describe_nodes(walk, [root_id], [root])
        walk.add(found, root_id)
        walk.seen.add(root_id)
        skip = set() if include_server else {ua.NodeId.from_string(SERVER_OBJECT)}
        level, shown, not_shown = [0], 1, 0
        for d in range(1, depth + 1):
            if not level:
                break
            children = await _children(walk, level)
            level = []
            for parent, refs in zip(children.parents, children.refs):
                for ref in refs:
                    nid = _local(ref.NodeId)
                    if nid is None or nid in walk.seen:
                        continue  # on another server, or reached before by another reference
                    walk.seen.add(nid)
                    node = BrowsedNode(_stable_id(nid, walk.namespaces), ref.BrowseName.Name,
                                       ref.NodeClass.name, walk.nodes[parent].node_id, d)
                    if nid in skip:
                        walk.add(replace(node, skipped=True), nid)  # shown, never counted or browsed
                    elif shown >= max_nodes:
                        not_shown += 1
                    else:
                        level.append(walk.add(node, nid))
                        shown += 1
            if not_shown:
                break
        await _read_variables(walk, [i for i, n in enumerate(walk.nodes) if n.node_class == "Variable"])
        if not not_shown and level:
            await _count_hidden(walk, level)  # the last level: are there children below?
        return Browse(endpoint.shown, tuple(walk.nodes), depth, max_nodes, not_shown)


async def describe(endpoint: Endpoint, node_ids: Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S,
                   log: Any = None) -> list[BrowsedNode]:
    """The nodes ``node_ids`` with class, data type and value; BrowseError if one is unknown."""
    async with session(endpoint, timeout_s, log) as client:
        walk = await _start(client)
        ids = [_resolve(text, walk.namespaces) for text in node_ids]
        found = await _describe_nodes(walk, ids, list(node_ids))
        for node, nid in zip(found, ids):
            walk.add(node, nid)
        await _read_variables(walk, [i for i, n in enumerate(walk.nodes) if n.node_class == "Variable"])
        return walk.nodes


async def _start(client: Client) -> _Walk:
    namespaces = await client.get_namespace_array()
    limits = ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse, \
        ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead
    values = await _read(client, [ua.ReadValueId(NodeId=ua.NodeId(i), AttributeId=ua.AttributeIds.Value)
                                  for i in limits], DEFAULT_ITEMS_PER_CALL)
    per_call = [_per_call(dv) for dv in values]
    return _Walk(client, namespaces, *per_call)


def _per_call(dv: ua.DataValue) -> int:
    stated = dv.Value.Value if dv.StatusCode.is_good() and dv.Value is not None else None
    if isinstance(stated, int) and not isinstance(stated, bool) and stated > 0:
        return min(stated, MAX_PER_CALL)
    return DEFAULT_ITEMS_PER_CALL


def _resolve(text: str, namespaces: Sequence[str]) -> ua.NodeId:
    try:
        return resolve_address(text, namespaces)
    except ValueError as exc:
        raise BrowseError(f"node {text!r}: {exc}") from None


async def _describe_nodes(walk: _Walk, ids: Sequence[ua.NodeId], texts: Sequence[str]) -> list[BrowsedNode]:
    """Class and name of nodes given by the user (a browse reports those of children itself)."""
    attrs = (ua.AttributeIds.NodeClass, ua.AttributeIds.BrowseName)
    values = await _read(walk.client, [ua.ReadValueId(NodeId=nid, AttributeId=a) for nid in ids for a in attrs],
                         walk.read_per_call)
    found = []
    for i, (nid, text) in enumerate(zip(ids, texts)):
        node_class, name = values[2 * i : 2 * i + 2]
        if not node_class.StatusCode.is_good():
            raise BrowseError(f"node {text!r} is not on the server ({node_class.StatusCode.name}): check the id; "
                              f"browse from the Objects folder (no --node) to find it")
        found.append(BrowsedNode(_stable_id(nid, walk.namespaces), name.Value.Value.Name,
                                 ua.NodeClass(node_class.Value.Value).name))
    return found


@dataclass(frozen=True)
class _Children:
    parents: list[int]  # indexes into walk.nodes
    refs: list[list[ua.ReferenceDescription]]


async def _children(walk: _Walk, parents: list[int]) -> _Children:
    """Hierarchical forward references of ``parents`` (Organizes, HasComponent, HasProperty, …)."""
    expandable = [i for i in parents if not walk.nodes[i].skipped]
    refs: list[list[ua.ReferenceDescription]] = []
    for start in range(0, len(expandable), walk.browse_per_call):
        chunk = expandable[start : start + walk.browse_per_call]
        params = ua.BrowseParameters()
        params.NodesToBrowse = [_browse_description(walk.ids[i]) for i in chunk]
        results = await walk.client.uaclient.browse(params)
        for i, result in zip(chunk, results):
            refs.append(await _all_references(walk.client, result))
            if not result.StatusCode.is_good():
                if walk.nodes[i].depth == 0 and result.StatusCode.value in _UNKNOWN_CODES:
                    raise BrowseError(f"node {walk.nodes[i].node_id!r} is not on the server "
                                      f"({result.StatusCode.name}): check the id")
                walk.nodes[i] = replace(walk.nodes[i], status=f"cannot browse: {result.StatusCode.name}")
    return _Children(expandable, refs)


_UNKNOWN_CODES = frozenset({ua.StatusCodes.BadNodeIdUnknown, ua.StatusCodes.BadNodeIdInvalid})


def _browse_description(nid: ua.NodeId) -> ua.BrowseDescription:
    return ua.BrowseDescription(
        NodeId=nid,
        BrowseDirection=ua.BrowseDirection.Forward,
        ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences),
        IncludeSubtypes=True,
        NodeClassMask=0,  # every class
        ResultMask=ua.BrowseResultMask.All,
    )


async def _all_references(client: Client, result: ua.BrowseResult) -> list[ua.ReferenceDescription]:
    """A node's references, following continuation points until the server has given all."""
    refs = list(result.References or [])
    point = result.ContinuationPoint
    while point:
        params = ua.BrowseNextParameters()
        params.ReleaseContinuationPoints = False
        params.ContinuationPoints = [point]
        (more,) = await client.uaclient.browse_next(params)
        refs.extend(more.References or [])
        point = more.ContinuationPoint
    return refs


async def _count_hidden(walk: _Walk, level: list[int]) -> None:
    children = await _children(walk, level)
    for i, refs in zip(children.parents, children.refs):
        hidden = sum(1 for r in refs if (nid := _local(r.NodeId)) is not None and nid not in walk.seen)
        if hidden:
            walk.nodes[i] = replace(walk.nodes[i], more=hidden)


async def _read_variables(walk: _Walk, indexes: list[int]) -> None:
    """Data type, value rank and value of each variable, and the names of custom data types."""
    attrs = (ua.AttributeIds.DataType, ua.AttributeIds.ValueRank, ua.AttributeIds.Value)
    requests = [ua.ReadValueId(NodeId=walk.ids[i], AttributeId=a) for i in indexes for a in attrs]
    values = await _read(walk.client, requests, walk.read_per_call)
    triples = [values[3 * k : 3 * k + 3] for k in range(len(indexes))]
    type_ids = {dt.Value.Value for dt, _, _ in triples if dt.StatusCode.is_good() and dt.Value is not None}
    await _name_types(walk, type_ids)
    for i, (dt, rank, value) in zip(indexes, triples):
        type_name = walk.type_names.get(dt.Value.Value) if dt.StatusCode.is_good() and dt.Value else None
        if type_name and rank.StatusCode.is_good() and isinstance(rank.Value.Value, int) and rank.Value.Value >= 0:
            type_name += "[]"  # one or more dimensions
        variant = value.Value
        walk.nodes[i] = replace(
            walk.nodes[i],
            data_type=type_name,
            value_type=variant.VariantType.name if variant is not None and variant.Value is not None else None,
            value=_plain(variant.Value if variant is not None else None),
            status=None if value.StatusCode.is_good() else value.StatusCode.name,
        )


async def _name_types(walk: _Walk, type_ids: set[ua.NodeId]) -> None:
    unknown = []
    for tid in type_ids:
        if tid in walk.type_names:
            continue
        if tid.NamespaceIndex == 0 and isinstance(tid.Identifier, int) and tid.Identifier in ua.ObjectIdNames:
            walk.type_names[tid] = ua.ObjectIdNames[tid.Identifier]
        else:
            unknown.append(tid)
    names = await _read(walk.client, [ua.ReadValueId(NodeId=t, AttributeId=ua.AttributeIds.BrowseName)
                                      for t in unknown], walk.read_per_call)
    for tid, name in zip(unknown, names):
        good = name.StatusCode.is_good() and name.Value is not None
        walk.type_names[tid] = name.Value.Value.Name if good else _stable_id(tid, walk.namespaces)


async def _read(client: Client, requests: list[ua.ReadValueId], per_call: int) -> list[ua.DataValue]:
    values: list[ua.DataValue] = []
    for start in range(0, len(requests), per_call):
        params = ua.ReadParameters()
        params.NodesToRead = requests[start : start + per_call]
        values.extend(await client.uaclient.read(params))
    return values


def _local(expanded: ua.ExpandedNodeId) -> ua.NodeId | None:
    """A reference's target as a NodeId of this server; None for a node on another server."""
    if getattr(expanded, "ServerIndex", None):
        return None
    return ua.NodeId(expanded.Identifier, expanded.NamespaceIndex, expanded.NodeIdType)


def _stable_id(nid: ua.NodeId, namespaces: Sequence[str]) -> str:
    """``nsu=<uri>;s=…``: the form a mapping should use (indexes change with a server restart)."""
    text = nid.to_string()  # "i=85", "ns=2;s=PRESS-01.GoodCount"
    if nid.NamespaceIndex == 0 or nid.NamespaceIndex >= len(namespaces):
        return text
    return f"nsu={namespaces[nid.NamespaceIndex]};{text.split(';', 1)[1]}"


def _plain(value: Any) -> Any:
    """A value as JSON can carry it; structures become their text, shortened."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value[:MAX_LIST_ITEMS]] + (["…"] if len(value) > MAX_LIST_ITEMS else [])
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return "0x" + value[:32].hex() + ("…" if len(value) > 32 else "")
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, ua.QualifiedName):
        return value.Name
    if isinstance(value, ua.NodeId):
        return value.to_string()
    if type(value).__name__ == "Argument":  # asyncua has two such classes
        return value.Name  # a method's argument: its name says what it is for
    return _shorten(str(value), 80)


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --- rendering (pure) ---------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A value as the tree shows it: text quoted, numbers as they are, long things shortened."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _shorten(json.dumps(value, ensure_ascii=False), 60)
    if isinstance(value, list):
        return _shorten("[" + ", ".join("…" if v == "…" else format_value(v) for v in value) + "]", 60)
    return str(value)


def describe_node(node: BrowsedNode) -> str:
    """One node's line, without the tree's branches."""
    parts = [node.name, node.node_class]
    if node.node_class == "Variable":
        kind = node.data_type or node.value_type or "?"
        if node.data_type in _ABSTRACT and node.value_type:
            kind = f"{node.data_type} ({node.value_type})"  # the declaration is vague; the value is not
        parts.append(f"{kind} = {format_value(node.value)}" if node.value is not None or node.status is None
                     else kind)
    if node.status:
        parts.append(f"({node.status})")
    parts.append(node.node_id)
    if node.skipped:
        parts.append("(the server's own diagnostics: not browsed; --all or --node i=2253 to see it)")
    elif node.more:
        parts.append(f"(+{node.more} below)")
    return "  ".join(parts)


def render_tree(result: Browse) -> list[str]:
    """The nodes as a tree, children in the order the server gave them."""
    children: dict[str | None, list[BrowsedNode]] = {}
    for node in result.nodes[1:]:
        children.setdefault(node.parent, []).append(node)
    root = result.nodes[0]
    lines = [describe_node(root)]

    def branch(parent: BrowsedNode, prefix: str) -> None:
        kids = children.get(parent.node_id, [])
        for k, kid in enumerate(kids):
            last = k == len(kids) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}{describe_node(kid)}")
            branch(kid, prefix + ("    " if last else "│   "))

    branch(root, "")
    return lines


def render_json(result: Browse) -> list[str]:
    """One JSON object per node, one per line, root first, then level by level."""
    keys = ("node_id", "name", "node_class", "parent", "depth", "data_type", "value_type", "value", "status",
            "more", "skipped")
    return [json.dumps({k: getattr(n, k) for k in keys}, ensure_ascii=False) for n in result.nodes]


def notes(result: Browse) -> list[str]:
    """Where the walk stopped, and how to see more."""
    lines = []
    if result.not_shown:
        lines.append(f"stopped at {result.max_nodes} nodes (--max-nodes): {result.not_shown} more found and "
                     f"not shown, nor anything below them; raise --max-nodes, or start lower with --node ID")
    cut = [n for n in result.nodes if n.more]
    if cut:
        lines.append(f"{len(cut)} node(s) at depth {result.depth} have children not shown "
                     f"({sum(n.more for n in cut)} in all): --depth {result.depth + 1}, or --node ID to start at one")
    return lines


def counter_problem(node: BrowsedNode) -> str | None:
    """Why ``node`` cannot be a counter; None when it can."""
    if node.node_class != "Variable":
        return f"is {_a(node.node_class)}, not a variable: browse it (--node {node.node_id}) to find its counters"
    kind = _kind(node)
    if kind is None or kind in _ABSTRACT:
        declared = f"declared {kind}" if kind else "of no declared type"
        return (f"is {declared} and holds no value now{f' ({node.status})' if node.status else ''}: "
                f"its type shows once it holds one; browse it again")
    if kind.endswith("[]"):
        return f"is an array ({kind}): a counter is one value"
    if kind in COUNTER_TYPES:
        return None
    if kind in _SIGNED:
        return f"is {kind}, signed: cannot be a counter (the gateway reads UInt16, UInt32 or UInt64)"
    if kind in _FLOATING:
        return f"is {kind}, floating point: cannot be a counter (the gateway reads UInt16, UInt32 or UInt64)"
    return f"is {kind}: cannot be a counter (the gateway reads UInt16, UInt32 or UInt64)"


def _order_problem(node: BrowsedNode) -> str | None:
    if node.node_class != "Variable":
        return f"is {_a(node.node_class)}, not a variable"
    kind = _kind(node) or "of an unknown type"
    if kind == "String" or kind in COUNTER_TYPES or kind in _SIGNED:
        return None
    return f"is {kind}: an order tag holds text or a whole number"


def _kind(node: BrowsedNode) -> str | None:
    """The data type that decides: the declared one, or the value's when the declaration is abstract."""
    if node.data_type is None or node.data_type in _ABSTRACT:
        return node.value_type or node.data_type
    return node.data_type


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'AEIOU' else 'a'} {word}"


def mapping_yaml(picks: Sequence[tuple[str | None, BrowsedNode]], endpoint: str) -> list[str]:
    """Mapping lines for one machine from the picked nodes, to paste under its name in ``machines:``.

    Each pick is (role, node); role is ``good``, ``scrap``, ``order`` or None. Without a
    role, unsigned integers become the good counter, then the scrap counter, and a String
    the order tag, in the order given. What cannot be used is a comment saying why.
    """
    counters: dict[str, BrowsedNode] = {}
    order: BrowsedNode | None = None
    comments: list[str] = []
    for role, node in picks:
        kind = _kind(node) if node.node_class == "Variable" else None
        if role in ("good", "scrap") or (role is None and kind in COUNTER_TYPES):
            problem = counter_problem(node)
            role = role or next((r for r in ("good", "scrap") if r not in counters), None)
            if problem:
                comments.append(f"{node.name} ({node.node_id}) {problem}")
            elif role is None or role in counters:
                comments.append(f"{node.name} ({node.node_id}): a machine has two counters, good and scrap, "
                                f"and both are taken")
            else:
                counters[role] = node
        elif role == "order" or (role is None and kind == "String"):
            problem = _order_problem(node)
            if problem:
                comments.append(f"{node.name} ({node.node_id}) {problem}")
            elif order is not None:
                comments.append(f"{node.name} ({node.node_id}): a machine has one order tag, and it is taken")
            else:
                order = node
        else:
            comments.append(f"{node.name} ({node.node_id}) {counter_problem(node)}")

    body: list[tuple[str, str]] = []  # (line, its comment)
    if counters:
        body.append(("    counters:", ""))
        for role in ("good", "scrap"):
            if role in counters:
                node = counters[role]
                body.append((f"      {role + ':':<6} {tag_text(node, role)}", _now(node)))
    if order is not None:
        body.append((f"    order: {tag_text(order, 'order')}", _now(order)))
    width = max((len(line) for line, _ in body), default=0)
    lines = [f"# read from {endpoint}: paste under the machine's name in `machines:`"]
    lines += [f"{line.ljust(width)}  # {note}" if note else line for line, note in body]
    if not counters:
        lines.append("    # no counter among these nodes: a machine needs `counters: good:` (UInt16, UInt32, UInt64)")
    lines += [f"    # {c}" for c in comments]
    return lines


def tag_text(node: BrowsedNode, role: str) -> str | None:
    """The mapping's tag for ``node`` as ``role`` (``{node: "…", type: uint32}`` for a counter,
    ``{node: "…"}`` for the order); None when it cannot be one (``counter_problem`` says why)."""
    if role == "order":
        return None if _order_problem(node) else f"{{node: {json.dumps(node.node_id)}}}"
    if counter_problem(node):
        return None
    return f"{{node: {json.dumps(node.node_id)}, type: {COUNTER_TYPES[_kind(node)]}}}"


def _now(node: BrowsedNode) -> str:
    declared = node.data_type or node.value_type or "?"
    if node.data_type in _ABSTRACT and node.value_type:
        declared = f"declared {node.data_type}, holds {node.value_type}"
    status = f" ({node.status})" if node.status else ""
    return f"{node.name}: {declared}, now {format_value(node.value)}{status}"


def parse_pick(text: str) -> tuple[str | None, str]:
    """``good=<node id>`` / ``scrap=…`` / ``order=…`` name the role; a bare node id leaves it open."""
    role, sep, rest = text.partition("=")
    if sep and role in ROLES:
        return role, rest
    return None, text
