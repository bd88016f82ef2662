"""``gateway demo``: simulated PLCs → gateway → SQLite ledger, then reconcile.

Starts the demo plant's simulators — three machines on an OPC UA server, a lathe on a
Modbus TCP server — loads the demo master data, runs the real gateway against them, and
at the end compares what the ledger accounts for with the simulators' own ground truth.
The machines are paused while the gateway takes its baseline, so every unit the
simulators make afterwards must be in the ledger exactly once, whatever the protocol.

With a preset (``--preset euromap77`` or ``packml``) the demo runs the press and the
assembly machine through that preset (``mappings/demo-<preset>.yaml``) on the simulator's
EUROMAP 77 or PackML address space: job counters in parts, a machine state to count in
and, for PackML, a total counter of good and bad parts.

With ``--webhook URL`` and/or ``--mqtt URL`` the demo's mapping gets those outputs: every
posted confirmation is delivered to the webhook and published to the broker through the
outbox, as ``gateway run`` does. The last confirmations are posted as the gateway stops
(after its delivery workers); the demo then delivers what is left in the outbox, as the next
start of a gateway would, and prints what each output got.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.live import Live

from pydantic import ValidationError

from gateway.ledger import outbox
from gateway.ledger.masters import store_masterdata
from gateway.ledger.queries import summary
from gateway.ledger.schema import open_engine
from gateway.mapping.load import load_mapping
from gateway.mapping.model import Mapping, Output
from gateway.masterdata.load import load_masterdata, to_domain
from gateway.cli.tables import fmt, make_console, print_summary
from gateway.service import Gateway
from simulators.demo import DEMO_MODBUS_PORT, demo_machines, demo_modbus_machines
from simulators.modbus_plc import ModbusPlc
from simulators.opcua_plc import OpcUaPlc
from simulators.plant import SimulatedPlant
from simulators.standard_interfaces import INTERFACES, counter_value

SOURCE_ROOT = Path(__file__).resolve().parents[1]


class DemoError(Exception):
    """The demo could not start; the message says what to do."""


def _find(path: Path) -> Path:
    """The demo files live in the repository's mappings/; look there if not found here."""
    if path.exists() or path.is_absolute():
        return path
    return SOURCE_ROOT / path


def _truth_units(*plcs: SimulatedPlant) -> dict[str, Decimal]:
    out = {}
    for plc in plcs:
        for name, model in plc.models.items():
            t = model.truth()
            out[name] = Decimal(t["good_units"] + t["scrap_units"])
    return out


