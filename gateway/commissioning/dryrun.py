"""``gateway dry-run``: what a mapping would have made of a recording, without a PLC or a ledger.

The recording (``gateway.commissioning.recording``) is replayed through a real
``gateway.service.Gateway`` — the same counting, confirming, planning and posting code
``gateway run`` uses, not a copy — on a throwaway SQLite ledger that holds only the master
data, in a temporary folder removed afterwards. Each recorded delivery is applied with the
gateway's clock showing the time it was received, and the confirm timer runs every 0.25 s
of recorded time between deliveries, as it would have; at the end of the recording every
pending unit is confirmed as at a shutdown. What the ledger then holds is the answer: per
machine the units counted, the confirmations with their issues (with lots), activities and
receipts, the backflush errors, and the anomalies.

``compare`` sets two such answers side by side (``--against``), line by line per machine.

It never touches the plant's ledger or a PLC.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import select

from gateway.commissioning.recording import Recording, replay
from gateway.ledger import schema
from gateway.mapping.model import Mapping
from gateway.service import TICK_S
from gateway.masterdata.model import MasterData



class Movement(BaseModel):
    kind: str  # 261 issue, 101 receipt (SAP movement types)
    material: str
    location: str
    lot: str
    qty: Decimal  # as the ledger has it: an issue takes stock out, so it is negative
    uom: str


class Activity(BaseModel):
    work_center: str
    activity: str
    hours: Decimal
    cost: Decimal
    currency: str


class BackflushError(BaseModel):
    material: str
    location: str
    missing: Decimal
    uom: str
    reason: str


class ConfirmationOut(BaseModel):
    id: str
    order: str
    operation: str
    yield_qty: Decimal
    scrap_qty: Decimal
    uom: str
    trigger: str
    first_source_time: datetime
    last_source_time: datetime
    issues: list[Movement] = []
    receipts: list[Movement] = []
    activities: list[Activity] = []
    errors: list[BackflushError] = []


class AnomalyOut(BaseModel):
    kind: str
    counter: str | None
    detail: str
    units_held: Decimal


class MachineOutcome(BaseModel):
    counted: Decimal = Decimal(0)
    confirmed_yield: Decimal = Decimal(0)
    confirmed_scrap: Decimal = Decimal(0)
    pending: Decimal = Decimal(0)  # units of an order not in the master data stay pending
    held: Decimal = Decimal(0)
    confirmations: list[ConfirmationOut] = []
    anomalies: list[AnomalyOut] = []


class DryRun(BaseModel):
    """What the gateway would have made of the recording under one mapping."""

    mapping: str
    recording: str
    values: int  # tag values replayed
    machines: dict[str, MachineOutcome]
    not_recorded: list[str] = []  # tags of the mapping the recording has no value for
    undecodable: list[str] = []  # Modbus registers the mapping cannot decode
    committed: bool = True

    @property
    def anomalies(self) -> int:
        return sum(len(m.anomalies) for m in self.machines.values())

    @property
    def clean(self) -> bool:
        """No anomaly, every tag recorded and decodable: nothing a person would have to decide."""
        return self.committed and not (self.anomalies or self.not_recorded or self.undecodable)


class _Clock:
    def __init__(self) -> None:
        self.now = datetime.now().astimezone()

    def __call__(self) -> datetime:
        return self.now


def dry_run(mapping: Mapping, recording: Recording, masterdata: MasterData, *, mapping_name: str) -> DryRun:
    """Replay ``recording`` through a gateway running ``mapping`` on a throwaway ledger."""
    from gateway.ledger.masters import store_masterdata
    from gateway.ledger.schema import open_engine
    from gateway.masterdata.load import to_domain
    from gateway.service import Gateway

    tick = timedelta(seconds=TICK_S)

    replayed = replay(recording, mapping)
    folder = Path(tempfile.mkdtemp(prefix="backflush-dry-run-"))
    engine = open_engine(f"sqlite:///{folder / 'ledger.sqlite'}")
    try:
        store_masterdata(engine, to_domain(masterdata), masterdata.stock)
        clock = _Clock()
        gateway = Gateway(mapping, engine, clock=clock)
        gateway.open_replay()
        next_tick = None
        try:
            for at, values in replayed.batches:
                if next_tick is None:
                    next_tick = at + tick
                while next_tick <= at:  # the timer ticks that fell between two deliveries
                    clock.now = next_tick
                    gateway.tick()
                    next_tick += tick
                clock.now = at
                gateway.on_batch(values)
        finally:
            committed = gateway.close_replay()
        machines = _outcome(engine, list(mapping.machines))
    finally:
        engine.dispose()
        shutil.rmtree(folder, ignore_errors=True)
    return DryRun(mapping=mapping_name, recording=recording.file, values=replayed.values, machines=machines,
                  not_recorded=replayed.not_recorded, undecodable=replayed.undecodable, committed=committed)


def _outcome(engine, names: list[str]) -> dict[str, MachineOutcome]:
    out = {name: MachineOutcome() for name in names}
    with engine.connect() as conn:
        movements: dict[str, list] = defaultdict(list)
        for r in conn.execute(select(schema.goods_movements).order_by(schema.goods_movements.c.id)):
            movements[r.confirmation_id].append(r)
        activities: dict[str, list] = defaultdict(list)
        for r in conn.execute(select(schema.activity_postings).order_by(schema.activity_postings.c.id)):
            activities[r.confirmation_id].append(r)
        errors: dict[str, list] = defaultdict(list)
        for r in conn.execute(select(schema.error_queue).order_by(schema.error_queue.c.id)):
            errors[r.confirmation_id].append(r)
        c = schema.confirmations.c
        for r in conn.execute(select(schema.confirmations).order_by(c.last_source_time, c.first_source_time, c.id)):
            m = out.setdefault(r.machine, MachineOutcome())
            m.confirmed_yield += r.yield_qty
            m.confirmed_scrap += r.scrap_qty
            m.confirmations.append(ConfirmationOut(
                id=r.id, order=r.order_no, operation=r.operation, yield_qty=r.yield_qty, scrap_qty=r.scrap_qty,
                uom=r.uom, trigger=r.trigger, first_source_time=r.first_source_time,
                last_source_time=r.last_source_time,
                issues=[_movement(g) for g in movements[r.id] if g.kind == "261"],
                receipts=[_movement(g) for g in movements[r.id] if g.kind == "101"],
                activities=[Activity(work_center=a.work_center, activity=a.activity, hours=a.hours, cost=a.cost,
                                     currency=a.currency) for a in activities[r.id]],
                errors=[BackflushError(material=e.material, location=e.location, missing=e.missing_qty, uom=e.uom,
                                       reason=e.reason) for e in errors[r.id]]))
        for r in conn.execute(select(schema.pending_units)):
            out.setdefault(r.machine, MachineOutcome()).pending += r.yield_qty + r.scrap_qty
        for r in conn.execute(select(schema.anomalies).order_by(schema.anomalies.c.id)):
            m = out.setdefault(r.machine, MachineOutcome())
            if r.status == "open":
                m.held += r.units_held
            m.anomalies.append(AnomalyOut(kind=r.kind, counter=r.counter, detail=r.detail, units_held=r.units_held))
        for r in conn.execute(select(schema.counted_units)):
            out.setdefault(r.machine, MachineOutcome()).counted = Decimal(r.units)
    return out


def _movement(r) -> Movement:
    return Movement(kind=r.kind, material=r.material, location=r.location, lot=r.lot, qty=r.qty, uom=r.uom)


# --- side by side -----------------------------------------------------------------------


def figures(m: MachineOutcome) -> dict[str, str]:
    """One machine's outcome as labelled lines, for comparing two mappings line by line."""
    rows: dict[str, str] = {
        "units counted": _n(m.counted),
        "yield confirmed": _n(m.confirmed_yield),
        "scrap confirmed": _n(m.confirmed_scrap),
        "confirmations": str(len(m.confirmations)),
        "pending": _n(m.pending),
        "held": _n(m.held),
    }
    by_order: dict[str, Decimal] = defaultdict(Decimal)
    issues: dict[str, Decimal] = defaultdict(Decimal)
    receipts: dict[str, Decimal] = defaultdict(Decimal)
    hours: dict[str, Decimal] = defaultdict(Decimal)
    uoms: dict[str, str] = {}
    for c in m.confirmations:
        by_order[f"{c.order}/{c.operation}"] += c.yield_qty + c.scrap_qty
        for g in c.issues:
            issues[g.material] -= g.qty  # issued, as a positive quantity
            uoms[g.material] = g.uom
        for g in c.receipts:
            receipts[g.material] += g.qty
            uoms[g.material] = g.uom
        for a in c.activities:
            hours[f"{a.work_center} {a.activity}"] += a.hours
    for key, q in sorted(by_order.items()):
        rows[f"units of {key}"] = _n(q)
    for material, q in sorted(issues.items()):
        rows[f"issue {material}"] = f"{_n(q)} {uoms[material]}"
    for material, q in sorted(receipts.items()):
        rows[f"receipt {material}"] = f"{_n(q)} {uoms[material]}"
    for key, q in sorted(hours.items()):
        rows[f"hours {key}"] = _n(q)
    kinds: dict[str, int] = defaultdict(int)
    for a in m.anomalies:
        kinds[a.kind] += 1
    for kind, n in sorted(kinds.items()):
        rows[f"anomalies {kind}"] = str(n)
    return rows


def compare(a: DryRun, b: DryRun) -> dict[str, list[tuple[str, str, str, bool]]]:
    """Per machine of either: (line, value under a, value under b, differs), in a stable order."""
    out = {}
    for name in list(dict.fromkeys([*a.machines, *b.machines])):
        fa = figures(a.machines.get(name, MachineOutcome()))
        fb = figures(b.machines.get(name, MachineOutcome()))
        lines = list(dict.fromkeys([*fa, *fb]))
        out[name] = [(line, fa.get(line, "-"), fb.get(line, "-"), fa.get(line) != fb.get(line)) for line in lines]
    return out


def _n(q: Decimal) -> str:
    return format(q.normalize(), "f") if q else "0"
