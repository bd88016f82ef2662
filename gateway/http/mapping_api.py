"""The mapping workbench's API under ``/api/v1``: the running mapping file, checking an edited
text, what applying it would change, applying it through the hot reload, its version history,
and browsing the mapping's sources (an OPC UA address space a level at a time, a Modbus
register range decoded every way).

An edited text is checked exactly as ``gateway validate`` checks the file (the same
``file:line: key: message`` errors and warnings): it is written to a hidden file next to the
running mapping file, so that relative names in it (master data, PKI, password files)
resolve as they will once it is the file, checked, and removed. Apply writes the mapping
file atomically (a temporary file renamed over it) and runs ``Gateway.reload``; a refused
reload puts the previous text back. Every applied text is kept in the ledger
(``gateway.ledger.mapping_versions``); a restore applies an old version's text again.

Browsing reuses ``gateway.browse`` (one level below a node, connected as the gateway's
source is) and the gateway's Modbus client and codec; no second walker, no second decoder.

Reads need ``viewer``; apply needs ``operator``. Must never: change the mapping file other
than by an apply, leave an edited text in the file after a refused reload, write to a PLC,
or update or delete a recorded version.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import structlog
from fastapi import APIRouter, Depends, Path as PathParam, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from gateway.app.ledger import MAX_LEDGER_INT
from gateway.http.ledger_api import By, call
from gateway.http.problems import PROBLEM_RESPONSES, Problem
from gateway.http.security import viewer
from gateway.inputfile.errors import FileError, InputFileError
from gateway.ledger import mapping_versions
from gateway.ledger.audit import Action, Actor
from gateway.mapping.model import LAST_ADDRESS, MAX_REGISTERS_PER_READ, MODBUS_TYPE_REGISTERS, Mapping
from gateway.reloading import MappingChange, diff_mappings

log = structlog.get_logger("gateway.http")

MAX_TEXT_CHARS = 4 * 1024 * 1024  # far above any plant's mapping; the YAML reader has its own limit too
# A mapping version's id, as a path parameter (the ledger's ids are signed 64-bit).
VersionId = Annotated[int, PathParam(ge=1, le=MAX_LEDGER_INT)]

router = APIRouter(prefix="/api/v1", responses={**PROBLEM_RESPONSES, 502: PROBLEM_RESPONSES[409] | {
    "description": "The PLC behind a source could not be read"}})
read = [Depends(viewer)]


# -- models ------------------------------------------------------------------------------


class MappingText(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=MAX_TEXT_CHARS, description="The whole mapping file as edited")


class ApplyRequest(MappingText):
    base_hash: str = Field(pattern=r"^[0-9a-f]{64}$",
                           description="The `hash` of the mapping the edit started from (GET /api/v1/mapping)")
    comment: str = Field("", max_length=2000, description="Why: kept with the version")


class MappingProblem(BaseModel):
    """One problem, as ``gateway validate`` prints it (``line`` is 1-based, in ``file``)."""

    file: str
    line: int
    key: str = Field(description="Dotted key path, e.g. machines.PRESS-01.counters.good; '' for the file")
    message: str
    text: str = Field(description="The whole `file:line: key: message` line")
    in_mapping: bool = Field(description="False: the problem is in another file (the master data it names)")


class RunningMapping(BaseModel):
    path: str
    text: str
    hash: str = Field(description="Hex SHA-256 of the file's bytes: the `base_hash` of an apply")
    version_id: int | None = Field(description="The newest recorded version with this text (None: never applied "
                                               "through the workbench)")


class Validation(BaseModel):
    valid: bool
    errors: list[MappingProblem]
    warnings: list[MappingProblem]


class MappingDiff(Validation):
    """What a reload of the text would do; the machine lists are empty when the text is invalid."""

    added: list[str] = []
    removed: list[str] = []
    changed: list[str] = []
    unchanged: list[str] = []
    sources_reconnected: list[str] = []
    sources_started: list[str] = []
    sources_stopped: list[str] = []
    summary: str | None = None
    text_diff: str = Field(description="Unified diff of the running file against the text")


class ApplyResult(Validation):
    outcome: Literal["applied", "refused"]
    detail: str = Field(description="What the reload changed, or why it was refused")
    hash: str = Field(description="The mapping file's hash now (the next apply's base_hash)")
    version_id: int | None = None


class VersionSummary(BaseModel):
    id: int
    applied_at: datetime
    actor: str
    comment: str
    hash: str
    diff_summary: str


class Version(VersionSummary):
    text: str


class OpcUaNode(BaseModel):
    node_id: str = Field(description="nsu= id, stable across server restarts")
    name: str
    node_class: str
    data_type: str | None
    value_type: str | None
    value: Any
    status: str | None = Field(description="Why the value is not Good; None when it is")
    has_children: bool
    counter_tag: str | None = Field(description="The mapping's tag for it as a counter, None if it cannot be one")
    order_tag: str | None = Field(description="The mapping's tag for it as the order number, None if it cannot be")
    counter_problem: str | None


class OpcUaLevel(BaseModel):
    source: str
    endpoint: str
    node: OpcUaNode
    children: list[OpcUaNode]
    not_shown: int = Field(description="Children beyond the node budget")


class ByteOrders(BaseModel):
    word_order: Literal["big", "little"]
    byte_order: Literal["big", "little"]


class RegisterRow(BaseModel):
    """One address: its register, and the value starting there in every type and order."""

    address: int
    raw: int
    hex: str
    uint16: dict[str, int] = Field(description="By order name (AB, BA); see `orders`")
    uint32: dict[str, int] = Field(description="By order name (ABCD, CDAB, BADC, DCBA); empty past the range")
    uint64: dict[str, int] = Field(description="By order name; empty past the range")


class RegisterRange(BaseModel):
    source: str
    table: Literal["holding", "input"]
    start: int
    count: int
    unit: int
    orders: dict[str, ByteOrders] = Field(description="What each order name means in the mapping's terms")
    rows: list[RegisterRow]


# -- the mapping file ----------------------------------------------------------------------


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _mapping_file(request: Request) -> Path:
    file = request.app.state.ctx.gateway.mapping_file
    if file is None:
        raise Problem(409, "no-mapping-file", "this gateway runs on a mapping given without its file; the workbench "
                                              "edits the file of `gateway run --mapping FILE`")
    return Path(file)


def _read(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise Problem(409, "mapping-file-unreadable", f"{file}: {exc.strerror or exc}") from None


def _problem(error: FileError, mapping_file: Path) -> MappingProblem:
    return MappingProblem(file=error.file, line=error.line, key=error.path, message=error.message, text=str(error),
                          in_mapping=error.file == str(mapping_file))


@dataclass(frozen=True)
class Checked:
    errors: list[FileError]
    warnings: list[FileError]
    mapping: Mapping | None  # None when there are errors


@contextlib.contextmanager
def _written_beside(file: Path, data: bytes, suffix: str) -> Iterator[str]:
    """``data`` in a hidden file in ``file``'s folder, removed at the end (unless renamed away)."""
    fd, name = tempfile.mkstemp(prefix=f".{file.name}.", suffix=suffix, dir=str(file.parent))
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        yield name
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def check_text(file: Path, text: str) -> Checked:
    """``text`` checked as if it were ``file``: what ``gateway validate`` and a reload would say."""
    from gateway.mapping.load import load_mapping
    from gateway.mapping.validate import validate_mapping

    try:
        with _written_beside(file, text.encode("utf-8"), ".checking") as name:
            warnings: list[FileError] = []
            errors = validate_mapping(name, warnings=warnings)
            mapping = None
            if not errors:
                try:
                    mapping = load_mapping(name)
                except InputFileError as exc:  # validate_mapping found none: not expected, still said
                    errors = exc.errors
    except OSError as exc:
        raise Problem(409, "mapping-folder-unwritable", f"{file.parent}: cannot write beside the mapping file to "
                                                        f"check the text ({exc.strerror or exc})") from None

    def as_file(e: FileError) -> FileError:  # the hidden file's name is nobody's business
        return FileError(str(file) if e.file == name else e.file, e.line, e.path, e.message.replace(name, str(file)))

    return Checked([as_file(e) for e in errors], [as_file(e) for e in warnings], mapping)


