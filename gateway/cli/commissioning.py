"""``gateway record | dry-run | simulate``: commissioning a mapping before the PLC is there.

Thin, like every command module: it reads the files, calls ``gateway.commissioning`` (record,
dry-run) or ``simulators.from_mapping`` (simulate) and prints what they answer. Bad input is
one ``file:line: …`` line per problem on stderr and exit 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import typer

from gateway import logs
from gateway.cli.common import fail
from gateway.inputfile.errors import InputFileError


def _mapping(path: Path):
    from gateway.mapping.load import load_mapping

    try:
        return load_mapping(path)
    except InputFileError as exc:
        fail(exc.lines())


def _masterdata(mapping_path: Path, mapping, given: Path | None, *, required: bool):
    """The master data given, else the one the mapping names (relative to the mapping)."""
    from gateway.masterdata.load import load_masterdata

    path = given or (mapping_path.parent / mapping.masterdata if mapping.masterdata else None)
    if path is None:
        if required:
            fail(f"{mapping_path}: a dry-run plans against master data: give --masterdata FILE, or name it in "
                 "the mapping (`masterdata: FILE`)")
        return None
    try:
        return load_masterdata(path)
    except InputFileError as exc:
        fail(exc.lines())


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def record(
    mapping: Path = typer.Option(..., "--mapping", "-m", help="Tag-mapping YAML file."),
    seconds: float = typer.Option(..., "--seconds", min=0.1, help="How long to record."),
    out: Path = typer.Option(..., "--out", "-o", help="Recording to write (JSON lines; replaced if it exists)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the sources' log lines."),
) -> None:
    """Record the mapped tags' raw values (with source and server timestamps and status) as read.

    The gateway's own sources read them (OPC UA subscription, Modbus poll); nothing touches a
    ledger. Exit 1 if a tag delivered no value.
    """
    from gateway.commissioning.record import record as run_record

    config = _mapping(mapping)
    logs.configure(level="info" if verbose else "error")

    async def main():
        stop = asyncio.Event()
        _stop_on_signals(stop)
        with out.open("w", encoding="utf-8") as f:
            return await run_record(config, seconds, f, mapping_name=str(mapping), stop=stop)

    try:
        result = asyncio.run(main())
    except OSError as exc:
        fail(f"{out}: cannot write the recording: {exc.strerror or exc}")
    tags = len(result.per_tag)
    typer.echo(f"{out}: {result.values} values of {tags} tags from {len(config.sources)} source(s) "
               f"in {seconds:g} s")
    problems = [f"{name}: no connection ({error})" for name, error in result.sources_down.items()]
    problems += [f"no value from {tag}" for tag in result.silent]
    if problems:
        fail(problems)


def dry_run(
    mapping: Path = typer.Option(..., "--mapping", "-m", help="Tag-mapping YAML file."),
    recording: Path = typer.Option(..., "--recording", "-r", help="Recording of `gateway record`."),
    masterdata: Path | None = typer.Option(None, "--masterdata", help="Master data to plan against "
                                           "(default: the mapping's `masterdata:`)."),
    against: Path | None = typer.Option(None, "--against", help="Another mapping: both side by side, with "
                                        "the differences marked (same recording, same master data)."),
    format: str = typer.Option("table", "--format", help="table (for people) or json (for programs)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the gateway's log lines."),
) -> None:
    """Replay a recording through the gateway's own counting, confirming and planning.

    Prints per machine the units, confirmations, postings (issues with lots, activities,
    receipts) and anomalies it would make, on a throwaway ledger with the master data only.
    Exit 1 if it would raise anomalies (or a tag is not in the recording), for CI of mappings.
    """
    from gateway.commissioning.dryrun import compare, dry_run as run
    from gateway.commissioning.recording import read_recording

    if format not in ("table", "json"):
        fail(f"--format {format}: use table or json")
    config = _mapping(mapping)
    md = _masterdata(mapping, config, masterdata, required=True)
    other = _mapping(against) if against is not None else None
    try:
        rec = read_recording(recording)
    except InputFileError as exc:
        fail(exc.lines())
    logs.configure(level="info" if verbose else "critical")
    first = run(config, rec, md, mapping_name=str(mapping))
    second = run(other, rec, md, mapping_name=str(against)) if other is not None else None
    if format == "json":
        if second is None:
            typer.echo(first.model_dump_json(indent=2))
        else:
            diff = {m: [{"line": line, "mapping": a, "against": b} for line, a, b, differs in rows if differs]
                    for m, rows in compare(first, second).items()}
            typer.echo(json.dumps({"mapping": first.model_dump(mode="json"),
                                   "against": second.model_dump(mode="json"), "differences": diff}, indent=2))
    else:
        from gateway.commissioning.show import print_comparison, print_dry_run

        if second is None:
            print_dry_run(first)
        else:
            print_comparison(first, second)
    if not (first.clean and (second is None or second.clean)):
        raise typer.Exit(1)


def simulate(
    mapping: Path = typer.Option(..., "--mapping", "-m", help="Tag-mapping YAML file."),
    rate: float = typer.Option(5.0, "--rate", min=0.0, help="Machine cycles per second of every machine."),
    replay: Path | None = typer.Option(None, "--replay", help="Serve a recording's values in time order instead "
                                       "of counting."),
    masterdata: Path | None = typer.Option(None, "--masterdata", help="Master data to take each machine's order "
                                           "from (default: the mapping's `masterdata:`)."),
    order: list[str] = typer.Option([], "--order", help="MACHINE=NUMBER: the order a machine runs (repeatable)."),
    scrap: float = typer.Option(0.02, "--scrap", min=0.0, max=1.0, help="Share of cycles that are scrap "
                                "(machines with a scrap counter)."),
    control_port: int | None = typer.Option(None, "--control-port", help="Also take commands as JSON lines on "
                                            "this port (besides Sim.Command on every OPC UA server)."),
    seconds: float | None = typer.Option(None, "--seconds", min=0.1, help="Stop after this long (default: "
                                         "until SIGINT/SIGTERM)."),
) -> None:
    """Serve exactly the tags a mapping names, counting with ground truth, or replaying a recording.

    An OPC UA server per OPC UA endpoint (the mapping's node ids, nsu= namespaces created,
    counter types by width) and a Modbus server per host and port (the mapping's tables,
    registers, word and byte order, string lengths), so that `gateway validate --live` and
    `gateway run` work against the mapping before the PLC exists. The ground truth is printed
    at the end.
    """
    from simulators.from_mapping import MappingPlc, machine_configs

    config = _mapping(mapping)
    md = _masterdata(mapping, config, masterdata, required=False)
    orders = {}
    for item in order:
        machine, sep, number = item.partition("=")
        if not sep or machine not in config.machines:
            fail(f"--order {item}: write MACHINE=NUMBER with a machine of the mapping "
                 f"({', '.join(config.machines)})")
        orders[machine] = number
    replayed = None
    if replay is not None:
        from gateway.commissioning.recording import read_recording
        from gateway.commissioning.recording import replay as replay_of

        try:
            replayed = replay_of(read_recording(replay), config)
        except InputFileError as exc:
            fail(exc.lines())
    try:
        plc = MappingPlc(config, machine_configs(config, rate_hz=rate, orders=orders, masterdata=md,
                                                 scrap_ratio=scrap),
                         replay=replayed, control_port=control_port)
    except ValueError as exc:
        fail(f"{mapping}: {exc}")
    logs.configure(level="warning")

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await plc.start()
        try:
            what = f"replaying {replay} ({replayed.values} values)" if replayed else f"counting at {rate:g} cycles/s"
            typer.echo(f"simulating {', '.join(config.machines)} on {', '.join(plc.endpoints)}, {what}"
                       + (f"; control on port {control_port}" if control_port else ""), err=False)
            try:
                await asyncio.wait_for(stop.wait(), seconds)
            except TimeoutError:
                pass
        finally:
            await plc.stop()

    try:
        asyncio.run(main())
    except (OSError, ValueError) as exc:
        fail(f"{mapping}: cannot serve: {exc}")
    for name, model in plc.models.items():
        t = model.truth()
        typer.echo(f"{name}: order {t['order'] or '-'}, {t['good_units']} good and {t['scrap_units']} scrap units "
                   f"made (counters {t['good_count']}, {t['scrap_count']})")


def register(app: typer.Typer) -> None:
    app.command("record")(record)
    app.command("dry-run")(dry_run)
    app.command("simulate")(simulate)
