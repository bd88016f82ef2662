"""Commands for physical counts and the reports on them: ``stock count``, ``report accuracy | errors``.

Presentation only: every number comes from ``gateway.ledger.inventory``. A refused
count or an unreadable ledger ends with one line on stderr and exit code 1, never a
traceback.
"""

from __future__ import annotations


import typer

from gateway.cli_common import DbOption, age_text, fail, with_ledger

# Not imported from gateway.cli: under `python -m gateway.cli` that module is __main__,
# and importing it by name would build a second command tree.
def stock_count(
    material: str = typer.Argument(...),
    counted: str = typer.Argument(..., help="Quantity counted, in the material's unit of measure."),
    location: str = typer.Option(..., "--location", "-l"),
    lot: str = typer.Option("", "--lot", help="Lot counted (required for lot-tracked materials)."),
    db: str = DbOption,
) -> None:
    """Record a physical count; the difference to the book is posted (701 gain / 702 loss)."""
    from decimal import Decimal, InvalidOperation

    from gateway.ledger.inventory import record_count
    from gateway.ledger.operations import OperationRefused
    from gateway.report import fmt

    try:
        qty = Decimal(counted)
    except InvalidOperation:
        fail(f"bad quantity {counted!r}")
    try:
        r = with_ledger(db, lambda engine: record_count(engine, material, qty, location, lot=lot))
    except OperationRefused as exc:
        fail(str(exc))
    where = f"{r.location}" + (f" lot {r.lot}" if r.lot else "")
    posted = (f"posted {r.movement.value} ({'gain' if r.difference > 0 else 'loss'}) {fmt(r.difference)} {r.uom}"
              if r.movement else "no difference, nothing posted")
    typer.echo(f"counted {fmt(r.counted_qty)} {r.uom} {r.material} at {where}: book was {fmt(r.book_qty)}; {posted}")


def _table(title: str, columns: tuple[str, ...], right: tuple[str, ...] = (), *, wrap: tuple[str, ...] = (),
           min_width: int | None = None):
    from rich.table import Table

    table = Table(title=title, min_width=min_width)
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left", no_wrap=col not in wrap)
    return table


def report_accuracy(db: str = DbOption) -> None:
    """Last count against the book per material/location/lot, and the backflush errors,
    adjustments and anomalies on the material since the count before."""
    from gateway.ledger.inventory import accuracy
    from gateway.report import fmt, make_console

    rows = with_ledger(db, accuracy)
    if not rows:
        typer.echo("no stock counts yet; record one with `gateway stock count MATERIAL QTY --location L`")
        return
    # Two tables with the same rows in the same order: one would not fit 120 columns.
    lot = ("lot",) if any(r.lot for r in rows) else ()
    counted = _table("Inventory accuracy: last count vs book",
                     ("material", "location", *lot, "counted at", "book", "counted", "difference", "uom",
                      "accuracy"), right=("book", "counted", "difference", "accuracy"))
    causes = _table("Since the count before: errors at the location, adjustments and anomalies",
                    ("material", "location", *lot, "since", "errors", "missing", "adjustments", "adj. qty",
                     "anomalies", "on machines"), right=("errors", "missing", "adjustments", "adj. qty", "anomalies"),
                    wrap=("on machines",))
    for r in rows:
        key = (r.material, r.location, *((r.lot,) if lot else ()))
        counted.add_row(*key, f"{r.counted_at:%Y-%m-%d %H:%M}", fmt(r.book_qty), fmt(r.counted_qty),
                        f"{'+' if r.difference > 0 else ''}{fmt(r.difference)}", r.uom, f"{r.accuracy_pct} %")
        causes.add_row(*key, f"{r.since:%Y-%m-%d %H:%M}" if r.since else "start", str(r.errors), fmt(r.error_qty),
                       str(r.adjustments), fmt(r.adjustment_qty), str(r.anomalies), ", ".join(r.anomaly_machines))
    console = make_console()
    console.print(counted)
    console.print(causes)


def report_errors(db: str = DbOption) -> None:
    """Open backflush errors by age and by material; error rate per 1 000 confirmations."""
    from gateway.ledger.inventory import error_metrics
    from gateway.report import fmt, make_console

    m = with_ledger(db, error_metrics)
    console = make_console()
    ages = _table(f"Open backflush errors by age ({m.open_items} open)", ("age", "items"), right=("items",),
                  min_width=48)
    for label, n in m.by_age.items():
        ages.add_row(label, str(n))
    console.print(ages)
    if m.by_material:
        mats = _table("Open backflush errors by material", ("material", "items", "missing", "uom", "oldest"),
                      right=("items", "missing"))
        for e in m.by_material:
            mats.add_row(e.material or "(whole confirmation)", str(e.open_items), fmt(e.missing_qty), e.uom,
                         age_text(e.oldest_age))
        console.print(mats)

    def rate(value, errors: int, confirmations: int) -> str:
        per = "n/a (no confirmations)" if value is None else f"{value} per 1 000 confirmations"
        return f"{per} ({errors} error item(s) / {confirmations} confirmation(s))"

    console.print(f"error rate, overall: {rate(m.rate_per_1000, m.errors_created, m.confirmations)}")
    console.print(f"error rate, last 24 h: {rate(m.rate_per_1000_24h, m.errors_created_24h, m.confirmations_24h)}")


def register(stock_app: typer.Typer, report_app: typer.Typer) -> None:
    """Add the commands to the CLI's ``stock`` and ``report`` groups."""
    stock_app.command("count")(stock_count)
    report_app.command("accuracy")(report_accuracy)
    report_app.command("errors")(report_errors)