def _replace(file: Path, data: bytes) -> None:
    """``file`` holds ``data`` at once or not at all: a temporary file renamed over it, its mode kept."""
    mode = file.stat().st_mode & 0o7777
    with _written_beside(file, data, ".applying") as name:
        os.chmod(name, mode)
        os.replace(name, file)


async def _checked(request: Request, text: str) -> tuple[Path, Checked]:
    file = _mapping_file(request)
    return file, await anyio.to_thread.run_sync(check_text, file, text)


def _validation(file: Path, checked: Checked) -> dict:
    return {"valid": not checked.errors, "errors": [_problem(e, file) for e in checked.errors],
            "warnings": [_problem(w, file) for w in checked.warnings]}


def _change_fields(change: MappingChange) -> dict:
    return {"added": list(change.added), "removed": list(change.removed), "changed": list(change.changed),
            "unchanged": list(change.unchanged), "sources_reconnected": list(change.sources_reconnected),
            "sources_started": list(change.sources_started), "sources_stopped": list(change.sources_stopped),
            "summary": change.summary()}


def _lock(request: Request) -> asyncio.Lock:
    """One apply at a time (set on first use; the event loop runs one route at a time up to an await)."""
    state = request.app.state
    if getattr(state, "mapping_apply_lock", None) is None:
        state.mapping_apply_lock = asyncio.Lock()
    return state.mapping_apply_lock


