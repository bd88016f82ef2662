"""Commands for repetitive production: ``gateway collectors list | show NUMBER`` and
``gateway period close PERIOD``.

Presentation only: ``gateway.app.collectors`` reads and closes. A collector is a standing order
under its number, so ``orders show``, ``report journal --order``, ``confirmations reverse`` and
``adjust …`` take its number too. A refused close (the period not over, units not yet
confirmed, open errors, closed already) is one line on stderr and exit 1; nothing is closed.
"""

from __future__ import annotations

import typer

from gateway.cli.common import DbOption, Format, FormatOption, actor, emit, on_ledger


def _money(value, currency: str) -> str:
    from gateway.domain.valuation import money

    return "" if value is None else f"{money(value)} {currency}"


def _table(title: str, rows) -> None:
    from gateway.cli.tables import fmt, make_console, table

    # The number says product, version, line and period (`--format json|csv` has them apart).
    make_console().print(table(
        title,
        ("collector", "status", "yield", "scrap", "received", "actual", "target", "variance"),
        [(r.number, r.status, fmt(r.yield_qty), fmt(r.scrap_qty), f"{fmt(r.received)} {r.uom}",
          _money(r.actual, r.currency), _money(r.target, r.currency), _money(r.variance, r.currency)) for r in rows],
        numeric=("yield", "scrap", "received", "actual", "target", "variance")))


def collectors_list(period: str | None = typer.Option(None, "--period", help="e.g. 2026-12, 2026-W49, 2026-12-03."),
                    status: str | None = typer.Option(None, "--status", help="open or closed."),
                    product: str | None = typer.Option(None, "--product"),
                    db: str = DbOption, format: Format = FormatOption) -> None:
    """The cost collectors of repetitive production, with their balance (settled ones as closed)."""
    from gateway.app.collectors import list_collectors
    from gateway.app.models import CollectorRow

    def show(rows) -> None:
        if not rows:
            typer.echo("no cost collectors" + (" of that selection" if period or status or product else
                                               " yet: machines with `order: none` create them as they count"))
            return
        _table(f"Cost collectors ({len(rows)})", rows)

    emit(on_ledger(db, list_collectors, period=period, status=status, product=product), format, show,
         rows=CollectorRow)


def collectors_show(number: str = typer.Argument(..., help="The collector's number (`gateway collectors list`)."),
                    db: str = DbOption, format: Format = FormatOption) -> None:
    """One collector: balance (actual against target, the variance), progress and components."""
    from gateway.app.collectors import show_collector

    def show(view) -> None:
        from gateway.cli.main import _print_order
        from gateway.cli.tables import fmt

        r = view.collector
        _table(f"Cost collector {r.number}", [r])
        if r.actual is not None:
            typer.echo(f"actual {_money(r.actual, r.currency)} = components {_money(r.materials, r.currency)} + "
                       f"activities {_money(r.activities, r.currency)}; target {_money(r.target, r.currency)} = "
                       f"{fmt(r.received)} {r.uom} received at standard; variance {_money(r.variance, r.currency)}"
                       + (" (settled at close)" if r.status == "closed" else " (so far)"))
        if view.order is None:
            typer.echo(f"no production version {r.product} {r.version} in the ledger yet: nothing is posted to it "
                       "(`gateway masterdata load`)")
        else:
            _print_order(view.order, title="Standing order")

    emit(on_ledger(db, show_collector, number), format, show)


def period_close(period: str = typer.Argument(..., help="2026-12 (month), 2026-W49 (ISO week) or 2026-12-03 (day)."),
                 reason: str = typer.Option("", "--reason", help="Kept with the close in the audit trail."),
                 db: str = DbOption, format: Format = FormatOption) -> None:
    """Close a period's cost collectors: issue their accrued WIP, settle actual against target, take no more."""
    from gateway.app.collectors import close_period
    from gateway.app.models import ClosePeriod

    def show(closed) -> None:
        _table(f"Period {closed.period} closed: {len(closed.collectors)} collector(s)", closed.collectors)

    emit(on_ledger(db, close_period, ClosePeriod(period=period, reason=reason), actor=actor()), format, show)


def register(app: typer.Typer) -> None:
    """Add the ``collectors`` and ``period`` groups to the CLI."""
    collectors_app = typer.Typer(no_args_is_help=True, help="Cost collectors of repetitive production (no orders).")
    collectors_app.command("list")(collectors_list)
    collectors_app.command("show")(collectors_show)
    app.add_typer(collectors_app, name="collectors")
    period_app = typer.Typer(no_args_is_help=True, help="Posting periods of repetitive production.")
    period_app.command("close")(period_close)
    app.add_typer(period_app, name="period")