async def wait_until(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def caught_up(gw: Gateway, *plcs: SimulatedPlant) -> bool:
    """True when the gateway holds, for every machine it runs, the counter values the
    simulators show now (OPC UA and Modbus alike: both simulators share the models)."""
    if not gw.machines:  # not restored from the ledger yet: it has read nothing
        return False
    plc_of = {name: plc for plc in plcs for name in plc.models}
    for name, rt in gw.machines.items():
        if any(c not in rt.states or rt.states[c].position.raw != _shown(plc_of[name], rt, c) for c in rt.specs):
            return False
    return True


def _shown(plc: SimulatedPlant, rt, counter: str) -> int | None:
    """What the simulator shows now on the machine's ``counter`` tag."""
    model = plc.models[rt.name]
    path = getattr(getattr(rt.config.counters, counter), "node", "").partition(f"s={rt.name}.")[2]
    standard = counter_value(getattr(plc, "interfaces", ()), path, model) if path else None
    if standard is not None:  # a node of EUROMAP 77 or PackML
        return standard
    return model.truth().get(f"{counter}_count")


def _with_ports(mapping: Mapping, opcua_port: int, modbus_port: int | None) -> tuple[Mapping, int]:
    """The mapping pointed at the simulators' ports, and the Modbus port to serve on.

    The demo mapping names the default ports; ``--port`` moves the OPC UA server, and the
    Modbus simulator serves where the mapping's Modbus source points unless told otherwise.
    """
    sources = {}
    for name, src in mapping.sources.items():
        if src.opcua is not None and opcua_port != 4840:
            src = src.model_copy(update={"opcua": src.opcua.model_copy(
                update={"endpoint": f"opc.tcp://127.0.0.1:{opcua_port}"})})
        elif src.modbus is not None:
            modbus_port = modbus_port or src.modbus.port
            src = src.model_copy(update={"modbus": src.modbus.model_copy(update={"port": modbus_port})})
        sources[name] = src
    return mapping.model_copy(update={"sources": sources}), modbus_port or DEMO_MODBUS_PORT


def demo_mapping_path(preset: str | None) -> Path:
    """The demo's mapping: the plant's, or the one that runs its machines through ``preset``."""
    if preset is None:
        return Path("mappings/demo-plant.yaml")
    if preset not in INTERFACES:
        raise DemoError(f"no demo for preset {preset!r}; the simulator offers {', '.join(INTERFACES)}")
    return Path(f"mappings/demo-{preset}.yaml")


# Topics of the demo's MQTT output: demo/plant/<line>/<machine>/confirmation, …/state, …/counts.
DEMO_SITE, DEMO_AREA = "demo", "plant"
OUTPUTS_DRAIN_S = 30.0  # the longest the demo waits for its outputs to take what is left in the outbox


def demo_outputs(webhook: str | None, mqtt: str | None) -> dict[str, Output]:
    """The outputs ``--webhook`` and ``--mqtt`` ask for, named ``webhook`` and ``mqtt``; quick retries
    (a demo is watched), and an MQTT client id of this process (two demos on one broker do not take
    each other's session over)."""
    wanted = {"webhook": webhook and {"webhook": {"url": webhook}},
              "mqtt": mqtt and {"mqtt": {"url": mqtt, "site": DEMO_SITE, "area": DEMO_AREA,
                                         "client_id": f"backflush-demo-{os.getpid()}"}}}
    outs = {}
    for name, settings in wanted.items():
        if not settings:
            continue
        try:
            outs[name] = Output.model_validate({**settings, "retry_min_s": 0.2, "retry_max_s": 2})
        except ValidationError as exc:
            raise DemoError(f"--{name}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    return outs


async def run_demo(*, seconds: float, db: str | None, port: int, mapping_path: Path | None, live: bool,
                   modbus_port: int | None = None, http=None, preset: str | None = None,
                   webhook: str | None = None, mqtt: str | None = None) -> bool:
    """``http``: a ``gateway.cli.http.HttpPlan`` (its port already bound) to serve the gateway on, or None.
    ``preset``: serve the simulator's address space of that standard (its mapping by default).
    ``webhook``, ``mqtt``: deliver the confirmations there too (module docstring)."""
    console = make_console()
    default = demo_mapping_path(preset)  # refuses a preset the simulator has no address space for
    outputs = demo_outputs(webhook, mqtt)
    mapping_path = _find(mapping_path or default)
    mapping = load_mapping(mapping_path)
    md_path = mapping_path.parent / (mapping.masterdata or "demo-masterdata.yaml")
    md = load_masterdata(md_path)
    mapping, modbus_port = _with_ports(mapping, port, modbus_port)
    if outputs:
        mapping = mapping.model_copy(update={"outputs": {**mapping.outputs, **outputs}})
    db = db or f"sqlite:///{Path(tempfile.mkdtemp(prefix='backflush-demo-')) / 'ledger.sqlite'}"
    engine = open_engine(db)
    report = store_masterdata(engine, to_domain(md), md.stock)
    console.print(f"ledger: {db}\nmaster data: {md_path} ({report.materials} materials, "
                  f"{report.orders_new + report.orders_unchanged + report.orders_updated} orders)")

    # The demo's simulated machines that the mapping runs (a preset's mapping: some of them).
    plc = OpcUaPlc([m for m in demo_machines() if m.name in mapping.machines], port=port,
                   interfaces=(preset,) if preset else ())
    try:
        await plc.start()
    except OSError as exc:
        raise DemoError(f"cannot serve the simulated PLC on 127.0.0.1:{port} ({exc.strerror or exc}); "
                        "another program uses the port — try --port 4841") from exc
    plcs: tuple[SimulatedPlant, ...] = (plc,)
    served = f"simulated PLCs: {plc.endpoint} ({', '.join(plc.models)})"
    lathe_machines = [m for m in demo_modbus_machines() if m.name in mapping.machines]
    if lathe_machines:
        lathes = ModbusPlc(lathe_machines, port=modbus_port)
        try:
            await lathes.start()
        except OSError as exc:
            await plc.stop()
            raise DemoError(f"cannot serve the simulated Modbus PLC on 127.0.0.1:{modbus_port} ({exc}); another "
                            "program uses the port — stop it, or change the Modbus source's port in the mapping") from exc
        plcs += (lathes,)
        served += f", modbus 127.0.0.1:{modbus_port} ({', '.join(lathes.models)})"
    for sim in plcs:
        await sim.command("*", "pause")
    console.print(served + (f", {preset} address space" if preset else ""))
    for name, out in outputs.items():
        console.print(f"output {name}: {out.settings.url}" + (
            f" (topics {DEMO_SITE}/{DEMO_AREA}/<line>/<machine>/confirmation, …/state, …/counts)"
            if name == "mqtt" else " (POST, Idempotency-Key header)"), soft_wrap=True)
    gw = Gateway(mapping, engine)
    stop = asyncio.Event()
    try:
        async with _serve(http, gw, console):  # before the gateway runs: its metrics see every commit
            task = asyncio.create_task(gw.run(stop))
            try:
                await wait_until(lambda: caught_up(gw, *plcs), 30, "the gateway to connect and read every counter")
                start_truth = _truth_units(*plcs)
                for sim in plcs:
                    await sim.command("*", "resume")
                await _produce(gw, plcs, seconds, start_truth, console, live)
                for sim in plcs:
                    await sim.command("*", "pause")
                await wait_until(lambda: caught_up(gw, *plcs), 30, "the gateway to read the final counter values")
            finally:
                stop.set()
                await task
    finally:
        for sim in plcs:
            await sim.stop()
    end_truth = _truth_units(*plcs)
    truth = {m: end_truth[m] - start_truth[m] for m in end_truth}
    delivered = await deliver_the_rest(engine, mapping, list(outputs)) if outputs else {}
    result = await asyncio.to_thread(summary, engine)
    console.print()
    print_summary(result, truth=truth, console=console)
    ok = all(result.machines.get(m) is not None and result.machines[m].accounted == truth[m] for m in truth)
    ok = ok and result.duplicate_confirmation_ids == 0
    console.print("[green]reconciled: every simulated unit is in the ledger exactly once[/]" if ok
                  else "[red]NOT reconciled: ledger and simulator disagree[/]")
    ok = _print_deliveries(delivered, console) and ok
    console.print(f"explore the ledger: export GATEWAY_DB={db}\n"
                  "  then: gateway report · gateway orders show 1000123 · gateway confirmations list · "
                  "gateway errors list · gateway trace 1000125-000001", soft_wrap=True)
    return ok


async def deliver_the_rest(engine, mapping: Mapping, names: list[str],
                           timeout_s: float = OUTPUTS_DRAIN_S) -> dict[str, Counter]:
    """Deliver what the stopped gateway left in the outbox of ``names`` (the confirmations of its
    shutdown), through the same workers; then per output the count of its rows by status."""
    from gateway.outputs.worker import Outputs, WorkerOptions

    workers = Outputs(engine, mapping, options=WorkerOptions(poll_s=0.1))
    await workers.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            waiting = {s.target: s.pending for s in await asyncio.to_thread(outbox.stats, engine)}
            if not any(waiting.get(name) for name in names):
                break
            await asyncio.sleep(0.1)
    finally:
        await workers.stop()

    def counted() -> dict[str, Counter]:
        return {name: Counter(r.status for r in outbox.listed(engine, status="all", target=name, limit=10**9))
                for name in names}

    return await asyncio.to_thread(counted)


def _print_deliveries(delivered: dict[str, Counter], console: Console) -> bool:
    """One line per output: what it got. False when something was not delivered."""
    ok = True
    for name, statuses in delivered.items():
        rest = {s: n for s, n in statuses.items() if s != "delivered"}
        ok = ok and not rest
        console.print(f"output {name}: {statuses['delivered']} delivered" + (
            "".join(f", [red]{n} {s}[/]" for s, n in sorted(rest.items())) + " (gateway outbox list)" if rest else ""))
    return ok


@contextlib.asynccontextmanager
async def _serve(http, gw: Gateway, console: Console):
    """Serve the demo's gateway over HTTP and say where (a token for the API is made if none is configured)."""
    if http is None:
        yield
        return
    from gateway.http.auth import Role, Tokens, new_token
    from gateway.cli.http import serving

    token = None
    if not len(http.tokens):
        token, line = new_token("demo", Role.operator)
        http.tokens = Tokens.parse(line, "the demo's token")
    async with serving(http, gw) as server:
        # soft_wrap: a URL or token broken over two lines cannot be copied
        console.print(f"web console: {server.url}/console/  (while the demo runs; log in with the token below)", soft_wrap=True)
        console.print(f"HTTP: {server.url}  (/health /ready /metrics /api/v1/machines /openapi.json)", soft_wrap=True)
        if token:
            console.print(f"API token for this demo run (operator): {token}", soft_wrap=True)
        yield


async def _produce(gw: Gateway, plcs: tuple[SimulatedPlant, ...], seconds: float, start: dict[str, Decimal],
                   console: Console, live: bool) -> None:
    began = time.monotonic()

    def line() -> str:
        now = _truth_units(*plcs)
        parts = [f"{name} {fmt(rt.counted_units)}/{fmt(now[name] - start[name])}" for name, rt in gw.machines.items()]
        return (f"{time.monotonic() - began:5.1f}/{seconds:.0f} s  counted/simulated: " + "  ".join(parts)
                + f"  confirmations: {gw.writer.health.confirmations}")

    if not live:
        while (left := seconds - (time.monotonic() - began)) > 0:
            await asyncio.sleep(min(5.0, left))
            console.print(line())
        return
    with Live(line(), console=console, refresh_per_second=4) as display:
        while time.monotonic() - began < seconds:
            await asyncio.sleep(0.25)
            display.update(line())