# -- routes: the mapping ---------------------------------------------------------------------


@router.get("/mapping", tags=["mapping"], dependencies=read)
async def running_mapping(request: Request) -> RunningMapping:
    """The mapping file the gateway runs on: its text, path, hash, and its recorded version."""
    file = _mapping_file(request)
    data = await anyio.to_thread.run_sync(_read, file)
    digest = _digest(data)
    version = await call(request, mapping_versions.latest_with_hash, digest)
    return RunningMapping(path=str(file), text=data.decode("utf-8-sig", errors="replace"), hash=digest,
                          version_id=version)


@router.post("/mapping/validate", tags=["mapping"], dependencies=read)
async def validate_text(request: Request, body: MappingText) -> Validation:
    """Check an edited text as `gateway validate` checks the file (errors and warnings at their lines).
    Nothing is applied."""
    file, checked = await _checked(request, body.text)
    return Validation(**_validation(file, checked))


@router.post("/mapping/diff", tags=["mapping"], dependencies=read)
async def diff_text(request: Request, body: MappingText) -> MappingDiff:
    """What a reload of the edited text would change (machines, sources), and the text diff."""
    file, checked = await _checked(request, body.text)
    running = (await anyio.to_thread.run_sync(_read, file)).decode("utf-8-sig", errors="replace")
    text_diff = "".join(difflib.unified_diff(running.splitlines(keepends=True), body.text.splitlines(keepends=True),
                                             f"{file} (running)", f"{file} (edited)"))
    change = {} if checked.mapping is None else _change_fields(
        diff_mappings(request.app.state.ctx.gateway.mapping, checked.mapping))
    return MappingDiff(**_validation(file, checked), **change, text_diff=text_diff)


@router.post("/mapping/apply", tags=["mapping"], responses={409: {"description": "The file changed since base_hash"}})
async def apply_text(request: Request, body: ApplyRequest, who: By) -> ApplyResult:
    """Write the text to the mapping file and hot-reload it; refused (the file as it was) if invalid.

    409 when the file is no longer the one of ``base_hash``. Each applied text becomes a version."""
    return await apply(request, body.text, body.base_hash, body.comment, who)


async def apply(request: Request, text: str, base_hash: str, comment: str, actor: Actor) -> ApplyResult:
    gateway = request.app.state.ctx.gateway
    file = _mapping_file(request)
    async with _lock(request):
        before = await anyio.to_thread.run_sync(_read, file)
        if _digest(before) != base_hash:
            raise Problem(409, "mapping-changed", f"{file} changed since the edit began (its hash is now "
                                                  f"{_digest(before)[:12]}…, not {base_hash[:12]}…): load it again "
                                                  "and redo the edit on it")
        checked = await anyio.to_thread.run_sync(check_text, file, text)
        if checked.errors:
            log.info("mapping_apply_refused", file=str(file), actor=actor.name, errors=len(checked.errors))
            return ApplyResult(**_validation(file, checked), outcome="refused", hash=base_hash,
                               detail=f"the mapping has {len(checked.errors)} error(s); the file is unchanged")
        data = text.encode("utf-8")
        try:
            await anyio.to_thread.run_sync(_replace, file, data)
        except OSError as exc:  # nothing was replaced: the rename is the only step that changes the file
            raise Problem(409, "mapping-file-unwritable", f"{file}: cannot write it ({exc.strerror or exc}); "
                                                          "nothing was applied") from None
        outcome, detail = await gateway.reload(requested_by="workbench")
        if outcome != "applied":
            await anyio.to_thread.run_sync(_replace, file, before)  # what runs is what the file says
            log.warning("mapping_apply_refused", file=str(file), actor=actor.name, detail=detail.splitlines()[0])
            return ApplyResult(**_validation(file, checked), outcome="refused", hash=base_hash,
                               detail=f"{detail}\nthe file is back as it was")
        version = await _record(request, before, data, text, actor, comment, detail)
        log.info("mapping_applied", file=str(file), actor=actor.name, version=version, change=detail)
        return ApplyResult(**_validation(file, checked), outcome="applied", detail=detail, hash=_digest(data),
                           version_id=version)


