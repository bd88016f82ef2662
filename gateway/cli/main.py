"""Command line: ``gateway run | demo | validate | masterdata load | report | db upgrade`` and the
commands on the ledger (orders, confirmations, stock, errors, trace, status).

Thin: each command parses its arguments, calls one function of the application layer
(``gateway.app``, which validates and opens the ledger the guarded way) and renders its
answer (``--format table|json|csv`` on every list and report). Exit codes: 0 success
(also a correct empty answer), 1 bad input (mapping, master data, a refused request, a
ledger that cannot be used) or a demo that did not reconcile, 2 usage errors (typer's
own). Bad input is one line on stderr (``file:line: key: message`` for files), never a
traceback.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from enum import Enum
from pathlib import Path

import typer

from gateway import diagnostics, logs
from gateway.cli.common import DbOption, Format, FormatOption, actor, age_text, emit, fail, on_ledger, parsed
from gateway.inputfile.errors import InputFileError
from gateway.ledger.leases import DEFAULT_TTL_S, LEDGER
from gateway.ledger.writer import DEFAULT_GATHER_S

class _App(typer.Typer):
    """Every command: a ledger of another schema version is one line on stderr and exit 1."""

    def __call__(self, *args, **kwargs):
        from gateway.app import AppError
        from gateway.ledger.schema import LedgerVersionError

        try:
            return super().__call__(*args, **kwargs)
        except LedgerVersionError as exc:
            typer.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except AppError as exc:
            typer.echo(exc.detail, err=True)
            sys.exit(1)


app = _App(add_completion=False, no_args_is_help=True,
                  help="Backflush Gateway: PLC counters → production confirmations → backflush postings.")
masterdata_app = typer.Typer(no_args_is_help=True, help="Master data: materials, work centers, BOMs, routings, orders, stock.")
app.add_typer(masterdata_app, name="masterdata")


def _print_version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    from gateway.ledger.schema import SCHEMA_VERSION

    try:
        number = version("backflush-gateway")
    except PackageNotFoundError:
        number = "(not installed)"
    typer.echo(f"gateway {number}, ledger schema version {SCHEMA_VERSION}")
    raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="Print the gateway's version and its ledger schema version.")) -> None:
    """Backflush Gateway: PLC counters → production confirmations → backflush postings."""

stock_app = typer.Typer(no_args_is_help=True, help="Stock: receive goods at a location.")
app.add_typer(stock_app, name="stock")
errors_app = typer.Typer(no_args_is_help=True, help="The backflush error queue: list and reprocess.")
app.add_typer(errors_app, name="errors")
confirmations_app = typer.Typer(no_args_is_help=True, help="Confirmations: list and reverse.")
app.add_typer(confirmations_app, name="confirmations")
orders_app = typer.Typer(no_args_is_help=True, help="Production orders: show, complete.")
app.add_typer(orders_app, name="orders")
report_app = typer.Typer(help="Reports on what the ledger holds (default: summary).")
app.add_typer(report_app, name="report")
db_app = typer.Typer(no_args_is_help=True, help="The ledger database: schema version and upgrades.")
app.add_typer(db_app, name="db")
from gateway.cli.reports import register as _register_reports; _register_reports(stock_app, report_app)  # noqa: I001
from gateway.cli.outbox import outbox_app as _outbox_app; app.add_typer(_outbox_app, name="outbox")  # noqa: I001,E702
from gateway.cli.adjust import register as _register_adjust; _register_adjust(app)  # noqa: I001
from gateway.cli.anomalies import register as _register_anomalies; _register_anomalies(app)  # noqa: I001
from gateway.cli.collectors import register as _register_collectors; _register_collectors(app)  # noqa: I001
from gateway.cli.browse import register as _register_browse; _register_browse(app)  # noqa: I001
from gateway.cli.pki import register as _register_pki; _register_pki(app)  # noqa: I001
from gateway.cli.reload import register as _register_reload; _register_reload(app)  # noqa: I001
from gateway.cli.commissioning import register as _register_commissioning; _register_commissioning(app)  # noqa: I001, E402
from gateway.cli.http import AuthMetricsOption, HttpOption, TokensOption  # noqa: I001, E402
from gateway.cli.http import register as _register_http; _register_http(app)  # noqa: I001, E402

# After the ledger is committed, what is left (library tasks, worker threads) gets this
# long to end before the process ends without them.
EXIT_GRACE_S = 10.0


class LogLevel(str, Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


@app.command()
def run(
    mapping: Path = typer.Option(..., "--mapping", "-m", help="Tag-mapping YAML file."),
    db: str = DbOption,
    log_json: bool = typer.Option(False, "--log-json", help="Log JSON lines instead of key=value."),
    log_level: LogLevel = typer.Option(LogLevel.info, "--log-level"),
    shutdown_timeout: float = typer.Option(30.0, help="Seconds to commit pending units on SIGINT/SIGTERM."),
    stats: Path = typer.Option(None, "--stats", help="Append one JSON line per committed ledger transaction "
                               "(commit time, counter changes, oldest/newest source time) to this file; "
                               "for benchmarks."),
    instance: str = typer.Option(None, "--instance", envvar="GATEWAY_INSTANCE",
                                 help="This gateway's name in the ledger (default: the host name). A restart "
                                      "under the same name on the same host takes its machines back at once."),
    standby: bool = typer.Option(False, "--standby", help="If another gateway owns machines of this mapping, "
                                 "wait and take each over when its lease expires, instead of refusing to start."),
    lease_ttl: float = typer.Option(DEFAULT_TTL_S, "--lease-ttl", min=1.0,
                                    help="Seconds a machine's lease lasts without renewal (renewed every third); "
                                         "a standby takes over within this time after an owner dies."),
    gather: float = typer.Option(DEFAULT_GATHER_S, "--gather", min=0.0, max=5.0,
                                 help="Seconds the ledger writer gathers counter changes into one transaction "
                                      "(from the start of the last one): fewer rows and commits per change, "
                                      "each change at most this much later in the ledger. 0: write at once."),
    http: str = HttpOption,
    tokens: Path = TokensOption,
    http_auth_metrics: bool = AuthMetricsOption,
) -> None:
    """Run the gateway until SIGINT/SIGTERM; pending units are confirmed on the way out.

    SIGHUP (or `gateway reload`) reads the mapping file again and applies it without a restart.

    Each machine is owned by one gateway at a time (a lease in the ledger). A second gateway
    for the same machines is refused (exit 2) unless it is started with --standby.
    """
    from gateway.app import AppError
    from gateway.app.ledger import check_url
    from gateway.cli.http import prepare, serving
    from gateway.ledger.leases import MachinesOwned, Me, session_name
    from gateway.ownership import LeaseOptions
    from gateway.reloading import checked_mapping
    from gateway.service import Gateway, open_ledger_when_reachable

    logs.configure(json=log_json, level=log_level.value)
    try:
        check_url(db, create=True)  # a URL that cannot name a ledger fails now; an unreachable server is waited for
    except AppError as exc:
        fail(exc.detail)
    try:
        config = checked_mapping(mapping)  # as every reload checks it
    except InputFileError as exc:
        fail(exc.lines())

    me = Me.here(instance)  # this gateway as an owner; its database sessions carry its name
    http_plan = prepare(http, tokens, http_auth_metrics)  # the port is taken now: in use → exit 1 at once

    async def main() -> bool:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        reload = asyncio.Event()  # SIGHUP: read the mapping again (once the gateway has started)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        diagnostics.install(loop)
        # A stalled transaction must not hold lease rows much past a lease's end.
        engine = await open_ledger_when_reachable(db, stop, idle_in_transaction_s=lease_ttl / 2,
                                                  session_name=session_name(me.process))
        if engine is None:
            return True  # stopped before the database came back: nothing was counted
        gateway = Gateway(config, engine, stats=str(stats) if stats else None,
                          lease=LeaseOptions(instance, lease_ttl, standby, me),
                          gather_s=gather,
                          mapping_file=mapping, reload_requests=reload)
        async with serving(http_plan, gateway):
            done = await gateway.run(stop, shutdown_timeout_s=shutdown_timeout)
        diagnostics.exit_guard(0 if done else 1, EXIT_GRACE_S)
        return done

    try:
        done = asyncio.run(main())
    except MachinesOwned as exc:
        typer.echo("\n".join(owned_message(exc.holders, lease_ttl)), err=True)
        raise typer.Exit(2) from None
    if not done:
        raise typer.Exit(1)


def owned_message(holders, ttl_s: float) -> list[str]:
    """Why a second gateway is refused: which machines, whose, since when, and what to do."""
    from datetime import UTC, datetime

    by_owner: dict[tuple, list] = {}
    for h in holders:
        by_owner.setdefault((h.instance, h.host, h.pid), []).append(h)
    machines = sorted(h.machine for h in holders if h.machine != LEDGER)
    lines = [f"refused: {len(machines)} machine(s) of this mapping are owned by a running gateway"
             if machines else "refused: another gateway runs on this ledger (SQLite: one gateway per ledger file)"]
    for (name, host, pid), hs in sorted(by_owner.items()):
        since = min(h.since for h in hs)
        names = ", ".join(h.machine if h.machine != LEDGER else "the ledger" for h in hs)
        lines.append(f"  {names}: instance {name!r} on host {host}, pid {pid}, since "
                     f"{datetime.fromtimestamp(since, UTC):%Y-%m-%d %H:%M:%S} UTC "
                     f"(lease expires in {max(0.0, min(h.expires_in_s for h in hs)):.0f} s unless renewed)")
    lines.append(f"Start it with --standby to wait and take each machine over when its owner's lease expires "
                 f"(--lease-ttl, now {ttl_s:g} s), or stop the other gateway first; `gateway status` lists owners.")
    return lines


@app.command()
def validate(
    file: Path = typer.Argument(..., help="Tag-mapping YAML file."),
    masterdata: Path | None = typer.Option(None, "--masterdata", help="Master data to check references against "
                                           "(default: the mapping's `masterdata:` key)."),
    live: bool = typer.Option(False, "--live", help="Also read every tag once from the PLCs: it must exist and "
                                                    "hold a value of its declared type."),
) -> None:
    """Check a mapping file: syntax, keys, types, duplicates, references. Lists every error."""
    from gateway.mapping.validate import validate_mapping

    warnings: list = []
    errors = validate_mapping(file, masterdata, warnings)
    for warning in warnings:  # not wrong, but will not work yet: said, exit code unchanged
        typer.echo(str(warning), err=True)
    if not errors and live:
        from gateway.cli.live import check_live
        from gateway.mapping.load import read_mapping

        logs.configure(level="critical")  # every problem is reported below, once, with its line
        errors = asyncio.run(check_live(read_mapping(file)))
    if errors:
        fail([str(e) for e in errors] + [f"{len(errors)} error(s) in {file}"])
    typer.echo(f"{file}: ok" + (" (every tag read from the PLCs)" if live else ""))


@masterdata_app.command("load")
def masterdata_load(file: Path = typer.Argument(..., help="Master-data YAML file."), db: str = DbOption) -> None:
    """Load master data into the ledger, all or nothing; loading it again changes nothing.

    Creates the ledger if the database holds none yet (a SQLite file in an existing folder)."""
    from gateway.app.ledger import ledger_errors
    from gateway.ledger.masters import MasterDataConflict, store_masterdata
    from gateway.masterdata.load import load_masterdata, to_domain

    try:
        md = load_masterdata(file)
    except InputFileError as exc:
        fail(exc.lines() + ["nothing was loaded"])

    # The audit row names the file and its exact content (SHA-256), and what the load changed.
    import hashlib

    from gateway.ledger.audit import Action

    sha256 = hashlib.sha256(file.read_bytes()).hexdigest()
    audit = Action(actor(), "masterdata.load", subject=file.name[:128],
                   detail={"file": str(file), "sha256": sha256})

    def store(engine):
        with ledger_errors(engine.url):
            return store_masterdata(engine, to_domain(md), md.stock, audit=audit)

    try:
        report = on_ledger(db, store, create=True)
    except MasterDataConflict as exc:
        fail([f"{file}: {exc}", "nothing was loaded"])
    typer.echo(
        f"{file}: {report.materials} materials, {report.work_centers} work centers, orders "
        f"{report.orders_new} new / {report.orders_updated} updated / {report.orders_unchanged} unchanged, "
        f"{report.stock_posted} opening stock postings"
        + (f", {report.versions} production versions" if report.versions else "")
    )
    for note in report.notes:
        typer.echo(f"  note: {note}")


@stock_app.command("receive")
def stock_receive(
    material: str = typer.Argument(...),
    quantity: str = typer.Argument(..., help="Quantity in the material's unit of measure."),
    location: str = typer.Option(..., "--location", "-l"),
    lot: str = typer.Option("", "--lot", help="Lot number (required for lot-tracked materials)."),
    expiry: str | None = typer.Option(None, "--expiry", help="Expiry date YYYY-MM-DD."),
    db: str = DbOption,
) -> None:
    """Receive stock without an order (movement 501), e.g. to replenish line-side stock."""
    from gateway.app import checks, stock
    from gateway.app.models import ReceiveStock
    from gateway.cli.tables import fmt

    request = ReceiveStock(material=material, qty=parsed(checks.quantity, quantity), location=location, lot=lot,
                           expires_on=parsed(checks.day, expiry, "--expiry") if expiry else None)
    r = on_ledger(db, stock.receive, request, actor=actor())
    typer.echo(f"received {fmt(r.qty)} {r.uom} {r.material} at {r.location}" + (f" lot {r.lot}" if r.lot else ""))


@stock_app.command("issue")
def stock_issue(
    material: str = typer.Argument(...),
    quantity: str = typer.Argument(...),
    order: str = typer.Option(..., "--order", help="Production order the material goes to."),
    location: str = typer.Option(..., "--location", "-l"),
    lot: str = typer.Option("", "--lot"),
    db: str = DbOption,
) -> None:
    """Issue a component to an order by hand (e.g. one with flushing rule `manual`)."""
    from gateway.app import checks, stock
    from gateway.app.models import IssueStock
    from gateway.cli.tables import fmt

    request = IssueStock(material=material, qty=parsed(checks.quantity, quantity), order=order, location=location,
                         lot=lot)
    r = on_ledger(db, stock.issue, request, actor=actor())
    typer.echo(f"issued {fmt(r.qty)} {r.uom} {r.material} to order {r.order} ({r.document})")


def _print_order(view, *, title: str) -> None:
    from gateway.domain.valuation import money
    from gateway.cli.tables import fmt, make_console, table

    console = make_console()
    console.print(f"[b]{title}[/] {view.number}: {fmt(view.quantity)} {view.uom} {view.material}, status {view.status}, "
                  f"received {fmt(view.received)}, produced lot {view.produced_lot}")
    console.print(table("Operations", ("operation", "work center", "final", "yield", "scrap"),
                        [(op.operation, op.work_center, "yes" if op.final else "", fmt(op.yield_qty), fmt(op.scrap_qty))
                         for op in view.operations], numeric=("yield", "scrap")))
    numbers = ("planned", "backflushed", "manual", "adjusted", "variance", "WIP", "open errors")
    console.print(table(
        "Components: planned for the quantity confirmed vs issued",
        ("item", "material", "op", "rule (from)", *numbers),
        [(c.item, c.material, c.operation, f"{c.rule} ({c.rule_source})" if c.rule_source else c.rule,
          fmt(c.planned), fmt(c.backflushed), fmt(c.manual), fmt(c.adjusted), fmt(c.variance), fmt(c.wip),
          fmt(c.open_errors)) for c in view.components], numeric=numbers))
    console.print(table(
        "Consumption basis, and values at standard price",
        ("item", "material", "basis (from)", "variance value", "WIP value"),
        [(c.item, c.material, f"{c.basis} ({c.basis_source})" if c.basis_source else c.basis,
          f"{money(c.variance_value)} {c.currency}", f"{money(c.wip_value)} {c.currency}")
         for c in view.components], numeric=("variance value", "WIP value")))


@orders_app.command("show")
def orders_show(order: str = typer.Argument(...), db: str = DbOption, format: Format = FormatOption) -> None:
    """An order's progress per operation and, per component, its effective flushing rule and consumption."""
    from gateway.app import orders

    emit(on_ledger(db, orders.show_order, order), format, lambda view: _print_order(view, title="Order"))


