"""Command line: ``gateway run | demo | validate | masterdata load | report | db upgrade``.

Exit codes: 0 success, 1 bad input (mapping, master data) or a demo that did not
reconcile, 2 usage errors (typer's own). Bad input is reported as ``file:line: key:
message`` lines on stderr, never as a traceback.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from enum import Enum
from pathlib import Path

import typer

from gateway import diagnostics, logs
from gateway.cli_common import DbOption, age_text, fail, with_ledger
from gateway.ledger.leases import DEFAULT_TTL_S, LEDGER
from gateway.yamldoc import InputFileError

class _App(typer.Typer):
    """Every command: a ledger of another schema version is one line on stderr and exit 1."""

    def __call__(self, *args, **kwargs):
        from gateway.ledger.schema import LedgerVersionError

        try:
            return super().__call__(*args, **kwargs)
        except LedgerVersionError as exc:
            typer.echo(f"error: {exc}", err=True)
            sys.exit(1)


app = _App(add_completion=False, no_args_is_help=True,
                  help="Backflush Gateway: PLC counters → production confirmations → backflush postings.")
masterdata_app = typer.Typer(no_args_is_help=True, help="Master data: materials, work centers, BOMs, routings, orders, stock.")
app.add_typer(masterdata_app, name="masterdata")
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
from gateway.cli_reports import register as _register_reports; _register_reports(stock_app, report_app)  # noqa: I001
from gateway.cli_adjust import register as _register_adjust; _register_adjust(app)  # noqa: I001
from gateway.cli_anomalies import register as _register_anomalies; _register_anomalies(app)  # noqa: I001
from gateway.http.cli import AuthMetricsOption, HttpOption, TokensOption  # noqa: I001, E402
from gateway.http.cli import register as _register_http; _register_http(app)  # noqa: I001, E402

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
    http: str = HttpOption,
    tokens: Path = TokensOption,
    http_auth_metrics: bool = AuthMetricsOption,
) -> None:
    """Run the gateway until SIGINT/SIGTERM; pending units are confirmed on the way out.

    Each machine is owned by one gateway at a time (a lease in the ledger). A second gateway
    for the same machines is refused (exit 2) unless it is started with --standby.
    """
    from gateway.ledger.leases import MachinesOwned, Me, session_name
    from gateway.mapping.load import load_mapping
    from gateway.ownership import LeaseOptions
    from gateway.service import Gateway, open_ledger_when_reachable

    logs.configure(json=log_json, level=log_level.value)
    try:
        config = load_mapping(mapping)
    except InputFileError as exc:
        fail(exc.lines())

    me = Me.here(instance)  # this gateway as an owner; its database sessions carry its name
    from gateway.http.cli import prepare, serving

    http_plan = prepare(http, tokens, http_auth_metrics)  # the port is taken now: in use → exit 1 at once

    async def main() -> bool:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        diagnostics.install(loop)
        # A stalled transaction must not hold lease rows much past a lease's end.
        engine = await open_ledger_when_reachable(db, stop, idle_in_transaction_s=lease_ttl / 2,
                                                  session_name=session_name(me.process))
        if engine is None:
            return True  # stopped before the database came back: nothing was counted
        gateway = Gateway(config, engine, stats=str(stats) if stats else None,
                          lease=LeaseOptions(instance, lease_ttl, standby, me))
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

    errors = validate_mapping(file, masterdata)
    if not errors and live:
        from gateway.mapping.live import check_live
        from gateway.mapping.load import read_mapping

        logs.configure(level="critical")  # every problem is reported below, once, with its line
        errors = asyncio.run(check_live(read_mapping(file)))
    if errors:
        fail([str(e) for e in errors] + [f"{len(errors)} error(s) in {file}"])
    typer.echo(f"{file}: ok" + (" (every tag read from the PLCs)" if live else ""))


@masterdata_app.command("load")
def masterdata_load(file: Path = typer.Argument(..., help="Master-data YAML file."), db: str = DbOption) -> None:
    """Load master data into the ledger, all or nothing; loading it again changes nothing."""
    from gateway.ledger.masters import MasterDataConflict, store_masterdata
    from gateway.ledger.schema import open_engine
    from gateway.masterdata.load import load_masterdata, to_domain

    try:
        md = load_masterdata(file)
    except InputFileError as exc:
        fail(exc.lines() + ["nothing was loaded"])
    try:
        report = store_masterdata(open_engine(db), to_domain(md), md.stock)
    except MasterDataConflict as exc:
        fail([f"{file}: {exc}", "nothing was loaded"])
    typer.echo(
        f"{file}: {report.materials} materials, {report.work_centers} work centers, orders "
        f"{report.orders_new} new / {report.orders_updated} updated / {report.orders_unchanged} unchanged, "
        f"{report.stock_posted} opening stock postings"
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
    from datetime import date
    from decimal import Decimal, InvalidOperation

    from gateway.ledger.operations import OperationRefused, receive_stock
    from gateway.ledger.schema import open_engine

    try:
        qty = Decimal(quantity)
        expires = date.fromisoformat(expiry) if expiry else None
    except (InvalidOperation, ValueError) as exc:
        fail(f"bad quantity or date: {exc}")
    try:
        receive_stock(open_engine(db), material, qty, location, lot=lot, expires_on=expires)
    except OperationRefused as exc:
        fail(str(exc))
    typer.echo(f"received {quantity} {material} at {location}" + (f" lot {lot}" if lot else ""))


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
    from decimal import Decimal, InvalidOperation

    from gateway.ledger.operations import OperationRefused
    from gateway.ledger.orders import issue_manually
    from gateway.ledger.schema import open_engine

    try:
        qty = Decimal(quantity)
    except InvalidOperation:
        fail(f"bad quantity {quantity!r}")
    try:
        doc = issue_manually(open_engine(db), material, qty, order, location, lot=lot)
    except OperationRefused as exc:
        fail(str(exc))
    typer.echo(f"issued {quantity} {material} to order {order} ({doc})")


def _print_order(view, *, title: str) -> None:
    from rich.table import Table

    from gateway.report import fmt, make_console

    console = make_console()
    o = view.order
    console.print(f"[b]{title}[/] {o.number}: {fmt(o.quantity)} {o.material}, status {o.status}, "
                  f"received {fmt(view.received)}, produced lot {o.output_lot}")
    ops = Table(title="Operations")
    for col in ("operation", "work center", "final", "yield", "scrap"):
        ops.add_column(col)
    for op in o.operations:
        y, s = view.progress[op.operation]
        ops.add_row(op.operation, op.work_center, "yes" if op.final else "", fmt(y), fmt(s))
    console.print(ops)
    comps = Table(title="Components: planned for the quantity confirmed vs issued")
    for col in ("item", "material", "op", "rule (from)", "planned", "backflushed", "manual", "adjusted",
                "variance", "WIP", "open errors"):
        comps.add_column(col, justify="left" if col in ("item", "material", "op", "rule (from)") else "right")
    for c in view.components + view.extra:
        comps.add_row(c.item, c.material, c.operation, f"{c.rule} ({c.rule_source})" if c.rule_source else c.rule,
                      fmt(c.planned), fmt(c.backflushed), fmt(c.manual), fmt(c.adjusted), fmt(c.variance),
                      fmt(c.wip), fmt(c.open_errors))
    console.print(comps)


@orders_app.command("show")
def orders_show(order: str = typer.Argument(...), db: str = DbOption) -> None:
    """An order's progress per operation and, per component, its effective flushing rule and consumption."""
    from gateway.ledger.operations import OperationRefused
    from gateway.ledger.orders import order_view
    from gateway.ledger.schema import open_engine

    try:
        view = order_view(open_engine(db), order)
    except OperationRefused as exc:
        fail(str(exc))
    _print_order(view, title="Order")