async def _record(request: Request, before: bytes, data: bytes, text: str, actor: Actor, comment: str,
                  summary: str) -> int | None:
    """The text before (once: unless it is the newest version already) and the applied one."""
    now = request.app.state.ctx.gateway.clock()
    try:
        await call(request, mapping_versions.record, applied_at=now, actor="file", hash=_digest(before),
                   comment="the mapping file before the workbench applied the next version",
                   text=before.decode("utf-8-sig", errors="replace"), diff_summary="",
                   unless_latest_is=_digest(before))
        return await call(request, mapping_versions.record, applied_at=now, actor=actor.name, comment=comment,
                          hash=_digest(data), text=text, diff_summary=summary,
                          action=Action(actor, "mapping.apply", reason=comment, subject=str(_mapping_file(request))))
    except Exception as exc:  # noqa: BLE001 — the mapping runs; only its record is missing, and said so
        log.error("mapping_version_not_recorded", error=str(exc).splitlines()[0],
                  hint="the new mapping runs; its version is missing from the history")
        return None


@router.get("/mapping/versions", tags=["mapping"], dependencies=read)
async def versions(request: Request) -> list[VersionSummary]:
    """The applied versions, newest first (without their texts)."""
    return [VersionSummary(**_fields(v)) for v in await call(request, mapping_versions.listed)]


@router.get("/mapping/versions/{version_id}", tags=["mapping"], dependencies=read)
async def version(request: Request, version_id: VersionId) -> Version:
    """One applied version with its text (restore: apply this text)."""
    found = await call(request, mapping_versions.one, version_id)
    if found is None:
        raise Problem(404, "unknown-version", f"no mapping version {version_id}")
    return Version(**_fields(found), text=found.text)


class Restore(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="The `hash` of the running mapping")
    comment: str = Field("", max_length=2000)


@router.post("/mapping/versions/{version_id}/restore", tags=["mapping"])
async def restore(request: Request, version_id: VersionId, body: Restore,
                  who: By) -> ApplyResult:
    """Apply an old version's text again (a new version; the history only grows)."""
    found = await call(request, mapping_versions.one, version_id)
    if found is None:
        raise Problem(404, "unknown-version", f"no mapping version {version_id}")
    comment = body.comment or f"restored version {version_id}"
    return await apply(request, found.text, body.base_hash, comment, who)


def _fields(v: mapping_versions.MappingVersion) -> dict:
    return {"id": v.id, "applied_at": v.applied_at, "actor": v.actor, "comment": v.comment, "hash": v.hash,
            "diff_summary": v.diff_summary}


# -- routes: browsing the sources ------------------------------------------------------------


def _source(request: Request, name: str, protocol: str):
    mapping = request.app.state.ctx.gateway.mapping
    source = mapping.sources.get(name)
    if source is None:
        raise Problem(404, "unknown-source", f"no source {name!r} in the running mapping "
                                             f"(it has {', '.join(sorted(mapping.sources)) or 'none'})")
    config = getattr(source, protocol)
    if config is None:
        raise Problem(422, "wrong-protocol", f"source {name!r} is not an {protocol} source")
    return mapping, config


