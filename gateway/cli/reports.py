"""Commands for physical counts and the reports on them: ``stock count``, ``report accuracy | errors | audit``.

Presentation only: ``gateway.app.stock`` checks a count and ``gateway.app.reports`` reads
the numbers. A refused count or an unreadable ledger ends with one line on stderr and exit
code 1, never a traceback.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import typer

from gateway.cli.common import DbOption, Format, FormatOption, actor, age_text, emit, on_ledger, parsed


def stock_count(
    material: str = typer.Argument(...),
    counted: str = typer.Argument(..., help="Quantity counted, in the material's unit of measure."),
    location: str = typer.Option(..., "--location", "-l"),
    lot: str = typer.Option("", "--lot", help="Lot counted (required for lot-tracked materials)."),
    db: str = DbOption,
) -> None:
    """Record a physical count; the difference to the book is posted (701 gain / 702 loss)."""
    from gateway.app import checks, stock
    from gateway.app.models import CountStock
    from gateway.cli.tables import fmt

    r = on_ledger(db, stock.count, CountStock(material=material, counted=parsed(checks.quantity, counted),
                                              location=location, lot=lot), actor=actor())
    where = f"{r.location}" + (f" lot {r.lot}" if r.lot else "")
    posted = (f"posted {r.movement} ({'gain' if r.difference > 0 else 'loss'}) {fmt(r.difference)} {r.uom}"
              if r.movement else "no difference, nothing posted")
    typer.echo(f"counted {fmt(r.counted_qty)} {r.uom} {r.material} at {where}: book was {fmt(r.book_qty)}; {posted}")


def report_accuracy(db: str = DbOption, format: Format = FormatOption) -> None:
    """Last count against the book per material/location/lot, and the backflush errors,
    adjustments and anomalies on the material since the count before."""
    from gateway.app import reports
    from gateway.domain.valuation import money
    from gateway.cli.tables import fmt, make_console, table
    from gateway.app.models import AccuracyRow

    def show(rows) -> None:
        if not rows:
            typer.echo("no stock counts yet; record one with `gateway stock count MATERIAL QTY --location L`")
            return
        # Two tables with the same rows in the same order: one would not fit 120 columns.
        lot = ("lot",) if any(r.lot for r in rows) else ()
        keys = [(r.material, r.location, *((r.lot,) if lot else ())) for r in rows]
        console = make_console()
        console.print(table(
            "Inventory accuracy: last count vs book",
            ("material", "location", *lot, "counted at", "book", "counted", "difference", "uom", "accuracy",
             "book value", "diff. value"),
            [(*key, f"{r.counted_at:%Y-%m-%d %H:%M}", fmt(r.book_qty), fmt(r.counted_qty),
              f"{'+' if r.difference > 0 else ''}{fmt(r.difference)}", r.uom, f"{r.accuracy_pct} %",
              f"{money(r.book_value)} {r.currency}",
              f"{'+' if r.difference_value > 0 else ''}{money(r.difference_value)} {r.currency}")
             for key, r in zip(keys, rows)],
            numeric=("counted at", "book", "counted", "difference", "accuracy", "book value", "diff. value")))
        console.print(table(
            "Since the count before: errors at the location, adjustments and anomalies",
            ("material", "location", *lot, "since", "errors", "missing", "missing value", "adjustments", "adj. qty",
             "anomalies", "on machines"),
            [(*key, f"{r.since:%Y-%m-%d %H:%M}" if r.since else "start", str(r.errors), fmt(r.error_qty),
              f"{money(r.error_value)} {r.currency}",
              str(r.adjustments), fmt(r.adjustment_qty), str(r.anomalies), ", ".join(r.anomaly_machines))
             for key, r in zip(keys, rows)],
            numeric=("since", "errors", "missing", "missing value", "adjustments", "adj. qty", "anomalies")))

    emit(on_ledger(db, reports.accuracy), format, show, rows=AccuracyRow)


def report_errors(db: str = DbOption, format: Format = FormatOption) -> None:
    """Open backflush errors by age and by material, with the value missing; error rate per 1 000 confirmations."""
    from gateway.app import reports
    from gateway.domain.valuation import money
    from gateway.cli.tables import fmt, make_console, table

    def show(m) -> None:
        console = make_console()
        console.print(table(f"Open backflush errors by age ({m.open_items} open)", ("age", "items"),
                            [(a.age, str(a.items)) for a in m.by_age], numeric=("items",), min_width=48))
        if m.by_material:
            console.print(table("Open backflush errors by material",
                                ("material", "items", "missing", "uom", "value", "oldest"),
                                [(e.material or "(whole confirmation)", str(e.open_items), fmt(e.missing_qty), e.uom,
                                  f"{money(e.missing_value)} {e.currency}" if e.material else "",
                                  age_text(timedelta(seconds=e.oldest_age_s))) for e in m.by_material],
                                numeric=("items", "missing", "value", "oldest")))
        if m.open_values:
            console.print("value missing in open errors: "
                          + ", ".join(f"{money(v)} {c}" for c, v in m.open_values.items()))

        def rate(value, errors: int, confirmations: int) -> str:
            per = "n/a (no confirmations)" if value is None else f"{value} per 1 000 confirmations"
            return f"{per} ({errors} error item(s) / {confirmations} confirmation(s))"

        console.print(f"error rate, overall: {rate(m.rate_per_1000, m.errors_created, m.confirmations)}")
        console.print(f"error rate, last 24 h: {rate(m.rate_per_1000_24h, m.errors_created_24h, m.confirmations_24h)}")

    emit(on_ledger(db, reports.error_metrics), format, show)


def report_wip(db: str = DbOption, format: Format = FormatOption) -> None:
    """Work in process: order-completion components accrued and not issued yet, per order and work center,
    at the standard price."""
    from gateway.app import reports
    from gateway.app.models import WipRow
    from gateway.domain.valuation import money
    from gateway.cli.tables import fmt, make_console, table

    def show(rows) -> None:
        if not rows:
            typer.echo("no work in process: no order-completion component is accrued and not issued")
            return
        totals: dict[str, Decimal] = {}
        for r in rows:
            totals[r.currency] = totals.get(r.currency, Decimal(0)) + r.value
        console = make_console()
        console.print(table(
            f"Work in process: accrued, not issued ({len(rows)} line(s))",
            ("order", "work center", "op", "item", "material", "qty", "uom", "value"),
            [(r.order, r.work_center, r.operation, r.item, r.material, fmt(r.qty), r.uom,
              f"{money(r.value)} {r.currency}") for r in rows], numeric=("qty", "value")))
        console.print("total: " + ", ".join(f"{money(v)} {c}" for c, v in sorted(totals.items())))

    emit(on_ledger(db, reports.wip), format, show, rows=WipRow)


def report_audit(since: str | None = typer.Option(None, "--since", help="From this date or time (UTC), "
                                                 "e.g. 2026-03-31 or 2026-03-31T14:00."),
                 actor_name: str | None = typer.Option(None, "--actor", help="Only this user or API token."),
                 order: str | None = typer.Option(None, "--order", help="Only actions on this order."),
                 last: int | None = typer.Option(None, "--last", help="Only the last N actions."),
                 db: str = DbOption, format: Format = FormatOption) -> None:
    """The audit trail: every manual action, who did it, from where, when, why, and what it posted."""
    from gateway.app import checks
    from gateway.app.audit import list_audit
    from gateway.app.models import AuditEntry
    from gateway.cli.tables import make_console, table

    def show(rows) -> None:
        if not rows:
            typer.echo("no manual actions recorded" + (" that match" if since or actor_name or order else ""))
            return
        make_console().print(table(
            f"Audit trail ({len(rows)} action(s))",
            ("id", "at (UTC)", "actor", "from", "action", "order", "subject", "reason", "postings"),
            [(str(r.id), f"{r.at:%Y-%m-%d %H:%M:%S}", f"{r.actor} ({r.actor_kind})", f"{r.host}: {r.via}", r.action,
              r.order or "", r.subject, r.reason, " ".join(r.postings)) for r in rows], numeric=("id",)))

    start = parsed(checks.moment, since, "--since") if since else None
    emit(on_ledger(db, list_audit, since=start, actor=actor_name, order=order, last=last), format, show,
         rows=AuditEntry)


def register(stock_app: typer.Typer, report_app: typer.Typer) -> None:
    """Add the commands to the CLI's ``stock`` and ``report`` groups."""
    stock_app.command("count")(stock_count)
    report_app.command("accuracy")(report_accuracy)
    report_app.command("errors")(report_errors)
    report_app.command("wip")(report_wip)
    report_app.command("audit")(report_audit)