@orders_app.command("complete")
def orders_complete(order: str = typer.Argument(...), db: str = DbOption) -> None:
    """Issue the accrued order-completion components, close the order, print its variance."""
    from gateway.ledger.operations import OperationRefused
    from gateway.ledger.orders import complete_order
    from gateway.ledger.schema import open_engine

    try:
        view = complete_order(open_engine(db), order)
    except OperationRefused as exc:
        fail(str(exc))
    _print_order(view, title="Completed order")


@errors_app.command("list")
def errors_list(all_: bool = typer.Option(False, "--all", help="Include resolved items."), db: str = DbOption) -> None:
    """Open backflush errors: age, order, material, missing quantity, reason."""
    from rich.table import Table

    from gateway.ledger.operations import list_errors
    from gateway.ledger.schema import open_engine, utcnow
    from gateway.report import fmt, make_console

    items = list_errors(open_engine(db), include_closed=all_)
    table = Table(title=f"Backflush error queue ({len(items)} item(s))")
    for col in ("id", "age", "order", "material", "location", "missing", "status", "reason"):
        table.add_column(col, overflow="fold")
    now = utcnow()
    for e in items:
        table.add_row(str(e.id), age_text(now - e.created_at), e.order,
                      e.material or "(whole confirmation)", e.location, f"{fmt(e.missing_qty)} {e.uom}",
                      e.status, e.reason)
    make_console().print(table)