@router.get("/browse/opcua/{source}", tags=["browse"], dependencies=read)
async def browse_opcua(request: Request, source: Annotated[str, PathParam(max_length=64)],
                       node: Annotated[str, Query(min_length=1, max_length=1000,
                                                  description="Node id (nsu=…, ns=…, i=…); default: Objects")] = "i=85"
                       ) -> OpcUaLevel:
    """One level of a source's address space below ``node``: each child with its data type, its
    value now, whether it has children, and its mapping tag when it can be a counter or an order."""
    from gateway import browse
    from gateway.pki import Pki, default_application_uri

    mapping, config = _source(request, source, "opcua")
    endpoint = browse.Endpoint(config, Pki(mapping.pki or "pki"), mapping.application_uri or default_application_uri(),
                                from_mapping=True)
    try:
        found = await browse.browse(endpoint, node, depth=1, max_nodes=1000, timeout_s=5)
    except browse.BrowseError as exc:
        raise Problem(502, "browse-failed", str(exc)) from None
    root, *children = found.nodes
    return OpcUaLevel(source=source, endpoint=found.endpoint, node=_node(root),
                      children=[_node(n) for n in children], not_shown=found.not_shown)


def _node(n) -> OpcUaNode:
    from gateway import browse

    return OpcUaNode(node_id=n.node_id, name=n.name, node_class=n.node_class, data_type=n.data_type,
                     value_type=n.value_type, value=n.value, status=n.status,
                     has_children=bool(n.more) and not n.skipped,
                     counter_tag=browse.tag_text(n, "good"), order_tag=browse.tag_text(n, "order"),
                     counter_problem=browse.counter_problem(n))


# Order names (the bytes A B C D of a value, most significant first, as they lie in the registers).
UINT16_ORDERS = {"AB": ("big", "big"), "BA": ("big", "little")}
WIDE_ORDERS = {"ABCD": ("big", "big"), "CDAB": ("little", "big"), "BADC": ("big", "little"),
               "DCBA": ("little", "little")}


@router.get("/browse/modbus/{source}", tags=["browse"], dependencies=read)
async def browse_modbus(request: Request, source: Annotated[str, PathParam(max_length=64)],
                        table: Literal["holding", "input"] = "holding",
                        start: Annotated[int, Query(ge=0, le=LAST_ADDRESS)] = 0,
                        count: Annotated[int, Query(ge=1, le=MAX_REGISTERS_PER_READ)] = 16) -> RegisterRange:
    """Read ``count`` registers of a Modbus source from ``start``; each address decoded as uint16,
    uint32 and uint64 in every word and byte order (a wider value only where it fits in the range)."""
    from gateway.sources.modbus.client import ModbusClient, ModbusError

    _, config = _source(request, source, "modbus")
    if start + count - 1 > LAST_ADDRESS:
        raise Problem(422, "invalid-request", f"start + count goes past the last address {LAST_ADDRESS}")
    client = ModbusClient(config.host, config.port, config.timeout_s)
    try:
        await client.connect()
        words = await client.read(table, start, count, config.unit)
    except ModbusError as exc:
        raise Problem(502, "modbus-read-failed", f"{source} ({config.host}:{config.port} unit {config.unit}), "
                                                 f"{table} {start}..{start + count - 1}: {exc}") from None
    finally:
        client.close()
    orders = {name: ByteOrders(word_order=w, byte_order=b) for name, (w, b) in {**UINT16_ORDERS, **WIDE_ORDERS}.items()}
    return RegisterRange(source=source, table=table, start=start, count=count, unit=config.unit, orders=orders,
                         rows=decoded(table, start, words))


def decoded(table: str, start: int, words: list[int]) -> list[RegisterRow]:
    """Each address of a read with the values that start there, through the gateway's own codec."""
    from gateway.sources.modbus.registers import ModbusTag, decode

    def values(offset: int, type_: str, orders: dict[str, tuple[str, str]]) -> dict[str, int]:
        size = MODBUS_TYPE_REGISTERS[type_]
        if offset + size > len(words):
            return {}
        return {name: decode(ModbusTag("", "", start + offset, type_, table, word_order=w, byte_order=b),
                             words[offset:offset + size]) for name, (w, b) in orders.items()}

    return [RegisterRow(address=start + i, raw=w, hex=f"{w:04x}", uint16=values(i, "uint16", UINT16_ORDERS),
                        uint32=values(i, "uint32", WIDE_ORDERS), uint64=values(i, "uint64", WIDE_ORDERS))
            for i, w in enumerate(words)]