@orders_app.command("complete")
def orders_complete(order: str = typer.Argument(...), db: str = DbOption, format: Format = FormatOption) -> None:
    """Issue the accrued order-completion components, close the order, print its variance."""
    from gateway.app import orders

    emit(on_ledger(db, orders.complete_order, order, actor=actor()), format,
         lambda view: _print_order(view, title="Completed order"))


@errors_app.command("list")
def errors_list(all_: bool = typer.Option(False, "--all", help="Include resolved items."), db: str = DbOption,
                format: Format = FormatOption) -> None:
    """Open backflush errors: age, order, material, missing quantity, reason."""
    from gateway.app import error_queue
    from gateway.app.models import ErrorItem
    from gateway.domain.valuation import money
    from gateway.clock import utcnow
    from gateway.cli.tables import fmt, make_console, table

    def show(items) -> None:
        now = utcnow()
        make_console().print(table(
            f"Backflush error queue ({len(items)} item(s))",
            ("id", "age", "order", "material", "location", "missing", "value", "status", "reason"),
            [(str(e.id), age_text(now - e.created_at), e.order, e.material or "(whole confirmation)", e.location,
              f"{fmt(e.missing_qty)} {e.uom}", f"{money(e.missing_value)} {e.currency}" if e.material else "",
              f"{e.status} by {e.resolved_by}" if e.resolved_by else e.status, e.reason) for e in items],
            numeric=("id", "age", "missing", "value")))

    emit(on_ledger(db, error_queue.list_errors, include_closed=all_), format, show, rows=ErrorItem)