@errors_app.command("reprocess")
def errors_reprocess(ids: list[int] = typer.Argument(None, help="Error ids (default: all open)."),
                     db: str = DbOption) -> None:
    """Retry open errors against the stock and master data as they are now."""
    from gateway.ledger.operations import OperationRefused, reprocess_errors
    from gateway.ledger.schema import open_engine

    try:
        result = reprocess_errors(open_engine(db), ids or None)
    except OperationRefused as exc:
        fail(str(exc))
    typer.echo(f"resolved: {len(result.resolved)}  still open: {len(result.still_open)}")
    for item, why in result.still_open:
        typer.echo(f"  {item}: {why}")


@confirmations_app.command("reverse")
def confirmations_reverse(
    confirmation_id: str = typer.Argument(...),
    reason: str = typer.Option(..., "--reason", help="Why, for the audit trail."),
    force: str | None = typer.Option(None, "--force", help="Reverse even if its produced goods were used; "
                                     "give the justification, it is recorded."),
    db: str = DbOption,
) -> None:
    """Post the exact inverse of a confirmation (262, 102, negative activities), linked to it."""
    from gateway.ledger.operations import OperationRefused, reverse_confirmation
    from gateway.ledger.schema import open_engine

    try:
        result = reverse_confirmation(open_engine(db), confirmation_id, reason, force_reason=force)
    except OperationRefused as exc:
        fail(str(exc))
    typer.echo(f"reversed {confirmation_id} as {result.reversal_id}: {result.movements} goods movement(s) "
               f"taken back" + (" (forced)" if result.forced else ""))


@confirmations_app.command("list")
def confirmations_list(order: str | None = typer.Option(None, "--order"), last: int = typer.Option(20, "--last"),
                       db: str = DbOption) -> None:
    """The latest confirmations with their quantities and whether they were reversed."""
    from rich.table import Table
    from sqlalchemy import select

    from gateway.ledger import schema as t
    from gateway.ledger.schema import open_engine
    from gateway.report import fmt, make_console

    c, r = t.confirmations, t.reversals
    q = (select(c, r.c.id.label("reversal")).outerjoin(r, r.c.confirmation_id == c.c.id)
         .order_by(c.c.posted_at.desc()).limit(last))
    if order:
        q = q.where(c.c.order_no == order)
    table = Table(title="Confirmations")
    for col in ("id", "posted", "machine", "order", "op", "yield", "scrap", "trigger", "reversed by"):
        table.add_column(col, no_wrap=col == "id")
    with open_engine(db).connect() as conn:
        for row in conn.execute(q):
            table.add_row(row.id, f"{row.posted_at:%Y-%m-%d %H:%M:%S}", row.machine, row.order_no, row.operation,
                          f"{fmt(row.yield_qty)} {row.uom}", fmt(row.scrap_qty), row.trigger, row.reversal or "")
    make_console().print(table)


@app.command()
def trace(
    lot: str = typer.Argument(..., help="Lot number."),
    material: str | None = typer.Option(None, "--material", "-m", help="Material, if the lot number is ambiguous."),
    forward: bool = typer.Option(False, "--forward", help="Where-used (into which lots) instead of where-from."),
    db: str = DbOption,
) -> None:
    """Genealogy of a lot across all levels: where-from (default) or where-used."""
    from gateway.ledger.operations import trace as trace_lot
    from gateway.ledger.schema import open_engine
    from gateway.report import fmt

    lines = trace_lot(open_engine(db), lot, material=material, direction="forward" if forward else "back")
    if not lines:
        fail(f"no genealogy for lot {lot}" + (f" of {material}" if material else ""))
    for line in lines:
        arrow = "" if line.depth == 0 else ("used in " if forward else "made from ")
        qty = f"  {fmt(line.qty)} {line.uom}" if line.depth else ""
        typer.echo(f"{'  ' * line.depth}{arrow}{line.material} lot {line.lot}{qty}")


@app.command()
def status(db: str = DbOption) -> None:
    """Gateways on this ledger: running or not, the machines each owns, lease age, last commit."""
    from gateway.ledger.leases import status as read_status

    def read(engine):
        with engine.connect() as conn:
            return read_status(conn)

    instances = with_ledger(db, read)
    if not instances:
        typer.echo("no gateway has run on this ledger with leases yet")
        return
    for i in instances:
        state = ("running" + (" (standby)" if i.standby and not i.machines else "")) if i.running else "not running"
        commit = "never" if i.last_commit_ago_s is None else f"{i.last_commit_ago_s:.0f} s ago"
        owned = [m for m in i.machines if m[0] != LEDGER]
        typer.echo(f"{i.name}  host {i.host}  pid {i.pid}  {state}  seen {i.seen_ago_s:.0f} s ago  "
                   f"last commit {commit}  machines {len(owned)}")
        for machine, age, expires in owned:
            typer.echo(f"  {machine:<24} lease age {age:.0f} s  expires in {expires:.0f} s")


@report_app.callback(invoke_without_command=True)
def report(ctx: typer.Context, db: str = DbOption) -> None:
    """Print what the ledger holds: confirmations, issues, receipts, activities, stock.

    Exits 1 if a machine's units counted differ from confirmed + pending + held + written off."""
    if ctx.invoked_subcommand is not None:
        return
    from gateway.ledger.queries import summary
    from gateway.report import print_summary

    result = with_ledger(db, summary)
    print_summary(result)
    if result.unbalanced:
        raise typer.Exit(1)  # the ledger does not account for every unit counted


@report_app.command("journal")
def report_journal(order: str = typer.Option(..., "--order", help="Production order."),
                   db: str = DbOption) -> None:
    """Every ledger line of one order (confirmations, movements, activities, genealogy, errors…)."""
    from gateway.ledger.queries import journal
    from gateway.report import journal_markdown

    typer.echo(journal_markdown(with_ledger(db, lambda engine: journal(engine, order))))


@db_app.command("upgrade")
def db_upgrade(db: str = DbOption) -> None:
    """Upgrade the ledger's tables to this gateway's schema version (back the ledger up first)."""
    from gateway.ledger.migrate import upgrade

    try:
        before, after = upgrade(db)
    except ValueError as exc:
        fail(f"cannot upgrade the ledger at {db}: {exc}")
    typer.echo(f"{db}: schema version {before} → {after}" if before != after else
               f"{db}: schema version {after}, nothing to upgrade")


@app.command()
def demo(
    seconds: float = typer.Option(20.0, "--seconds", help="How long the simulated machines produce."),
    db: str | None = typer.Option(None, "--db", help="Ledger URL (default: a new SQLite file in a temp folder)."),
    port: int = typer.Option(4840, "--port", help="Port for the simulated OPC UA server on 127.0.0.1."),
    modbus_port: int | None = typer.Option(None, "--modbus-port",
                                           help="Port for the simulated Modbus server (default: the mapping's)."),
    mapping: Path = typer.Option(Path("mappings/demo-plant.yaml"), "--mapping", help="Demo mapping file."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the gateway's log lines."),
    http: str = HttpOption,
) -> None:
    """Simulated PLCs → gateway → ledger for a while, then reconcile against the simulator."""
    from gateway.demo import DemoError, run_demo
    from gateway.http.cli import prepare

    logs.configure(level="info" if verbose else "warning")
    try:
        ok = asyncio.run(run_demo(seconds=seconds, db=db, port=port, mapping_path=mapping, live=sys.stdout.isatty(),
                                  modbus_port=modbus_port, http=prepare(http, None, False)))
    except InputFileError as exc:
        fail(exc.lines())
    except DemoError as exc:
        fail(str(exc))
    raise typer.Exit(0 if ok else 1)


if __name__ == "__main__":
    app()