@errors_app.command("reprocess")
def errors_reprocess(ids: list[int] = typer.Argument(None, help="Error ids (default: all open)."),
                     db: str = DbOption) -> None:
    """Retry open errors against the stock and master data as they are now."""
    from gateway.app import error_queue

    result = on_ledger(db, error_queue.reprocess, ids or None, actor=actor())
    typer.echo(f"resolved: {len(result.resolved)}  still open: {len(result.still_open)}")
    for item in result.still_open:
        typer.echo(f"  {item.id}: {item.reason}")


@confirmations_app.command("reverse")
def confirmations_reverse(
    confirmation_id: str = typer.Argument(...),
    reason: str = typer.Option(..., "--reason", help="Why, for the audit trail."),
    force: str | None = typer.Option(None, "--force", help="Reverse even if its produced goods were used; "
                                     "give the justification, it is recorded."),
    db: str = DbOption,
) -> None:
    """Post the exact inverse of a confirmation (262, 102, negative activities), linked to it."""
    from gateway.app import confirmations
    from gateway.app.models import ReverseConfirmation

    r = on_ledger(db, confirmations.reverse, ReverseConfirmation(confirmation_id=confirmation_id, reason=reason,
                                                                 force_reason=force), actor=actor())
    typer.echo(f"reversed {confirmation_id} as {r.reversal_id}: {r.movements} goods movement(s) "
               f"taken back" + (" (forced)" if r.forced else ""))


@confirmations_app.command("list")
def confirmations_list(order: str | None = typer.Option(None, "--order"), last: int = typer.Option(20, "--last"),
                       db: str = DbOption, format: Format = FormatOption) -> None:
    """The latest confirmations with their quantities and whether they were reversed."""
    from gateway.app import confirmations
    from gateway.app.models import ConfirmationRow
    from gateway.cli.tables import fmt, make_console, table

    def show(rows) -> None:
        make_console().print(table(
            "Confirmations", ("id", "posted", "machine", "order", "op", "yield", "scrap", "trigger", "reversed by"),
            [(r.id, f"{r.posted_at:%Y-%m-%d %H:%M:%S}", r.machine, r.order, r.operation, f"{fmt(r.yield_qty)} {r.uom}",
              fmt(r.scrap_qty), r.trigger, r.reversed_by or "") for r in rows], numeric=("id", "yield", "scrap")))

    emit(on_ledger(db, confirmations.list_confirmations, order=order, last=last), format, show, rows=ConfirmationRow)


@app.command()
def trace(
    lot: str = typer.Argument(..., help="Lot number, or the serial of one unit."),
    material: str | None = typer.Option(None, "--material", "-m", help="Material, if the lot number is ambiguous."),
    forward: bool = typer.Option(False, "--forward", help="Where-used (into which lots) instead of where-from."),
    db: str = DbOption,
    format: Format = FormatOption,
) -> None:
    """Genealogy of a lot or serial across all levels: where-from (default) or where-used."""
    from gateway.app import reports
    from gateway.cli.tables import fmt

    def show(result) -> None:
        if not result.lines:
            of = f" of {material}" if material else ""
            typer.echo(f"lot {lot}{of} is used nowhere" if forward else f"lot {lot}{of} is made from no other lot")
        for line in result.lines:
            arrow = "" if line.depth == 0 else ("used in " if forward else "made from ")
            qty = f"  {fmt(line.qty)} {line.uom}" if line.depth else ""
            typer.echo(f"{'  ' * line.depth}{arrow}{line.material} {'serial' if line.serial else 'lot'} {line.lot}{qty}")

    emit(on_ledger(db, reports.trace, lot, material=material, direction="forward" if forward else "back"), format,
         show)


@app.command()
def status(db: str = DbOption, format: Format = FormatOption) -> None:
    """Gateways on this ledger: running or not, the machines each owns, lease age, last commit."""
    from gateway.app.models import GatewayInstance
    from gateway.app import reports

    def show(instances) -> None:
        if not instances:
            typer.echo("no gateway has run on this ledger with leases yet")
        for i in instances:
            state = ("running" + (" (standby)" if i.standby and not i.leases else "")) if i.running else "not running"
            commit = "never" if i.last_commit_ago_s is None else f"{i.last_commit_ago_s:.0f} s ago"
            typer.echo(f"{i.name}  host {i.host}  pid {i.pid}  {state}  seen {i.seen_ago_s:.0f} s ago  "
                       f"last commit {commit}  machines {len(i.leases)}")
            for lease in i.leases:
                typer.echo(f"  {lease.machine:<24} lease age {lease.age_s:.0f} s  expires in {lease.expires_in_s:.0f} s")

    emit(on_ledger(db, reports.status), format, show, rows=GatewayInstance)


@report_app.callback(invoke_without_command=True)
def report(ctx: typer.Context, db: str = DbOption, format: Format = FormatOption) -> None:
    """Print what the ledger holds: confirmations, issues, receipts, activities, stock.

    Exits 1 if a machine's units counted differ from confirmed + pending + held + written off."""
    if ctx.invoked_subcommand is not None:
        return
    from gateway.app import reports
    from gateway.cli.tables import print_summary

    result = on_ledger(db, reports.summary)
    emit(result, format, print_summary)
    if result.unbalanced:
        raise typer.Exit(1)  # the ledger does not account for every unit counted


@report_app.command("journal")
def report_journal(order: str = typer.Option(..., "--order", help="Production order."),
                   db: str = DbOption, format: Format = FormatOption) -> None:
    """Every ledger line of one order (confirmations, movements, activities, genealogy, errors…)."""
    from gateway.app import reports
    from gateway.cli.tables import journal_markdown

    emit(on_ledger(db, reports.journal, order), format, lambda j: typer.echo(journal_markdown(j.sections)))


@db_app.command("upgrade")
def db_upgrade(db: str = DbOption) -> None:
    """Upgrade the ledger's tables to this gateway's schema version (back the ledger up first)."""
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.app import AppError
    from gateway.app.ledger import check_url, database_error, masked
    from gateway.ledger.migrate import upgrade

    try:
        check_url(db)
        before, after = upgrade(db)
    except AppError as exc:
        fail(exc.detail)
    except SQLAlchemyError as exc:
        fail(database_error(db, exc).detail)
    except ValueError as exc:
        fail(f"cannot upgrade the ledger at {masked(db)}: {exc}")
    where = masked(db)
    typer.echo(f"{where}: schema version {before} → {after}" if before != after else
               f"{where}: schema version {after}, nothing to upgrade")


@app.command()
def demo(
    seconds: float = typer.Option(20.0, "--seconds", help="How long the simulated machines produce."),
    db: str | None = typer.Option(None, "--db", help="Ledger URL (default: a new SQLite file in a temp folder)."),
    port: int = typer.Option(4840, "--port", help="Port for the simulated OPC UA server on 127.0.0.1."),
    modbus_port: int | None = typer.Option(None, "--modbus-port",
                                           help="Port for the simulated Modbus server (default: the mapping's)."),
    mapping: Path | None = typer.Option(None, "--mapping", help="Demo mapping file (default: mappings/demo-plant.yaml, "
                                        "with --preset mappings/demo-PRESET.yaml)."),
    preset: str | None = typer.Option(None, "--preset", help="euromap77 or packml: the machines through that preset "
                                      "on the simulator's EUROMAP 77 or PackML address space."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the gateway's log lines."),
    http: str = HttpOption,
    webhook: str | None = typer.Option(None, "--webhook", help="Deliver the confirmations to this webhook URL too."),
    mqtt: str | None = typer.Option(None, "--mqtt", help="Publish the confirmations to this broker too "
                                    "(mqtt://[user:password@]host[:port]; topics demo/plant/…)."),
) -> None:
    """Simulated PLCs → gateway → ledger for a while, then reconcile against the simulator."""
    from gateway.demo import DemoError, run_demo
    from gateway.cli.http import prepare
    from gateway.http.listen import DEFAULT_LISTEN

    logs.configure(level="info" if verbose else "warning")
    try:
        ok = asyncio.run(run_demo(seconds=seconds, db=db, port=port, mapping_path=mapping, live=sys.stdout.isatty(),
                                  modbus_port=modbus_port, preset=preset, webhook=webhook, mqtt=mqtt,
                                  http=prepare(http, None, False, any_port_if_taken=http == DEFAULT_LISTEN)))
    except InputFileError as exc:
        fail(exc.lines())
    except DemoError as exc:
        fail(str(exc))
    raise typer.Exit(0 if ok else 1)
